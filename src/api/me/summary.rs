//! `GET /v1/me/summary`: the caller's next payment, due now, arrears and outstanding.

use axum::Json;

use crate::domain::dues::{repo, CustomerSummary};
use crate::platform::auth::{CustomerOnly, RequestTx};
use crate::platform::error::{responses, ApiError};

/// The caller's own summary: next payment, due now, arrears, outstanding (customers).
#[utoipa::path(
    get,
    path = "/v1/me/summary",
    responses((status = 200, description = "The summary", body = CustomerSummary), responses::Common)
)]
pub(super) async fn my_summary(
    mut tx: RequestTx<CustomerOnly>,
) -> Result<Json<CustomerSummary>, ApiError> {
    let customer = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let summary = repo::summary(&mut tx, customer).await?;
    tx.answer(summary).await
}
