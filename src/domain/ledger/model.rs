//! The record of a money movement on a loan, as stored and as the API shows it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::money::Amount;

crate::closed_set! {
    /// Where a payment stands.
    pub enum PaymentStatus {
        Pending = "PENDING",
        Completed = "COMPLETED",
        Failed = "FAILED",
        Reversed = "REVERSED",
    }
}

crate::closed_set! {
    /// What a payment does: pays the loan out, pays it down, or charges a fee.
    pub enum PaymentKind {
        Disbursement = "DISBURSEMENT",
        Repayment = "REPAYMENT",
        Fee = "FEE",
    }
}

crate::closed_set! {
    /// Where a loan is in its life.
    pub enum LoanStatus {
        Applied = "APPLIED",
        Approved = "APPROVED",
        Rejected = "REJECTED",
        Cancelled = "CANCELLED",
        Disbursed = "DISBURSED",
        Closed = "CLOSED",
        /// Paid off with money to spare, owed back to the customer until staff refund it.
        Overpaid = "OVERPAID",
        Defaulted = "DEFAULTED",
        WrittenOff = "WRITTEN_OFF",
    }
}

/// A money movement on a loan.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub payment_id: Uuid,
    /// Assigned by the server.
    pub transaction_id: String,
    /// The client's own reference, if it gave one.
    pub client_reference: Option<String>,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    /// DISBURSEMENT, REPAYMENT or FEE.
    pub payment_type: PaymentKind,
    pub amount: Amount,
    pub payment_method: Option<String>,
    pub payment_date: DateTime<Utc>,
    pub due_date: Option<NaiveDate>,
    /// PENDING, COMPLETED, FAILED or REVERSED.
    pub status: PaymentStatus,
    /// MOBILE_APP, BRANCH, BANK_TRANSFER or SYSTEM.
    pub channel: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub status_changed_by: Option<String>,
    pub status_reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The columns of [`Payment`], for `SELECT … FROM core.payments p`.
pub const PAYMENT_COLUMNS: &str =
    "p.payment_id, p.transaction_id, p.client_reference, p.loan_id, p.customer_id, p.payment_type, \
     p.amount, p.payment_method, p.payment_date, p.due_date, p.status, p.channel, \
     p.status_changed_at, p.status_changed_by, p.status_reason, p.created_by, p.created_at";
