//! `/v1/analytics/…`: the high-risk loans (the seed guide's Lab 3), customer metrics and risk
//! indicators, and the jobs that refresh them. Analysts and administrators.

mod customer_metrics;
mod risk_indicators;

use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::credit_risk;
use crate::domain::ledger::model::LoanStatus;
use crate::domain::money::Amount;
use crate::platform::auth::RequestTx;
use crate::platform::auth::RiskViewers;
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::pagination::{Page, PageQuery, PageRequest};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_high_risk_loans))
        .routes(routes!(customer_metrics::list_customer_metrics))
        .routes(routes!(risk_indicators::list_risk_indicators))
        .tagged("analytics")
}

/// The refresh routes (long-running: no request retry, the job timeout).
pub fn job_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(customer_metrics::refresh_customer_metrics))
        .routes(routes!(risk_indicators::refresh_risk_indicators))
        .tagged("analytics")
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
/// with the thresholds of [`credit_risk::category`].
fn score_range(category: Option<&str>) -> Result<(i32, i32), ApiError> {
    Ok(match category {
        None => (i32::MIN, i32::MAX),
        Some("HIGH_RISK") => (i32::MIN, credit_risk::HIGH_RISK_BELOW - 1),
        Some("MEDIUM_RISK") => (
            credit_risk::HIGH_RISK_BELOW,
            credit_risk::MEDIUM_RISK_BELOW - 1,
        ),
        Some("LOW_RISK") => (credit_risk::MEDIUM_RISK_BELOW, UNRATED_SCORE - 1),
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
    let rows: Vec<HighRiskLoan> = sqlx::query_as!(
        HighRiskLoan,
        r#"
        SELECT l.loan_id, l.loan_number, l.customer_id, c.customer_code, l.loan_amount,
        l.interest_rate, c.credit_score,
        CASE WHEN c.credit_score IS NULL THEN 'UNRATED'
        WHEN c.credit_score < 600 THEN 'HIGH_RISK'
        WHEN c.credit_score < 700 THEN 'MEDIUM_RISK' ELSE 'LOW_RISK' END AS "risk_category!",
        l.collateral_info->>'type' AS collateral_type,
        l.collateral_info->>'value' AS collateral_value, l.status AS "status: _",
        l.application_date
        FROM core.customers c JOIN core.loans l ON l.customer_id = c.customer_id
        WHERE l.status IN ('APPROVED', 'DISBURSED')
        AND coalesce(c.credit_score, 1000) BETWEEN $1 AND $2
        AND (coalesce(c.credit_score, 1000), c.customer_id) >= ($3, $4)
        AND (coalesce(c.credit_score, 1000), c.customer_id, l.loan_id) > ($3, $4, $5)
        ORDER BY coalesce(c.credit_score, 1000), c.customer_id, l.loan_id LIMIT $6
        "#,
        lowest,
        highest,
        score,
        customer_id,
        loan_id,
        page.fetch(),
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.answer(page.page(rows, |r| RiskCursor {
        score: r.credit_score.unwrap_or(UNRATED_SCORE),
        customer_id: r.customer_id,
        loan_id: r.loan_id,
    })?)
    .await
}
