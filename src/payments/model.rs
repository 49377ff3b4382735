//! Payment types shared by the loan and payment routes.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

/// A money movement on a loan.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Payment {
    pub payment_id: Uuid,
    pub transaction_id: String,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    /// DISBURSEMENT, REPAYMENT or FEE.
    pub payment_type: String,
    #[schema(value_type = String, example = "2500000.00")]
    pub amount: Decimal,
    pub payment_method: Option<String>,
    pub payment_date: DateTime<Utc>,
    pub due_date: Option<NaiveDate>,
    /// PENDING, COMPLETED, FAILED or REVERSED.
    pub status: String,
    /// MOBILE_APP, BRANCH, BANK_TRANSFER or SYSTEM.
    pub channel: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    pub data: Vec<Payment>,
}
