//! What a loan product allows an application: its amounts, terms and rate, and whether it is
//! still offered. Loans read it when they take an application; products manage it.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgConnection;

use crate::domain::contract::{check_units, Frequency, Rounding};
use crate::domain::money::Money;
use crate::platform::error::{ApiError, FieldError};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductTerms {
    pub product_code: String,
    pub product_type: String,
    pub min_amount: Decimal,
    pub max_amount: Decimal,
    pub min_term_months: i32,
    pub max_term_months: i32,
    pub annual_interest_rate: Decimal,
    pub active: bool,
    pub frequency: Frequency,
    pub currency: String,
    pub currency_digits: i16,
}

/// An application's term as asked for.
#[derive(Debug, Clone, Copy)]
pub struct TermRequest {
    pub term_months: Option<i32>,
    pub term_periods: Option<i32>,
    pub first_repayment_date: Option<NaiveDate>,
    /// The business day of the application.
    pub today: NaiveDate,
}

/// A checked term: the months it spans and its number of installments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub months: i32,
    pub periods: i32,
}

/// The terms of product `code`.
pub async fn find(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Option<ProductTerms>, sqlx::Error> {
    sqlx::query_as!(
        ProductTerms,
        r#"
        SELECT product_code, product_type, min_amount, max_amount, min_term_months,
               max_term_months, annual_interest_rate, active, frequency AS "frequency: _",
               currency, currency_digits
        FROM core.products WHERE product_code = $1
        "#,
        code,
    )
    .fetch_optional(conn)
    .await
}

impl ProductTerms {
    /// Checks an application's amount and term against the product's bounds and currency.
    pub fn check_application(&self, amount: Money, term: TermRequest) -> Result<Term, ApiError> {
        let mut errors = Vec::new();
        if !self.active {
            errors.push(FieldError::new(
                "product_code",
                "this product is no longer offered",
            ));
        }
        if amount.amount() < self.min_amount || amount.amount() > self.max_amount {
            errors.push(FieldError::new(
                "amount",
                format!(
                    "must be between {} and {} for {}",
                    self.min_amount, self.max_amount, self.product_code
                ),
            ));
        }
        let rounding = Rounding {
            digits: u32::try_from(self.currency_digits).unwrap_or(2),
            multiple: Decimal::ONE,
        };
        if let Err(ApiError::Unprocessable { errors: e, .. }) =
            check_units("amount", amount.amount(), rounding, &self.currency)
        {
            errors.extend(e);
        }
        let (field, term) = match self.term(term) {
            Ok(checked) => checked,
            Err(error) => {
                errors.push(error);
                return Err(ApiError::validation(errors));
            }
        };
        if term.months < self.min_term_months || term.months > self.max_term_months {
            errors.push(FieldError::new(
                field,
                format!(
                    "must span {} to {} months for {}",
                    self.min_term_months, self.max_term_months, self.product_code
                ),
            ));
        }
        if errors.is_empty() {
            Ok(term)
        } else {
            Err(ApiError::validation(errors))
        }
    }

    /// The term asked for, and the field that asked: months for monthly products, periods for
    /// the others; a first repayment date after today and within two periods.
    fn term(&self, asked: TermRequest) -> Result<(&'static str, Term), FieldError> {
        let periods = match (self.frequency, asked.term_months, asked.term_periods) {
            (_, _, Some(periods)) if periods < 1 => {
                return Err(FieldError::new("term_periods", "must be at least 1"))
            }
            (Frequency::Monthly, Some(months), Some(periods)) if months != periods => {
                return Err(FieldError::new(
                    "term_periods",
                    "must equal term_months on a monthly product",
                ))
            }
            (Frequency::Monthly, Some(months), _) => ("term_months", months),
            (frequency, Some(_), _) => {
                return Err(FieldError::new(
                    "term_months",
                    format!(
                        "{} repays {frequency}: give term_periods, the number of installments",
                        self.product_code
                    ),
                ))
            }
            (_, None, Some(periods)) => ("term_periods", periods),
            (Frequency::Monthly, None, None) => {
                return Err(FieldError::new("term_months", "is required"))
            }
            (frequency, _, _) => {
                return Err(FieldError::new(
                    "term_periods",
                    format!("is required: {} repays {frequency}", self.product_code),
                ))
            }
        };
        if let Some(first) = asked.first_repayment_date {
            let latest = self.frequency.nth_due_date(asked.today, 2);
            if first <= asked.today || first > latest {
                return Err(FieldError::new(
                    "first_repayment_date",
                    format!("must be after today and no later than {latest}"),
                ));
            }
        }
        let (field, periods) = periods;
        Ok((
            field,
            Term {
                months: self.frequency.months_spanned(periods),
                periods,
            },
        ))
    }
}
