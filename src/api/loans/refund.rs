//! `POST /v1/loans/{id}/refund`: pays out what an overpayment left owed to the customer.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use chrono::Utc;
use uuid::Uuid;

use super::model::LoanStatus;
use super::repo;
use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::domain::idempotency::{self, Created, IdempotencyKey, Processing};
use crate::domain::ledger;
use crate::platform::auth::{Authorized, RequestTx, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;
use crate::platform::state::AppState;

/// Refund an OVERPAID loan (staff): what it owes the customer on LOAN_OVERPAYMENT is paid out in
/// a REFUND entry, and the loan is CLOSED. Requires an `Idempotency-Key`: the same key replays
/// the first answer. After a 5xx, a timeout or a dropped connection, retry with the same key
/// before paying the customer by other means: the answer is the original outcome.
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/refund",
    params(
        ("id" = Uuid, Path, description = "Loan id"),
        ("Idempotency-Key" = String, Header, description = "Unique per refund: 1 to 255 visible ASCII characters")
    ),
    responses(
        (status = 201, description = "Refunded; the loan is CLOSED", body = super::model::Loan,
         headers(("Location" = String))),
        (status = 202, description = "With REFUND in FOUR_EYES_ACTIONS: proposed, it takes effect \
         when a checker approves it (a second request while it is pending is 409)", body = Proposal),
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
    if four_eyes::needs_checker(&state.four_eyes, Action::Refund) {
        let mut tx = RequestTx::<StaffOnly>::begin(&state.db, caller, false).await?;
        let loan = repo::find(&mut tx, id).await?.ok_or(ApiError::NotFound)?;
        if loan.status != LoanStatus::Overpaid {
            return Err(ApiError::conflict(format!(
                "a loan that is {} owes no refund",
                loan.status
            )));
        }
        let proposed = Proposed {
            action: Action::Refund,
            object_id: id.to_string(),
            object_version: loan.version,
            amount: Some(ledger::credit_owed(&mut tx, id).await?),
            customer_id: Some(loan.customer_id),
            payload: serde_json::json!({}),
        };
        let proposal = four_eyes::propose(&mut tx, proposed).await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let path = format!("/v1/loans/{id}/refund");
    let fingerprint = idempotency::fingerprint("POST", &path, &serde_json::Value::Null);
    let mut tx =
        RequestTx::<StaffOnly>::begin_bounded(&state.db, caller, idempotency::WAIT_FOR_FIRST)
            .await?;
    let claimed = match idempotency::try_processing(&mut tx, key, &fingerprint).await? {
        Processing::Proceed(claimed) => claimed,
        Processing::Replayed(response) => return Ok(response),
    };
    let outcome = refund(&mut tx, id, None).await.map(|loan| Created {
        location: format!("/v1/loans/{id}"),
        body: loan,
    });
    let response = idempotency::save_response(&mut tx, claimed, outcome, &path).await?;
    tx.commit().await?;
    Ok(response)
}

async fn refund(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    proposal: Option<&Proposal>,
) -> Result<super::model::Loan, ApiError> {
    let loan = ledger::lock_loan(tx, id, Utc::now()).await?;
    if let Some(proposal) = proposal {
        let current = repo::find(tx, id).await?.ok_or(ApiError::NotFound)?;
        four_eyes::check_version(proposal, current.version)?;
    }
    ledger::refund(tx, &loan).await?;
    repo::find(tx, id).await?.ok_or(ApiError::NotFound)
}

/// A loan's credit paid out, once a checker approved it.
pub fn execute_refund<'a>(
    conn: &'a mut sqlx::PgConnection,
    _state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        let id = proposal.object_uuid()?;
        four_eyes::outcome(refund(conn, id, Some(proposal)).await?)
    })
}
