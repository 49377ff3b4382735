//! The record of a money movement on a loan, as stored and as the API shows it.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Pending,
    Completed,
    Failed,
    Reversed,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Reversed => "REVERSED",
        }
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
    pub payment_type: String,
    #[serde(serialize_with = "crate::money::as_cents")]
    #[schema(value_type = String, example = "2500000.00")]
    pub amount: Decimal,
    pub payment_method: Option<String>,
    pub payment_date: DateTime<Utc>,
    pub due_date: Option<NaiveDate>,
    /// PENDING, COMPLETED, FAILED or REVERSED.
    pub status: String,
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
