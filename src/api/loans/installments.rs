//! `GET /v1/loans/{id}/installments`: each stored installment and where it stands today.

use axum::Json;
use uuid::Uuid;

use crate::domain::dues::{repo, LoanInstallments};
use crate::platform::auth::{LoanReaders, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;

/// A loan's installments and what is paid and due on each (its customer, staff, analysts).
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/installments",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses(
        (status = 200, description = "The installments, by number", body = LoanInstallments),
        responses::Common, responses::NotFound
    )
)]
pub(super) async fn list_installments(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LoanInstallments>, ApiError> {
    let (business_date, installments) = repo::installments(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.answer(LoanInstallments {
        loan_id: id,
        business_date,
        installments,
    })
    .await
}
