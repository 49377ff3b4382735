//! `/v1/admin/lake-exports`: administrators ask for an export of the lake and follow it. The
//! export runs in `lakehouse-export --follow` (the owner's login, docs/lake.md), which takes
//! every pending request into its next run.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use crate::domain::jobs::lake_export::{self, Cursor, LakeExportRequest};
use crate::platform::auth::{AdminOnly, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppPath;
use crate::platform::pagination::{Page, PageQuery, PageRequest};
use crate::platform::state::AppState;

/// Ask for an export of the lake (admin). One request waits at a time: asking while one waits
/// answers 200 with it; a new one is 202. `lakehouse-export --follow` takes it within its poll
/// interval; its status is then the run's.
#[utoipa::path(
    post,
    path = "/v1/admin/lake-exports",
    responses(
        (status = 202, description = "Asked for", body = LakeExportRequest, headers(("Location" = String))),
        (status = 200, description = "Already asked for, and still waiting", body = LakeExportRequest, headers(("Location" = String))),
        responses::Common, responses::Conflict
    )
)]
async fn request_lake_export(
    State(state): State<AppState>,
    mut tx: RequestTx<AdminOnly>,
) -> Result<Response, ApiError> {
    let (request, made) = lake_export::ask(&mut tx, &state.jobs.lake_catalog).await?;
    tx.commit().await?;
    let status = if made {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let location = HeaderValue::from_str(&format!("/v1/admin/lake-exports/{}", request.request_id))
        .unwrap_or(HeaderValue::from_static("/v1/admin/lake-exports"));
    Ok((status, [(header::LOCATION, location)], Json(request)).into_response())
}

/// One export request, with the run that took it (admin).
#[utoipa::path(
    get,
    path = "/v1/admin/lake-exports/{id}",
    params(("id" = Uuid, Path, description = "Request id")),
    responses(
        (status = 200, description = "The request", body = LakeExportRequest),
        responses::Common, responses::NotFound
    )
)]
async fn get_lake_export(
    mut tx: RequestTx<AdminOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LakeExportRequest>, ApiError> {
    let request = lake_export::find(&mut tx, id).await?;
    tx.answer_found(request).await
}

/// Export requests, newest first, with their runs (admin).
#[utoipa::path(
    get,
    path = "/v1/admin/lake-exports",
    params(PageQuery),
    responses(
        (status = 200, description = "One page", body = Page<LakeExportRequest>),
        responses::Common
    )
)]
async fn list_lake_exports(
    mut tx: RequestTx<AdminOnly>,
    page: PageRequest<Cursor>,
) -> Result<Json<Page<LakeExportRequest>>, ApiError> {
    let rows = lake_export::list(&mut tx, page.after, page.fetch()).await?;
    tx.answer(page.page(rows, |r| Cursor {
        at: r.requested_at,
        id: r.request_id,
    })?)
    .await
}

pub fn router() -> utoipa_axum::router::OpenApiRouter<AppState> {
    utoipa_axum::router::OpenApiRouter::new()
        .routes(utoipa_axum::routes!(request_lake_export, list_lake_exports))
        .routes(utoipa_axum::routes!(get_lake_export))
}
