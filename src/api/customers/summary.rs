//! `GET /v1/customers/{id}/summary`: a customer's summary as the app shows it to them.

use axum::Json;
use uuid::Uuid;

use crate::domain::dues::{repo, CustomerSummary};
use crate::platform::auth::{RequestTx, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;

/// A customer's summary, as the app shows it to them (staff).
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/summary",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The summary", body = CustomerSummary),
        responses::Common, responses::NotFound
    )
)]
pub(super) async fn customer_summary(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<CustomerSummary>, ApiError> {
    let summary = repo::summary_if_exists(&mut tx, id).await?;
    tx.answer_found(summary).await
}
