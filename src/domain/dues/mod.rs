//! What is due: a loan's installments with their status on the business day, and a customer's
//! summary across their loans. Each is one SQL statement after the request transaction's setup,
//! over the stored installments (the ones `/schedule` shows), never a schedule computed again.

pub mod repo;

use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::Amount;

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
    pub status: InstallmentStatus,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoanInstallments {
    pub loan_id: Uuid,
    /// The business day (`BUSINESS_TIMEZONE`) the statuses are for.
    pub business_date: NaiveDate,
    pub installments: Vec<InstallmentDue>,
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
