//! Payment request and response types.

use chrono::{DateTime, NaiveDate, Utc};

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::domain::money::Money;
use crate::platform::error::{ApiError, FieldError};

pub use crate::domain::ledger::model::{Payment, PaymentKind, PaymentStatus};

/// What a payment does: REPAYMENT pays the loan down; FEE charges a fee (late fee, processing
/// fee) that later repayments pay first. DISBURSEMENT is written by the loan's disbursal only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentType {
    Repayment,
    Fee,
}

impl PaymentType {
    pub fn kind(self) -> PaymentKind {
        match self {
            Self::Repayment => PaymentKind::Repayment,
            Self::Fee => PaymentKind::Fee,
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
    /// limit and not before the loan's disbursement). Defaults to now.
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
    pub payment_type: Option<PaymentKind>,
    /// The client's own reference (unique per customer).
    pub client_reference: Option<String>,
    /// The server's transaction id (TXN…, DSB-…): at most one payment.
    pub transaction_id: Option<String>,
    /// Paid on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Paid on or before this day (UTC).
    pub to: Option<NaiveDate>,
}

/// A payment request with every field checked.
pub struct CheckedPayment {
    pub loan_id: Uuid,
    pub payment_type: PaymentType,
    pub amount: Money,
    pub payment_method: Option<String>,
    pub payment_date: Option<DateTime<Utc>>,
    pub client_reference: Option<String>,
}

/// A client's own reference: 1 to 40 visible ASCII characters.
pub fn is_client_reference(reference: &str) -> bool {
    (1..=40).contains(&reference.len()) && reference.bytes().all(|b| b.is_ascii_graphic())
}

impl TryFrom<CreatePaymentRequest> for CheckedPayment {
    type Error = ApiError;

    fn try_from(request: CreatePaymentRequest) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let payment_method = request.payment_method.map(|m| m.trim().to_owned());
        if payment_method
            .as_deref()
            .is_some_and(|m| m.is_empty() || m.chars().count() > 30)
        {
            errors.push(FieldError::new(
                "payment_method",
                "must be 1 to 30 characters",
            ));
        }
        if request
            .client_reference
            .as_deref()
            .is_some_and(|r| !is_client_reference(r))
        {
            errors.push(FieldError::new(
                "client_reference",
                "must be 1 to 40 visible ASCII characters",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::validation(errors));
        }
        Ok(Self {
            loan_id: request.loan_id,
            payment_type: request.payment_type,
            amount: request.amount,
            payment_method,
            payment_date: request.payment_date,
            client_reference: request.client_reference,
        })
    }
}

/// `POST /v1/payments/{id}/fail|reverse`: an optional reason.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PaymentActionRequest {
    pub reason: Option<String>,
}

/// A checked reason: trimmed, at most 500 characters; blank is none.
pub struct Reason(pub Option<String>);

impl TryFrom<PaymentActionRequest> for Reason {
    type Error = ApiError;

    fn try_from(request: PaymentActionRequest) -> Result<Self, ApiError> {
        match request.reason.map(|r| r.trim().to_owned()) {
            Some(r) if r.chars().count() > 500 => Err(ApiError::invalid_field(
                "reason",
                "must be at most 500 characters",
            )),
            Some(r) if r.is_empty() => Ok(Self(None)),
            other => Ok(Self(other)),
        }
    }
}
