//! `GET /v1/customers/{id}/portfolio`: a customer's borrowing at a glance (Lab 3, step 1).

use axum::Json;
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::{self, Amount};
use crate::platform::auth::{RequestTx, RiskViewers};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;

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
    params(("id" = Uuid, Path, description = "Customer id")),
    responses((status = 200, description = "The portfolio", body = Portfolio), responses::Common, responses::NotFound)
)]
pub(super) async fn get_portfolio(
    mut tx: RequestTx<RiskViewers>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Portfolio>, ApiError> {
    let portfolio: Option<Portfolio> = sqlx::query_as!(
        Portfolio,
        r#"
        SELECT c.customer_id, c.customer_code, c.full_name, count(l.loan_id) AS "total_loans!",
        coalesce(sum(l.loan_amount) FILTER (WHERE l.status IN ('DISBURSED', 'CLOSED', 'DEFAULTED')),
        0)::numeric(17,2) AS "total_borrowed!",
        round(avg(l.interest_rate), 4) AS average_interest_rate,
        coalesce(array_agg(DISTINCT l.product_type ORDER BY l.product_type)
        FILTER (WHERE l.product_type IS NOT NULL), '{}') AS "product_types!"
        FROM core.customers c LEFT JOIN core.loans l ON l.customer_id = c.customer_id
        WHERE c.customer_id = $1
        GROUP BY c.customer_id, c.customer_code, c.full_name
        "#,
        id,
    )
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut portfolio = portfolio.ok_or(ApiError::NotFound)?;
    portfolio.total_borrowed = Amount(money::cents(portfolio.total_borrowed.0));
    Ok(Json(portfolio))
}
