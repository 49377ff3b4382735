//! What is due: a loan's installments with their status on the business day, and a customer's
//! summary across their loans. Each is one SQL statement after the request transaction's setup,
//! over the stored installments (the ones `/schedule` shows), never a schedule computed again.

mod repo;

use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use axum::Json;

use crate::auth::{CustomerOnly, LoanReaders, RequestTx, StaffOnly};
use crate::error::{responses, ApiError};
use crate::extract::AppPath;
use crate::money::Amount;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_installments))
        .routes(routes!(my_summary))
        .routes(routes!(customer_summary))
}

crate::closed_set! {
    /// Where an installment stands on the business day: PAID in full; otherwise, before its due
    /// date, PARTIALLY_PAID when part of it is paid and UPCOMING when nothing is; from its due
    /// date through the product's grace days, DUE; after them, OVERDUE.
    pub enum InstallmentStatus {
        Paid = "PAID",
        PartiallyPaid = "PARTIALLY_PAID",
        Upcoming = "UPCOMING",
        Due = "DUE",
        Overdue = "OVERDUE",
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct InstallmentDue {
    pub number: i32,
    pub due_date: NaiveDate,
    pub principal_due: Amount,
    pub interest_due: Amount,
    pub principal_paid: Amount,
    pub interest_paid: Amount,
    /// What is still to pay on it.
    pub remaining: Amount,
    /// PAID, PARTIALLY_PAID, UPCOMING, DUE or OVERDUE.
    #[schema(value_type = String)]
    pub status: InstallmentStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoanInstallments {
    pub loan_id: Uuid,
    /// The business day (`BUSINESS_TIMEZONE`) the statuses are for.
    pub business_date: NaiveDate,
    pub installments: Vec<InstallmentDue>,
}

/// A loan's installments and what is paid and due on each (its customer, staff, analysts).
#[utoipa::path(
    get,
    path = "/v1/loans/{id}/installments",
    tag = "loans",
    operation_id = "list_installments",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Loan id")),
    responses(
        (status = 200, description = "The installments, by number", body = LoanInstallments),
        responses::Common, responses::NotFound
    )
)]
async fn list_installments(
    mut tx: RequestTx<LoanReaders>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<LoanInstallments>, ApiError> {
    let (business_date, installments) = repo::installments(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(LoanInstallments {
        loan_id: id,
        business_date,
        installments,
    }))
}

/// The installment to pay next.
#[derive(Debug, Serialize, ToSchema)]
pub struct NextPayment {
    pub loan_id: Uuid,
    pub loan_number: String,
    pub installment_number: i32,
    pub due_date: NaiveDate,
    pub amount: Amount,
}

/// A customer's position across their disbursed and defaulted loans.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerSummary {
    pub customer_id: Uuid,
    pub business_date: NaiveDate,
    pub active_loans: i64,
    /// The earliest unpaid installment due today or later; `null` when none is left.
    pub next_payment: Option<NextPayment>,
    /// Unpaid installments due today or earlier, plus fees and penalties.
    pub amount_due_now: Amount,
    /// The unpaid part of installments past their grace days (OVERDUE).
    pub arrears: Amount,
    /// Principal, interest due, fees and penalties outstanding (interest not yet due excluded).
    pub total_outstanding: Amount,
}

/// The caller's own summary: next payment, due now, arrears, outstanding (customers).
#[utoipa::path(
    get,
    path = "/v1/me/summary",
    tag = "customers",
    operation_id = "my_summary",
    security(("bearer" = [])),
    responses((status = 200, description = "The summary", body = CustomerSummary), responses::Common)
)]
async fn my_summary(mut tx: RequestTx<CustomerOnly>) -> Result<Json<CustomerSummary>, ApiError> {
    let customer = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let summary = repo::summary(&mut tx, customer).await?;
    tx.commit().await?;
    Ok(Json(summary))
}

/// A customer's summary, as the app shows it to them (staff).
#[utoipa::path(
    get,
    path = "/v1/customers/{id}/summary",
    tag = "customers",
    operation_id = "customer_summary",
    security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Customer id")),
    responses(
        (status = 200, description = "The summary", body = CustomerSummary),
        responses::Common, responses::NotFound
    )
)]
async fn customer_summary(
    mut tx: RequestTx<StaffOnly>,
    AppPath(id): AppPath<Uuid>,
) -> Result<Json<CustomerSummary>, ApiError> {
    let summary = repo::summary_if_exists(&mut tx, id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    Ok(Json(summary))
}
