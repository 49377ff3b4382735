//! SQL that finds, lists and marks payments (money movements are the ledger's commands, `crate::domain::ledger`).

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::domain::ledger::model::{
    Payment, PaymentKind, PaymentStatus, PAYMENT_COLUMNS as COLUMNS,
};
use crate::platform::pagination::TimeCursor;

/// One payment by id: the directory gives the partition key (see loans::repo::find_sql). With
/// `lock`, the row is locked for the rest of the transaction.
pub async fn find(
    conn: &mut PgConnection,
    id: Uuid,
    lock: bool,
) -> Result<Option<Payment>, sqlx::Error> {
    if lock {
        return sqlx::query_as!(
            Payment,
            r#"
            SELECT p.payment_id, p.transaction_id, p.client_reference, p.loan_id, p.customer_id,
                   p.payment_type AS "payment_type: _", p.amount AS "amount: _", p.payment_method,
                   p.payment_date, p.due_date, p.status AS "status: _", p.channel,
                   p.status_changed_at, p.status_changed_by, p.status_reason, p.created_by,
                   p.created_at
            FROM core.payments p
            WHERE (p.payment_id, p.payment_date) =
                  (SELECT d.payment_id, d.payment_date FROM core.payment_directory d
                   WHERE d.payment_id = $1)
            FOR UPDATE OF p
            "#,
            id,
        )
        .fetch_optional(conn)
        .await;
    }
    sqlx::query_as!(
        Payment,
        r#"
        SELECT p.payment_id, p.transaction_id, p.client_reference, p.loan_id, p.customer_id,
               p.payment_type AS "payment_type: _", p.amount AS "amount: _", p.payment_method,
               p.payment_date, p.due_date, p.status AS "status: _", p.channel,
               p.status_changed_at, p.status_changed_by, p.status_reason, p.created_by,
               p.created_at
        FROM core.payments p
        WHERE (p.payment_id, p.payment_date) =
              (SELECT d.payment_id, d.payment_date FROM core.payment_directory d
               WHERE d.payment_id = $1)
        "#,
        id,
    )
    .fetch_optional(conn)
    .await
}

/// When a loan was applied for (its partition key), through the directory; `None` when the
/// caller cannot see it.
pub async fn loan_applied_at(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT application_date FROM core.loan_directory WHERE loan_id = $1",
        loan_id
    )
    .fetch_optional(conn)
    .await
}

/// A loan's payments, oldest first. No payment precedes its loan's application, so the monthly
/// partitions before it are pruned.
pub async fn list_for_loan(
    conn: &mut PgConnection,
    loan_id: Uuid,
    applied: DateTime<Utc>,
) -> Result<Vec<Payment>, sqlx::Error> {
    sqlx::query_as!(
        Payment,
        r#"
        SELECT p.payment_id, p.transaction_id, p.client_reference, p.loan_id, p.customer_id,
               p.payment_type AS "payment_type: _", p.amount AS "amount: _", p.payment_method,
               p.payment_date, p.due_date, p.status AS "status: _", p.channel,
               p.status_changed_at, p.status_changed_by, p.status_reason, p.created_by,
               p.created_at
        FROM core.payments p
        WHERE p.loan_id = $1 AND p.payment_date >= $2
        ORDER BY p.payment_date, p.payment_id
        "#,
        loan_id,
        applied,
    )
    .fetch_all(conn)
    .await
}

pub struct ListFilter<'a> {
    pub loan_id: Option<Uuid>,
    pub customer_id: Option<Uuid>,
    pub status: Option<PaymentStatus>,
    pub payment_type: Option<PaymentKind>,
    pub client_reference: Option<&'a str>,
    pub transaction_id: Option<&'a str>,
    pub from: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub after: Option<TimeCursor>,
    pub fetch: i64,
}

/// The statement for one page of payments, newest first; exposed so tests can check that a date
/// range reads only the months it covers.
pub fn list_query<'a>(filter: &'a ListFilter<'a>) -> QueryBuilder<'a, Postgres> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
    q.push(COLUMNS).push(" FROM core.payments p WHERE true");
    if let Some(loan) = filter.loan_id {
        q.push(" AND p.loan_id = ").push_bind(loan);
    }
    if let Some(customer) = filter.customer_id {
        q.push(" AND p.customer_id = ").push_bind(customer);
    }
    if let Some(status) = filter.status {
        q.push(" AND p.status = ").push_bind(status);
    }
    if let Some(kind) = filter.payment_type {
        q.push(" AND p.payment_type = ").push_bind(kind);
    }
    if let Some(reference) = filter.client_reference {
        // Unique per customer: the directory's index finds the few payments, and their dates
        // name the partitions to probe.
        q.push(
            " AND (p.payment_id, p.payment_date) IN (SELECT d.payment_id, d.payment_date \
             FROM core.payment_directory d WHERE d.client_reference = ",
        )
        .push_bind(reference)
        .push(")");
    }
    if let Some(transaction_id) = filter.transaction_id {
        // Unique in the directory, whose row names the one partition to probe.
        q.push(
            " AND (p.payment_id, p.payment_date) IN (SELECT d.payment_id, d.payment_date \
             FROM core.payment_directory d WHERE d.transaction_id = ",
        )
        .push_bind(transaction_id)
        .push(")");
    }
    if let Some(from) = filter.from {
        q.push(" AND p.payment_date >= ").push_bind(from);
    }
    if let Some(before) = filter.before {
        q.push(" AND p.payment_date < ").push_bind(before);
    }
    if let Some(after) = &filter.after {
        q.push(" AND (p.payment_date, p.payment_id) < (")
            .push_bind(after.at)
            .push(", ")
            .push_bind(after.id)
            .push(")");
    }
    // The limit is a validated number, written into the statement: a generic plan with
    // `LIMIT $n` does not know how few rows it needs and may sort every partition's rows.
    q.push(" ORDER BY p.payment_date DESC, p.payment_id DESC LIMIT ")
        .push(filter.fetch);
    q
}

pub async fn list(
    conn: &mut PgConnection,
    filter: &ListFilter<'_>,
) -> Result<Vec<Payment>, sqlx::Error> {
    list_query(filter).build_query_as().fetch_all(conn).await
}
