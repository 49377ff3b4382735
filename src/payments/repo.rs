//! SQL for payments.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::model::Payment;

pub const COLUMNS: &str =
    "payment_id, transaction_id, loan_id, customer_id, payment_type, amount, \
     payment_method, payment_date, due_date, status, channel, created_at";

/// The payment that pays a loan out, completed at `at`.
pub async fn insert_disbursement(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    loan_number: &str,
    amount: Decimal,
    at: DateTime<Utc>,
) -> Result<Payment, sqlx::Error> {
    let sql = format!(
        "INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, payment_type, \
         amount, payment_method, payment_date, status, channel) \
         VALUES ($1, $2, $3, $4, 'DISBURSEMENT', $5, 'BANK_TRANSFER', $6, 'COMPLETED', 'SYSTEM') \
         RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(format!("DSB-{loan_number}"))
        .bind(loan_id)
        .bind(customer_id)
        .bind(amount)
        .bind(at)
        .fetch_one(conn)
        .await
}

/// A loan's payments, oldest first.
pub async fn list_for_loan(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Vec<Payment>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM core.payments WHERE loan_id = $1 ORDER BY payment_date, payment_id"
    );
    sqlx::query_as(&sql).bind(loan_id).fetch_all(conn).await
}
