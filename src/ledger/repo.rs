//! SQL of money movements: payment rows, a loan's installments and allocations, and the
//! balance columns they move, under the loan's row lock.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::engine::{Allocation, Component, InstallmentState, Ledger};
use super::model::{LoanStatus, Payment, PaymentKind, PaymentStatus, PAYMENT_COLUMNS as COLUMNS};
use crate::money::Installment;

/// A new payment row.
pub struct NewPayment<'a> {
    pub transaction_id: &'a str,
    pub client_reference: Option<&'a str>,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub payment_type: PaymentKind,
    pub amount: Decimal,
    pub payment_method: Option<&'a str>,
    pub payment_date: DateTime<Utc>,
    pub status: PaymentStatus,
    pub channel: &'a str,
}

pub async fn insert(conn: &mut PgConnection, p: &NewPayment<'_>) -> Result<Payment, sqlx::Error> {
    let sql = format!(
        "INSERT INTO core.payments AS p (payment_id, transaction_id, loan_id, customer_id, \
         payment_type, amount, payment_method, payment_date, status, channel, status_changed_at, \
         client_reference) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now(), $11) RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(p.transaction_id)
        .bind(p.loan_id)
        .bind(p.customer_id)
        .bind(p.payment_type)
        .bind(p.amount)
        .bind(p.payment_method)
        .bind(p.payment_date)
        .bind(p.status.as_str())
        .bind(p.channel)
        .bind(p.client_reference)
        .fetch_one(conn)
        .await
}

/// The payment that pays a loan out, completed at `at`.
pub async fn insert_disbursement(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    loan_number: &str,
    amount: Decimal,
    at: DateTime<Utc>,
) -> Result<Payment, sqlx::Error> {
    let transaction_id = format!("DSB-{loan_number}");
    let payment = NewPayment {
        transaction_id: &transaction_id,
        client_reference: None,
        loan_id,
        customer_id,
        payment_type: PaymentKind::Disbursement,
        amount,
        payment_method: Some("BANK_TRANSFER"),
        payment_date: at,
        status: PaymentStatus::Completed,
        channel: "SYSTEM",
    };
    insert(conn, &payment).await
}

/// The loan a payment moves, locked for the rest of the transaction. Every path that changes a
/// loan's balance or status takes this lock first, and only then touches payment rows, so
/// repayments, reversals and loan moves on one loan queue up instead of deadlocking.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LockedLoan {
    pub loan_id: Uuid,
    pub application_date: DateTime<Utc>,
    pub customer_id: Uuid,
    pub loan_number: String,
    pub status: LoanStatus,
    pub loan_amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub disbursement_date: Option<DateTime<Utc>>,
    pub fees_outstanding: Decimal,
}

pub async fn lock_loan(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<LockedLoan>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.loan_id, l.application_date, l.customer_id, l.loan_number, l.status, \
                l.loan_amount, l.interest_rate, l.term_months, l.disbursement_date, l.fees_outstanding \
         FROM core.loans l \
         WHERE (l.loan_id, l.application_date) = \
               (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1) \
         FOR UPDATE OF l",
    )
    .bind(loan_id)
    .fetch_optional(conn)
    .await
}

pub async fn set_status(
    conn: &mut PgConnection,
    payment: &Payment,
    to: PaymentStatus,
    reason: Option<&str>,
) -> Result<Payment, sqlx::Error> {
    let sql = format!(
        "UPDATE core.payments AS p SET status = $3, status_changed_at = now(), \
         status_changed_by = core.current_actor(), status_reason = $4, version = version + 1, \
         updated_at = now(), updated_by = core.current_actor() \
         WHERE p.payment_id = $1 AND p.payment_date = $2 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(payment.payment_id)
        .bind(payment.payment_date)
        .bind(to.as_str())
        .bind(reason)
        .fetch_one(conn)
        .await
}

/// Opens a disbursed loan's balance columns.
pub async fn open_balances(
    conn: &mut PgConnection,
    loan_id: Uuid,
    application_date: DateTime<Utc>,
    principal: Decimal,
    interest: Decimal,
    first_due: Option<NaiveDate>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE core.loans SET principal_outstanding = $3, interest_outstanding = $4, \
         fees_outstanding = 0, total_paid = 0, next_due_date = $5 \
         WHERE loan_id = $1 AND application_date = $2",
    )
    .bind(loan_id)
    .bind(application_date)
    .bind(principal)
    .bind(interest)
    .bind(first_due)
    .execute(conn)
    .await?;
    Ok(())
}

/// A loan's status and balances, unlocked: what a customer's repayment is checked against
/// before staff confirm it (the confirmation checks again, under the lock).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoanBalances {
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub status: LoanStatus,
    pub principal_outstanding: Option<Decimal>,
    pub interest_outstanding: Option<Decimal>,
    pub fees_outstanding: Decimal,
}

pub async fn loan_balances(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<LoanBalances>, sqlx::Error> {
    sqlx::query_as(
        "SELECT l.loan_id, l.customer_id, l.status, l.principal_outstanding, \
                l.interest_outstanding, l.fees_outstanding \
         FROM core.loans l \
         WHERE (l.loan_id, l.application_date) = \
               (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)",
    )
    .bind(loan_id)
    .fetch_optional(conn)
    .await
}

/// Writes a disbursed loan's schedule.
pub async fn insert_installments(
    conn: &mut PgConnection,
    loan_id: Uuid,
    customer_id: Uuid,
    schedule: &[Installment],
) -> Result<(), sqlx::Error> {
    let numbers: Vec<i32> = schedule.iter().map(|i| i.number as i32).collect();
    let due: Vec<NaiveDate> = schedule.iter().map(|i| i.due_date).collect();
    let principal: Vec<Decimal> = schedule.iter().map(|i| i.principal).collect();
    let interest: Vec<Decimal> = schedule.iter().map(|i| i.interest).collect();
    sqlx::query(
        "INSERT INTO core.loan_installments (loan_id, customer_id, installment_number, due_date, \
         principal_due, interest_due) \
         SELECT $1, $2, n, d, p, i FROM unnest($3::int[], $4::date[], $5::numeric[], $6::numeric[]) \
              AS t(n, d, p, i) ON CONFLICT DO NOTHING",
    )
    .bind(loan_id)
    .bind(customer_id)
    .bind(numbers)
    .bind(due)
    .bind(principal)
    .bind(interest)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn load_installments(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Vec<InstallmentState>, sqlx::Error> {
    let rows: Vec<(i32, NaiveDate, Decimal, Decimal, Decimal, Decimal)> = sqlx::query_as(
        "SELECT installment_number, due_date, principal_due, interest_due, principal_paid, interest_paid \
         FROM core.loan_installments WHERE loan_id = $1 ORDER BY installment_number",
    )
    .bind(loan_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(number, due_date, principal_due, interest_due, principal_paid, interest_paid)| {
                InstallmentState {
                    number,
                    due_date,
                    principal_due,
                    interest_due,
                    principal_paid,
                    interest_paid,
                }
            },
        )
        .collect())
}

/// Writes back what changed between `before` and `after`, and the loan's balance columns.
/// `status` closes or reopens the loan when given.
pub async fn save_ledger(
    conn: &mut PgConnection,
    loan: &LockedLoan,
    before: &Ledger,
    after: &Ledger,
    total_paid_delta: Decimal,
    status: Option<LoanStatus>,
) -> Result<(), sqlx::Error> {
    let changed: Vec<&InstallmentState> = after
        .installments
        .iter()
        .zip(&before.installments)
        .filter(|(a, b)| a != b)
        .map(|(a, _)| a)
        .collect();
    if !changed.is_empty() {
        let numbers: Vec<i32> = changed.iter().map(|s| s.number).collect();
        let principal: Vec<Decimal> = changed.iter().map(|s| s.principal_paid).collect();
        let interest: Vec<Decimal> = changed.iter().map(|s| s.interest_paid).collect();
        sqlx::query(
            "UPDATE core.loan_installments i SET principal_paid = t.p, interest_paid = t.i \
             FROM unnest($2::int[], $3::numeric[], $4::numeric[]) AS t(n, p, i) \
             WHERE i.loan_id = $1 AND i.installment_number = t.n",
        )
        .bind(loan.loan_id)
        .bind(numbers)
        .bind(principal)
        .bind(interest)
        .execute(&mut *conn)
        .await?;
    }
    let b = after.balances();
    sqlx::query(
        "UPDATE core.loans SET principal_outstanding = $3, interest_outstanding = $4, \
         fees_outstanding = $5, total_paid = total_paid + $6, next_due_date = $7, \
         status = coalesce($8, status), \
         closed_at = CASE WHEN $8 = 'CLOSED' THEN now() WHEN $8 IS NOT NULL THEN NULL ELSE closed_at END, \
         version = version + 1, updated_at = now(), updated_by = core.current_actor() \
         WHERE loan_id = $1 AND application_date = $2",
    )
    .bind(loan.loan_id)
    .bind(loan.application_date)
    .bind(b.principal_outstanding)
    .bind(b.interest_outstanding)
    .bind(b.fees_outstanding)
    .bind(total_paid_delta)
    .bind(b.next_due_date)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_allocations(
    conn: &mut PgConnection,
    payment: &Payment,
    allocations: &[Allocation],
) -> Result<(), sqlx::Error> {
    let installments: Vec<Option<i32>> = allocations.iter().map(|a| a.installment).collect();
    let components: Vec<&str> = allocations.iter().map(|a| a.component.as_str()).collect();
    let amounts: Vec<Decimal> = allocations.iter().map(|a| a.amount).collect();
    sqlx::query(
        "INSERT INTO core.payment_allocations (payment_id, loan_id, customer_id, installment_number, \
         component, amount) \
         SELECT $1, $2, $3, n, c, a FROM unnest($4::int[], $5::text[], $6::numeric[]) AS t(n, c, a)",
    )
    .bind(payment.payment_id)
    .bind(payment.loan_id)
    .bind(payment.customer_id)
    .bind(installments)
    .bind(components)
    .bind(amounts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Marks a payment's live allocations reversed and returns them.
pub async fn reverse_allocations(
    conn: &mut PgConnection,
    payment_id: Uuid,
) -> Result<Vec<Allocation>, sqlx::Error> {
    let rows: Vec<(Option<i32>, String, Decimal)> = sqlx::query_as(
        "UPDATE core.payment_allocations SET reversed_at = now() \
         WHERE payment_id = $1 AND reversed_at IS NULL \
         RETURNING installment_number, component, amount",
    )
    .bind(payment_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(installment, component, amount)| {
            Component::parse(&component).map(|component| Allocation {
                installment,
                component,
                amount,
            })
        })
        .collect())
}
