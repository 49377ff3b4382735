//! `/v1/staff`: the staff directory, which administrators keep. An entry says where a staff
//! member works when their token names no branch (`OIDC_BRANCH_CLAIM`), and the largest loan
//! they may approve alone.

mod repo;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::domain::money::{Amount, Money};
use crate::platform::auth::{is_valid_subject, AdminOnly, RequestTx};
use crate::platform::conditional::{etag, expected_version};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{AppJson, AppPath};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_staff, create_staff_member))
        .routes(routes!(get_staff_member, update_staff_member))
        .tagged("staff")
}

/// One staff member: a login (issuer and subject) and the office they work at.
#[derive(Debug, Serialize, ToSchema)]
pub struct StaffMember {
    pub staff_id: Uuid,
    /// The token issuer: the provider's `iss`, or `local` for `JWT_SECRET` tokens.
    pub issuer: String,
    /// The token's `sub`.
    pub subject: String,
    pub display_name: Option<String>,
    /// The office's code.
    #[schema(example = "HN01")]
    pub office: String,
    /// The largest loan this member may approve alone; null: their role's default.
    pub approval_limit: Option<Amount>,
    /// An inactive entry names no office: its member sees no customer.
    pub active: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StaffList {
    pub data: Vec<StaffMember>,
}

/// `POST /v1/staff`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateStaffMemberRequest {
    pub issuer: String,
    pub subject: String,
    pub display_name: Option<String>,
    #[schema(example = "HN01")]
    pub office: String,
    pub approval_limit: Option<Money>,
}

/// `PATCH /v1/staff/{staff_id}`: the fields to change. `approval_limit: null` returns the member
/// to their role's default.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateStaffMemberRequest {
    pub display_name: Option<String>,
    pub office: Option<String>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<String>)]
    pub approval_limit: Option<Option<Money>>,
    pub active: Option<bool>,
}

fn with_etag(status: StatusCode, member: StaffMember) -> Response {
    let tag = etag(member.version);
    (status, [(header::ETAG, tag)], Json(member)).into_response()
}

fn check_display_name(name: Option<&str>, errors: &mut Vec<FieldError>) {
    if name.is_some_and(|n| n.chars().count() > 200) {
        errors.push(FieldError::new(
            "display_name",
            "must be at most 200 characters",
        ));
    }
}

fn unknown_office() -> ApiError {
    ApiError::validation(vec![FieldError::new("office", "no such office")])
}

/// The directory (administrators).
#[utoipa::path(
    get,
    path = "/v1/staff",
    responses((status = 200, description = "Every entry, by issuer and subject", body = StaffList),
              responses::Common)
)]
async fn list_staff(mut tx: RequestTx<AdminOnly>) -> Result<Json<StaffList>, ApiError> {
    let data = repo::list(&mut tx).await?;
    tx.answer(StaffList { data }).await
}

/// One entry (administrators).
#[utoipa::path(
    get,
    path = "/v1/staff/{staff_id}",
    params(("staff_id" = Uuid, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The entry", body = StaffMember, headers(("ETag" = String))),
        responses::Common, responses::NotFound
    )
)]
async fn get_staff_member(
    mut tx: RequestTx<AdminOnly>,
    AppPath(staff_id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let member = repo::find(&mut tx, staff_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, member))
}

/// Add a staff member to an office (administrators). One entry per login.
#[utoipa::path(
    post,
    path = "/v1/staff",
    request_body = CreateStaffMemberRequest,
    responses(
        (status = 201, description = "Created", body = StaffMember, headers(("ETag" = String))),
        (status = 202, description = "With STAFF_CHANGE in FOUR_EYES_ACTIONS: checked, then \
         proposed; it takes effect when another administrator approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn create_staff_member(
    State(state): State<AppState>,
    mut tx: RequestTx<AdminOnly>,
    AppJson(request): AppJson<CreateStaffMemberRequest>,
) -> Result<Response, ApiError> {
    let staff_id = Uuid::now_v7();
    if four_eyes::needs_checker(&state.four_eyes, Action::StaffChange) {
        let mut trial = tx.begin().await?;
        create(&mut trial, staff_id, &request).await?;
        trial.rollback().await?;
        let proposal = propose_change(&mut tx, staff_id, 0, json!({"create": request})).await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let member = create(&mut tx, staff_id, &request).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, member))
}

async fn create(
    tx: &mut PgConnection,
    staff_id: Uuid,
    request: &CreateStaffMemberRequest,
) -> Result<StaffMember, ApiError> {
    let mut errors = Vec::new();
    let issuer = request.issuer.trim();
    if issuer.is_empty() || issuer.len() > 500 || issuer.contains('|') {
        errors.push(FieldError::new(
            "issuer",
            "must be a token issuer (1 to 500 characters, no |)",
        ));
    }
    if !is_valid_subject(&request.subject) {
        errors.push(FieldError::new(
            "subject",
            "must be 1 to 255 printable characters without spaces or quotes",
        ));
    }
    check_display_name(request.display_name.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    repo::insert(
        tx,
        staff_id,
        issuer,
        &request.subject,
        request.display_name.as_deref(),
        &request.office,
        request.approval_limit.map(Money::amount),
    )
    .await
    .on_constraint("staff_members_principal_key", || ApiError::Conflict {
        detail: "this login is in the directory already".into(),
        errors: vec![FieldError::new("subject", "already listed")],
    })?
    .ok_or_else(unknown_office)
}

/// A directory change for a checker to approve (with STAFF_CHANGE in FOUR_EYES_ACTIONS).
async fn propose_change(
    tx: &mut PgConnection,
    staff_id: Uuid,
    version: i32,
    payload: serde_json::Value,
) -> Result<Proposal, ApiError> {
    four_eyes::propose(
        tx,
        Proposed {
            action: Action::StaffChange,
            object_id: staff_id.to_string(),
            object_version: version,
            amount: None,
            customer_id: None,
            payload,
        },
    )
    .await
}

/// A directory entry added or changed, once a checker approved it.
pub fn execute_change<'a>(
    conn: &'a mut PgConnection,
    _state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        let staff_id = proposal.object_uuid()?;
        let created = four_eyes::requested::<CreateStaffMemberRequest>(proposal, "create")?;
        if let Some(request) = created {
            four_eyes::outcome(create(conn, staff_id, &request).await?)
        } else {
            let request: UpdateStaffMemberRequest =
                four_eyes::requested(proposal, "update")?.unwrap_or_default();
            let current = repo::find(conn, staff_id)
                .await?
                .ok_or(ApiError::NotFound)?;
            four_eyes::check_version(proposal, current.version)?;
            four_eyes::outcome(update(conn, current, request).await?)
        }
    })
}

/// Move a staff member to another office, change their limit or deactivate them
/// (administrators). Send `If-Match` with the `ETag` you read.
#[utoipa::path(
    patch,
    path = "/v1/staff/{staff_id}",
    params(
        ("staff_id" = Uuid, Path, description = "The entry's id"),
        ("If-Match" = String, Header, description = "The ETag last read, or *")
    ),
    request_body = UpdateStaffMemberRequest,
    responses(
        (status = 200, description = "Updated", body = StaffMember, headers(("ETag" = String))),
        (status = 202, description = "With STAFF_CHANGE in FOUR_EYES_ACTIONS: checked, then \
         proposed; it takes effect when another administrator approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable,
        responses::Conflict, responses::Conditional
    )
)]
async fn update_staff_member(
    State(state): State<AppState>,
    mut tx: RequestTx<AdminOnly>,
    AppPath(staff_id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(request): AppJson<UpdateStaffMemberRequest>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers)?;
    let current = repo::find(&mut tx, staff_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    if expected.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed);
    }
    if four_eyes::needs_checker(&state.four_eyes, Action::StaffChange) {
        let version = current.version;
        let mut trial = tx.begin().await?;
        update(&mut trial, current, request.clone()).await?;
        trial.rollback().await?;
        let proposal =
            propose_change(&mut tx, staff_id, version, json!({"update": request})).await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let member = update(&mut tx, current, request).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, member))
}

async fn update(
    tx: &mut PgConnection,
    current: StaffMember,
    request: UpdateStaffMemberRequest,
) -> Result<StaffMember, ApiError> {
    let mut errors = Vec::new();
    check_display_name(request.display_name.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let limit: Option<Decimal> = match request.approval_limit {
        Some(limit) => limit.map(Money::amount),
        None => current.approval_limit.map(|a| a.0),
    };
    let staff_id = current.staff_id;
    let member = repo::update(
        tx,
        staff_id,
        current.version,
        request
            .display_name
            .as_deref()
            .or(current.display_name.as_deref()),
        request.office.as_deref().unwrap_or(&current.office),
        limit,
        request.active.unwrap_or(current.active),
    )
    .await?;
    let Some(member) = member else {
        // The office is unknown, or the entry changed since it was read.
        return match repo::find(tx, staff_id).await? {
            Some(now) if now.version != current.version => Err(ApiError::PreconditionFailed),
            _ => Err(unknown_office()),
        };
    };
    Ok(member)
}
