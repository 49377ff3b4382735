//! `/v1/customers` and `/v1/me`.

pub mod model;
pub mod repo;
mod search;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use self::model::{
    CheckedKycDecision, CreateCustomerRequest, Customer, CustomerChanges, CustomerId,
    CustomerListQuery, KycDecisionRequest, NewCustomer, UpdateCustomerRequest, UpdateMeRequest,
};
use self::repo::{Conditional, CustomerRow, ListFilter, PiiView};
use crate::auth::RequestTx;
use crate::auth::{CustomerOnly, CustomerWriters, Role, StaffOnly};
use crate::conditional::{etag, expected_version};
use crate::db::errors::ResultExt;
use crate::error::{responses, ApiError, FieldError};
use crate::extract::{AppJson, AppPath, AppQuery};
use crate::pagination::{IdCursor, Page, PageQuery, PageRequest};
use crate::pii::{self, PiiCipher};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_customer, list_customers))
        .routes(routes!(get_customer, update_customer))
        .routes(routes!(decide_kyc))
        .routes(routes!(get_me, update_me))
        .routes(routes!(search::search_customers))
}

fn pii_view(role: Role) -> PiiView {
    if role.sees_clear_pii() {
        PiiView::Clear
    } else {
        PiiView::Masked
    }
}

/// The API view of a row: the ID number decrypted when the row was read in clear, masked
/// otherwise.
fn to_customer(row: CustomerRow, cipher: &PiiCipher) -> Result<Customer, ApiError> {
    let id_number = match &row.id_number_ciphertext {
        Some(ciphertext) => cipher.open(ciphertext, row.customer_id).map_err(|_| {
            ApiError::Internal(format!(
                "ID number of customer {} does not decrypt with the configured key",
                row.customer_id
            ))
        })?,
        None => pii::mask(&row.id_number_last4),
    };
    let kyc_status = row.kyc_status;
    Ok(Customer {
        customer_id: CustomerId(row.customer_id),
        customer_code: row.customer_code,
        full_name: row.full_name,
        id_number,
        phone_number: row.phone_number,
        email: row.email,
        date_of_birth: row.date_of_birth,
        address: row.address.map(|a| a.0),
        kyc_status,
        kyc_decided_at: row.kyc_decided_at,
        kyc_reason: row.kyc_reason,
        credit_score: row.credit_score,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// A customer with its `ETag`.
fn with_etag(status: StatusCode, customer: Customer) -> Response {
    let mut response = (status, Json(&customer)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag(customer.version));
    if status == StatusCode::CREATED {
        if let Ok(location) =
            HeaderValue::from_str(&format!("/v1/customers/{}", customer.customer_id.0))
        {
            headers.insert(header::LOCATION, location);
        }
    }
    response
}

/// Create a customer (staff, administrators, the ETL pipeline). The ID number is encrypted in
/// the service before it reaches the database.
#[utoipa::path(
    post,
    path = "/v1/customers",
    tag = "customers",
    operation_id = "create_customer",
    security(("bearer" = [])),
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
    tag = "customers",
    operation_id = "list_customers",
    security(("bearer" = [])),
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
    tag = "customers",
    operation_id = "get_customer",
    security(("bearer" = [])),
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
    tag = "customers",
    operation_id = "update_customer",
    security(("bearer" = [])),
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

fn changes_of(request: UpdateCustomerRequest) -> Result<CustomerChanges, ApiError> {
    let changes = CustomerChanges::try_from(request)?;
    if changes.is_empty() {
        return Err(ApiError::Unprocessable {
            detail: "the patch changes nothing".into(),
            errors: Vec::new(),
        });
    }
    Ok(changes)
}

/// Change your own phone number, e-mail or address (customers), and nothing else: any other
/// field is 422, and the database allows this role no other column (column privileges) and no
/// other customer's row (row-level security). Send `If-Match` with the `ETag` of `GET /v1/me`.
/// The change goes to the audit log and emits `customer_contact_changed`, with the previous
/// contact, for a notifier to tell the old number or address. No verification code is sent.
#[utoipa::path(
    patch,
    path = "/v1/me",
    tag = "customers",
    operation_id = "update_me",
    security(("bearer" = [])),
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

/// Commits a conditional write that matched and answers with the customer; otherwise 404, or
/// `unmet` when the row exists but the condition failed.
async fn finish_conditional<A>(
    tx: RequestTx<A>,
    cipher: &PiiCipher,
    outcome: Conditional,
    unmet: ApiError,
) -> Result<Response, ApiError> {
    match outcome {
        Conditional::Done(row) => {
            tx.commit().await?;
            Ok(with_etag(StatusCode::OK, to_customer(*row, cipher)?))
        }
        Conditional::Stale => Err(unmet),
        Conditional::Missing => Err(ApiError::NotFound),
    }
}

/// Record the KYC decision on a customer whose KYC is pending (staff). Deciding twice is 409.
#[utoipa::path(
    post,
    path = "/v1/customers/{id}/kyc",
    tag = "customers",
    operation_id = "decide_kyc",
    security(("bearer" = [])),
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

/// The calling customer (customer tokens only).
#[utoipa::path(
    get,
    path = "/v1/me",
    tag = "customers",
    operation_id = "get_me",
    security(("bearer" = [])),
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
