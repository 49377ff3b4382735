//! `/v1/loans`: applications, decisions, disbursement, schedules.

mod installments;
mod journal;
pub mod model;
mod payoff;
mod refund;

pub use refund::execute_refund;
pub mod repo;
mod schedule;
mod statement;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rust_decimal::Decimal;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::model::{
    ApplyLoanRequest, Loan, LoanListQuery, LoanStatus, RejectLoanRequest, Transition,
    WriteOffRequest,
};
use self::repo::{ListFilter, NewLoan};
use crate::domain::credit_risk;
use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::domain::ledger;
use crate::domain::product_terms;
use crate::platform::auth::RequestTx;
use crate::platform::auth::{LoanApplicants, LoanReaders, Role, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{AppJson, AppPath, AppQuery, MaybeJson};
use crate::platform::pagination::{self, Page, PageQuery, PageRequest, TimeCursor};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(apply_for_loan, list_loans))
        .routes(routes!(get_loan))
        .routes(routes!(get_loan_by_number))
        .routes(routes!(schedule::get_loan_schedule))
        .routes(routes!(installments::list_installments))
        .routes(routes!(journal::get_loan_journal))
        .routes(routes!(statement::get_loan_statement))
        .routes(routes!(approve_loan))
        .routes(routes!(reject_loan))
        .routes(routes!(disburse_loan))
        .routes(routes!(cancel_loan))
        .routes(routes!(payoff::get_payoff_quote))
        .routes(routes!(write_off_loan))
        .routes(routes!(refund::refund_loan))
        .tagged("loans")
}

/// Apply for a loan. A customer applies for themself; staff apply for any customer and may date
/// the application (historical entries, within the backdating limit, never in the future). Amount and term are
/// checked against the product.
#[utoipa::path(
    post,
    path = "/v1/loans",
    request_body = ApplyLoanRequest,
    responses(
        (status = 201, description = "Applied", body = Loan, headers(("Location" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable
    )
)]
async fn apply_for_loan(
    State(state): State<AppState>,
    mut tx: RequestTx<LoanApplicants>,
    AppJson(request): AppJson<ApplyLoanRequest>,
) -> Result<Response, ApiError> {
    let caller = tx.caller().clone();
    let customer_id = match caller.customer_id {
        // A customer naming someone else is told what it would be told of a stranger's loan.
        Some(own) if request.customer_id.is_some_and(|id| id != own) => {
            return Err(ApiError::NotFound)
        }
        Some(own) => own,
        None => request
            .customer_id
            .ok_or_else(|| ApiError::invalid_field("customer_id", "is required"))?,
    };
    let now = Utc::now();
    let application_date = match request.application_date {
        None => now,
        Some(_) if caller.role == Role::Customer => {
            return Err(ApiError::invalid_field(
                "application_date",
                "only staff may date an application",
            ))
        }
        Some(date) => {
            state.date_window.check("application_date", date, now)?;
            // A clock a little ahead is not a loan from the future.
            date.min(now)
        }
    };
    let product = product_terms::find(&mut tx, &request.product_code)
        .await?
        .ok_or_else(|| ApiError::invalid_field("product_code", "no such product"))?;
    let today = ledger::business_date(&mut tx, application_date).await?;
    let term = product.check_application(
        request.amount,
        product_terms::TermRequest {
            term_months: request.term_months,
            term_periods: request.term_periods,
            first_repayment_date: request.first_repayment_date,
            today,
        },
    )?;
    let credit_score =
        repo::credit_score(&mut tx, customer_id)
            .await?
            .ok_or_else(|| match caller.role {
                Role::Customer => ApiError::NotFound,
                _ => ApiError::invalid_field("customer_id", "no such customer"),
            })?;
    state.partitions.ensure_loans(application_date).await?;

    let collateral = request.collateral_info.as_ref();
    let pledge = collateral.map(|c| credit_risk::Pledge {
        kind: &c.kind,
        value: c.value,
    });
    let risk = credit_risk::assess(credit_score, request.amount.amount(), pledge, now);
    let new = NewLoan {
        customer_id,
        product_code: &product.product_code,
        product_type: &product.product_type,
        amount: request.amount.amount(),
        interest_rate: product.annual_interest_rate,
        term_months: term.months,
        term_periods: term.periods,
        first_repayment_date: request.first_repayment_date,
        application_date,
        collateral,
        risk: &risk,
    };
    let loan = repo::insert(&mut tx, &new).await?;
    tx.commit().await?;
    let location = HeaderValue::from_str(&format!("/v1/loans/{}", loan.loan_id))
        .unwrap_or(HeaderValue::from_static("/v1/loans"));
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(loan),
    )
        .into_response())
}

/// One loan. Another customer's loan is 404, like one that does not exist.
#[utoipa::path(
    get,
    path = "/v1/loans/{id}",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "The loan", body = Loan), responses::Common, responses::NotFound)
)]
async fn get_loan(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Loan>, ApiError> {
    let loan = repo::find(&mut tx, id).await?;
    tx.answer_found(loan).await
}

/// One loan, by its number.
#[utoipa::path(
    get,
    path = "/v1/loans/by-number/{loan_number}",
    params(("loan_number" = String, Path, description = "Loan number, like LN202600000001")),
    responses((status = 200, description = "The loan", body = Loan), responses::Common, responses::NotFound)
)]
async fn get_loan_by_number(
    mut tx: RequestTx<LoanReaders>,
    AppPath(number): AppPath<String>,
) -> Result<Json<Loan>, ApiError> {
    let loan = repo::find_by_number(&mut tx, &number).await?;
    tx.answer_found(loan).await
}

/// Loans, newest application first. Customers see only their own.
#[utoipa::path(
    get,
    path = "/v1/loans",
    params(LoanListQuery, PageQuery),
    responses((status = 200, description = "One page", body = Page<Loan>), responses::Common)
)]
async fn list_loans(
    mut tx: RequestTx<LoanReaders>,
    AppQuery(query): AppQuery<LoanListQuery>,
    page: PageRequest<TimeCursor>,
) -> Result<Json<Page<Loan>>, ApiError> {
    let (from, before) = pagination::day_range(query.from, query.to)?;
    let filter = ListFilter {
        customer_id: query.customer_id,
        status: query.status,
        product_type: query.product_type.as_deref(),
        from,
        before,
        after: page.after,
        fetch: page.fetch(),
    };
    let rows = repo::list(&mut tx, &filter).await?;
    tx.answer(page.page(rows, |l| TimeCursor {
        at: l.application_date,
        id: l.loan_id,
    })?)
    .await
}

/// Runs one lifecycle move and explains a refusal: 404 when the caller cannot see the loan, 409
/// when its status (or its customer's KYC) does not allow the move.
///
/// The move applies only if the loan is still in the status read here: of two racing moves
/// (an approve and a cancel, say) exactly one succeeds and the other is 409, even where the
/// lifecycle would allow both one after the other.
async fn move_loan<A>(
    state: &AppState,
    mut tx: RequestTx<A>,
    id: Uuid,
    transition: Transition,
    reason: Option<&str>,
) -> Result<Json<Loan>, ApiError> {
    let role = tx.caller().role;
    let loan = transition_loan(state, &mut tx, role, id, transition, reason, None).await?;
    tx.answer(loan).await
}

/// Moves loan `id` by `transition` in the caller's transaction; with `version`, only if the loan
/// is still at it (a checker approving what the maker saw).
async fn transition_loan(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    role: Role,
    id: Uuid,
    transition: Transition,
    reason: Option<&str>,
    version: Option<&Proposal>,
) -> Result<Loan, ApiError> {
    let now = Utc::now();
    if transition == Transition::Disburse {
        state.partitions.ensure_payments(now).await?;
    }
    let current = repo::find(tx, id).await?.ok_or(ApiError::NotFound)?;
    if let Some(proposal) = version {
        four_eyes::check_version(proposal, current.version)?;
    }
    let illegal = |status: &str| {
        ApiError::conflict(format!(
            "cannot {} a loan that is {status}",
            transition.verb()
        ))
    };
    let observed = Some(current.status)
        .filter(|s| transition.allowed_from(role).contains(s))
        .ok_or_else(|| illegal(current.status.as_str()))?;
    let key = repo::LoanKey {
        loan_id: current.loan_id,
        application_date: current.application_date,
    };
    let Some(loan) = repo::transition(tx, key, transition, observed, reason).await? else {
        let now_status = repo::find(tx, id)
            .await?
            .map_or("gone", |l| l.status.as_str());
        return Err(
            if now_status == current.status.as_str() && transition == Transition::Approve {
                ApiError::conflict("the customer's KYC is not approved")
            } else {
                illegal(now_status)
            },
        );
    };
    if transition == Transition::Approve {
        ledger::check_contract_fits(tx, loan.loan_id, loan.loan_amount.0, loan.term_months).await?;
    }
    if transition == Transition::Disburse {
        let at = loan.disbursement_date.unwrap_or(now);
        let disbursal = ledger::Disbursal {
            loan_id: loan.loan_id,
            application_date: loan.application_date,
            customer_id: loan.customer_id,
            loan_number: &loan.loan_number,
            amount: loan.loan_amount.0,
        };
        ledger::disburse(tx, &disbursal, at).await?;
    }
    repo::find(tx, id).await?.ok_or(ApiError::NotFound)
}

/// When `action` needs a checker for this loan, the proposal to answer with instead of acting:
/// for an approval, only above the maker's limit.
async fn proposal_for<A>(
    state: &AppState,
    tx: &mut RequestTx<A>,
    id: Uuid,
    action: Action,
    from: &[LoanStatus],
) -> Result<Option<Proposal>, ApiError> {
    if !four_eyes::needs_checker(&state.four_eyes, action) {
        return Ok(None);
    }
    let loan = repo::find(tx, id).await?.ok_or(ApiError::NotFound)?;
    if !from.contains(&loan.status) {
        // Let the action itself refuse it, as it would without a checker.
        return Ok(None);
    }
    let amount = match action {
        Action::WriteOff => {
            loan.principal_outstanding.map_or(Decimal::ZERO, |a| a.0)
                + loan.interest_outstanding.map_or(Decimal::ZERO, |a| a.0)
                + loan.fees_outstanding.0
                + loan.penalties_outstanding.0
        }
        _ => loan.loan_amount.0,
    };
    if action == Action::LoanApproval {
        let caller = tx.caller().clone();
        let limit = four_eyes::approval_limit(tx, &caller, &state.four_eyes).await?;
        if limit.is_none_or(|limit| amount <= limit) {
            return Ok(None);
        }
    }
    let proposal = four_eyes::propose(
        tx,
        Proposed {
            action,
            object_id: id.to_string(),
            object_version: loan.version,
            amount: Some(amount),
            customer_id: Some(loan.customer_id),
            payload: serde_json::json!({}),
        },
    )
    .await?;
    Ok(Some(proposal))
}

/// Approving an application above the maker's limit, once a checker approved it.
pub fn execute_approval<'a>(
    conn: &'a mut sqlx::PgConnection,
    state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(checked_transition(
        conn,
        state,
        proposal,
        Transition::Approve,
    ))
}

/// Paying a loan out, once a checker approved it.
pub fn execute_disbursement<'a>(
    conn: &'a mut sqlx::PgConnection,
    state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(checked_transition(
        conn,
        state,
        proposal,
        Transition::Disburse,
    ))
}

async fn checked_transition(
    conn: &mut sqlx::PgConnection,
    state: &AppState,
    proposal: &Proposal,
    transition: Transition,
) -> Result<serde_json::Value, ApiError> {
    let id = proposal.object_uuid()?;
    let loan = transition_loan(
        state,
        conn,
        Role::Staff,
        id,
        transition,
        None,
        Some(proposal),
    )
    .await?;
    four_eyes::outcome(loan)
}

/// Writing a loan off, once a checker approved it.
pub fn execute_write_off<'a>(
    conn: &'a mut sqlx::PgConnection,
    _state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        let id = proposal.object_uuid()?;
        let loan = write_off(conn, id, Some(proposal)).await?;
        four_eyes::outcome(loan)
    })
}

async fn write_off(
    conn: &mut sqlx::PgConnection,
    id: Uuid,
    proposal: Option<&Proposal>,
) -> Result<Loan, ApiError> {
    let locked = ledger::lock_loan(conn, id, Utc::now()).await?;
    if let Some(proposal) = proposal {
        let current = repo::find(conn, id).await?.ok_or(ApiError::NotFound)?;
        four_eyes::check_version(proposal, current.version)?;
    }
    ledger::write_off(conn, &locked).await?;
    repo::find(conn, id).await?.ok_or(ApiError::NotFound)
}

/// Approve an application (staff). Needs the customer's KYC approved.
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/approve",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses(
        (status = 200, description = "Approved", body = Loan),
        (status = 202, description = "Above the caller's approval limit (with LOAN_APPROVAL in \
         FOUR_EYES_ACTIONS): proposed, it takes effect when a checker approves it", body = Proposal),
        responses::Common, responses::NotFound, responses::Conflict
    )
)]
async fn approve_loan(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let applied = [LoanStatus::Applied];
    if let Some(proposal) =
        proposal_for(&state, &mut tx, id, Action::LoanApproval, &applied).await?
    {
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    Ok(move_loan(&state, tx, id, Transition::Approve, None)
        .await?
        .into_response())
}

/// Reject an application (staff), with a reason.
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/reject",
    params(("id" = Uuid, Path, description = "Loan id")),
    request_body = RejectLoanRequest,
    responses(
        (status = 200, description = "Rejected", body = Loan),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn reject_loan(
    State(state): State<AppState>,
    tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<RejectLoanRequest>,
) -> Result<Json<Loan>, ApiError> {
    let reason = request.reason()?;
    move_loan(&state, tx, id, Transition::Reject, Some(reason)).await
}

/// Pay an approved loan out (staff): the loan becomes DISBURSED, its maturity date is set, and
/// the DISBURSEMENT payment is written in the same transaction.
/// After a 5xx, a timeout or no answer, sending it again is safe: the loan is paid out at most
/// once, and if the first took effect the answer is 409 naming the loan's status now
/// (`GET /v1/loans/{id}` shows it).
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/disburse",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses(
        (status = 200, description = "Disbursed", body = Loan),
        (status = 202, description = "With DISBURSEMENT in FOUR_EYES_ACTIONS: proposed, it takes \
         effect when a checker approves it", body = Proposal),
        responses::Common, responses::NotFound, responses::Conflict
    )
)]
async fn disburse_loan(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let approved = [LoanStatus::Approved];
    if let Some(proposal) =
        proposal_for(&state, &mut tx, id, Action::Disbursement, &approved).await?
    {
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    Ok(move_loan(&state, tx, id, Transition::Disburse, None)
        .await?
        .into_response())
}

/// Withdraw a loan before it is paid out: a customer withdraws their application; staff may
/// also cancel an approved loan.
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/cancel",
    params(("id" = Uuid, Path, description = "Loan id")),
    responses((status = 200, description = "Cancelled", body = Loan), responses::Common, responses::NotFound, responses::Conflict)
)]
async fn cancel_loan(
    State(state): State<AppState>,
    tx: RequestTx<LoanApplicants>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Loan>, ApiError> {
    move_loan(&state, tx, id, Transition::Cancel, None).await
}

/// Write off a DEFAULTED loan (staff): everything it owes moves to the write-off expense and it
/// becomes WRITTEN_OFF. Money received later is recorded as a repayment: a recovery.
/// After a 5xx, a timeout or no answer, sending it again is safe: the loan is written off at
/// most once, and if the first took effect the answer is 409 naming the loan's status now
/// (`GET /v1/loans/{id}` shows it).
#[utoipa::path(
    post,
    path = "/v1/loans/{id}/write-off",
    params(("id" = Uuid, Path, description = "Loan id")),
    request_body(content = Option<WriteOffRequest>),
    responses(
        (status = 200, description = "Written off", body = Loan),
        (status = 202, description = "With WRITE_OFF in FOUR_EYES_ACTIONS (the default): \
         proposed, it takes effect when a checker approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn write_off_loan(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    MaybeJson(_request): MaybeJson<WriteOffRequest>,
) -> Result<Response, ApiError> {
    let defaulted = [LoanStatus::Defaulted];
    if let Some(proposal) = proposal_for(&state, &mut tx, id, Action::WriteOff, &defaulted).await? {
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let loan = write_off(&mut tx, id, None).await?;
    Ok(tx.answer(loan).await?.into_response())
}
