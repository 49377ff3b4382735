//! Read-only views over the core for staff and analysts (the seed guide's Lab 3 queries), and
//! the analytics jobs.

pub mod jobs;

use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::RequestTx;
use crate::auth::RiskViewers;
use crate::error::{responses, ApiError};
use crate::extract::{AppPath, AppQuery};
use crate::ledger::model::LoanStatus;
use crate::money::Amount;
use crate::pagination::{Page, PageQuery, PageRequest};
use crate::risk;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_portfolio))
        .routes(routes!(list_high_risk_loans))
        .merge(jobs::reads())
}

/// A customer's borrowing at a glance (Lab 3, step 1).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct Portfolio {
    pub customer_id: Uuid,
    pub customer_code: String,
    pub full_name: String,
    /// Every loan, whatever its status.
    pub total_loans: i64,
    /// Money actually lent: disbursed, closed and defaulted loans (the guide also counted
    /// applications that were never paid out).
    pub total_borrowed: Amount,
    /// Mean annual rate over the customer's loans; null without loans.
    #[schema(value_type = Option<String>)]
    pub average_interest_rate: Option<Decimal>,
    pub product_types: Vec<String>,
}

/// Totals over every loan of the customer (staff, analysts).
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/portfolio",
    tag = "analytics",
    operation_id = "get_portfolio",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 200, description = "The portfolio", body = Portfolio), responses::Common, responses::NotFound)
)]
async fn get_portfolio(
    mut tx: RequestTx<RiskViewers>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Portfolio>, ApiError> {
    let portfolio: Option<Portfolio> = sqlx::query_as(
        "SELECT c.customer_id, c.customer_code, c.full_name, count(l.loan_id) AS total_loans, \
                coalesce(sum(l.loan_amount) FILTER (WHERE l.status IN ('DISBURSED', 'CLOSED', 'DEFAULTED')), \
                         0)::numeric(17,2) AS total_borrowed, \
                round(avg(l.interest_rate), 4) AS average_interest_rate, \
                coalesce(array_agg(DISTINCT l.product_type ORDER BY l.product_type) \
                         FILTER (WHERE l.product_type IS NOT NULL), '{}') AS product_types \
         FROM core.customers c LEFT JOIN core.loans l ON l.customer_id = c.customer_id \
         WHERE c.customer_id = $1 \
         GROUP BY c.customer_id, c.customer_code, c.full_name",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut portfolio = portfolio.ok_or(ApiError::NotFound)?;
    portfolio.total_borrowed = Amount(crate::money::cents(portfolio.total_borrowed.0));
    Ok(Json(portfolio))
}

/// An approved or disbursed loan with its customer's risk category (Lab 3, step 2).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct HighRiskLoan {
    pub loan_id: Uuid,
    pub loan_number: String,
    pub customer_id: Uuid,
    pub customer_code: String,
    pub loan_amount: Amount,
    #[schema(value_type = String)]
    pub interest_rate: Decimal,
    pub credit_score: Option<i32>,
    /// HIGH_RISK (< 600), MEDIUM_RISK (< 700), LOW_RISK, or UNRATED.
    pub risk_category: String,
    pub collateral_type: Option<String>,
    /// As recorded in collateral_info.
    pub collateral_value: Option<String>,
    #[schema(value_type = String)]
    pub status: LoanStatus,
    pub application_date: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HighRiskQuery {
    /// Only loans in this category.
    pub risk_category: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RiskCursor {
    score: i32,
    customer_id: Uuid,
    loan_id: Uuid,
}

/// Where the listing sorts a customer without a credit score: after every real score. The SQL
/// below spells it as the literal 1000, as `idx_customers_risk_order` does, so the index matches.
const UNRATED_SCORE: i32 = 1000;

/// The scores of a risk category as the listing orders them (`coalesce(credit_score, 1000)`),
/// with the thresholds of [`risk::category`].
fn score_range(category: Option<&str>) -> Result<(i32, i32), ApiError> {
    Ok(match category {
        None => (i32::MIN, i32::MAX),
        Some("HIGH_RISK") => (i32::MIN, risk::HIGH_RISK_BELOW - 1),
        Some("MEDIUM_RISK") => (risk::HIGH_RISK_BELOW, risk::MEDIUM_RISK_BELOW - 1),
        Some("LOW_RISK") => (risk::MEDIUM_RISK_BELOW, UNRATED_SCORE - 1),
        Some("UNRATED") => (UNRATED_SCORE, UNRATED_SCORE),
        Some(_) => {
            return Err(ApiError::BadRequest(
                "risk_category must be HIGH_RISK, MEDIUM_RISK, LOW_RISK or UNRATED".into(),
            ))
        }
    })
}

/// Approved and disbursed loans by customer, riskiest first (staff, analysts).
#[utoipa::path(
    get,
    path = "/v1/analytics/high-risk-loans",
    tag = "analytics",
    operation_id = "list_high_risk_loans",
    security(("bearer" = [])),
    params(HighRiskQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<HighRiskLoan>), responses::Common)
)]
async fn list_high_risk_loans(
    mut tx: RequestTx<RiskViewers>,
    AppQuery(query): AppQuery<HighRiskQuery>,
    page: PageRequest<RiskCursor>,
) -> Result<Json<Page<HighRiskLoan>>, ApiError> {
    let after = page.after.as_ref();
    let (lowest, highest) = score_range(query.risk_category.as_deref())?;
    // The first page starts below the category's lowest score.
    let (score, customer_id, loan_id) = after
        .as_ref()
        .map_or((lowest, Uuid::nil(), Uuid::nil()), |c| {
            (c.score, c.customer_id, c.loan_id)
        });
    // Unrated customers sort last, as a score above any real one. Customers come in the order
    // of idx_customers_risk_order, within the category's scores and from the cursor's customer
    // on, so a page reads only as many customers as it needs; only each customer's few loans
    // are sorted.
    let rows: Vec<HighRiskLoan> = sqlx::query_as(
        "SELECT l.loan_id, l.loan_number, l.customer_id, c.customer_code, l.loan_amount, \
                l.interest_rate, c.credit_score, \
                CASE WHEN c.credit_score IS NULL THEN 'UNRATED' \
                     WHEN c.credit_score < 600 THEN 'HIGH_RISK' \
                     WHEN c.credit_score < 700 THEN 'MEDIUM_RISK' ELSE 'LOW_RISK' END AS risk_category, \
                l.collateral_info->>'type' AS collateral_type, \
                l.collateral_info->>'value' AS collateral_value, l.status, l.application_date \
         FROM core.customers c JOIN core.loans l ON l.customer_id = c.customer_id \
         WHERE l.status IN ('APPROVED', 'DISBURSED') \
           AND coalesce(c.credit_score, 1000) BETWEEN $1 AND $2 \
           AND (coalesce(c.credit_score, 1000), c.customer_id) >= ($3, $4) \
           AND (coalesce(c.credit_score, 1000), c.customer_id, l.loan_id) > ($3, $4, $5) \
         ORDER BY coalesce(c.credit_score, 1000), c.customer_id, l.loan_id LIMIT $6",
    )
    .bind(lowest)
    .bind(highest)
    .bind(score)
    .bind(customer_id)
    .bind(loan_id)
    .bind(page.fetch())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Json(page.page(rows, |r| RiskCursor {
        score: r.credit_score.unwrap_or(UNRATED_SCORE),
        customer_id: r.customer_id,
        loan_id: r.loan_id,
    })?))
}
