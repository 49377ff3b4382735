//! SQL for the portfolio reports: one statement each, over today's live positions
//! (`analytics.loan_positions`) or a past date's snapshot (`analytics.loan_analytics`), whichever
//! `live` says; the other branch of the UNION is switched off by a one-time filter.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sqlx::PgConnection;

#[derive(Debug, Default)]
pub struct ParRow {
    pub product_code: Option<String>,
    pub loans: i64,
    pub outstanding: Decimal,
    pub par1: Decimal,
    pub par30: Decimal,
    pub par60: Decimal,
    pub par90: Decimal,
}

pub struct AgingRow {
    pub bucket: Option<String>,
    pub loans: i64,
    pub principal: Decimal,
    pub interest: Decimal,
    pub penalties: Decimal,
}

pub struct Dates {
    pub today: NaiveDate,
    pub first_snapshot: Option<NaiveDate>,
    pub taken: bool,
}

pub async fn dates(conn: &mut PgConnection, date: Option<NaiveDate>) -> Result<Dates, sqlx::Error> {
    sqlx::query_as!(
        Dates,
        r#"
        SELECT core.business_date(now()) AS "today!", s.first_date AS first_snapshot,
               s.taken AS "taken!"
        FROM analytics.snapshot_taken(coalesce($1, core.business_date(now()))) s
        "#,
        date
    )
    .fetch_one(conn)
    .await
}

/// PAR by product, and the total (the row whose product is NULL).
pub async fn par(
    conn: &mut PgConnection,
    date: NaiveDate,
    live: bool,
) -> Result<Vec<ParRow>, sqlx::Error> {
    sqlx::query_as!(
        ParRow,
        r#"
        WITH positions AS (
            SELECT product_code, principal_outstanding AS principal, days_past_due AS dpd
            FROM analytics.loan_positions($1) WHERE $2
            UNION ALL
            SELECT product_code, principal_outstanding, days_past_due
            FROM analytics.loan_analytics WHERE snapshot_date = $1 AND NOT $2
        )
        SELECT product_code AS "product_code?", count(*) AS "loans!",
               coalesce(sum(principal), 0) AS "outstanding!",
               coalesce(sum(principal) FILTER (WHERE dpd > 0), 0) AS "par1!",
               coalesce(sum(principal) FILTER (WHERE dpd > 30), 0) AS "par30!",
               coalesce(sum(principal) FILTER (WHERE dpd > 60), 0) AS "par60!",
               coalesce(sum(principal) FILTER (WHERE dpd > 90), 0) AS "par90!"
        FROM positions
        GROUP BY ROLLUP (product_code)
        ORDER BY product_code NULLS LAST
        "#,
        date,
        live,
    )
    .fetch_all(conn)
    .await
}

/// Loans and balances by days-past-due bucket (buckets with no loan are absent).
pub async fn aging(
    conn: &mut PgConnection,
    date: NaiveDate,
    live: bool,
) -> Result<Vec<AgingRow>, sqlx::Error> {
    sqlx::query_as!(
        AgingRow,
        r#"
        WITH positions AS (
            SELECT principal_outstanding AS principal, interest_outstanding AS interest,
                   penalties_outstanding AS penalties, days_past_due AS dpd
            FROM analytics.loan_positions($1) WHERE $2
            UNION ALL
            SELECT principal_outstanding, interest_outstanding, penalties_outstanding,
                   days_past_due
            FROM analytics.loan_analytics WHERE snapshot_date = $1 AND NOT $2
        )
        SELECT CASE WHEN dpd = 0 THEN '0' WHEN dpd <= 30 THEN '1-30' WHEN dpd <= 60 THEN '31-60'
                    WHEN dpd <= 90 THEN '61-90' WHEN dpd <= 180 THEN '91-180' ELSE '180+' END
                   AS bucket,
               count(*) AS "loans!", coalesce(sum(principal), 0) AS "principal!",
               coalesce(sum(interest), 0) AS "interest!", coalesce(sum(penalties), 0) AS "penalties!"
        FROM positions
        GROUP BY 1
        "#,
        date,
        live,
    )
    .fetch_all(conn)
    .await
}

#[derive(sqlx::FromRow)]
pub struct RegisterTotals {
    pub count: i64,
    pub total: Decimal,
}

/// The completed payments of a kind ($1) on the business dates $2..=$3: a range of the payments'
/// date index over the months they span. Constants, so that `tests/api/reports.rs` checks their
/// plans as the searches' are.
pub const REGISTER_TOTALS: &str = r#"
    WITH tz AS (SELECT timezone FROM core.business_settings)
    SELECT count(*) AS count, coalesce(sum(p.amount), 0) AS total
    FROM core.payments p
    WHERE p.payment_date >= ($2::date::timestamp AT TIME ZONE (SELECT timezone FROM tz))
      AND p.payment_date < (($3::date + 1)::timestamp AT TIME ZONE (SELECT timezone FROM tz))
      AND p.payment_type = $1 AND p.status = 'COMPLETED'
"#;

/// A page of them, oldest first, after the position ($4 payment_date, $5 payment_id), $6 rows.
pub const REGISTER_PAGE: &str = r#"
    WITH tz AS (SELECT timezone FROM core.business_settings)
    SELECT p.payment_id, p.transaction_id, p.loan_id, p.customer_id, p.amount, p.payment_date,
           p.payment_method, p.channel
    FROM core.payments p
    WHERE p.payment_date >= ($2::date::timestamp AT TIME ZONE (SELECT timezone FROM tz))
      AND p.payment_date < (($3::date + 1)::timestamp AT TIME ZONE (SELECT timezone FROM tz))
      AND p.payment_type = $1 AND p.status = 'COMPLETED'
      AND ($4::timestamptz IS NULL OR (p.payment_date, p.payment_id) > ($4, $5))
    ORDER BY p.payment_date, p.payment_id
    LIMIT $6
"#;

pub async fn register_totals(
    conn: &mut PgConnection,
    kind: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<RegisterTotals, sqlx::Error> {
    sqlx::query_as(REGISTER_TOTALS)
        .bind(kind)
        .bind(from)
        .bind(to)
        .fetch_one(conn)
        .await
}

pub async fn register_page(
    conn: &mut PgConnection,
    kind: &str,
    from: NaiveDate,
    to: NaiveDate,
    after: Option<(chrono::DateTime<chrono::Utc>, uuid::Uuid)>,
    fetch: i64,
) -> Result<Vec<super::registers::RegisterEntry>, sqlx::Error> {
    let (at, id) = after.unzip();
    sqlx::query_as(REGISTER_PAGE)
        .bind(kind)
        .bind(from)
        .bind(to)
        .bind(at)
        .bind(id)
        .bind(fetch)
        .fetch_all(conn)
        .await
}

pub async fn today(conn: &mut PgConnection) -> Result<NaiveDate, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT core.business_date(now()) AS "today!""#)
        .fetch_one(conn)
        .await
}

/// The collection sheet of $1: the loans on the books whose next due date has come, by a range of
/// `idx_loans_collection`, and each one's installments due by $1 and unpaid, after the position
/// ($2 next due date, $3 loan, $4 installment), $5 rows. A constant, so that
/// `tests/api/reports.rs` checks its plan.
pub const SHEET: &str = r#"
    SELECT l.next_due_date, l.loan_id, l.loan_number, i.installment_number, i.due_date,
           ($1::date - i.due_date) AS days_overdue, l.customer_id, c.customer_code,
           c.phone_number, i.principal, i.interest, i.principal + i.interest AS to_collect
    FROM core.loans l
    CROSS JOIN LATERAL (
        SELECT n.installment_number, n.due_date, n.principal_due - n.principal_paid AS principal,
               n.interest_due - n.interest_paid AS interest
        FROM core.loan_installments n
        WHERE n.loan_id = l.loan_id AND n.due_date <= $1
          AND n.principal_due + n.interest_due > n.principal_paid + n.interest_paid
        OFFSET 0  -- kept a subquery: each due loan's installments by its key, never the reverse
    ) i
    JOIN core.customers c ON c.customer_id = l.customer_id
    WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.next_due_date <= $1
      AND ($2::date IS NULL OR (l.next_due_date, l.loan_id) >= ($2, $3))
      AND ($2::date IS NULL OR (l.next_due_date, l.loan_id, i.installment_number) > ($2, $3, $4))
    ORDER BY l.next_due_date, l.loan_id, i.installment_number
    LIMIT $5
"#;

pub async fn sheet(
    conn: &mut PgConnection,
    date: NaiveDate,
    after: Option<super::collection_sheet::SheetCursor>,
    fetch: i64,
) -> Result<Vec<super::collection_sheet::SheetLine>, sqlx::Error> {
    sqlx::query_as(SHEET)
        .bind(date)
        .bind(after.map(|c| c.due))
        .bind(after.map(|c| c.loan))
        .bind(after.map(|c| c.installment))
        .bind(fetch)
        .fetch_all(conn)
        .await
}
