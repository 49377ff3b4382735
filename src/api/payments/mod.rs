//! `/v1/payments`: repayments and fees, exactly once, never below zero.
//!
//! Branch staff record payments that complete at once; the mobile app starts repayments that
//! stay PENDING until staff confirm them. Every balance change locks the loan row first.

pub mod model;
pub mod repo;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::model::{
    CheckedPayment, CreatePaymentRequest, Payment, PaymentActionRequest, PaymentKind, PaymentList,
    PaymentListQuery, PaymentStatus, PaymentType, Reason,
};
use self::repo::ListFilter;
use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::domain::idempotency::{self, Created, IdempotencyKey, Processing};
use crate::domain::ledger;
use crate::domain::ledger::{LockedLoan, PaymentOrder};
use crate::platform::auth::RequestTx;
use crate::platform::auth::{Authorized, LoanReaders, PaymentMakers, Role, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{from_json_value, AppPath, AppQuery, JsonValue, MaybeJson};
use crate::platform::pagination::{self, Page, PageQuery, PageRequest, TimeCursor};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_payment, list_payments))
        .routes(routes!(get_payment))
        .routes(routes!(list_loan_payments))
        .routes(routes!(confirm_payment))
        .routes(routes!(fail_payment))
        .routes(routes!(reverse_payment))
        .tagged("payments")
}

const PAYMENTS_PATH: &str = "/v1/payments";

/// Record a payment. Staff record branch payments (REPAYMENT or FEE), which complete at once and
/// may be backdated; a customer starts a REPAYMENT of their own loan, PENDING until staff confirm
/// it. Requires `Idempotency-Key`: a retry with the same key and body gets the first response
/// again, byte for byte. After a 5xx, a timeout or a dropped connection, send the same request
/// with the same key before telling anyone the money did not move: the payment may have been
/// recorded, and the retry answers with what happened (never a second payment).
#[utoipa::path(
    post,
    path = "/v1/payments",
    params(("Idempotency-Key" = String, Header, description = "Unique per intended payment; every retry of it (after a 5xx, a timeout or no answer) reuses it and gets the original outcome")),
    request_body = CreatePaymentRequest,
    responses(
        (status = 201, description = "Recorded", body = Payment, headers(("Location" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn create_payment(
    State(state): State<AppState>,
    Authorized { caller, .. }: Authorized<PaymentMakers>,
    headers: HeaderMap,
    JsonValue(value): JsonValue,
) -> Result<Response, ApiError> {
    let key = IdempotencyKey::from_headers(&headers)?;
    let fingerprint = idempotency::fingerprint("POST", PAYMENTS_PATH, &value);
    // One transaction: the key's claim, the work and the response commit together, or not at
    // all (a 5xx drops the transaction, and with it the claim).
    let mut tx =
        RequestTx::<PaymentMakers>::begin_bounded(&state.db, caller, idempotency::WAIT_FOR_FIRST)
            .await?;
    let claimed = match idempotency::try_processing(&mut tx, key, &fingerprint).await? {
        Processing::Proceed(claimed) => claimed,
        Processing::Replayed(response) => return Ok(response),
    };
    let outcome = record_payment(&state, &mut tx, value)
        .await
        .map(|payment| Created {
            location: format!("{PAYMENTS_PATH}/{}", payment.payment_id),
            body: payment,
        });
    let response = idempotency::save_response(&mut tx, claimed, outcome, PAYMENTS_PATH).await?;
    tx.commit().await?;
    Ok(response)
}

/// A new server-assigned transaction id. Clients never choose one: a chosen id could be the
/// `DSB-<loan number>` of a disbursement still to come, and block it.
fn new_transaction_id() -> String {
    format!("TXN{}", Uuid::now_v7().simple()).to_uppercase()
}

/// The work of `create_payment`, inside its transaction.
async fn record_payment(
    state: &AppState,
    tx: &mut RequestTx<PaymentMakers>,
    body: serde_json::Value,
) -> Result<Payment, ApiError> {
    if body.get("transaction_id").is_some() {
        return Err(ApiError::invalid_field(
            "transaction_id",
            "is assigned by the server; send your own reference as client_reference",
        ));
    }
    let request = CheckedPayment::try_from(from_json_value::<CreatePaymentRequest>(body)?)?;
    let role = tx.caller().role;
    let now = Utc::now();
    let payment_date = match (request.payment_date, role) {
        (None, _) => now,
        (Some(_), Role::Customer) => {
            return Err(ApiError::invalid_field(
                "payment_date",
                "only staff may date a payment",
            ))
        }
        (Some(date), _) => {
            state.date_window.check("payment_date", date, now)?;
            date.min(now)
        }
    };
    if role == Role::Customer && request.payment_type == PaymentType::Fee {
        return Err(ApiError::Forbidden);
    }
    let transaction_id = new_transaction_id();
    state.partitions.ensure_payments(payment_date).await?;
    let order = PaymentOrder {
        transaction_id: &transaction_id,
        client_reference: request.client_reference.as_deref(),
        payment_type: request.payment_type.kind(),
        amount: request.amount.amount(),
        payment_method: request.payment_method.as_deref(),
        payment_date,
        channel: if role == Role::Customer {
            "MOBILE_APP"
        } else {
            "BRANCH"
        },
    };
    if role == Role::Customer {
        return ledger::start_repayment(tx, request.loan_id, &order).await;
    }
    let loan = ledger::lock_loan(tx, request.loan_id, payment_date).await?;
    ledger::record_completed(tx, &loan, &order).await
}

/// The loan's payments, oldest first (the disbursement among them once paid out).
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/payments",
    tag = "loans",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "Payments", body = PaymentList), responses::Common, responses::NotFound)
)]
async fn list_loan_payments(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<PaymentList>, ApiError> {
    let applied = repo::loan_applied_at(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let data = repo::list_for_loan(&mut tx, id, applied).await?;
    tx.answer(PaymentList { data }).await
}

/// One payment. Another customer's payment is 404.
#[utoipa::path(
    get,
    path = "/v1/payments/{id}",
    params(("id" = Uuid, Path, description = "Payment id")),
    responses((status = 200, description = "The payment", body = Payment), responses::Common, responses::NotFound)
)]
async fn get_payment(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Payment>, ApiError> {
    let payment = repo::find(&mut tx, id, false).await?;
    tx.answer_found(payment).await
}

/// Payments, newest first. A date range reads only the monthly partitions it covers.
#[utoipa::path(
    get,
    path = "/v1/payments",
    params(PaymentListQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<Payment>), responses::Common)
)]
async fn list_payments(
    mut tx: RequestTx<LoanReaders>,
    AppQuery(query): AppQuery<PaymentListQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Page<Payment>>, ApiError> {
    let (from, before) = pagination::day_range(query.from, query.to)?;
    if query
        .client_reference
        .as_deref()
        .is_some_and(|r| !model::is_client_reference(r))
    {
        return Err(ApiError::BadRequest(
            "client_reference must be 1 to 40 visible ASCII characters".into(),
        ));
    }
    let filter = ListFilter {
        loan_id: query.loan_id,
        customer_id: query.customer_id,
        status: query.status,
        payment_type: query.payment_type,
        client_reference: query.client_reference.as_deref(),
        transaction_id: query.transaction_id.as_deref(),
        from,
        before,
        after: page.after,
        fetch: page.fetch(),
    };
    let rows = repo::list(&mut tx, &filter).await?;
    tx.answer(page.page(rows, |p| TimeCursor {
        at: p.payment_date,
        id: p.payment_id,
    })?)
    .await
}

/// A payment and its loan, locked in that order (the order every balance change uses). The
/// loan's business day is that of `at`, or of the payment's own date (its value date).
async fn lock_payment(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    at: Option<chrono::DateTime<Utc>>,
) -> Result<(Payment, LockedLoan), ApiError> {
    let unlocked = repo::find(tx, id, false).await?.ok_or(ApiError::NotFound)?;
    let at = at.unwrap_or(unlocked.payment_date);
    let loan = ledger::lock_loan(tx, unlocked.loan_id, at).await?;
    let payment = repo::find(tx, id, true).await?.ok_or(ApiError::NotFound)?;
    Ok((payment, loan))
}

/// The reason of fail and reverse, from their optional body: none, or 1 to 500 characters.
fn reason(request: Option<PaymentActionRequest>) -> Result<Option<String>, ApiError> {
    Ok(match request {
        Some(request) => Reason::try_from(request)?.0,
        None => None,
    })
}

fn illegal(verb: &str, payment: &Payment) -> ApiError {
    ApiError::conflict(format!(
        "cannot {verb} a {} payment that is {}",
        payment.payment_type, payment.status
    ))
}

/// Confirm a PENDING payment (staff): a repayment is applied to the loan now, and refused (422)
/// if it is more than is owed by then.
/// After a 5xx, a timeout or no answer, sending it again is safe: if the first took effect, the
/// answer is 409 naming the status the payment is in now (`GET /v1/payments/{id}` shows it).
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/confirm",
    params(("id" = Uuid, Path, description = "Payment id")),
    responses(
        (status = 200, description = "Completed", body = Payment),
        responses::Common, responses::NotFound, responses::Conflict, responses::Unprocessable
    )
)]
async fn confirm_payment(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Payment>, ApiError> {
    let (payment, loan) = lock_payment(&mut tx, id, None).await?;
    if payment.status != PaymentStatus::Pending {
        return Err(illegal("confirm", &payment));
    }
    let payment = ledger::confirm(&mut tx, &loan, &payment).await?;
    tx.answer(payment).await
}

/// Mark a PENDING payment failed (staff): the money never arrived.
/// After a 5xx, a timeout or no answer, sending it again is safe: if the first took effect, the
/// answer is 409 naming the status the payment is in now (`GET /v1/payments/{id}` shows it).
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/fail",
    params(("id" = Uuid, Path, description = "Payment id")),
    request_body(content = Option<PaymentActionRequest>),
    responses(
        (status = 200, description = "Failed", body = Payment),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn fail_payment(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    MaybeJson(body): MaybeJson<PaymentActionRequest>,
) -> Result<Json<Payment>, ApiError> {
    let reason = reason(body)?;
    let (payment, loan) = lock_payment(&mut tx, id, Some(Utc::now())).await?;
    if payment.status != PaymentStatus::Pending {
        return Err(illegal("fail", &payment));
    }
    let payment = ledger::fail(&mut tx, &loan, &payment, reason.as_deref()).await?;
    tx.answer(payment).await
}

/// Reverse a COMPLETED repayment or fee (staff): exactly what it did to the loan is undone,
/// reopening a loan it had closed. Reversing twice is 409.
/// After a 5xx, a timeout or no answer, sending it again is safe: if the first took effect, the
/// answer is 409 naming the status the payment is in now (`GET /v1/payments/{id}` shows it).
#[utoipa::path(
    post,
    path = "/v1/payments/{id}/reverse",
    params(("id" = Uuid, Path, description = "Payment id")),
    request_body(content = Option<PaymentActionRequest>),
    responses(
        (status = 200, description = "Reversed", body = Payment),
        (status = 202, description = "With REVERSAL in FOUR_EYES_ACTIONS: proposed, it takes \
         effect when a checker approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn reverse_payment(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    MaybeJson(body): MaybeJson<PaymentActionRequest>,
) -> Result<Response, ApiError> {
    let reason = reason(body)?;
    if four_eyes::needs_checker(&state.four_eyes, Action::Reversal) {
        let payment = repo::find(&mut tx, id, false)
            .await?
            .ok_or(ApiError::NotFound)?;
        reversible(&payment)?;
        let proposed = Proposed {
            action: Action::Reversal,
            object_id: id.to_string(),
            // A payment's status is its version here: COMPLETED until reversed.
            object_version: 0,
            amount: Some(payment.amount.0),
            customer_id: Some(payment.customer_id),
            payload: serde_json::json!({"reason": reason}),
        };
        let proposal = four_eyes::propose(&mut tx, proposed).await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let payment = reverse(&mut tx, id, reason.as_deref()).await?;
    Ok(tx.answer(payment).await?.into_response())
}

fn reversible(payment: &Payment) -> Result<(), ApiError> {
    if payment.status != PaymentStatus::Completed
        || payment.payment_type == PaymentKind::Disbursement
    {
        return Err(illegal("reverse", payment));
    }
    Ok(())
}

async fn reverse(
    tx: &mut sqlx::PgConnection,
    id: Uuid,
    reason: Option<&str>,
) -> Result<Payment, ApiError> {
    let (payment, loan) = lock_payment(tx, id, Some(Utc::now())).await?;
    reversible(&payment)?;
    ledger::reverse(tx, &loan, &payment, reason).await
}

/// A payment reversed, once a checker approved it.
pub fn execute_reversal<'a>(
    conn: &'a mut sqlx::PgConnection,
    _state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        let reason = proposal.payload.get("reason").and_then(|r| r.as_str());
        four_eyes::outcome(reverse(conn, proposal.object_uuid()?, reason).await?)
    })
}
