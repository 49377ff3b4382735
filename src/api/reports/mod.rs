//! `/v1/reports`: the portfolio as risk sees it on a business date, portfolio at risk and aging,
//! for staff (their branches), analysts and administrators. Today reads every loan's position
//! live; a past date reads its daily snapshot (`analytics.loan_analytics`).

pub mod borrowers;
mod collection_sheet;
mod registers;
pub mod repo;

use axum::Json;
use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::money::Amount;
use crate::platform::auth::{RequestTx, RiskViewers};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(portfolio_at_risk))
        .routes(routes!(aging))
        .routes(routes!(registers::disbursements))
        .routes(routes!(registers::repayments))
        .routes(routes!(collection_sheet::collection_sheet))
        .routes(routes!(borrowers::borrowers))
        .tagged("reports")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// The business date (default today). A past date needs its snapshot (422 before the first
    /// one, or for a day none was taken); a future date is 422.
    pub date: Option<NaiveDate>,
}

/// Where a report's positions came from.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PositionSource {
    /// Today's loans as they stand.
    Live,
    /// The snapshot taken on that business date.
    Snapshot,
}

/// Outstanding principal of loans past a threshold, and its share of the whole.
#[derive(Debug, Serialize, ToSchema)]
pub struct AtRisk {
    pub amount: Amount,
    /// `amount` ÷ the outstanding principal, to four decimals ("0.0312" is 3.12%).
    #[schema(value_type = String, example = "0.0312")]
    pub ratio: Decimal,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ParLine {
    /// Null on the total line.
    pub product_code: Option<String>,
    /// Loans on the books (DISBURSED or DEFAULTED).
    pub loans: i64,
    /// Their outstanding principal.
    pub outstanding: Amount,
    /// More than 0 days past due.
    pub par1: AtRisk,
    /// More than 30 days past due.
    pub par30: AtRisk,
    /// More than 60 days past due.
    pub par60: AtRisk,
    /// More than 90 days past due.
    pub par90: AtRisk,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PortfolioAtRisk {
    pub date: NaiveDate,
    pub source: PositionSource,
    pub total: ParLine,
    pub by_product: Vec<ParLine>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AgingBucket {
    /// Days past due: `0`, `1-30`, `31-60`, `61-90`, `91-180`, `180+`.
    #[schema(example = "1-30")]
    pub bucket: &'static str,
    pub loans: i64,
    pub principal: Amount,
    pub interest: Amount,
    /// Late fees outstanding.
    pub penalties: Amount,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Aging {
    pub date: NaiveDate,
    pub source: PositionSource,
    /// Every bucket, in order, empty ones included.
    pub buckets: Vec<AgingBucket>,
}

/// The aging buckets, by their largest number of days past due.
const BUCKETS: [(&str, i32); 6] = [
    ("0", 0),
    ("1-30", 30),
    ("31-60", 60),
    ("61-90", 90),
    ("91-180", 180),
    ("180+", i32::MAX),
];

/// Portfolio at risk: PAR1, PAR30, PAR60 and PAR90 by product and in total. A loan's days past
/// due count from the oldest installment due and unpaid by more than its product's arrears
/// tolerance, as the loan itself shows them.
#[utoipa::path(
    get,
    path = "/v1/reports/portfolio-at-risk",
    params(ReportQuery),
    responses((status = 200, description = "The report", body = PortfolioAtRisk),
              responses::Common, responses::Unprocessable)
)]
async fn portfolio_at_risk(
    mut tx: RequestTx<RiskViewers>,
    AppQuery(query): AppQuery<ReportQuery>,
) -> Result<Json<PortfolioAtRisk>, ApiError> {
    let (date, source) = resolve(&mut tx, query.date).await?;
    let live = matches!(source, PositionSource::Live);
    let rows = repo::par(&mut tx, date, live).await?;
    tx.commit().await?;
    let mut lines: Vec<ParLine> = rows.into_iter().map(ParLine::from).collect();
    let total = match lines.iter().position(|l| l.product_code.is_none()) {
        Some(at) => lines.remove(at),
        None => ParLine::from(repo::ParRow::default()),
    };
    Ok(Json(PortfolioAtRisk {
        date,
        source,
        total,
        by_product: lines,
    }))
}

/// Aging: loans and what they owe by days past due, in buckets of 0, 1–30, 31–60, 61–90, 91–180
/// and more than 180 days.
#[utoipa::path(
    get,
    path = "/v1/reports/aging",
    params(ReportQuery),
    responses((status = 200, description = "The report", body = Aging),
              responses::Common, responses::Unprocessable)
)]
async fn aging(
    mut tx: RequestTx<RiskViewers>,
    AppQuery(query): AppQuery<ReportQuery>,
) -> Result<Json<Aging>, ApiError> {
    let (date, source) = resolve(&mut tx, query.date).await?;
    let live = matches!(source, PositionSource::Live);
    let rows = repo::aging(&mut tx, date, live).await?;
    tx.commit().await?;
    let buckets = BUCKETS
        .iter()
        .map(|(name, _)| {
            let row = rows.iter().find(|r| r.bucket.as_deref() == Some(*name));
            AgingBucket {
                bucket: name,
                loans: row.map_or(0, |r| r.loans),
                principal: Amount(row.map_or(Decimal::ZERO, |r| r.principal)),
                interest: Amount(row.map_or(Decimal::ZERO, |r| r.interest)),
                penalties: Amount(row.map_or(Decimal::ZERO, |r| r.penalties)),
            }
        })
        .collect();
    Ok(Json(Aging {
        date,
        source,
        buckets,
    }))
}

/// The report's date and where its positions come from: today live, a past date its snapshot.
async fn resolve(
    tx: &mut sqlx::PgConnection,
    date: Option<NaiveDate>,
) -> Result<(NaiveDate, PositionSource), ApiError> {
    let dates = repo::dates(tx, date).await?;
    let date = date.unwrap_or(dates.today);
    if date > dates.today {
        return Err(ApiError::invalid_field(
            "date",
            "is after today's business date",
        ));
    }
    if date == dates.today {
        return Ok((date, PositionSource::Live));
    }
    match dates.first_snapshot {
        Some(first) if date >= first && dates.taken => Ok((date, PositionSource::Snapshot)),
        Some(first) if date >= first => Err(ApiError::invalid_field(
            "date",
            "has no snapshot: the daily job did not run that day",
        )),
        _ => Err(ApiError::invalid_field(
            "date",
            "is before the first daily snapshot of the portfolio",
        )),
    }
}

fn at_risk(amount: Decimal, outstanding: Decimal) -> AtRisk {
    let ratio = if outstanding.is_zero() {
        Decimal::ZERO
    } else {
        (amount / outstanding).round_dp(4)
    };
    AtRisk {
        amount: Amount(amount),
        ratio,
    }
}

impl From<repo::ParRow> for ParLine {
    fn from(row: repo::ParRow) -> Self {
        Self {
            par1: at_risk(row.par1, row.outstanding),
            par30: at_risk(row.par30, row.outstanding),
            par60: at_risk(row.par60, row.outstanding),
            par90: at_risk(row.par90, row.outstanding),
            product_code: row.product_code,
            loans: row.loans,
            outstanding: Amount(row.outstanding),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_the_share_to_four_decimals_and_zero_on_an_empty_book() {
        let r = at_risk(Decimal::new(1, 0), Decimal::new(3, 0));
        assert_eq!(r.ratio, Decimal::new(3333, 4));
        assert_eq!(at_risk(Decimal::ZERO, Decimal::ZERO).ratio, Decimal::ZERO);
    }
}
