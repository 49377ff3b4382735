//! `/v1/products`: everyone reads them, staff create and change them.

pub mod model;
pub mod repo;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rust_decimal::Decimal;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::model::{
    check_code, check_type, minor_digits, CreateProductRequest, Product, ProductFields,
    ProductList, ProductListQuery, UpdateProductRequest,
};
use crate::domain::contract::{Amortization, DayCount, Frequency, InterestMethod};
use crate::domain::ledger::{Overpayment, PaymentAllocation, Reamortisation};
use crate::platform::auth::RequestTx;
use crate::platform::auth::StaffOnly;
use crate::platform::conditional::{etag, expected_version};
use crate::platform::db::errors::ResultExt;
use crate::platform::error::{responses, ApiError, FieldError};
use crate::platform::extract::{AppJson, AppPath, AppQuery};
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_products, create_product))
        .routes(routes!(get_product, update_product))
}

fn with_etag(status: StatusCode, product: Product) -> Response {
    let tag = etag(product.version);
    (status, [(header::ETAG, tag)], Json(product)).into_response()
}

/// Products on offer (every role).
#[utoipa::path(
    get,
    path = "/v1/products",
    tag = "products",
    operation_id = "list_products",
    params(ProductListQuery),
    responses((status = 200, description = "Products by code", body = ProductList), responses::Common)
)]
async fn list_products(
    mut tx: RequestTx,
    AppQuery(query): AppQuery<ProductListQuery>,
) -> Result<Json<ProductList>, ApiError> {
    let data = repo::list(&mut tx, query.include_inactive).await?;
    tx.commit().await?;
    Ok(Json(ProductList { data }))
}

/// One product.
#[utoipa::path(
    get,
    path = "/v1/products/{code}",
    tag = "products",
    operation_id = "get_product",
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
    tag = "products",
    operation_id = "create_product",
    request_body = CreateProductRequest,
    responses(
        (status = 201, description = "Created", body = Product, headers(("ETag" = String))),
        responses::Common, responses::JsonBody, responses::Conflict, responses::Unprocessable
    )
)]
async fn create_product(
    mut tx: RequestTx<StaffOnly>,
    AppJson(request): AppJson<CreateProductRequest>,
) -> Result<Response, ApiError> {
    check_code(&request.product_code)?;
    check_type(&request.product_type)?;
    let currency = request.currency.unwrap_or_else(|| "VND".to_owned());
    let digits = request
        .currency_digits
        .unwrap_or_else(|| minor_digits(&currency));
    let unit = Decimal::new(1, u32::try_from(digits.clamp(0, 2)).unwrap_or(2));
    let installment_multiple = request.installment_multiple.map_or(unit, |m| m.amount());
    let fields = ProductFields {
        name: request.name,
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
    let product = repo::insert(
        &mut tx,
        &request.product_code,
        &request.product_type,
        &fields,
    )
    .await
    .on_constraint("products_pkey", || ApiError::Conflict {
        detail: "a product with this code exists".into(),
        errors: vec![FieldError::new("product_code", "already taken")],
    })?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::CREATED, product))
}

/// Change a product (staff). Send `If-Match` with the `ETag` you read. Loans already granted keep
/// the rate they were granted at.
#[utoipa::path(
    patch,
    path = "/v1/products/{code}",
    tag = "products",
    operation_id = "update_product",
    params(
        ("code" = String, Path, description = "Product code"),
        ("If-Match" = String, Header, description = "The ETag last read, or *")
    ),
    request_body = UpdateProductRequest,
    responses(
        (status = 200, description = "Updated", body = Product, headers(("ETag" = String))),
        responses::Common, responses::JsonBody, responses::NotFound, responses::Unprocessable,
        responses::Conditional
    )
)]
async fn update_product(
    mut tx: RequestTx<StaffOnly>,
    AppPath(code): AppPath<String>,
    headers: HeaderMap,
    AppJson(request): AppJson<UpdateProductRequest>,
) -> Result<Response, ApiError> {
    let expected = expected_version(&headers)?;
    // Locked first, then read: a rare staff action, one round trip more for one statement less.
    if !repo::lock(&mut tx, &code).await? {
        return Err(ApiError::NotFound);
    }
    let current = repo::find(&mut tx, &code)
        .await?
        .ok_or(ApiError::NotFound)?;
    if expected.is_some_and(|v| v != current.version) {
        return Err(ApiError::PreconditionFailed);
    }
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
    let product = repo::update(&mut tx, &code, &fields).await?;
    tx.commit().await?;
    Ok(with_etag(StatusCode::OK, product))
}
