//! Payment request and response types.

use chrono::{DateTime, NaiveDate, Utc};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::money::Money;

pub use crate::ledger::model::{Payment, PaymentStatus};

/// What a payment does: REPAYMENT pays the loan down; FEE charges a fee (late fee, processing
/// fee) that later repayments pay first. DISBURSEMENT is written by the loan's disbursal only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentType {
    Repayment,
    Fee,
}

impl PaymentType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Repayment => "REPAYMENT",
            Self::Fee => "FEE",
        }
    }
}

/// `POST /v1/payments`. Requires an `Idempotency-Key` header.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"loan_id": "01936f0e-1f6a-7b7c-9d2e-3f4a5b6c7d8e", "payment_type": "REPAYMENT",
                          "amount": "2500000.00", "payment_method": "CASH"}))]
pub struct CreatePaymentRequest {
    pub loan_id: Uuid,
    pub payment_type: PaymentType,
    pub amount: Money,
    /// CASH, BANK_TRANSFER, CARD, E_WALLET.
    pub payment_method: Option<String>,
    /// Staff only: when the money moved (backdating a branch payment, within the backdating
    /// limit and not before the loan's application). Defaults to now.
    pub payment_date: Option<DateTime<Utc>>,
    /// Your own reference (a receipt number): 1 to 40 visible ASCII characters, unique per
    /// customer; find the payment by it with `GET /v1/payments?client_reference=`. The
    /// `transaction_id` is always assigned by the server.
    pub client_reference: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentList {
    pub data: Vec<Payment>,
}

/// Filters of `GET /v1/payments`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PaymentListQuery {
    pub loan_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: Option<PaymentStatus>,
    /// DISBURSEMENT, REPAYMENT or FEE.
    pub payment_type: Option<String>,
    /// The client's own reference (unique per customer).
    pub client_reference: Option<String>,
    /// Paid on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Paid on or before this day (UTC).
    pub to: Option<NaiveDate>,
}

/// `POST /v1/payments/{id}/fail|reverse`: an optional reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentActionRequest {
    pub reason: Option<String>,
}
