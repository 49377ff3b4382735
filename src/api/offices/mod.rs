//! `/v1/offices`: the office hierarchy (head office → regions → branches) that customers belong
//! to and staff work in. Staff, analysts and administrators read it; administrators add offices.

mod repo;

use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::platform::auth::{is_office_code, AdminOnly, RequestTx, RiskViewers};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::AppJson;
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_offices, create_office))
        .tagged("offices")
}

/// HEAD_OFFICE (one, the root), REGION or BRANCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, sqlx::Type)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[sqlx(type_name = "text", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OfficeKind {
    HeadOffice,
    Region,
    Branch,
}

/// An office. A staff member working at one sees the customers of it and of every office below.
#[derive(Debug, Serialize, ToSchema)]
pub struct Office {
    #[schema(example = "HN01")]
    pub code: String,
    pub name: String,
    pub kind: OfficeKind,
    /// The office above (null for the head office).
    pub parent: Option<String>,
    /// The codes from the head office down to this office.
    pub path: Vec<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OfficeList {
    pub data: Vec<Office>,
}

/// `POST /v1/offices`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOfficeRequest {
    /// Upper-case letters, digits, `_` and `-`, at most 32.
    #[schema(example = "HN02")]
    pub code: String,
    pub name: String,
    /// REGION or BRANCH.
    pub kind: OfficeKind,
    /// The office above: the head office or a region.
    #[schema(example = "NORTH")]
    pub parent: String,
}

/// Every office, the head office first, each after the one above it.
#[utoipa::path(
    get,
    path = "/v1/offices",
    responses((status = 200, description = "The office tree, in path order", body = OfficeList),
              responses::Common)
)]
async fn list_offices(mut tx: RequestTx<RiskViewers>) -> Result<Json<OfficeList>, ApiError> {
    let data = repo::list(&mut tx).await?;
    tx.answer(OfficeList { data }).await
}

/// Add a region or a branch (administrators). An office never moves once made: the rows of its
/// customers are stamped with it.
#[utoipa::path(
    post,
    path = "/v1/offices",
    request_body = CreateOfficeRequest,
    responses(
        (status = 201, description = "Created", body = Office),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn create_office(
    mut tx: RequestTx<AdminOnly>,
    AppJson(request): AppJson<CreateOfficeRequest>,
) -> Result<(StatusCode, Json<Office>), ApiError> {
    let mut errors = Vec::new();
    if !is_office_code(&request.code) {
        errors.push(FieldError::new(
            "code",
            "must be 1 to 32 upper-case letters, digits, _ or -, starting with a letter or digit",
        ));
    }
    let name = request.name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        errors.push(FieldError::new("name", "must be 1 to 200 characters"));
    }
    if request.kind == OfficeKind::HeadOffice {
        errors.push(FieldError::new("kind", "there is one head office already"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let parent = repo::find(&mut tx, &request.parent)
        .await?
        .ok_or_else(|| ApiError::validation(vec![FieldError::new("parent", "no such office")]))?;
    if parent.kind == OfficeKind::Branch {
        return Err(ApiError::validation(vec![FieldError::new(
            "parent",
            "a branch has no offices below it",
        )]));
    }
    let office = repo::insert(&mut tx, &request.code, name, request.kind, &parent)
        .await
        .on_constraint("offices_code_key", || ApiError::Conflict {
            detail: "an office with this code exists".into(),
            errors: vec![FieldError::new("code", "already taken")],
        })?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(office)))
}
