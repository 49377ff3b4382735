//! `/v1/reports/disbursements` and `/v1/reports/repayments`: the completed payments of a kind
//! between two business dates, with their count and total, in keyset pages (oldest first). Both
//! read the payments' date index, a range scan of the months the dates span.

use axum::Json;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::money::Amount;
use crate::platform::auth::{RequestTx, RiskViewers};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::pagination::{PageQuery, PageRequest, TimeCursor};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RegisterQuery {
    /// The first business date (in `BUSINESS_TIMEZONE`).
    pub from: NaiveDate,
    /// The last business date, at most 366 days after `from`.
    pub to: NaiveDate,
}

/// One payment of a register.
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct RegisterEntry {
    pub payment_id: Uuid,
    pub transaction_id: String,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub amount: Amount,
    pub payment_date: DateTime<Utc>,
    pub payment_method: Option<String>,
    pub channel: Option<String>,
}

/// A register: its totals over the whole range, and one page of its payments.
#[derive(Debug, Serialize, ToSchema)]
pub struct Register {
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Payments in the range (every page).
    pub count: i64,
    /// Their sum (every page).
    pub total: Amount,
    pub data: Vec<RegisterEntry>,
    pub next_cursor: Option<String>,
}

/// The disbursements register: loans paid out between two business dates.
#[utoipa::path(
    get,
    path = "/v1/reports/disbursements",
    operation_id = "disbursements_register",
    params(RegisterQuery, PageQuery),
    responses((status = 200, description = "One page, with the range's totals", body = Register),
              responses::Common, responses::Unprocessable)
)]
pub(super) async fn disbursements(
    tx: RequestTx<RiskViewers>,
    AppQuery(query): AppQuery<RegisterQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Register>, ApiError> {
    register(tx, "DISBURSEMENT", query, page).await
}

/// The repayments register: repayments completed between two business dates (reversed ones are
/// no longer COMPLETED and are not in it).
#[utoipa::path(
    get,
    path = "/v1/reports/repayments",
    operation_id = "repayments_register",
    params(RegisterQuery, PageQuery),
    responses((status = 200, description = "One page, with the range's totals", body = Register),
              responses::Common, responses::Unprocessable)
)]
pub(super) async fn repayments(
    tx: RequestTx<RiskViewers>,
    AppQuery(query): AppQuery<RegisterQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Register>, ApiError> {
    register(tx, "REPAYMENT", query, page).await
}

async fn register(
    mut tx: RequestTx<RiskViewers>,
    kind: &str,
    query: RegisterQuery,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Register>, ApiError> {
    if query.to < query.from {
        return Err(ApiError::invalid_field("to", "must not be before from"));
    }
    if (query.to - query.from).num_days() > 366 {
        return Err(ApiError::invalid_field(
            "to",
            "must be at most 366 days after from",
        ));
    }
    let totals = super::repo::register_totals(&mut tx, kind, query.from, query.to).await?;
    let after = page.after.map(|c| (c.at, c.id));
    let rows = super::repo::register_page(&mut tx, kind, query.from, query.to, after, page.fetch())
        .await?;
    tx.commit().await?;
    let page = page.page(rows, |r| TimeCursor {
        at: r.payment_date,
        id: r.payment_id,
    })?;
    Ok(Json(Register {
        from: query.from,
        to: query.to,
        count: totals.count,
        total: Amount(totals.total),
        data: page.data,
        next_cursor: page.next_cursor,
    }))
}
