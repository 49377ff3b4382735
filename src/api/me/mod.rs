//! `/v1/me/…`: the calling customer's own record, summary and events (customer tokens only).

mod events;
mod summary;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::customer_record::model::{Customer, UpdateMeRequest};
use crate::domain::customer_record::repo::{self, PiiView};
use crate::domain::customer_record::view::{
    changes_of, finish_conditional, to_customer, with_etag,
};
use crate::platform::auth::{CustomerOnly, RequestTx};
use crate::platform::conditional::expected_version;
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppJson;
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_me, update_me))
        .routes(routes!(summary::my_summary))
        .routes(routes!(events::stream_my_events))
        .tagged("customers")
}

/// The calling customer (customer tokens only).
#[utoipa::path(
    get,
    path = "/v1/me",
    responses(
        (status = 200, description = "The calling customer", body = Customer,
         headers(("ETag" = String))),
        responses::Common, responses::NotFound
    )
)]
async fn get_me(
    State(state): State<AppState>,
    mut tx: RequestTx<CustomerOnly>,
) -> Result<Response, ApiError> {
    let id = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let row = repo::find(&mut tx, id, PiiView::Clear)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, to_customer(row, &state.pii)?))
}

/// Change your own phone number, e-mail or address (customers), and nothing else: any other
/// field is 422, and the database allows this role no other column (column privileges) and no
/// other customer's row (row-level security). Send `If-Match` with the `ETag` of `GET /v1/me`.
/// The change goes to the audit log and emits `customer_contact_changed`, with the previous
/// contact, for a notifier to tell the old number or address. No verification code is sent.
#[utoipa::path(
    patch,
    path = "/v1/me",
    params(("If-Match" = String, Header, description = "The ETag last read, or *")),
    request_body = UpdateMeRequest,
    responses(
        (status = 200, description = "Updated", body = Customer, headers(("ETag" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable,
        responses::Conditional
    )
)]
async fn update_me(
    State(state): State<AppState>,
    mut tx: RequestTx<CustomerOnly>,
    headers: HeaderMap,
    AppJson(request): AppJson<UpdateMeRequest>,
) -> Result<Response, ApiError> {
    let id = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let expected = expected_version(&headers)?;
    let changes = changes_of(request.into())?;
    let outcome = repo::update(&mut tx, id, expected, &changes, PiiView::Clear).await?;
    finish_conditional(tx, &state.pii, outcome, ApiError::PreconditionFailed).await
}
