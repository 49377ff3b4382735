//! `/v1/proposals`: decisions waiting for a second person. A checker sees the proposals of
//! makers in their office or below it; approving one makes it take effect, in the same
//! transaction, as the action's own route would have.

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::four_eyes::{self, repo, Executors, Proposal, ProposalStatus};
use crate::platform::auth::{RequestTx, StaffOnly};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::{AppPath, AppQuery, MaybeJson};
use crate::platform::pagination::{IdCursor, Page, PageRequest};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router(executors: Executors) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_proposals))
        .routes(routes!(get_proposal))
        .routes(routes!(approve_proposal))
        .routes(routes!(reject_proposal))
        .layer(Extension(Arc::new(executors)))
        .tagged("proposals")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProposalListQuery {
    /// PENDING (the default: those not yet expired), APPROVED, REJECTED or EXPIRED.
    pub status: Option<ProposalStatus>,
}

/// `POST /v1/proposals/{id}/reject`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectProposalRequest {
    /// Why (at most 500 characters).
    pub reason: Option<String>,
}

/// Proposals the caller may decide, oldest first (staff, administrators).
#[utoipa::path(
    get,
    path = "/v1/proposals",
    params(ProposalListQuery, crate::platform::pagination::PageQuery),
    responses((status = 200, description = "One page", body = Page<Proposal>), responses::Common)
)]
async fn list_proposals(
    mut tx: RequestTx<StaffOnly>,
    AppQuery(query): AppQuery<ProposalListQuery>,
    page: PageRequest<IdCursor>,
) -> Result<Json<Page<Proposal>>, ApiError> {
    let status = query.status.unwrap_or(ProposalStatus::Pending);
    let rows = repo::list(&mut tx, status, page.after.map(|c| c.after), page.fetch()).await?;
    tx.answer(page.page(rows, |p| IdCursor {
        after: p.proposal_id,
    })?)
    .await
}

/// One proposal.
#[utoipa::path(
    get,
    path = "/v1/proposals/{id}",
    params(("id" = Uuid, Path, description = "Proposal id")),
    responses((status = 200, description = "The proposal", body = Proposal),
              responses::Common, responses::NotFound)
)]
async fn get_proposal(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Proposal>, ApiError> {
    let proposal = repo::find(&mut tx, id).await?;
    tx.answer_found(proposal).await
}

/// Approve a proposal: it takes effect now, as its maker asked, and `outcome` holds what that
/// returned. The checker must be another person than the maker (403), with an approval limit
/// that covers its amount (403). Its object must be as the maker saw it (409), and it must not
/// have expired (409). Approving an approved proposal again changes nothing and answers the
/// same.
#[utoipa::path(
    post,
    path = "/v1/proposals/{id}/approve",
    params(("id" = Uuid, Path, description = "Proposal id")),
    responses((status = 200, description = "Approved and in effect", body = Proposal),
              responses::Common, responses::NotFound, responses::Conflict,
              responses::Unprocessable)
)]
async fn approve_proposal(
    State(state): State<AppState>,
    Extension(executors): Extension<Arc<Executors>>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<Proposal>, ApiError> {
    let proposal = repo::lock(&mut tx, id).await?.ok_or(ApiError::NotFound)?;
    match proposal.status {
        ProposalStatus::Approved => return Ok(Json(proposal)),
        ProposalStatus::Pending => {}
        other => return Err(decided(other)),
    }
    if let Some(expired) = expire_if_due(&mut tx, &proposal).await? {
        tx.commit().await?;
        return Err(expired);
    }
    check_checker(&proposal, tx.caller())?;
    if let Some(amount) = proposal.amount {
        let caller = tx.caller().clone();
        let limit = four_eyes::approval_limit(&mut tx, &caller, &state.four_eyes).await?;
        if limit.is_some_and(|limit| amount.0 > limit) {
            return Err(ApiError::ForbiddenBecause(
                "your approval limit does not cover this amount".into(),
            ));
        }
    }
    let execute = executors.get(proposal.action)?;
    let approved = repo::decide(&mut tx, id, ProposalStatus::Approved, None).await?;
    let outcome = execute(&mut tx, &state, &approved).await?;
    let approved = repo::record_outcome(&mut tx, id, &outcome).await?;
    tx.answer(approved).await
}

/// Reject a proposal: it never takes effect. The maker may withdraw their own this way; anyone
/// else who could approve it may reject it. Rejecting a rejected proposal again changes nothing.
#[utoipa::path(
    post,
    path = "/v1/proposals/{id}/reject",
    params(("id" = Uuid, Path, description = "Proposal id")),
    request_body(content = Option<RejectProposalRequest>),
    responses((status = 200, description = "Rejected", body = Proposal),
              responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
              responses::Unprocessable)
)]
async fn reject_proposal(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    MaybeJson(body): MaybeJson<RejectProposalRequest>,
) -> Result<Json<Proposal>, ApiError> {
    let reason = body.and_then(|b| b.reason);
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(ApiError::invalid_field(
            "reason",
            "must be at most 500 characters",
        ));
    }
    let proposal = repo::lock(&mut tx, id).await?.ok_or(ApiError::NotFound)?;
    match proposal.status {
        ProposalStatus::Rejected => return Ok(Json(proposal)),
        ProposalStatus::Pending => {}
        other => return Err(decided(other)),
    }
    if let Some(expired) = expire_if_due(&mut tx, &proposal).await? {
        tx.commit().await?;
        return Err(expired);
    }
    let rejected = repo::decide(&mut tx, id, ProposalStatus::Rejected, reason.as_deref()).await?;
    tx.answer(rejected).await
}

fn decided(status: ProposalStatus) -> ApiError {
    let word = match status {
        ProposalStatus::Approved => "approved",
        ProposalStatus::Rejected => "rejected",
        ProposalStatus::Expired => "expired",
        ProposalStatus::Pending => "pending",
    };
    ApiError::conflict(format!("the proposal was {word} already"))
}

/// Marks a proposal past its seven days EXPIRED (in the caller's transaction, which the caller
/// commits) and returns the refusal to answer with.
async fn expire_if_due(
    tx: &mut sqlx::PgConnection,
    proposal: &Proposal,
) -> Result<Option<ApiError>, ApiError> {
    if proposal.expires_at > Utc::now() {
        return Ok(None);
    }
    repo::decide(tx, proposal.proposal_id, ProposalStatus::Expired, None).await?;
    Ok(Some(ApiError::conflict(
        "the proposal expired: it was not approved within seven days",
    )))
}

/// The maker never checks their own proposal, whatever token they use.
fn check_checker(
    proposal: &Proposal,
    caller: &crate::platform::auth::Caller,
) -> Result<(), ApiError> {
    if caller.person() == proposal.maker_subject {
        return Err(ApiError::ForbiddenBecause(
            "the maker of a proposal cannot approve it: another person must".into(),
        ));
    }
    Ok(())
}
