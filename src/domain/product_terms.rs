//! What a loan product allows an application: its amounts, terms and rate, and whether it is
//! still offered. Loans read it when they take an application; products manage it.

use rust_decimal::Decimal;
use sqlx::PgConnection;

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
               max_term_months, annual_interest_rate, active
        FROM core.products WHERE product_code = $1
        "#,
        code,
    )
    .fetch_optional(conn)
    .await
}

impl ProductTerms {
    /// Checks an application's amount and term against the product's bounds.
    pub fn check_application(&self, amount: Money, term_months: i32) -> Result<(), ApiError> {
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
        if term_months < self.min_term_months || term_months > self.max_term_months {
            errors.push(FieldError::new(
                "term_months",
                format!(
                    "must be between {} and {} for {}",
                    self.min_term_months, self.max_term_months, self.product_code
                ),
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(errors))
        }
    }
}
