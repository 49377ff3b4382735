//! SQL for products.

use sqlx::PgConnection;

use super::model::{Product, ProductFields};

const COLUMNS: &str = "product_code, name, product_type, min_amount, max_amount, min_term_months, \
     max_term_months, annual_interest_rate, grace_days, late_fee_amount, late_fee_rate, \
     default_after_days, prepayment_fee_rate, prepayment_reamortisation, active, version, \
     created_at, updated_at";

pub async fn list(
    conn: &mut PgConnection,
    include_inactive: bool,
) -> Result<Vec<Product>, sqlx::Error> {
    let sql =
        format!("SELECT {COLUMNS} FROM core.products WHERE active OR $1 ORDER BY product_code");
    sqlx::query_as(&sql)
        .bind(include_inactive)
        .fetch_all(conn)
        .await
}

pub async fn find(conn: &mut PgConnection, code: &str) -> Result<Option<Product>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM core.products WHERE product_code = $1");
    sqlx::query_as(&sql).bind(code).fetch_optional(conn).await
}

/// Reads a product and locks it against concurrent updates until the transaction ends.
pub async fn find_for_update(
    conn: &mut PgConnection,
    code: &str,
) -> Result<Option<Product>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM core.products WHERE product_code = $1 FOR UPDATE");
    sqlx::query_as(&sql).bind(code).fetch_optional(conn).await
}

pub async fn insert(
    conn: &mut PgConnection,
    code: &str,
    product_type: &str,
    fields: &ProductFields,
) -> Result<Product, sqlx::Error> {
    let sql = format!(
        "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
         min_term_months, max_term_months, annual_interest_rate, active, grace_days, \
         late_fee_amount, late_fee_rate, default_after_days, prepayment_fee_rate, \
         prepayment_reamortisation) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(code)
        .bind(fields.name.trim())
        .bind(product_type)
        .bind(fields.min_amount)
        .bind(fields.max_amount)
        .bind(fields.min_term_months)
        .bind(fields.max_term_months)
        .bind(fields.annual_interest_rate)
        .bind(fields.active)
        .bind(fields.grace_days)
        .bind(fields.late_fee_amount)
        .bind(fields.late_fee_rate)
        .bind(fields.default_after_days)
        .bind(fields.prepayment_fee_rate)
        .bind(fields.prepayment_reamortisation)
        .fetch_one(conn)
        .await
}

pub async fn update(
    conn: &mut PgConnection,
    code: &str,
    fields: &ProductFields,
) -> Result<Product, sqlx::Error> {
    let sql = format!(
        "UPDATE core.products SET name = $2, min_amount = $3, max_amount = $4, \
         min_term_months = $5, max_term_months = $6, annual_interest_rate = $7, active = $8, \
         grace_days = $9, late_fee_amount = $10, late_fee_rate = $11, default_after_days = $12, \
         prepayment_fee_rate = $13, prepayment_reamortisation = $14, version = version + 1, updated_at = now() WHERE product_code = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(code)
        .bind(fields.name.trim())
        .bind(fields.min_amount)
        .bind(fields.max_amount)
        .bind(fields.min_term_months)
        .bind(fields.max_term_months)
        .bind(fields.annual_interest_rate)
        .bind(fields.active)
        .bind(fields.grace_days)
        .bind(fields.late_fee_amount)
        .bind(fields.late_fee_rate)
        .bind(fields.default_after_days)
        .bind(fields.prepayment_fee_rate)
        .bind(fields.prepayment_reamortisation)
        .fetch_one(conn)
        .await
}
