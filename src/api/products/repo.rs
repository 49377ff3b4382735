//! SQL for products.

use sqlx::PgConnection;

use super::model::{Product, ProductFields};

pub async fn list(
    conn: &mut PgConnection,
    include_inactive: bool,
) -> Result<Vec<Product>, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"
        SELECT product_code, name, product_type, min_amount AS "min_amount: _",
               max_amount AS "max_amount: _", min_term_months, max_term_months,
               annual_interest_rate, grace_days, late_fee_amount AS "late_fee_amount: _",
               late_fee_rate, default_after_days, prepayment_fee_rate,
               prepayment_reamortisation AS "prepayment_reamortisation: _",
               arrears_tolerance AS "arrears_tolerance: _",
               payment_allocation AS "payment_allocation: _", overpayment AS "overpayment: _",
               day_count AS "day_count: _", amortization AS "amortization: _",
               interest_method AS "interest_method: _", frequency AS "frequency: _", currency,
               currency_digits, installment_multiple AS "installment_multiple: _",
               terms_version, active, version,
               created_at, updated_at
        FROM core.products WHERE active OR $1 ORDER BY product_code
        "#,
        include_inactive,
    )
    .fetch_all(conn)
    .await
}

pub async fn find(conn: &mut PgConnection, code: &str) -> Result<Option<Product>, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"
        SELECT product_code, name, product_type, min_amount AS "min_amount: _",
               max_amount AS "max_amount: _", min_term_months, max_term_months,
               annual_interest_rate, grace_days, late_fee_amount AS "late_fee_amount: _",
               late_fee_rate, default_after_days, prepayment_fee_rate,
               prepayment_reamortisation AS "prepayment_reamortisation: _",
               arrears_tolerance AS "arrears_tolerance: _",
               payment_allocation AS "payment_allocation: _", overpayment AS "overpayment: _",
               day_count AS "day_count: _", amortization AS "amortization: _",
               interest_method AS "interest_method: _", frequency AS "frequency: _", currency,
               currency_digits, installment_multiple AS "installment_multiple: _",
               terms_version, active, version,
               created_at, updated_at
        FROM core.products WHERE product_code = $1
        "#,
        code,
    )
    .fetch_optional(conn)
    .await
}

/// Locks the product against concurrent updates until the transaction ends; whether it exists.
pub async fn lock(conn: &mut PgConnection, code: &str) -> Result<bool, sqlx::Error> {
    let locked = sqlx::query_scalar!(
        "SELECT true AS \"locked!\" FROM core.products WHERE product_code = $1 FOR UPDATE",
        code
    )
    .fetch_optional(conn)
    .await?;
    Ok(locked.is_some())
}

pub async fn insert(
    conn: &mut PgConnection,
    code: &str,
    product_type: &str,
    fields: &ProductFields,
) -> Result<Product, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"
        INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount,
            min_term_months, max_term_months, annual_interest_rate, active, grace_days,
            late_fee_amount, late_fee_rate, default_after_days, prepayment_fee_rate,
            prepayment_reamortisation, arrears_tolerance, payment_allocation, overpayment,
            day_count, amortization, interest_method, frequency, currency, currency_digits,
            installment_multiple)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                $19, $20, $21, $22, $23, $24, $25)
        RETURNING product_code, name, product_type, min_amount AS "min_amount: _",
               max_amount AS "max_amount: _", min_term_months, max_term_months,
               annual_interest_rate, grace_days, late_fee_amount AS "late_fee_amount: _",
               late_fee_rate, default_after_days, prepayment_fee_rate,
               prepayment_reamortisation AS "prepayment_reamortisation: _",
               arrears_tolerance AS "arrears_tolerance: _",
               payment_allocation AS "payment_allocation: _", overpayment AS "overpayment: _",
               day_count AS "day_count: _", amortization AS "amortization: _",
               interest_method AS "interest_method: _", frequency AS "frequency: _", currency,
               currency_digits, installment_multiple AS "installment_multiple: _",
               terms_version, active, version,
               created_at, updated_at
        "#,
        code,
        fields.name.trim(),
        product_type,
        fields.min_amount,
        fields.max_amount,
        fields.min_term_months,
        fields.max_term_months,
        fields.annual_interest_rate,
        fields.active,
        fields.grace_days,
        fields.late_fee_amount,
        fields.late_fee_rate,
        fields.default_after_days,
        fields.prepayment_fee_rate,
        fields.prepayment_reamortisation.as_str(),
        fields.arrears_tolerance,
        fields.payment_allocation.as_str(),
        fields.overpayment.as_str(),
        fields.day_count.as_str(),
        fields.amortization.as_str(),
        fields.interest_method.as_str(),
        fields.frequency.as_str(),
        fields.currency,
        fields.currency_digits,
        fields.installment_multiple,
    )
    .fetch_one(conn)
    .await
}

pub async fn update(
    conn: &mut PgConnection,
    code: &str,
    fields: &ProductFields,
) -> Result<Product, sqlx::Error> {
    sqlx::query_as!(
        Product,
        r#"
        UPDATE core.products
        SET name = $2, min_amount = $3, max_amount = $4, min_term_months = $5,
            max_term_months = $6, annual_interest_rate = $7, active = $8, grace_days = $9,
            late_fee_amount = $10, late_fee_rate = $11, default_after_days = $12,
            prepayment_fee_rate = $13, prepayment_reamortisation = $14, arrears_tolerance = $15,
            payment_allocation = $16, overpayment = $17, day_count = $18, amortization = $19,
            interest_method = $20, frequency = $21, currency = $22, currency_digits = $23,
            installment_multiple = $24, version = version + 1,
            updated_at = now()
        WHERE product_code = $1
        RETURNING product_code, name, product_type, min_amount AS "min_amount: _",
               max_amount AS "max_amount: _", min_term_months, max_term_months,
               annual_interest_rate, grace_days, late_fee_amount AS "late_fee_amount: _",
               late_fee_rate, default_after_days, prepayment_fee_rate,
               prepayment_reamortisation AS "prepayment_reamortisation: _",
               arrears_tolerance AS "arrears_tolerance: _",
               payment_allocation AS "payment_allocation: _", overpayment AS "overpayment: _",
               day_count AS "day_count: _", amortization AS "amortization: _",
               interest_method AS "interest_method: _", frequency AS "frequency: _", currency,
               currency_digits, installment_multiple AS "installment_multiple: _",
               terms_version, active, version,
               created_at, updated_at
        "#,
        code,
        fields.name.trim(),
        fields.min_amount,
        fields.max_amount,
        fields.min_term_months,
        fields.max_term_months,
        fields.annual_interest_rate,
        fields.active,
        fields.grace_days,
        fields.late_fee_amount,
        fields.late_fee_rate,
        fields.default_after_days,
        fields.prepayment_fee_rate,
        fields.prepayment_reamortisation.as_str(),
        fields.arrears_tolerance,
        fields.payment_allocation.as_str(),
        fields.overpayment.as_str(),
        fields.day_count.as_str(),
        fields.amortization.as_str(),
        fields.interest_method.as_str(),
        fields.frequency.as_str(),
        fields.currency,
        fields.currency_digits,
        fields.installment_multiple,
    )
    .fetch_one(conn)
    .await
}
