//! `/v1/customers/{id}/identities`: staff propose a link between a customer and the identity
//! provider's subject the customer signs in as (for providers whose tokens carry no customer
//! claim); the login proves it is the customer's before the link acts.

mod repo;

use std::sync::Arc;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::platform::auth::{is_valid_subject, Authenticator, RequestTx, StaffOnly};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{AppJson, AppPath};
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_identities, link_identity))
        .routes(routes!(unlink_identity))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkIdentityRequest {
    /// The provider's issuer, exactly as the service is configured with it (`OIDC_ISSUER`).
    #[schema(example = "https://idp.example/realms/lakehouse")]
    pub issuer: String,
    /// The `sub` of the customer's tokens at that provider.
    #[schema(example = "f3c1e7a2-5b8e-4d6a-9c0f-2a7b1d4e8c33")]
    pub subject: String,
}

#[derive(Debug, Serialize, sqlx::FromRow, ToSchema)]
pub struct IdentityLink {
    pub link_id: Uuid,
    pub issuer: String,
    pub subject: String,
    pub customer_id: Uuid,
    /// PENDING until the login proves it is the customer's, then ACTIVE.
    #[schema(example = "PENDING")]
    pub status: String,
    /// How it was proved: CODE, VERIFIED_EMAIL or VERIFIED_PHONE (null while pending, and for
    /// links made before proofs).
    pub proof: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The principal of the staff member who proposed the link.
    pub created_by: String,
    pub activated_at: Option<DateTime<Utc>>,
    /// Until when the code proves the link (while pending).
    pub code_expires_at: Option<DateTime<Utc>>,
}

/// A proposed link and the code that proves it, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProposedIdentityLink {
    #[serde(flatten)]
    pub link: IdentityLink,
    /// Give it to the customer in person: their app sends it once, in the `Identity-Link-Code`
    /// header of a request made with the new login, within ten minutes. Never shown again.
    /// Null when identity links need a checker (IDENTITY_LINK in FOUR_EYES_ACTIONS): a code
    /// the proposing teller holds would let them activate a link alone.
    #[schema(example = "4820193756")]
    pub code: Option<String>,
    /// With IDENTITY_LINK in FOUR_EYES_ACTIONS (the default): the proposal another staff member
    /// may approve instead of the customer proving the login with the code.
    pub proposal: Option<Proposal>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityLinkList {
    pub data: Vec<IdentityLink>,
}

/// The provider identities linked to a customer (staff).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/identities",
    params(("customer_id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer's identity links", body = IdentityLinkList),
        responses::Common, responses::NotFound
    )
)]
async fn list_identities(
    mut tx: RequestTx<StaffOnly>,
    AppPath(customer_id): AppPath<Uuid>,
) -> Result<Json<IdentityLinkList>, ApiError> {
    let data = repo::list(&mut tx, customer_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.answer(IdentityLinkList { data }).await
}

/// Propose linking a customer to the subject they sign in as at the identity provider (staff).
/// The link is PENDING: that subject's tokens act for the customer only once the login proves
/// it is theirs, by a verified `email` or `phone_number` claim that matches the customer's
/// record, or once it is confirmed: with IDENTITY_LINK in FOUR_EYES_ACTIONS (the default) by
/// another staff member approving the `proposal` returned here; without it, by the login sending
/// the `code` returned here (ten minutes, single use) in the `Identity-Link-Code` header. Proposal, activation and unlink are on the audit record; activation and
/// unlink are events addressed to the customer's contact.
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/identities",
    params(("customer_id" = Uuid, Path, description = "Customer id")),
    request_body = LinkIdentityRequest,
    responses(
        (status = 201, description = "Proposed", body = ProposedIdentityLink),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn link_identity(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(customer_id): AppPath<Uuid>,
    AppJson(request): AppJson<LinkIdentityRequest>,
) -> Result<(StatusCode, Json<ProposedIdentityLink>), ApiError> {
    let auth = &state.auth;
    let mut errors = Vec::new();
    if auth.provider_issuer() != Some(request.issuer.as_str()) {
        errors.push(FieldError::new(
            "issuer",
            "is not the identity provider this service accepts tokens from (OIDC_ISSUER)",
        ));
    }
    if !is_valid_subject(&request.subject) {
        errors.push(FieldError::new(
            "subject",
            "must be 1 to 255 printable ASCII characters without spaces, quotes or backslashes",
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the identity cannot be linked".into(),
            errors,
        });
    }
    let checked = four_eyes::needs_checker(&state.four_eyes, Action::IdentityLink);
    let code = (!checked).then(link_code);
    let code_hash = code.as_ref().map(|c| Sha256::digest(c.as_bytes()).to_vec());
    let link = repo::insert(
        &mut tx,
        customer_id,
        &request.issuer,
        &request.subject,
        code_hash.as_deref(),
    )
    .await
    .on_constraint("identity_links_one_customer_per_subject", || {
        ApiError::Conflict {
            detail: "this subject is already linked to a customer".into(),
            errors: vec![FieldError::new("subject", "already linked")],
        }
    })?
    .ok_or(ApiError::NotFound)?;
    let proposal = if checked {
        let proposed = Proposed {
            action: Action::IdentityLink,
            object_id: link.link_id.to_string(),
            object_version: 0,
            amount: None,
            customer_id: Some(link.customer_id),
            payload: serde_json::json!({"issuer": link.issuer, "subject": link.subject}),
        };
        Some(four_eyes::propose(&mut tx, proposed).await?)
    } else {
        None
    };
    tx.commit().await?;
    auth.forget_link(&link.issuer, &link.subject);
    Ok((
        StatusCode::CREATED,
        Json(ProposedIdentityLink {
            link,
            code,
            proposal,
        }),
    ))
}

/// A pending link made active, once a checker approved it: the database allows it only
/// through a proposal this checker approved, whose maker was someone else.
pub fn execute_link<'a>(
    conn: &'a mut sqlx::PgConnection,
    state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        let link = repo::activate_checked(conn, proposal.proposal_id)
            .await?
            .ok_or_else(|| {
                ApiError::conflict("the link is no longer pending: it was proved or removed")
            })?;
        // A refusal this instance remembers ends now; other instances' within the link cache's
        // time.
        state.auth.forget_link(&link.issuer, &link.subject);
        four_eyes::outcome(link)
    })
}

/// Ten random digits.
fn link_code() -> String {
    let mut bytes = [0_u8; 8];
    OsRng.fill_bytes(&mut bytes);
    format!("{:010}", u64::from_le_bytes(bytes) % 10_000_000_000)
}

/// Remove an identity link (staff). Tokens of that subject stop acting for the customer at
/// once on this instance, and within `OIDC_LINK_CACHE_SECS` on others, and its open event
/// streams end within that time too. The link stays on the audit record.
#[utoipa::path(
    delete,
    path = "/v1/customers/{customer_id}/identities/{link_id}",
    params(
        ("customer_id" = Uuid, Path, description = "Customer id"),
        ("link_id" = Uuid, Path, description = "Identity link id")
    ),
    responses(
        (status = 204, description = "Unlinked"),
        responses::Common, responses::NotFound
    )
)]
async fn unlink_identity(
    State(auth): State<Arc<Authenticator>>,
    mut tx: RequestTx<StaffOnly>,
    AppPath((customer_id, link_id)): AppPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let link = repo::delete(&mut tx, customer_id, link_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    auth.forget_link(&link.issuer, &link.subject);
    Ok(StatusCode::NO_CONTENT)
}
