//! `/v1/products`: everyone reads them, staff create and change them.

pub mod model;
pub mod repo;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::model::{
    check_code, check_type, minor_digits, CreateProductRequest, Product, ProductFields,
    ProductList, ProductListQuery, UpdateProductRequest,
};
use crate::domain::contract::{Amortization, DayCount, Frequency, InterestMethod};
use crate::domain::four_eyes::{self, Action, Effect, Proposal, Proposed};
use crate::domain::ledger::{Overpayment, PaymentAllocation, Reamortisation};
use crate::platform::auth::RequestTx;
use crate::platform::auth::StaffOnly;
use crate::platform::conditional::{etag, expected_version};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{AppJson, AppPath, AppQuery};
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product))
        .tagged("products")
}

fn with_etag(status: StatusCode, product: Product) -> Response {
    let tag = etag(product.version);
    (status, [(header::ETAG, tag)], Json(product)).into_response()
}

/// Products on offer (every role).
#[utoipa::path(
    get,
    path = "/v1/products",
    params(ProductListQuery),
    responses((status = 200, description = "Products by code", body = ProductList), responses::Common)
)]
async fn list_products(
    mut tx: RequestTx,
    AppQuery(query): AppQuery<ProductListQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let data = repo::list(&mut tx, query.include_inactive).await?;
    tx.answer(ProductList { data }).await
}

/// One product.
#[utoipa::path(
    get,
    path = "/v1/products/{code}",
    params(("code" = String, Path, description = "Product code")),
    responses(
        (status = 200, description = "The product", body = Product, headers(("ETag" = String))),
        responses::Common, responses::NotFound
    )
)]
async fn get_product(
    mut tx: RequestTx,
    AppPath(code): AppPath<String>,
) -> Result<Response, ApiError> {
    let product = repo::find(&mut tx, &code)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, product))
}

/// Create a product (staff).
#[utoipa::path(
    post,
    path = "/v1/products",
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created", body = Product, headers(("ETag" = String))),
        (status = 202, description = "With PRODUCT_CHANGE in FOUR_EYES_ACTIONS (the default): \
         checked, then proposed; it takes effect when a checker approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn create_product(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppJson(request): AppJson<CreateProductRequest>,
) -> Result<Response, ApiError> {
    if four_eyes::needs_checker(&state.four_eyes, Action::ProductChange) {
        // Checked in full now (422, 409), then undone: the checker decides on a valid change.
        let mut trial = tx.begin().await?;
        create(&mut trial, &request).await?;
        trial.rollback().await?;
        let proposal = propose_change(
            &mut tx,
            &request.product_code,
            0,
            json!({"create": request}),
        )
        .await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let product = create(&mut tx, &request).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, product))
}

async fn create(
    tx: &mut PgConnection,
    request: &CreateProductRequest,
) -> Result<Product, ApiError> {
    check_code(&request.product_code)?;
    check_type(&request.product_type)?;
    let currency = request.currency.clone().unwrap_or_else(|| "VND".to_owned());
    let digits = request
        .currency_digits
        .unwrap_or_else(|| minor_digits(&currency));
    let unit = Decimal::new(1, u32::try_from(digits.clamp(0, 2)).unwrap_or(2));
    let installment_multiple = request.installment_multiple.map_or(unit, |m| m.amount());
    let fields = ProductFields {
        name: request.name.clone(),
        min_amount: request.min_amount.amount(),
        max_amount: request.max_amount.amount(),
        min_term_months: request.min_term_months,
        max_term_months: request.max_term_months,
        annual_interest_rate: request.annual_interest_rate,
        grace_days: request.grace_days.unwrap_or(5),
        late_fee_amount: request
            .late_fee_amount
            .map_or(Decimal::ZERO, |m| m.amount()),
        late_fee_rate: request.late_fee_rate.unwrap_or_default(),
        default_after_days: request.default_after_days.unwrap_or(90),
        prepayment_fee_rate: request.prepayment_fee_rate.unwrap_or_default(),
        prepayment_reamortisation: request
            .prepayment_reamortisation
            .unwrap_or(Reamortisation::ShorterTerm),
        // One installment multiple: an installment short by less is not in arrears.
        arrears_tolerance: request
            .arrears_tolerance
            .map_or(installment_multiple, |m| m.amount()),
        payment_allocation: request
            .payment_allocation
            .unwrap_or(PaymentAllocation::InstallmentsFirst),
        overpayment: request.overpayment.unwrap_or(Overpayment::Refuse),
        day_count: request.day_count.unwrap_or(DayCount::Actual365Fixed),
        amortization: request.amortization.unwrap_or(Amortization::Annuity),
        interest_method: request
            .interest_method
            .unwrap_or(InterestMethod::DecliningBalance),
        frequency: request.frequency.unwrap_or(Frequency::Monthly),
        currency_digits: digits,
        currency,
        installment_multiple,
        active: request.active,
    };
    fields.check()?;
    Ok(
        repo::insert(tx, &request.product_code, &request.product_type, &fields)
            .await
            .on_constraint("products_pkey", || ApiError::Conflict {
                detail: "a product with this code exists".into(),
                errors: vec![FieldError::new("product_code", "already taken")],
            })?,
    )
}

/// A product change for a checker to approve.
async fn propose_change(
    tx: &mut PgConnection,
    code: &str,
    version: i32,
    payload: serde_json::Value,
) -> Result<Proposal, ApiError> {
    four_eyes::propose(
        tx,
        Proposed {
            action: Action::ProductChange,
            object_id: code.to_owned(),
            object_version: version,
            amount: None,
            customer_id: None,
            payload,
        },
    )
    .await
}

/// A product created or changed, once a checker approved it.
pub fn execute_change<'a>(
    conn: &'a mut PgConnection,
    _state: &'a AppState,
    proposal: &'a Proposal,
) -> Effect<'a> {
    Box::pin(async move {
        if let Some(request) = four_eyes::requested::<CreateProductRequest>(proposal, "create")? {
            four_eyes::outcome(create(conn, &request).await?)
        } else {
            let request: UpdateProductRequest =
                four_eyes::requested(proposal, "update")?.unwrap_or_default();
            let code = &proposal.object_id;
            let current = lock_current(conn, code).await?;
            four_eyes::check_version(proposal, current.version)?;
            four_eyes::outcome(update(conn, current, request).await?)
        }
    })
}

/// Change a product (staff). Send `If-Match` with the `ETag` you read. Loans already granted keep
/// the rate they were granted at.
#[utoipa::path(
    patch,
    path = "/v1/products/{code}",
    params(
        ("code" = String, Path, description = "Product code"),
        ("If-Match" = String, Header, description = "The ETag last read, or *")
    ),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "Updated", body = Product, headers(("ETag" = String))),
        (status = 202, description = "With PRODUCT_CHANGE in FOUR_EYES_ACTIONS (the default): \
         checked, then proposed; it takes effect when a checker approves it", body = Proposal),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable,
        responses::Conflict, responses::Conditional
    )
)]
async fn update_product(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    AppPath(code): AppPath<String>,
    headers: HeaderMap,
    AppJson(request): AppJson<UpdateProductRequest>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers)?;
    let current = lock_current(&mut tx, &code).await?;
    if expected.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed);
    }
    if four_eyes::needs_checker(&state.four_eyes, Action::ProductChange) {
        let version = current.version;
        let mut trial = tx.begin().await?;
        update(&mut trial, current, request.clone()).await?;
        trial.rollback().await?;
        let proposal = propose_change(&mut tx, &code, version, json!({"update": request})).await?;
        tx.commit().await?;
        return Ok(four_eyes::accepted(&proposal));
    }
    let product = update(&mut tx, current, request).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, product))
}

/// The product, locked first, then read: a rare staff action, one round trip more for one
/// statement less.
async fn lock_current(tx: &mut PgConnection, code: &str) -> Result<Product, ApiError> {
    if !repo::lock(tx, code).await? {
        return Err(ApiError::NotFound);
    }
    repo::find(tx, code).await?.ok_or(ApiError::NotFound)
}

async fn update(
    tx: &mut PgConnection,
    current: Product,
    request: UpdateProductRequest,
) -> Result<Product, ApiError> {
    let code = current.product_code.clone();
    let fields = ProductFields {
        name: request.name.unwrap_or(current.name),
        min_amount: request
            .min_amount
            .map_or(current.min_amount.0, |m| m.amount()),
        max_amount: request
            .max_amount
            .map_or(current.max_amount.0, |m| m.amount()),
        min_term_months: request.min_term_months.unwrap_or(current.min_term_months),
        max_term_months: request.max_term_months.unwrap_or(current.max_term_months),
        annual_interest_rate: request
            .annual_interest_rate
            .unwrap_or(current.annual_interest_rate),
        grace_days: request.grace_days.unwrap_or(current.grace_days),
        late_fee_amount: request
            .late_fee_amount
            .map_or(current.late_fee_amount.0, |m| m.amount()),
        late_fee_rate: request.late_fee_rate.unwrap_or(current.late_fee_rate),
        default_after_days: request
            .default_after_days
            .unwrap_or(current.default_after_days),
        prepayment_fee_rate: request
            .prepayment_fee_rate
            .unwrap_or(current.prepayment_fee_rate),
        prepayment_reamortisation: request
            .prepayment_reamortisation
            .unwrap_or(current.prepayment_reamortisation),
        arrears_tolerance: request
            .arrears_tolerance
            .map_or(current.arrears_tolerance.0, |m| m.amount()),
        payment_allocation: request
            .payment_allocation
            .unwrap_or(current.payment_allocation),
        overpayment: request.overpayment.unwrap_or(current.overpayment),
        day_count: request.day_count.unwrap_or(current.day_count),
        amortization: request.amortization.unwrap_or(current.amortization),
        interest_method: request.interest_method.unwrap_or(current.interest_method),
        frequency: request.frequency.unwrap_or(current.frequency),
        currency_digits: request.currency_digits.unwrap_or(current.currency_digits),
        currency: request.currency.unwrap_or(current.currency),
        installment_multiple: request
            .installment_multiple
            .map_or(current.installment_multiple.0, |m| m.amount()),
        active: request.active.unwrap_or(current.active),
    };
    fields.check()?;
    Ok(repo::update(tx, &code, &fields).await?)
}
