//! Customer request and response types, and the parsing that turns requests into domain values.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::platform::error::ApiError;

use crate::domain::customer_record::{
    check_address, check_credit_score, check_date_of_birth, parse_email, parse_full_name,
    parse_phone, Checks,
};
pub use crate::domain::customer_record::{Address, CreateCustomerRequest, NewCustomer};

/// A customer's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct CustomerId(pub Uuid);

crate::closed_set! {
    /// Where KYC (know-your-customer) checks stand.
    pub enum KycStatus {
        Pending = "PENDING",
        Approved = "APPROVED",
        Rejected = "REJECTED",
    }
}

/// `PATCH /v1/customers/{id}`: a JSON merge patch. An absent field is left alone; `null` clears
/// an optional field. `customer_code` and `id_number` cannot change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomerRequest {
    pub full_name: Option<String>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<String>)]
    pub phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<NaiveDate>)]
    pub date_of_birth: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<Address>)]
    pub address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<i32>)]
    pub credit_score: Option<Option<i32>>,
}

/// What a customer may change of their own record: how to reach them. Any other field is 422.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<String>)]
    pub phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::platform::extract::present")]
    #[schema(value_type = Option<Address>)]
    pub address: Option<Option<Address>>,
}

impl From<UpdateMeRequest> for UpdateCustomerRequest {
    fn from(me: UpdateMeRequest) -> Self {
        Self {
            phone_number: me.phone_number,
            email: me.email,
            address: me.address,
            ..Self::default()
        }
    }
}

/// The checked changes of a patch; `None` leaves a column as it is.
#[derive(Debug, Default)]
pub struct CustomerChanges {
    pub full_name: Option<String>,
    pub phone_number: Option<Option<String>>,
    pub email: Option<Option<String>>,
    pub date_of_birth: Option<Option<NaiveDate>>,
    pub address: Option<Option<Address>>,
    pub credit_score: Option<Option<i32>>,
}

impl CustomerChanges {
    pub fn is_empty(&self) -> bool {
        self.full_name.is_none()
            && self.phone_number.is_none()
            && self.email.is_none()
            && self.date_of_birth.is_none()
            && self.address.is_none()
            && self.credit_score.is_none()
    }
}

/// Checks the value inside a patched field that may be cleared.
fn patch<T, U>(
    value: Option<Option<T>>,
    parse: impl FnOnce(T) -> Result<U, &'static str>,
) -> Result<Option<Option<U>>, &'static str> {
    match value {
        None => Ok(None),
        Some(None) => Ok(Some(None)),
        Some(Some(v)) => parse(v).map(|u| Some(Some(u))),
    }
}

impl TryFrom<UpdateCustomerRequest> for CustomerChanges {
    type Error = ApiError;

    fn try_from(req: UpdateCustomerRequest) -> Result<Self, ApiError> {
        let mut c = Checks::default();
        let full_name = c.check(
            "full_name",
            req.full_name.as_deref().map(parse_full_name).transpose(),
        );
        let phone_number = c.check("phone_number", patch(req.phone_number, |p| parse_phone(&p)));
        let email = c.check("email", patch(req.email, |e| parse_email(&e)));
        let date_of_birth = c.check(
            "date_of_birth",
            patch(req.date_of_birth, check_date_of_birth),
        );
        let address = c.check("address", patch(req.address, check_address));
        let credit_score = c.check("credit_score", patch(req.credit_score, check_credit_score));
        c.finish(|| {
            Some(CustomerChanges {
                full_name: full_name?,
                phone_number: phone_number?,
                email: email?,
                date_of_birth: date_of_birth?,
                address: address?,
                credit_score: credit_score?,
            })
        })
    }
}

/// `POST /v1/customers/{id}/kyc`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KycDecisionRequest {
    pub decision: KycDecision,
    /// Why; required when rejecting.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KycDecision {
    Approve,
    Reject,
}

impl KycDecision {
    pub fn outcome(self) -> KycStatus {
        match self {
            Self::Approve => KycStatus::Approved,
            Self::Reject => KycStatus::Rejected,
        }
    }
}

/// A decision ready to record.
pub struct CheckedKycDecision {
    pub outcome: KycStatus,
    pub reason: Option<String>,
}

impl TryFrom<KycDecisionRequest> for CheckedKycDecision {
    type Error = ApiError;

    fn try_from(req: KycDecisionRequest) -> Result<Self, ApiError> {
        let reason = req
            .reason
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty());
        match (&reason, req.decision) {
            (None, KycDecision::Reject) => Err(ApiError::invalid_field(
                "reason",
                "a rejection needs a reason",
            )),
            (Some(r), _) if r.chars().count() > 500 => Err(ApiError::invalid_field(
                "reason",
                "must be at most 500 characters",
            )),
            _ => Ok(Self {
                outcome: req.decision.outcome(),
                reason,
            }),
        }
    }
}

/// Filters of `GET /v1/customers`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerListQuery {
    pub kyc_status: Option<KycStatus>,
    /// Exact match on `address.city`.
    pub city: Option<String>,
}

/// A customer as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Customer {
    pub customer_id: CustomerId,
    pub customer_code: String,
    pub full_name: String,
    /// In clear for staff, administrators and the customer themself; `*****6789` for others.
    pub id_number: String,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub address: Option<Address>,
    pub kyc_status: KycStatus,
    pub kyc_decided_at: Option<DateTime<Utc>>,
    pub kyc_reason: Option<String>,
    pub credit_score: Option<i32>,
    /// Increases with every change; the `ETag` is this number in quotes.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The office the customer belongs to (its code).
    #[schema(example = "HN01")]
    pub branch: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_tells_null_from_absent() {
        let req: UpdateCustomerRequest =
            serde_json::from_value(serde_json::json!({"email": null})).unwrap();
        let changes = CustomerChanges::try_from(req).unwrap();
        assert_eq!(changes.email, Some(None));
        assert_eq!(changes.phone_number, None);
        assert!(!changes.is_empty());
    }

    #[test]
    fn a_rejection_needs_a_reason() {
        let req = KycDecisionRequest {
            decision: KycDecision::Reject,
            reason: Some("  ".into()),
        };
        assert!(CheckedKycDecision::try_from(req).is_err());
    }
}
