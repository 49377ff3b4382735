//! `/v1/customers/…`: staff's customer records, their KYC, search, identity links, summary and
//! portfolio.

mod identities;

pub use identities::execute_link as execute_identity_link;
mod portfolio;
mod search;
mod summary;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::domain::customer_record::model::{
    CheckedKycDecision, CreateCustomerRequest, Customer, CustomerListQuery, KycDecisionRequest,
    NewCustomer, UpdateCustomerRequest,
};
use crate::domain::customer_record::repo::{self, ListFilter};
use crate::domain::customer_record::view::{
    changes_of, finish_conditional, pii_view, to_customer, with_etag,
};
use crate::platform::auth::{CustomerWriters, RequestTx, StaffOnly};
use crate::platform::conditional::expected_version;
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{AppJson, AppPath, AppQuery};
use crate::platform::pagination::{IdCursor, Page, PageQuery, PageRequest};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer))
        .routes(routes!(decide_kyc))
        .routes(routes!(search::search_customers))
        .routes(routes!(summary::customer_summary))
        .routes(routes!(portfolio::get_portfolio))
        .merge(identities::router())
        .tagged("customers")
}

/// Create a customer (staff, administrators, the ETL pipeline). The ID number is encrypted in
/// the service before it reaches the database.
#[utoipa::path(
    post,
    path = "/v1/customers",
    request_body = CreateCustomerRequest,
    responses(
        (status = 201, description = "Created", body = Customer,
         headers(("ETag" = String), ("Location" = String))),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn create_customer(
    State(state): State<AppState>,
    mut tx: RequestTx<CustomerWriters>,
    AppJson(request): AppJson<CreateCustomerRequest>,
) -> Result<Response, ApiError> {
    let customer = NewCustomer::try_from(request)?;
    let id = Uuid::now_v7();
    let sealed = state
        .pii
        .seal(&customer.id_number, id)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if let Some(code) = &customer.branch {
        if !repo::office_exists(&mut tx, code).await? {
            return Err(ApiError::validation(vec![FieldError::new(
                "branch",
                "no such office",
            )]));
        }
    }
    let view = pii_view(tx.caller().role);
    let row = repo::insert(&mut tx, id, &customer, &sealed, view)
        .await
        .on_constraint("customers_customer_code_key", || ApiError::Conflict {
            detail: "a customer with this customer_code exists".into(),
            errors: vec![FieldError::new("customer_code", "already taken")],
        })
        .on_constraint("customers_id_number_hash_key", || ApiError::Conflict {
            detail: "a customer with this id_number exists".into(),
            errors: vec![FieldError::new("id_number", "already registered")],
        })?;
    let customer = to_customer(row, &state.pii)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, customer))
}

/// List customers in id order. Customers see only themselves; analysts and the ETL role see
/// masked ID numbers.
#[utoipa::path(
    get,
    path = "/v1/customers",
    params(CustomerListQuery, PageQuery),
    responses(
        (status = 200, description = "One page", body = Page<Customer>),
        responses::Common
    )
)]
async fn list_customers(
    State(state): State<AppState>,
    mut tx: RequestTx,
    AppQuery(query): AppQuery<CustomerListQuery>,
    page: PageRequest<IdCursor>,
) -> Result<Json<Page<Customer>>, ApiError> {
    let filter = ListFilter {
        kyc_status: query.kyc_status,
        city: query.city.as_deref(),
        after: page.after.map(|c| c.after),
        fetch: page.fetch(),
    };
    let view = pii_view(tx.caller().role);
    let rows = repo::list(&mut tx, &filter, view).await?;
    tx.commit().await?;
    let rows = page.page(rows, |r| IdCursor {
        after: r.customer_id,
    })?;
    Ok(Json(rows.try_map(|row| to_customer(row, &state.pii))?))
}

/// Read one customer. Another customer's id answers 404, exactly like an id that does not exist.
#[utoipa::path(
    get,
    path = "/v1/customers/{id}",
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The customer", body = Customer, headers(("ETag" = String))),
        responses::Common, responses::NotFound
    )
)]
async fn get_customer(
    State(state): State<AppState>,
    mut tx: RequestTx,
    AppPath(id): AppPath<Uuid>,
) -> Result<Response, ApiError> {
    let view = pii_view(tx.caller().role);
    let row = repo::find(&mut tx, id, view)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, to_customer(row, &state.pii)?))
}

/// Change a customer (staff). Send `If-Match` with the `ETag` you read: a stale one is 412.
#[utoipa::path(
    patch,
    path = "/v1/customers/{id}",
    params(
        ("id" = Uuid, Path, description = "Customer id"),
        ("If-Match" = String, Header, description = "The ETag last read, or *")
    ),
    request_body = UpdateCustomerRequest,
    responses(
        (status = 200, description = "Updated", body = Customer, headers(("ETag" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable,
        responses::Conditional
    )
)]
async fn update_customer(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    headers: HeaderMap,
    AppJson(request): AppJson<UpdateCustomerRequest>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers)?;
    let changes = changes_of(request)?;
    let view = pii_view(tx.caller().role);
    let outcome = repo::update(&mut tx, id, expected, &changes, view).await?;
    finish_conditional(tx, &state.pii, outcome, ApiError::PreconditionFailed).await
}

/// Record the KYC decision on a customer whose KYC is pending (staff). Deciding twice is 409.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/kyc",
    params(("id" = Uuid, Path, description = "Customer id")),
    request_body = KycDecisionRequest,
    responses(
        (status = 200, description = "Decided", body = Customer, headers(("ETag" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Conflict,
        responses::Unprocessable
    )
)]
async fn decide_kyc(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
    AppJson(request): AppJson<KycDecisionRequest>,
) -> Result<Response, ApiError> {
    let decision = CheckedKycDecision::try_from(request)?;
    let view = pii_view(tx.caller().role);
    let outcome = repo::decide_kyc(
        &mut tx,
        id,
        decision.outcome,
        decision.reason.as_deref(),
        view,
    )
    .await?;
    let decided = ApiError::conflict("KYC for this customer is already decided");
    finish_conditional(tx, &state.pii, outcome, decided).await
}
