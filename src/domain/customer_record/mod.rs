//! A customer record as the API and the ETL import both receive it, and the checks that turn it
//! into a customer ready to insert: one definition of a valid customer for both. Its model, its
//! SQL and its view are the submodules, shared by `/v1/customers`, `/v1/me` and the imports.

pub mod model;
pub mod repo;
pub mod view;

use chrono::{NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::platform::auth::is_office_code;
use crate::platform::error::{ApiError, FieldError};
use crate::platform::pii::IdNumber;

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
    /// The office the customer belongs to (its code). By default the caller's own office, else
    /// the head office. Staff may choose only their office or one below it (403 otherwise).
    #[schema(example = "HN01")]
    pub branch: Option<String>,
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
    pub branch: Option<String>,
}

/// Collects every invalid field of a request, so the client hears of all of them at once.
#[derive(Default)]
pub struct Checks(Vec<FieldError>);

impl Checks {
    pub fn check<T>(&mut self, field: &'static str, result: Result<T, &'static str>) -> Option<T> {
        result
            .map_err(|message| self.0.push(FieldError::new(field, message)))
            .ok()
    }

    pub fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, ApiError> {
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
        let branch = c.check(
            "branch",
            req.branch
                .map(|code| {
                    if is_office_code(&code) {
                        Ok(code)
                    } else {
                        Err("must be an office code, such as HN01")
                    }
                })
                .transpose(),
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
                branch: branch?,
            })
        })
    }
}

pub fn parse_customer_code(raw: &str) -> Result<String, &'static str> {
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

pub fn parse_full_name(raw: &str) -> Result<String, &'static str> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 255 {
        return Err("must be 1 to 255 characters");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(name.to_owned())
}

/// A phone number in one of the forms the database turns into E.164 (`core.e164`, migration
/// 0025): international (`+` or `00`, then 8 to 15 digits not starting with 0), national (one
/// leading 0, then 7 to 12 digits, to which the business's country code is added), or the
/// country code and number without a prefix. Separators (space, `-`, `.`, parentheses) are
/// dropped; the database writes the canonical form.
pub fn parse_phone(raw: &str) -> Result<String, &'static str> {
    let phone: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let international =
        |s: &str| all_digits(s) && (8..=15).contains(&s.len()) && !s.starts_with('0');
    let valid = if let Some(rest) = phone.strip_prefix('+').or_else(|| phone.strip_prefix("00")) {
        international(rest)
    } else if let Some(national) = phone.strip_prefix('0') {
        all_digits(national) && (7..=12).contains(&national.len()) && !national.starts_with('0')
    } else {
        international(&phone)
    };
    if valid {
        Ok(phone)
    } else {
        Err("must be a phone number: '+' or '00' and 8 to 15 digits, or a national number with a leading 0")
    }
}

pub fn parse_email(raw: &str) -> Result<String, &'static str> {
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

pub fn check_date_of_birth(date: NaiveDate) -> Result<NaiveDate, &'static str> {
    let earliest = NaiveDate::from_ymd_opt(1900, 1, 1).unwrap_or(NaiveDate::MIN);
    if date < earliest || date >= Utc::now().date_naive() {
        Err("must be in the past and not before 1900-01-01")
    } else {
        Ok(date)
    }
}

pub fn check_address(address: Address) -> Result<Address, &'static str> {
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

pub fn check_credit_score(score: i32) -> Result<i32, &'static str> {
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
    fn phones_in_every_form_the_database_turns_into_e164_and_no_other() {
        for good in [
            "+84 901 234 567",
            "0084901234567",
            "(090) 123-4567",
            "84901234567",
        ] {
            assert!(parse_phone(good).is_ok(), "{good}");
        }
        assert_eq!(
            parse_phone("+84 (901) 234.567").as_deref(),
            Ok("+84901234567")
        );
        for bad in [
            "+0901234567",
            "000901234567",
            "1234567",
            "+1234567890123456",
            "0123",
            "090123456789012",
            "+84 90x 234 567",
            "",
            "+",
        ] {
            assert!(parse_phone(bad).is_err(), "{bad}");
        }
    }
}
