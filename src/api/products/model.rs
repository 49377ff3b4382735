//! Loan products: what may be borrowed, for how long, at what rate.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::domain::contract::{Amortization, DayCount, Frequency, InterestMethod, Rounding};
use crate::domain::ledger::{Overpayment, PaymentAllocation, Reamortisation};
use crate::domain::money::Amount;
use crate::domain::money::Money;
use crate::platform::error::{ApiError, FieldError};

/// A product as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Product {
    pub product_code: String,
    pub name: String,
    /// PERSONAL_LOAN, BUSINESS_LOAN, …
    pub product_type: String,
    pub min_amount: Amount,
    pub max_amount: Amount,
    pub min_term_months: i32,
    pub max_term_months: i32,
    /// Annual rate as a fraction: "0.1250" is 12.5%.
    #[schema(value_type = String, example = "0.1250")]
    pub annual_interest_rate: Decimal,
    /// Days after a due date before an unpaid installment is charged its late fee.
    pub grace_days: i32,
    /// The fixed part of a late fee.
    pub late_fee_amount: Amount,
    /// The part of a late fee proportional to the installment's unpaid amount, as a fraction.
    #[schema(value_type = String, example = "0.0000")]
    pub late_fee_rate: Decimal,
    /// Days past due after which servicing moves a loan to DEFAULTED.
    pub default_after_days: i32,
    /// The fee on principal paid off before it is due, as a fraction.
    #[schema(value_type = String, example = "0.0000")]
    pub prepayment_fee_rate: Decimal,
    /// What a partial prepayment does to the rest of the schedule: SHORTER_TERM (the
    /// installment stays, the loan ends sooner) or LOWER_INSTALLMENT (the term stays).
    pub prepayment_reamortisation: Reamortisation,
    /// How short an installment may be and still count as paid for aging, late fees and
    /// default (the shortfall stays owed).
    pub arrears_tolerance: Amount,
    /// Where a repayment goes first: INSTALLMENTS_FIRST (the installments due and the current
    /// one, then fees and late fees: an earlier late fee never makes an installment late) or
    /// FEES_FIRST (fees and late fees, then the installments).
    pub payment_allocation: PaymentAllocation,
    /// What money above the payoff does: REFUSE (422) or CREDIT (it pays the loan off; the rest
    /// is owed back to the customer, the loan OVERPAID until refunded).
    pub overpayment: Overpayment,
    /// How a period's interest counts days (docs/money.md shows each): ACTUAL_365_FIXED,
    /// ACTUAL_360, THIRTY_E_360, ACTUAL_ACTUAL_ISDA or THIRTY_360_MONTHLY (a twelfth of the rate
    /// a month).
    pub day_count: DayCount,
    /// ANNUITY (a level installment) or EQUAL_PRINCIPAL.
    pub amortization: Amortization,
    /// DECLINING_BALANCE or FLAT (interest on the amount lent).
    pub interest_method: InterestMethod,
    /// MONTHLY, BIWEEKLY or WEEKLY.
    pub frequency: Frequency,
    /// ISO 4217.
    #[schema(example = "VND")]
    pub currency: String,
    /// Digits after the decimal point every amount of the product's loans has at most.
    #[schema(example = 0)]
    pub currency_digits: i16,
    /// Every installment's total is a multiple of it (the last takes what is left).
    pub installment_multiple: Amount,
    /// The version of the servicing terms above; loans are pinned to the one current at their
    /// approval.
    pub terms_version: i32,
    pub active: bool,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `POST /v1/products`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProductRequest {
    pub product_code: String,
    pub name: String,
    pub product_type: String,
    pub min_amount: Money,
    pub max_amount: Money,
    pub min_term_months: i32,
    pub max_term_months: i32,
    /// A fraction between 0 and 1, as a string: "0.1250".
    #[schema(value_type = String)]
    pub annual_interest_rate: Decimal,
    /// Default 5.
    pub grace_days: Option<i32>,
    /// Default 0.
    pub late_fee_amount: Option<Money>,
    /// A fraction from 0 to 1; default 0.
    #[schema(value_type = Option<String>)]
    pub late_fee_rate: Option<Decimal>,
    /// Default 90.
    pub default_after_days: Option<i32>,
    /// A fraction from 0 to 1; default 0.
    #[schema(value_type = Option<String>)]
    pub prepayment_fee_rate: Option<Decimal>,
    /// SHORTER_TERM (default) or LOWER_INSTALLMENT.
    pub prepayment_reamortisation: Option<Reamortisation>,
    /// How short an installment may be and still count as paid; default 0.
    pub arrears_tolerance: Option<Money>,
    /// INSTALLMENTS_FIRST (default) or FEES_FIRST.
    pub payment_allocation: Option<PaymentAllocation>,
    /// REFUSE (default) or CREDIT.
    pub overpayment: Option<Overpayment>,
    /// ACTUAL_365_FIXED (default), ACTUAL_360, THIRTY_E_360, ACTUAL_ACTUAL_ISDA or
    /// THIRTY_360_MONTHLY (monthly products only).
    pub day_count: Option<DayCount>,
    /// ANNUITY (default) or EQUAL_PRINCIPAL.
    pub amortization: Option<Amortization>,
    /// DECLINING_BALANCE (default) or FLAT.
    pub interest_method: Option<InterestMethod>,
    /// MONTHLY (default), BIWEEKLY or WEEKLY.
    pub frequency: Option<Frequency>,
    /// ISO 4217; default VND.
    pub currency: Option<String>,
    /// 0 to 2; default the currency's minor unit (0 for VND, 2 for most others).
    pub currency_digits: Option<i16>,
    /// Default one unit of the currency.
    pub installment_multiple: Option<Money>,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

/// `PATCH /v1/products/{code}`: absent fields stay as they are.
#[derive(Debug, Default, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductRequest {
    pub name: Option<String>,
    pub min_amount: Option<Money>,
    pub max_amount: Option<Money>,
    pub min_term_months: Option<i32>,
    pub max_term_months: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub annual_interest_rate: Option<Decimal>,
    pub grace_days: Option<i32>,
    pub late_fee_amount: Option<Money>,
    #[schema(value_type = Option<String>)]
    pub late_fee_rate: Option<Decimal>,
    pub default_after_days: Option<i32>,
    #[schema(value_type = Option<String>)]
    pub prepayment_fee_rate: Option<Decimal>,
    pub prepayment_reamortisation: Option<Reamortisation>,
    pub arrears_tolerance: Option<Money>,
    pub payment_allocation: Option<PaymentAllocation>,
    pub overpayment: Option<Overpayment>,
    /// ACTUAL_365_FIXED (default), ACTUAL_360, THIRTY_E_360, ACTUAL_ACTUAL_ISDA or
    /// THIRTY_360_MONTHLY (monthly products only).
    pub day_count: Option<DayCount>,
    /// ANNUITY (default) or EQUAL_PRINCIPAL.
    pub amortization: Option<Amortization>,
    /// DECLINING_BALANCE (default) or FLAT.
    pub interest_method: Option<InterestMethod>,
    /// MONTHLY (default), BIWEEKLY or WEEKLY.
    pub frequency: Option<Frequency>,
    /// ISO 4217; default VND.
    pub currency: Option<String>,
    /// 0 to 2; default the currency's minor unit (0 for VND, 2 for most others).
    pub currency_digits: Option<i16>,
    /// Default one unit of the currency.
    pub installment_multiple: Option<Money>,
    pub active: Option<bool>,
}

/// A product's fields after a create or update, checked together.
pub struct ProductFields {
    pub name: String,
    pub min_amount: Decimal,
    pub max_amount: Decimal,
    pub min_term_months: i32,
    pub max_term_months: i32,
    pub annual_interest_rate: Decimal,
    pub grace_days: i32,
    pub late_fee_amount: Decimal,
    pub late_fee_rate: Decimal,
    pub default_after_days: i32,
    pub prepayment_fee_rate: Decimal,
    pub prepayment_reamortisation: Reamortisation,
    pub arrears_tolerance: Decimal,
    pub payment_allocation: PaymentAllocation,
    pub overpayment: Overpayment,
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    pub currency: String,
    pub currency_digits: i16,
    pub installment_multiple: Decimal,
    pub active: bool,
}

/// ISO 4217 currencies without a minor unit; the others this service takes have two.
const ZERO_DIGIT_CURRENCIES: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// ISO 4217 currencies with three minor digits, which the books' two-decimal columns cannot hold.
const THREE_DIGIT_CURRENCIES: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// The minor-unit digits of `currency` (ISO 4217).
pub fn minor_digits(currency: &str) -> i16 {
    if ZERO_DIGIT_CURRENCIES.contains(&currency) {
        0
    } else {
        2
    }
}

impl ProductFields {
    fn rounding(&self) -> Rounding {
        Rounding {
            digits: u32::try_from(self.currency_digits.clamp(0, 2)).unwrap_or(2),
            multiple: self.installment_multiple,
        }
    }

    /// The checks of the contract conventions and the currency.
    fn check_contract(&self, errors: &mut Vec<FieldError>) {
        if self.day_count == DayCount::Thirty360Monthly && self.frequency != Frequency::Monthly {
            errors.push(FieldError::new(
                "day_count",
                "THIRTY_360_MONTHLY is a twelfth of the rate a month: monthly products only",
            ));
        }
        let code_ok =
            self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase());
        if !code_ok {
            errors.push(FieldError::new(
                "currency",
                "must be an ISO 4217 code, like VND",
            ));
        } else if THREE_DIGIT_CURRENCIES.contains(&self.currency.as_str()) {
            errors.push(FieldError::new(
                "currency",
                "currencies with three minor digits are not supported",
            ));
        }
        if !(0..=2).contains(&self.currency_digits) {
            errors.push(FieldError::new("currency_digits", "must be 0 to 2"));
            return;
        }
        let rounding = self.rounding();
        for (field, amount) in [
            ("installment_multiple", self.installment_multiple),
            ("min_amount", self.min_amount),
            ("max_amount", self.max_amount),
            ("late_fee_amount", self.late_fee_amount),
            ("arrears_tolerance", self.arrears_tolerance),
        ] {
            if !rounding.allows(amount) {
                errors.push(FieldError::new(
                    field,
                    format!(
                        "must be in whole units of {}: at most {} decimals",
                        self.currency, self.currency_digits
                    ),
                ));
            }
        }
    }

    pub fn check(&self) -> Result<(), ApiError> {
        let mut errors = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            errors.push(FieldError::new("name", "must be 1 to 200 characters"));
        }
        if self.max_amount < self.min_amount {
            errors.push(FieldError::new(
                "max_amount",
                "must not be below min_amount",
            ));
        }
        if self.min_term_months < 1 || self.max_term_months > 600 {
            errors.push(FieldError::new(
                "term_months",
                "terms must be within 1 to 600 months",
            ));
        }
        if self.max_term_months < self.min_term_months {
            errors.push(FieldError::new(
                "max_term_months",
                "must not be below min_term_months",
            ));
        }
        if self.annual_interest_rate < Decimal::ZERO
            || self.annual_interest_rate >= Decimal::ONE
            || self.annual_interest_rate.scale() > 4
        {
            errors.push(FieldError::new(
                "annual_interest_rate",
                "must be a fraction from 0 up to 1 with at most 4 decimals",
            ));
        }
        if !(0..=365).contains(&self.grace_days) {
            errors.push(FieldError::new("grace_days", "must be 0 to 365"));
        }
        if !(1..=3650).contains(&self.default_after_days) {
            errors.push(FieldError::new("default_after_days", "must be 1 to 3650"));
        }
        self.check_contract(&mut errors);
        if self.arrears_tolerance < Decimal::ZERO {
            errors.push(FieldError::new("arrears_tolerance", "must not be negative"));
        }
        for (field, rate) in [
            ("late_fee_rate", self.late_fee_rate),
            ("prepayment_fee_rate", self.prepayment_fee_rate),
        ] {
            if rate < Decimal::ZERO || rate > Decimal::ONE || rate.scale() > 6 {
                errors.push(FieldError::new(
                    field,
                    "must be a fraction from 0 to 1 with at most 6 decimals",
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(errors))
        }
    }
}

pub fn check_code(code: &str) -> Result<(), ApiError> {
    let ok = (2..=30).contains(&code.len())
        && code.as_bytes()[0].is_ascii_alphanumeric()
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "product_code",
            "must be 2 to 30 upper-case letters, digits, '_' or '-'",
        ))
    }
}

pub fn check_type(product_type: &str) -> Result<(), ApiError> {
    let ok = (2..=50).contains(&product_type.len())
        && product_type.as_bytes()[0].is_ascii_uppercase()
        && product_type
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "product_type",
            "must be upper-case letters and '_', like PERSONAL_LOAN",
        ))
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProductListQuery {
    /// Include products no longer offered (default false).
    #[serde(default)]
    pub include_inactive: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProductList {
    pub data: Vec<Product>,
}
