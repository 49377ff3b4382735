//! SQL of a replay: many loans per statement, in the replaying transaction.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::domain::contract::{Amortization, DayCount, Frequency, InterestMethod};
use crate::domain::ledger::model::LoanStatus;
use crate::domain::ledger::{InstallmentState, LockedLoan};
use crate::domain::money::Installment;

/// Marks the transaction as a replay (its historical movements emit no events) and defers the
/// keys it checks when a chunk is done.
pub async fn start(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(r#"SELECT set_config('app.replaying', 'on', true) AS "on!""#)
        .fetch_one(&mut *conn)
        .await?;
    set_keys(conn, "DEFERRED").await
}

// The keys of the rows a replay writes and then updates at every repayment day: PostgreSQL
// checks them again on each update of a row the transaction wrote, so a replay defers them to
// the end of a chunk, where each row is looked up once (migration 0052).
const REPLAY_KEYS: &str = "core.loans_customer_id_fkey, core.loans_product_code_fkey, \
                           core.loans_terms_fkey, core.loan_installments_loan_id_fkey";

async fn set_keys(conn: &mut PgConnection, mode: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!("SET CONSTRAINTS {REPLAY_KEYS} {mode}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Checks the keys the replay deferred, before the chunk's savepoint is released.
pub async fn check_keys(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    set_keys(conn, "IMMEDIATE").await
}

/// Savepoint handling: a chunk that refuses a loan is rolled back and replayed without it.
pub async fn savepoint(conn: &mut PgConnection, command: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(command).execute(conn).await?;
    Ok(())
}

pub const SAVEPOINT: &str = "SAVEPOINT loan_replay";
pub const RELEASE: &str = "RELEASE SAVEPOINT loan_replay";
pub const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT loan_replay";

/// The loans of `references` already imported from `source_system`.
pub async fn already_imported(
    conn: &mut PgConnection,
    source_system: &str,
    references: &[String],
) -> Result<Vec<(String, Uuid)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT source_reference, loan_id FROM core.imported_loans
        WHERE source_system = $1 AND source_reference = ANY ($2)
        "#,
        source_system,
        references,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.source_reference, r.loan_id))
        .collect())
}

/// A product's current terms: what a loan booked now pins.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProductTerms {
    pub product_code: String,
    pub product_type: String,
    pub terms_version: i32,
    pub day_count: DayCount,
    pub amortization: Amortization,
    pub interest_method: InterestMethod,
    pub frequency: Frequency,
    pub currency: String,
    pub currency_digits: i16,
    pub installment_multiple: Decimal,
}

pub async fn product_terms(
    conn: &mut PgConnection,
    codes: &[String],
) -> Result<Vec<ProductTerms>, sqlx::Error> {
    sqlx::query_as!(
        ProductTerms,
        r#"
        SELECT p.product_code, p.product_type, p.terms_version, p.day_count AS "day_count: _",
               p.amortization AS "amortization: _", p.interest_method AS "interest_method: _",
               p.frequency AS "frequency: _", p.currency, p.currency_digits,
               p.installment_multiple
        FROM core.products p WHERE p.product_code = ANY ($1)
        "#,
        codes,
    )
    .fetch_all(conn)
    .await
}

/// The business day of each moment, in order.
pub async fn business_dates(
    conn: &mut PgConnection,
    moments: &[DateTime<Utc>],
) -> Result<Vec<NaiveDate>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"
        SELECT core.business_date(t) AS "day!"
        FROM unnest($1::timestamptz[]) WITH ORDINALITY AS u(t, n) ORDER BY n
        "#,
        moments,
    )
    .fetch_all(conn)
    .await
}

/// A loan as it is booked: approved and paid out at its disbursement, maturing on its last
/// due date.
pub struct NewLoan<'a> {
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub product: &'a ProductTerms,
    pub amount: Decimal,
    pub interest_rate: Decimal,
    pub term_months: i32,
    pub term_periods: Option<i32>,
    pub first_repayment_date: Option<NaiveDate>,
    pub disbursed_at: DateTime<Utc>,
    pub maturity_date: NaiveDate,
}

/// Books the loans; returns each one's id, number and pinned terms version.
pub async fn insert_loans(
    conn: &mut PgConnection,
    loans: &[NewLoan<'_>],
) -> Result<Vec<(Uuid, String, i32)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        INSERT INTO core.loans AS l (loan_id, loan_number, customer_id, product_code, product_type,
            loan_amount, interest_rate, term_months, term_periods, first_repayment_date,
            application_date, approval_date, approved_by, disbursement_date, disbursed_by,
            maturity_date, status)
        SELECT t.id, 'LN' || to_char(t.at AT TIME ZONE 'UTC', 'YYYY')
                          || lpad(s.n, greatest(8, length(s.n)), '0'),
               t.customer, t.product, t.kind, t.amount, t.rate, t.months, t.periods, t.first_due,
               t.at, t.at, core.current_actor(), t.at, core.current_actor(), t.maturity,
               'DISBURSED'
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::numeric[],
                    $6::numeric[], $7::int[], $8::int[], $9::date[], $10::timestamptz[],
                    $11::date[])
             AS t(id, customer, product, kind, amount, rate, months, periods, first_due, at,
                  maturity)
        -- Correlated, so that each loan draws its own number.
        CROSS JOIN LATERAL (SELECT nextval('core.loan_number_seq')::text AS n WHERE t.id IS NOT NULL) s
        RETURNING l.loan_id, l.loan_number, l.terms_version
        "#,
        // The loan, its customer and product.
        &loans.iter().map(|l| l.loan_id).collect::<Vec<_>>(),
        &loans.iter().map(|l| l.customer_id).collect::<Vec<_>>(),
        &loans
            .iter()
            .map(|l| l.product.product_code.as_str())
            .collect::<Vec<_>>() as &[&str],
        &loans
            .iter()
            .map(|l| l.product.product_type.as_str())
            .collect::<Vec<_>>() as &[&str],
        // Its contract.
        &loans.iter().map(|l| l.amount).collect::<Vec<_>>(),
        &loans.iter().map(|l| l.interest_rate).collect::<Vec<_>>(),
        &loans.iter().map(|l| l.term_months).collect::<Vec<_>>(),
        &loans.iter().map(|l| l.term_periods).collect::<Vec<_>>() as &[Option<i32>],
        &loans
            .iter()
            .map(|l| l.first_repayment_date)
            .collect::<Vec<_>>() as &[Option<NaiveDate>],
        // Applied, approved and paid out at its disbursement; its last due date.
        &loans.iter().map(|l| l.disbursed_at).collect::<Vec<_>>(),
        &loans.iter().map(|l| l.maturity_date).collect::<Vec<_>>(),
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.loan_id, r.loan_number, r.terms_version))
        .collect())
}

/// Writes the loans' schedules.
pub async fn insert_schedules(
    conn: &mut PgConnection,
    schedules: &[(Uuid, Uuid, &[Installment])],
) -> Result<(), sqlx::Error> {
    let rows = || {
        schedules.iter().flat_map(|(loan, customer, schedule)| {
            schedule.iter().map(move |i| (*loan, *customer, i))
        })
    };
    sqlx::query!(
        r#"
        INSERT INTO core.loan_installments (loan_id, customer_id, branch_id, installment_number,
                                            due_date, principal_due, interest_due)
        SELECT t.loan, t.customer, c.branch_id, t.n, t.due, t.principal, t.interest
        FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::date[], $5::numeric[], $6::numeric[])
             AS t(loan, customer, n, due, principal, interest)
        -- The customer's office, named here rather than stamped row by row (migration 0051).
        LEFT JOIN core.customers c ON c.customer_id = t.customer
        "#,
        &rows().map(|(loan, _, _)| loan).collect::<Vec<_>>(),
        &rows().map(|(_, customer, _)| customer).collect::<Vec<_>>(),
        &rows()
            .map(|(_, _, i)| i32::try_from(i.number).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
        &rows().map(|(_, _, i)| i.due_date).collect::<Vec<_>>(),
        &rows().map(|(_, _, i)| i.principal).collect::<Vec<_>>(),
        &rows().map(|(_, _, i)| i.interest).collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// A completed payment of the history: a disbursement or a repayment.
pub struct HistoricalPayment {
    pub payment_id: Uuid,
    pub transaction_id: String,
    pub loan_id: Uuid,
    pub customer_id: Uuid,
    pub payment_type: &'static str,
    pub amount: Decimal,
    pub paid_at: DateTime<Utc>,
}

pub async fn insert_payments(
    conn: &mut PgConnection,
    payments: &[HistoricalPayment],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, branch_id,
                                   payment_type, amount, payment_method, payment_date, status,
                                   channel, status_changed_at)
        SELECT t.id, t.txn, t.loan, t.customer, c.branch_id, t.kind, t.amount, 'IMPORT', t.at,
               'COMPLETED', 'SYSTEM', t.at
        FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::numeric[],
                    $7::timestamptz[]) AS t(id, txn, loan, customer, kind, amount, at)
        -- The customer's office, named here rather than stamped row by row (migration 0051).
        LEFT JOIN core.customers c ON c.customer_id = t.customer
        "#,
        &payments.iter().map(|p| p.payment_id).collect::<Vec<_>>(),
        &payments
            .iter()
            .map(|p| p.transaction_id.as_str())
            .collect::<Vec<_>>() as &[&str],
        &payments.iter().map(|p| p.loan_id).collect::<Vec<_>>(),
        &payments.iter().map(|p| p.customer_id).collect::<Vec<_>>(),
        &payments.iter().map(|p| p.payment_type).collect::<Vec<_>>() as &[&str],
        &payments.iter().map(|p| p.amount).collect::<Vec<_>>(),
        &payments.iter().map(|p| p.paid_at).collect::<Vec<_>>(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The loans as a movement sees them under its lock (the replaying transaction wrote them, so
/// no one else can); `business_date` is today's until the replay sets each movement's day.
pub async fn loans(conn: &mut PgConnection, ids: &[Uuid]) -> Result<Vec<LockedLoan>, sqlx::Error> {
    sqlx::query_as!(
        LockedLoan,
        r#"
        SELECT l.loan_id, l.application_date, l.customer_id, l.loan_number,
               l.status AS "status: _", l.loan_amount, l.interest_rate, l.term_months,
               l.disbursement_date, core.business_date(l.disbursement_date) AS disbursed_on,
               l.principal_outstanding, l.interest_outstanding, l.fees_outstanding,
               l.penalties_outstanding, l.next_due_date, l.written_off_amount,
               l.recovered_amount, p.prepayment_fee_rate,
               p.prepayment_reamortisation AS "reamortisation: _", p.arrears_tolerance,
               p.payment_allocation AS "allocation: _", p.overpayment AS "overpayment: _",
               p.day_count AS "day_count: _", p.amortization AS "amortization: _",
               p.interest_method AS "interest_method: _", p.frequency AS "frequency: _",
               p.currency, p.currency_digits, p.installment_multiple,
               core.business_date(now()) AS "business_date!",
               false AS "servicing_pending!"
        FROM core.loan_directory d
        JOIN core.loans l ON (l.loan_id, l.application_date) = (d.loan_id, d.application_date)
        JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
        WHERE d.loan_id = ANY ($1)
        "#,
        ids,
    )
    .fetch_all(conn)
    .await
}

/// What servicing and earlier movements left on a loan: its status and charges.
pub struct Standing {
    pub loan_id: Uuid,
    pub status: LoanStatus,
    pub fees_outstanding: Decimal,
    pub penalties_outstanding: Decimal,
    pub principal_outstanding: Decimal,
    pub interest_outstanding: Decimal,
}

pub async fn standings(
    conn: &mut PgConnection,
    ids: &[Uuid],
    application_dates: &[DateTime<Utc>],
) -> Result<Vec<Standing>, sqlx::Error> {
    sqlx::query_as!(
        Standing,
        r#"
        SELECT l.loan_id, l.status AS "status: _", l.fees_outstanding, l.penalties_outstanding,
               coalesce(l.principal_outstanding, 0) AS "principal_outstanding!",
               coalesce(l.interest_outstanding, 0) AS "interest_outstanding!"
        FROM core.loans l
        WHERE l.application_date = ANY ($2) AND l.loan_id = ANY ($1)
        "#,
        ids,
        application_dates,
    )
    .fetch_all(conn)
    .await
}

/// The loans' installments, by loan and number.
pub async fn installments(
    conn: &mut PgConnection,
    ids: &[Uuid],
) -> Result<Vec<(Uuid, InstallmentState)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"
        SELECT loan_id, installment_number, due_date, principal_due, interest_due,
               interest_posted, principal_paid, interest_paid, interest_reduction, prepaid_weight
        FROM core.loan_installments WHERE loan_id = ANY ($1)
        ORDER BY loan_id, installment_number
        "#,
        ids,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.loan_id,
                InstallmentState {
                    number: r.installment_number,
                    due_date: r.due_date,
                    principal_due: r.principal_due,
                    interest_due: r.interest_due,
                    interest_posted: r.interest_posted,
                    principal_paid: r.principal_paid,
                    interest_paid: r.interest_paid,
                    interest_reduction: r.interest_reduction,
                    prepaid_weight: r.prepaid_weight,
                },
            )
        })
        .collect())
}

/// Services the loans for `day` with the servicing every loan gets.
pub async fn service(
    conn: &mut PgConnection,
    day: NaiveDate,
    ids: &[Uuid],
    application_dates: &[DateTime<Utc>],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"SELECT interest_entries FROM core.service_replayed($1, $2, $3)"#,
        day,
        ids,
        application_dates,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}

/// Where each imported loan came from, and its one `loan_imported` event.
pub struct Register<'a> {
    pub source_system: &'a str,
    pub batch_id: &'a str,
    pub references: Vec<&'a str>,
    pub loan_ids: Vec<Uuid>,
    pub customer_ids: Vec<Uuid>,
    pub line_numbers: Vec<i32>,
}

pub async fn register(conn: &mut PgConnection, r: &Register<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        r#"
        INSERT INTO core.imported_loans (source_system, source_reference, loan_id, customer_id,
                                         batch_id, line_number)
        SELECT $1, t.reference, t.loan, t.customer, $2, t.line
        FROM unnest($3::text[], $4::uuid[], $5::uuid[], $6::int[]) AS t(reference, loan, customer, line)
        "#,
        r.source_system,
        r.batch_id,
        &r.references as &[&str],
        &r.loan_ids,
        &r.customer_ids,
        &r.line_numbers,
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        r#"SELECT core.emit_loan_imported($1) AS "emitted!""#,
        &r.loan_ids,
    )
    .fetch_one(conn)
    .await?;
    Ok(())
}
