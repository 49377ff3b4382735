use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{CustomerSummary, InstallmentDue, InstallmentStatus, NextPayment};
use crate::domain::money::Amount;

/// The loan's installments with their status on the business day; `None` when the caller
/// cannot see the loan. Installments a shorter-term prepayment removed (nothing due) are left out.
pub async fn installments(
    conn: &mut PgConnection,
    loan_id: Uuid,
) -> Result<Option<(NaiveDate, Vec<InstallmentDue>)>, sqlx::Error> {
    struct Row {
        business_date: NaiveDate,
        // All null on the one row of a loan without installments (the LEFT JOIN).
        number: Option<i32>,
        due_date: Option<NaiveDate>,
        principal_due: Option<Amount>,
        interest_due: Option<Amount>,
        principal_paid: Option<Amount>,
        interest_paid: Option<Amount>,
        remaining: Option<Amount>,
        status: Option<InstallmentStatus>,
    }
    let rows = sqlx::query_as!(
        Row,
        r#"
        SELECT t.today AS "business_date!", i.installment_number AS "number?", i.due_date AS "due_date?",
               i.principal_due AS "principal_due?: _", i.interest_due AS "interest_due?: _",
               i.principal_paid AS "principal_paid?: _", i.interest_paid AS "interest_paid?: _",
               i.principal_due + i.interest_due - i.principal_paid - i.interest_paid
                   AS "remaining?: _",
               CASE WHEN i.principal_paid + i.interest_paid >= i.principal_due + i.interest_due THEN 'PAID'
                    WHEN t.today < i.due_date THEN
                         CASE WHEN i.principal_paid + i.interest_paid > 0 THEN 'PARTIALLY_PAID'
                              ELSE 'UPCOMING' END
                    WHEN t.today <= i.due_date + p.grace_days THEN 'DUE'
                    ELSE 'OVERDUE' END AS "status?: _"
        FROM core.loans l
        JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
        CROSS JOIN (SELECT core.business_date(now()) AS today) t
        LEFT JOIN core.loan_installments i
               ON i.loan_id = l.loan_id AND (i.principal_due <> 0 OR i.interest_due <> 0)
        WHERE (l.loan_id, l.application_date) =
              (SELECT d.loan_id, d.application_date FROM core.loan_directory d WHERE d.loan_id = $1)
        ORDER BY i.installment_number
        "#,
        loan_id,
    )
    .fetch_all(conn)
    .await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let business_date = first.business_date;
    Ok(Some((
        business_date,
        rows.into_iter()
            .filter_map(|r| {
                Some(InstallmentDue {
                    number: r.number?,
                    due_date: r.due_date?,
                    principal_due: r.principal_due?,
                    interest_due: r.interest_due?,
                    principal_paid: r.principal_paid?,
                    interest_paid: r.interest_paid?,
                    remaining: r.remaining?,
                    status: r.status?,
                })
            })
            .collect(),
    )))
}

struct SummaryRow {
    customer_exists: bool,
    business_date: NaiveDate,
    active_loans: i64,
    total_outstanding: Decimal,
    amount_due_now: Decimal,
    arrears: Decimal,
    next_loan_id: Option<Uuid>,
    next_loan_number: Option<String>,
    next_installment: Option<i32>,
    next_due_date: Option<NaiveDate>,
    next_amount: Option<Decimal>,
}

/// The summary of a customer the caller may see; `None` when there is no such customer.
pub async fn summary_if_exists(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<Option<CustomerSummary>, sqlx::Error> {
    let row = sqlx::query_as!(
        SummaryRow,
        r#"
        WITH t AS (SELECT core.business_date(now()) AS today),
        active AS (
            SELECT l.loan_id, l.loan_number, l.product_code, l.terms_version,
                   coalesce(l.principal_outstanding, 0) + coalesce(l.interest_outstanding, 0)
                       + l.fees_outstanding + l.penalties_outstanding AS outstanding,
                   l.fees_outstanding + l.penalties_outstanding AS charges
            FROM core.loans l
            WHERE l.customer_id = $1 AND l.status IN ('DISBURSED', 'DEFAULTED')
        ),
        unpaid AS (
            SELECT a.loan_id, a.loan_number, i.installment_number, i.due_date, p.grace_days,
                   i.principal_due + i.interest_due - i.principal_paid - i.interest_paid AS amount
            FROM active a
            JOIN core.loan_installments i ON i.loan_id = a.loan_id
            JOIN core.loan_terms p
              ON (p.product_code, p.terms_version) = (a.product_code, a.terms_version)
            WHERE i.principal_due + i.interest_due > i.principal_paid + i.interest_paid
        ),
        next AS (
            SELECT u.* FROM unpaid u, t WHERE u.due_date >= t.today
            ORDER BY u.due_date, u.loan_number, u.installment_number LIMIT 1
        )
        SELECT EXISTS (SELECT 1 FROM core.customers c WHERE c.customer_id = $1) AS "customer_exists!",
               t.today AS "business_date!",
               (SELECT count(*) FROM active) AS "active_loans!",
               (SELECT coalesce(sum(outstanding), 0) FROM active) AS "total_outstanding!",
               (SELECT coalesce(sum(amount), 0) FROM unpaid WHERE due_date <= t.today)
                   + (SELECT coalesce(sum(charges), 0) FROM active) AS "amount_due_now!",
               (SELECT coalesce(sum(amount), 0) FROM unpaid WHERE due_date + grace_days < t.today) AS "arrears!",
               n.loan_id AS "next_loan_id?", n.loan_number AS "next_loan_number?",
               n.installment_number AS "next_installment?", n.due_date AS "next_due_date?",
               n.amount AS "next_amount?"
        FROM t LEFT JOIN next n ON true
        "#,
        customer_id,
    )
    .fetch_one(conn)
    .await?;
    if !row.customer_exists {
        return Ok(None);
    }
    let next_payment = match (
        row.next_loan_id,
        row.next_loan_number,
        row.next_installment,
        row.next_due_date,
        row.next_amount,
    ) {
        (
            Some(loan_id),
            Some(loan_number),
            Some(installment_number),
            Some(due_date),
            Some(amount),
        ) => Some(NextPayment {
            loan_id,
            loan_number,
            installment_number,
            due_date,
            amount: Amount(amount),
        }),
        _ => None,
    };
    Ok(Some(CustomerSummary {
        customer_id,
        business_date: row.business_date,
        active_loans: row.active_loans,
        next_payment,
        amount_due_now: Amount(row.amount_due_now),
        arrears: Amount(row.arrears),
        total_outstanding: Amount(row.total_outstanding),
    }))
}

/// The caller's own summary (a customer always exists to themselves).
pub async fn summary(
    conn: &mut PgConnection,
    customer_id: Uuid,
) -> Result<CustomerSummary, sqlx::Error> {
    summary_if_exists(conn, customer_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}
