//! `/v1/customers/{id}/identities`: staff link a customer to the identity provider's subject
//! the customer signs in as, for providers whose tokens carry no customer claim.

mod repo;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

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
    pub created_at: DateTime<Utc>,
    /// The principal of the staff member who made the link.
    pub created_by: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IdentityLinkList {
    pub data: Vec<IdentityLink>,
}

/// The provider identities linked to a customer (staff).
#[utoipa::path(
    get,
    path = "/v1/customers/{customer_id}/identities",
    tag = "customers",
    operation_id = "list_identities",
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
    tx.commit().await?;
    Ok(Json(IdentityLinkList { data }))
}

/// Link a customer to the subject they sign in as at the identity provider (staff). From then
/// on, that subject's customer tokens act for this customer (within `OIDC_LINK_CACHE_SECS` on
/// other instances).
#[utoipa::path(
    post,
    path = "/v1/customers/{customer_id}/identities",
    tag = "customers",
    operation_id = "link_identity",
    params(("customer_id" = Uuid, Path, description = "Customer id")),
    request_body = LinkIdentityRequest,
    responses(
        (status = 201, description = "Linked", body = IdentityLink),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn link_identity(
    State(auth): State<Arc<Authenticator>>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(customer_id): AppPath<Uuid>,
    AppJson(request): AppJson<LinkIdentityRequest>,
) -> Result<(StatusCode, Json<IdentityLink>), ApiError> {
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
    let link = repo::insert(&mut tx, customer_id, &request.issuer, &request.subject)
        .await
        .on_constraint("identity_links_customer_id_fkey", || ApiError::NotFound)
        .on_constraint("identity_links_one_customer_per_subject", || {
            ApiError::Conflict {
                detail: "this subject is already linked to a customer".into(),
                errors: vec![FieldError::new("subject", "already linked")],
            }
        })?;
    tx.commit().await?;
    auth.forget_link(&link.issuer, &link.subject);
    Ok((StatusCode::CREATED, Json(link)))
}

/// Remove an identity link (staff). Tokens of that subject stop acting for the customer at
/// once on this instance, and within `OIDC_LINK_CACHE_SECS` on others.
#[utoipa::path(
    delete,
    path = "/v1/customers/{customer_id}/identities/{link_id}",
    tag = "customers",
    operation_id = "unlink_identity",
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
