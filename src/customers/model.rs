//! Customer request and response types, and the parsing that turns requests into domain values.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
use crate::pii::IdNumber;

/// A customer's id (UUIDv7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(transparent)]
pub struct CustomerId(pub Uuid);

/// Where KYC (know-your-customer) checks stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KycStatus {
    Pending,
    Approved,
    Rejected,
}

impl KycStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Approved => "APPROVED",
            Self::Rejected => "REJECTED",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Pending, Self::Approved, Self::Rejected]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// A postal address. Stored as JSONB; `city` is searchable (`GET /v1/customers?city=`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"city": "Ho Chi Minh", "district": "District 1", "ward": "Ben Nghe"}))]
pub struct Address {
    pub city: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ward: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub street: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
}

/// `POST /v1/customers`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "customer_code": "CUST004", "full_name": "Pham Thi Dung", "id_number": "079123456789",
    "phone_number": "0934567890", "email": "dung.pham@email.com", "date_of_birth": "1992-03-04",
    "address": {"city": "Can Tho", "district": "Ninh Kieu"}, "credit_score": 710
}))]
pub struct CreateCustomerRequest {
    /// 3 to 20 upper-case letters, digits, `_` or `-`; unique.
    pub customer_code: String,
    pub full_name: String,
    /// National ID number, 6 to 20 letters or digits; unique; stored encrypted.
    pub id_number: String,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub address: Option<Address>,
    /// 300 to 850.
    pub credit_score: Option<i32>,
}

/// A customer ready to insert: every field checked.
#[derive(Debug)]
pub struct NewCustomer {
    pub customer_code: String,
    pub full_name: String,
    pub id_number: IdNumber,
    pub phone_number: Option<String>,
    pub email: Option<String>,
    pub date_of_birth: Option<NaiveDate>,
    pub address: Option<Address>,
    pub credit_score: Option<i32>,
}

/// Collects every invalid field of a request, so the client hears of all of them at once.
#[derive(Default)]
struct Checks(Vec<FieldError>);

impl Checks {
    fn check<T>(&mut self, field: &'static str, result: Result<T, &'static str>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
        match (self.0.is_empty(), value()) {
            (true, Some(v)) => Ok(v),
            _ => Err(ApiError::validation(self.0)),
        }
    }
}

impl TryFrom<CreateCustomerRequest> for NewCustomer {
    type Error = ApiError;

    fn try_from(req: CreateCustomerRequest) -> Result<Self, ApiError> {
        let mut c = Checks::default();
        let customer_code = c.check("customer_code", parse_customer_code(&req.customer_code));
        let full_name = c.check("full_name", parse_full_name(&req.full_name));
        let id_number = c.check("id_number", IdNumber::parse(&req.id_number));
        let phone_number = c.check(
            "phone_number",
            req.phone_number.as_deref().map(parse_phone).transpose(),
        );
        let email = c.check("email", req.email.as_deref().map(parse_email).transpose());
        let date_of_birth = c.check(
            "date_of_birth",
            req.date_of_birth.map(check_date_of_birth).transpose(),
        );
        let address = c.check("address", req.address.map(check_address).transpose());
        let credit_score = c.check(
            "credit_score",
            req.credit_score.map(check_credit_score).transpose(),
        );
        c.finish(|| {
            Some(NewCustomer {
                customer_code: customer_code?,
                full_name: full_name?,
                id_number: id_number?,
                phone_number: phone_number?,
                email: email?,
                date_of_birth: date_of_birth?,
                address: address?,
                credit_score: credit_score?,
            })
        })
    }
}

/// `PATCH /v1/customers/{id}`: a JSON merge patch. An absent field is left alone; `null` clears
/// an optional field. `customer_code` and `id_number` cannot change.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomerRequest {
    pub full_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub email: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<NaiveDate>)]
    pub date_of_birth: Option<Option<NaiveDate>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Address>)]
    pub address: Option<Option<Address>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i32>)]
    pub credit_score: Option<Option<i32>>,
}

/// Tells a field sent as `null` (`Some(None)`) from a field not sent (`None`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
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
    /// 1 to 200; default 50.
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
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
}

/// A page of customers.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerPage {
    pub data: Vec<Customer>,
    pub next_cursor: Option<String>,
}

fn parse_customer_code(raw: &str) -> Result<String, &'static str> {
    let code = raw.trim();
    let valid = (3..=20).contains(&code.len())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && code.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(code.to_owned())
    } else {
        Err("must be 3 to 20 upper-case letters, digits, '_' or '-', starting with a letter or digit")
    }
}

fn parse_full_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

fn parse_phone(raw: &str) -> Result<String, &'static str> {
    let phone: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let digits = phone.strip_prefix('+').unwrap_or(&phone);
    if (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(phone)
    } else {
        Err("must be 8 to 15 digits, optionally after '+'")
    }
}

fn parse_email(raw: &str) -> Result<String, &'static str> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 255
        && !email.chars().any(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain
                    .split_once('.')
                    .is_some_and(|(a, b)| !a.is_empty() && !b.is_empty() && !b.ends_with('.'))
        });
    if valid {
        Ok(email)
    } else {
        Err("must be an e-mail address")
    }
}

fn check_date_of_birth(date: NaiveDate) -> Result<NaiveDate, &'static str> {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if date < earliest || date >= Utc::now().date_naive() {
        Err("must be in the past and not before 1900-01-01")
    } else {
        Ok(date)
    }
}

fn check_address(address: Address) -> Result<Address, &'static str> {
    let fields = [
        Some(&address.city),
        address.district.as_ref(),
        address.ward.as_ref(),
        address.street.as_ref(),
        address.postal_code.as_ref(),
    ];
    if address.city.trim().is_empty() {
        return Err("city must not be empty");
    }
    if fields
        .into_iter()
        .flatten()
        .any(|f| f.chars().count() > 200)
    {
        return Err("each part must be at most 200 characters");
    }
    Ok(address)
}

fn check_credit_score(score: i32) -> Result<i32, &'static str> {
    if (300..=850).contains(&score) {
        Ok(score)
    } else {
        Err("must be between 300 and 850")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateCustomerRequest {
        serde_json::from_value(serde_json::json!({
            "customer_code": "CUST100", "full_name": " Nguyen Van An ", "id_number": "123 456 789",
            "phone_number": "0901-234-567", "email": "An.Nguyen@Email.com",
            "address": {"city": "Ho Chi Minh"}, "credit_score": 750
        }))
        .unwrap()
    }

    #[test]
    fn a_good_request_is_normalised() {
        let c = NewCustomer::try_from(request()).unwrap();
        assert_eq!(c.full_name, "Nguyen Van An");
        assert_eq!(c.id_number.as_str(), "123456789");
        assert_eq!(c.phone_number.as_deref(), Some("0901234567"));
        assert_eq!(c.email.as_deref(), Some("an.nguyen@email.com"));
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut req = request();
        req.customer_code = "x".into();
        req.email = Some("not-an-email".into());
        req.credit_score = Some(900);
        let ApiError::Unprocessable { errors, .. } = NewCustomer::try_from(req).unwrap_err() else {
            panic!("expected 422");
        };
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_ref()).collect();
        assert_eq!(fields, ["customer_code", "email", "credit_score"]);
    }

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
