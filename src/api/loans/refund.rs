//! `POST /v1/loans/{id}/refund`: pays out what an overpayment left owed to the customer.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use uuid::Uuid;

use super::repo;
use crate::domain::idempotency::{self, Created, IdempotencyKey, Processing};
use crate::domain::ledger;
use crate::platform::auth::{Authorized, RequestTx, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;
use crate::platform::state::AppState;

/// Refund an OVERPAID loan (staff): what it owes the customer on LOAN_OVERPAYMENT is paid out in
/// a REFUND entry, and the loan is CLOSED. Requires an `Idempotency-Key`: the same key replays
/// the first answer.
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/refund",
    tag = "loans",
    operation_id = "refund_loan",
    params(
        ("id" = Uuid, Path, description = "Loan id"),
        ("Idempotency-Key" = String, Header, description = "Unique per refund: 1 to 255 visible ASCII characters")
    ),
    responses(
        (status = 201, description = "Refunded; the loan is CLOSED", body = super::model::Loan,
         headers(("Location" = String))),
        responses::Common, responses::NotFound, responses::Conflict, responses::Unprocessable
    )
)]
pub(super) async fn refund_loan(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<StaffOnly>,
    headers: HeaderMap,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let path = format!("/v1/loans/{id}/refund");
    let fingerprint = idempotency::fingerprint("POST", &path, &serde_json::Value::Null);
    let mut tx =
        RequestTx::<StaffOnly>::begin_bounded(&state.db, caller, idempotency::WAIT_FOR_FIRST)
            .await?;
    let claimed = match idempotency::try_processing(&mut tx, key, &fingerprint).await? {
        Processing::Proceed(claimed) => claimed,
        Processing::Replayed(response) => return Ok(response),
    };
    let outcome = refund(&mut tx, id).await.map(|loan| Created {
        location: format!("/v1/loans/{id}"),
        body: loan,
    });
    let response = idempotency::save_response(&mut tx, claimed, outcome, &path).await?;
    tx.commit().await?;
    Ok(response)
}

async fn refund(tx: &mut RequestTx<StaffOnly>, id: Uuid) -> Result<super::model::Loan, ApiError> {
    let loan = ledger::lock_loan(tx, id, Utc::now()).await?;
    ledger::refund(tx, &loan).await?;
    repo::find(tx, id).await?.ok_or(ApiError::NotFound)
}
