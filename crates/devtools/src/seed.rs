//! Sample data: the seed guide's lab rows, and generated volume for load tests.
//!
//! Runs as the owner (`DATABASE_URL`), encrypting ID numbers exactly as the API does.

mod binary_copy;
pub mod generated;
pub mod history;

use std::collections::HashMap;
use std::io::Write;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use binary_copy::BinaryCopy;
use generated::Rng;
use lakehouse_api::domain::ledger::{self, model::PaymentKind};
use lakehouse_api::platform::pii::{IdNumber, PiiCipher};
use lakehouse_api::CliResult;

struct LabCustomer {
    code: &'static str,
    name: &'static str,
    id_number: &'static str,
    phone: &'static str,
    email: &'static str,
    born: (i32, u32, u32),
    address: serde_json::Value,
    kyc: &'static str,
    score: i32,
}

fn lab_customers() -> [LabCustomer; 3] {
    [
        LabCustomer {
            code: "CUST001",
            name: "Nguyen Van An",
            id_number: "123456789",
            phone: "0901234567",
            email: "an.nguyen@email.com",
            born: (1985, 5, 15),
            address: json!({"city": "Ho Chi Minh", "district": "District 1", "ward": "Ben Nghe"}),
            kyc: "APPROVED",
            score: 750,
        },
        LabCustomer {
            code: "CUST002",
            name: "Tran Thi Binh",
            id_number: "987654321",
            phone: "0912345678",
            email: "binh.tran@email.com",
            born: (1990, 8, 22),
            address: json!({"city": "Ha Noi", "district": "Dong Da", "ward": "Lang Thuong"}),
            kyc: "APPROVED",
            score: 680,
        },
        LabCustomer {
            code: "CUST003",
            name: "Le Van Cuong",
            id_number: "456789123",
            phone: "0923456789",
            email: "cuong.le@email.com",
            born: (1988, 12, 10),
            address: json!({"city": "Da Nang", "district": "Hai Chau", "ward": "Thuan Phuoc"}),
            kyc: "PENDING",
            score: 720,
        },
    ]
}

/// The customer id of the lab customer `code` (for printing a customer token).
pub async fn customer_id(conn: &mut PgConnection, code: &str) -> CliResult<Option<Uuid>> {
    Ok(
        sqlx::query_scalar("SELECT customer_id FROM core.customers WHERE customer_code = $1")
            .bind(code)
            .fetch_optional(conn)
            .await?,
    )
}

/// Inserts the lab data once: products, the guide's three customers, its two loans, and its
/// repayment. Unlike the guide, both loans are disbursed with their DISBURSEMENT payments (the
/// guide records a repayment on a loan that was only approved). Returns false if already there.
pub async fn lab(conn: &mut PgConnection, cipher: &PiiCipher) -> CliResult<bool> {
    if customer_id(conn, "CUST001").await?.is_some() {
        return Ok(false);
    }
    let mut tx = conn.begin().await?;
    insert_offices(&mut tx).await?;
    insert_lab_products(&mut tx).await?;
    insert_lab_customers(&mut tx, cipher).await?;
    disburse_lab_loans(&mut tx).await?;
    repay_lab_loan(&mut tx).await?;
    // Serviced through today, as the scheduler would: interest due, late fees, defaults.
    service_through_today(&mut tx).await?;
    tx.commit().await?;
    Ok(true)
}

/// The seed guide's four products, under the contract of the books before conventions (a
/// twelfth of the rate a month, to the cent), and one written the way the market writes it
/// (actual days over 365, whole đồng, installments in thousands).
async fn insert_lab_products(tx: &mut PgConnection) -> CliResult {
    sqlx::raw_sql(
        "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
             min_term_months, max_term_months, annual_interest_rate, grace_days, late_fee_amount, \
             late_fee_rate, default_after_days, prepayment_fee_rate, day_count, currency_digits, \
             installment_multiple, arrears_tolerance) VALUES \
         ('PERSONAL_STD', 'Personal loan', 'PERSONAL_LOAN', 5000000, 500000000, 6, 60, 0.1250, 5, 50000, 0.01, 90, 0.01, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
         ('BUSINESS_STD', 'Business loan', 'BUSINESS_LOAN', 20000000, 5000000000, 12, 120, 0.1150, 10, 200000, 0.01, 90, 0.02, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
         ('AUTO_STD', 'Car loan', 'AUTO_LOAN', 50000000, 2000000000, 12, 84, 0.0990, 5, 100000, 0, 90, 0, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
         ('MORTGAGE_STD', 'Home loan', 'MORTGAGE', 200000000, 20000000000, 60, 360, 0.0850, 15, 500000, 0, 120, 0.01, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
         ('PERSONAL_VN', 'Personal loan (actual/365, whole đồng)', 'PERSONAL_LOAN', 5000000, 500000000, 6, 60, 0.1250, 5, 50000, 0, 90, 0.01, 'ACTUAL_365_FIXED', 0, 1000, 1000) \
         ON CONFLICT (product_code) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The lab's offices under the head office (migration 0042): three regions and six branches.
async fn insert_offices(tx: &mut PgConnection) -> CliResult {
    sqlx::raw_sql(
        "INSERT INTO core.offices (code, name, kind, parent_id) VALUES \
         ('NORTH', 'Northern region', 'REGION', 1), \
         ('CENTRAL', 'Central region', 'REGION', 1), \
         ('SOUTH', 'Southern region', 'REGION', 1) \
         ON CONFLICT (code) DO NOTHING; \
         INSERT INTO core.offices (code, name, kind, parent_id) \
         SELECT b.code, b.name, 'BRANCH', r.office_id \
         FROM (VALUES ('HN01', 'Ha Noi - Hoan Kiem', 'NORTH'), ('HN02', 'Ha Noi - Dong Da', 'NORTH'), \
                      ('DN01', 'Da Nang - Hai Chau', 'CENTRAL'), \
                      ('HCM01', 'Ho Chi Minh - District 1', 'SOUTH'), \
                      ('HCM02', 'Ho Chi Minh - Binh Thanh', 'SOUTH'), \
                      ('CT01', 'Can Tho - Ninh Kieu', 'SOUTH')) AS b(code, name, region) \
         JOIN core.offices r ON r.code = b.region \
         ON CONFLICT (code) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The branch a seeded customer in `city` belongs to: the city's branch, or one of two.
const BRANCH_OF_CITY: &str = "(SELECT office_id FROM core.offices WHERE code = \
     CASE $city \
         WHEN 'Ha Noi' THEN (ARRAY['HN01', 'HN02'])[1 + abs(hashtext($key || '-branch')) % 2] \
         WHEN 'Ho Chi Minh' THEN (ARRAY['HCM01', 'HCM02'])[1 + abs(hashtext($key || '-branch')) % 2] \
         WHEN 'Da Nang' THEN 'DN01' \
         WHEN 'Can Tho' THEN 'CT01' \
         ELSE 'HO' END)";

/// The seed guide's three customers, their ID numbers sealed as the service seals them.
async fn insert_lab_customers(tx: &mut PgConnection, cipher: &PiiCipher) -> CliResult {
    for c in lab_customers() {
        let id = Uuid::now_v7();
        let number = IdNumber::parse(c.id_number).map_err(|e| format!("{}: {e}", c.code))?;
        let sealed = cipher.seal(&number, id)?;
        let (y, m, d) = c.born;
        sqlx::query(&format!(
            "INSERT INTO core.customers (customer_id, customer_code, full_name, \
                 id_number_ciphertext, id_number_hash, id_number_last4, phone_number, email, \
                 date_of_birth, address, kyc_status, kyc_decided_at, credit_score, branch_id) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                         CASE WHEN $11 = 'PENDING' THEN NULL ELSE now() END, $12, {})",
            BRANCH_OF_CITY
                .replace("$city", "($10::jsonb ->> 'city')")
                .replace("$key", "$2::text")
        ))
        .bind(id)
        .bind(c.code)
        .bind(c.name)
        .bind(&sealed.ciphertext)
        .bind(&sealed.hash)
        .bind(&sealed.last4)
        .bind(c.phone)
        .bind(c.email)
        .bind(NaiveDate::from_ymd_opt(y, m, d))
        .bind(&c.address)
        .bind(c.kyc)
        .bind(c.score)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The seed guide's two loans, paid out the way the service pays out.
async fn disburse_lab_loans(tx: &mut PgConnection) -> CliResult {
    let loans = [
        (
            "LN2024001",
            "CUST001",
            "PERSONAL_STD",
            "PERSONAL_LOAN",
            "50000000.00",
            "0.1250",
            24,
            "2024-01-15T10:30:00Z",
            "2024-01-16T09:00:00Z",
            json!({"type": "MOTORBIKE", "value": 30000000}),
        ),
        (
            "LN2024002",
            "CUST002",
            "BUSINESS_STD",
            "BUSINESS_LOAN",
            "100000000.00",
            "0.1150",
            36,
            "2024-02-20T14:15:00Z",
            "2024-02-21T09:00:00Z",
            json!({"type": "REAL_ESTATE", "value": 150000000}),
        ),
    ];
    for (number, code, product, kind, amount, rate, term, applied, disbursed, collateral) in loans {
        let applied: DateTime<Utc> = applied.parse()?;
        let disbursed: DateTime<Utc> = disbursed.parse()?;
        let amount: Decimal = amount.parse()?;
        sqlx::query("SELECT core.ensure_loans_partition($1), core.ensure_payments_partition($2)")
            .bind(applied)
            .bind(disbursed)
            .execute(&mut *tx)
            .await?;
        let loan_id = Uuid::now_v7();
        let customer_id: Uuid = sqlx::query_scalar(
            "INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
             loan_amount, interest_rate, term_months, status, application_date, approval_date, \
             disbursement_date, maturity_date, collateral_info) \
             SELECT $1, $2, customer_id, $4, $5, $6, $7::numeric, $8, 'DISBURSED', $9, $9, $10, \
                    ($10 AT TIME ZONE 'UTC' + make_interval(months => $8))::date, $11 \
             FROM core.customers WHERE customer_code = $3 RETURNING customer_id",
        )
        .bind(loan_id)
        .bind(number)
        .bind(code)
        .bind(product)
        .bind(kind)
        .bind(amount)
        .bind(rate)
        .bind(term)
        .bind(applied)
        .bind(disbursed)
        .bind(&collateral)
        .fetch_one(&mut *tx)
        .await?;
        // Paid out the way the service pays out: schedule, DISBURSEMENT payment, balances.
        let disbursal = ledger::Disbursal {
            loan_id,
            application_date: applied,
            customer_id,
            loan_number: number,
            amount,
        };
        ledger::disburse(&mut *tx, &disbursal, disbursed)
            .await
            .map_err(|e| format!("disbursing {number}: {e:?}"))?;
    }
    Ok(())
}

/// The seed guide's one repayment, on LN2024001.
async fn repay_lab_loan(tx: &mut PgConnection) -> CliResult {
    let paid_at: DateTime<Utc> = "2024-01-31T16:30:00Z".parse()?;
    sqlx::query("SELECT core.ensure_payments_partition($1)")
        .bind(paid_at)
        .execute(&mut *tx)
        .await?;
    let loan_id: Uuid = sqlx::query_scalar(
        "SELECT loan_id FROM core.loan_directory WHERE loan_number = 'LN2024001'",
    )
    .fetch_one(&mut *tx)
    .await?;
    // Applied the way the service applies a completed repayment.
    let loan = ledger::lock_loan(&mut *tx, loan_id, paid_at)
        .await
        .map_err(|e| format!("locking LN2024001: {e:?}"))?;
    let repayment = ledger::PaymentOrder {
        transaction_id: "TXN2024001",
        client_reference: None,
        payment_type: PaymentKind::Repayment,
        amount: Decimal::new(250_000_000, 2),
        payment_method: Some("BANK_TRANSFER"),
        payment_date: paid_at,
        channel: "MOBILE_APP",
    };
    ledger::record_completed(&mut *tx, &loan, &repayment)
        .await
        .map_err(|e| format!("repaying LN2024001: {e:?}"))?;
    Ok(())
}

/// How much to generate for load tests: never more than [`generate`] can hold in memory.
#[derive(Debug, Clone, Copy)]
pub struct Volume {
    customers: u32,
    loans_per_customer: u32,
    payments_per_loan: u32,
}

impl Volume {
    /// The volume, or an error if its loans and payments are more than [`MAX_GENERATED_ROWS`].
    pub fn new(customers: u32, loans_per_customer: u32, payments_per_loan: u32) -> CliResult<Self> {
        let loans = (customers as usize).saturating_mul(loans_per_customer as usize);
        let rows = loans.saturating_mul((payments_per_loan as usize).saturating_add(1));
        if rows > MAX_GENERATED_ROWS {
            return Err(format!(
                "{customers} customers with {loans_per_customer} loans of {payments_per_loan} \
                 payments each is {rows} loans and payments; the seed generates at most \
                 {MAX_GENERATED_ROWS} at once"
            )
            .into());
        }
        Ok(Self {
            customers,
            loans_per_customer,
            payments_per_loan,
        })
    }
}

const BATCH: u32 = 5_000;

/// Loans and payments [`generate`] holds in memory at once: ten times the load test's volume.
const MAX_GENERATED_ROWS: usize = 30_000_000;

/// Generates `volume` customers, then, in one transaction, their loans and payments spread over
/// the last years, each table and directory loaded with [`bulk_copy`]. The rows are generated in
/// memory first (under 100 bytes each). `connect` (`conn`'s options) opens a second connection to
/// gather statistics at the end.
#[allow(clippy::too_many_lines)] // to split: one function per table loaded
pub async fn generate(
    conn: &mut PgConnection,
    connect: &PgConnectOptions,
    cipher: &PiiCipher,
    volume: Volume,
) -> CliResult {
    let run = Uuid::now_v7().as_u128() as u32 % 9_000 + 1_000;
    let tables = [
        "core.loan_directory",
        "core.loans",
        "core.payment_directory",
        "core.payments",
    ];
    let mut deferred = Vec::with_capacity(tables.len());
    for table in tables.into_iter().chain(BOOKS) {
        deferred.push(deferred_structures(conn, table).await?);
    }
    let batches = volume.customers.div_ceil(BATCH) as usize;
    // Customer batches; generating; four copies and their rebuilds; the books; commit; ANALYZE.
    let mut progress = Progress::new(
        batches + 1 + tables.len() + deferred.iter().map(Vec::len).sum::<usize>() + 4 + 2,
    );
    insert_offices(conn).await?;
    let customers = insert_customers(conn, cipher, run, volume.customers, &mut progress).await?;
    // Each customer's office (migration 0042), which every row about them carries: written by
    // the load itself, with the per-row office stamp off.
    let offices: HashMap<Uuid, i32> = sqlx::query_as(
        "SELECT customer_id, branch_id FROM core.customers WHERE customer_code LIKE $1",
    )
    .bind(format!("LT{run}%"))
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let office_of = |customer: &Uuid| offices.get(customer).copied().unwrap_or(1);

    let prefix = format!("LT{run}");
    sqlx::raw_sql(
        "SELECT core.ensure_loans_partition(make_timestamptz(y, 6, 1, 0, 0, 0, 'UTC')) \
         FROM generate_series(extract(year FROM now())::int - 8, extract(year FROM now())::int) y; \
         SELECT core.ensure_payments_partition(date_trunc('month', now()) - make_interval(months => m)) \
         FROM generate_series(0, 26) m",
    )
    .execute(&mut *conn)
    .await?;
    let terms: history::Terms = sqlx::query_as(
        "SELECT annual_interest_rate, prepayment_fee_rate, \
                prepayment_reamortisation AS reamortisation, payment_allocation AS allocation, \
                overpayment \
         FROM core.products WHERE product_code = 'PERSONAL_STD'",
    )
    .fetch_one(&mut *conn)
    .await?;

    // Loans and their histories are generated here, on the seed's core, and copied in binary
    // while the server works on the other core. They come in date order with UUIDv7 ids of
    // their own dates, as the service writes them, so keys grow at their right edge. Each loan
    // is played through the ledger's engine (history.rs): its repayments, then servicing
    // through today.
    let now = Utc::now();
    let earliest = now - chrono::Duration::days(790);
    let mut rng = Rng::new(Uuid::now_v7().as_u128() as u64);
    let loans = generated::loans(&customers, volume.loans_per_customer, now, &mut rng);
    let play = |loan: &generated::Loan| {
        history::play(loan, &terms, now, earliest, volume.payments_per_loan)
    };
    let mut outcomes = Vec::with_capacity(loans.len());
    let mut payments = Vec::new();
    for (index, loan) in loans.iter().enumerate() {
        let history = play(loan);
        for r in &history.repayments {
            payments.push(generated::Payment {
                id: r.id,
                loan: index,
                number: r.number,
                paid_at: r.paid_at,
                amount: r.amount,
            });
        }
        outcomes.push(Outcome::of(&history));
    }
    payments.sort_unstable_by_key(|payment| payment.paid_at);
    let loan_number = |index: usize| format!("{prefix}-{:08}", index + 1);
    progress.step("loans and their histories generated");

    let mut tx = conn.begin().await?;
    sqlx::raw_sql("SET LOCAL maintenance_work_mem = '256MB'; SET LOCAL work_mem = '256MB'")
        .execute(&mut *tx)
        .await?;
    let loan_count = load_with_directory(
        &mut tx,
        &mut progress,
        [&deferred[0], &deferred[1]],
        Load {
            table: "core.loans",
            triggers: &[
                "loan_status_change_trigger",
                "loans_register",
                "stamp_office",
            ],
            directory: "core.loan_directory",
            directory_copy: "COPY core.loan_directory (loan_id, loan_number, customer_id, \
                             application_date, branch_id) FROM STDIN (FORMAT binary)",
            table_copy: "COPY core.loans (loan_id, loan_number, customer_id, product_code, \
                         product_type, loan_amount, interest_rate, term_months, status, \
                         application_date, approval_date, disbursement_date, maturity_date, \
                         principal_outstanding, interest_outstanding, penalties_outstanding, \
                         total_paid, next_due_date, closed_at, branch_id) \
                         FROM STDIN (FORMAT binary)",
            rows: loans.len(),
            directory_entry: |index: usize| DirectoryEntry {
                id: loans[index].id,
                number: loan_number(index),
                customer_id: loans[index].customer_id,
                at: loans[index].applied_at,
                office: office_of(&loans[index].customer_id),
            },
            table_row: |copy: &mut BinaryCopy, index: usize| {
                let loan = &loans[index];
                let outcome = &outcomes[index];
                let disbursed = history::History::disbursed_at(loan);
                let matures =
                    (loan.applied_at + chrono::Months::new(history::TERM_MONTHS + 1)).date_naive();
                copy.row(20);
                copy.field(&loan.id)?;
                copy.field(&loan_number(index))?;
                copy.field(&loan.customer_id)?;
                copy.field(&"PERSONAL_STD")?;
                copy.field(&"PERSONAL_LOAN")?;
                copy.field(&loan.amount)?;
                copy.field(&terms.annual_interest_rate)?;
                copy.field(&(history::TERM_MONTHS as i32))?;
                copy.field(&outcome.status.as_str())?;
                copy.field(&loan.applied_at)?;
                copy.field(&loan.applied_at)?;
                copy.field(&disbursed)?;
                copy.field(&matures)?;
                copy.field(&outcome.balances.principal_outstanding)?;
                copy.field(&outcome.balances.interest_outstanding)?;
                copy.field(&outcome.balances.penalties_outstanding)?;
                copy.field(&outcome.total_paid)?;
                copy.field(&outcome.balances.next_due_date)?;
                copy.field(&outcome.closed_at)?;
                copy.field(&office_of(&loan.customer_id))
            },
        },
    )
    .await?;

    let transaction_id =
        |payment: &generated::Payment| format!("{}-P{}", loan_number(payment.loan), payment.number);
    let payment_count = load_with_directory(
        &mut tx,
        &mut progress,
        [&deferred[2], &deferred[3]],
        Load {
            table: "core.payments",
            triggers: &["payments_register", "payments_event", "stamp_office"],
            directory: "core.payment_directory",
            directory_copy: "COPY core.payment_directory (payment_id, transaction_id, \
                             customer_id, payment_date, branch_id) FROM STDIN (FORMAT binary)",
            table_copy: "COPY core.payments (payment_id, transaction_id, loan_id, customer_id, \
                         payment_type, amount, payment_method, payment_date, status, channel, \
                         status_changed_at, branch_id) FROM STDIN (FORMAT binary)",
            rows: payments.len(),
            directory_entry: |index: usize| DirectoryEntry {
                id: payments[index].id,
                number: transaction_id(&payments[index]),
                customer_id: loans[payments[index].loan].customer_id,
                at: payments[index].paid_at,
                office: office_of(&loans[payments[index].loan].customer_id),
            },
            table_row: |copy: &mut BinaryCopy, index: usize| {
                let payment = &payments[index];
                let loan = &loans[payment.loan];
                copy.row(12);
                copy.field(&payment.id)?;
                copy.field(&transaction_id(payment))?;
                copy.field(&loan.id)?;
                copy.field(&loan.customer_id)?;
                copy.field(&"REPAYMENT")?;
                copy.field(&payment.amount)?;
                copy.field(&"BANK_TRANSFER")?;
                copy.field(&payment.paid_at)?;
                copy.field(&"COMPLETED")?;
                copy.field(&"BRANCH")?;
                copy.field(&payment.paid_at)?;
                copy.field(&office_of(&loan.customer_id))
            },
        },
    )
    .await?;
    let book_rows = load_books(
        &mut tx,
        &mut progress,
        &deferred[4..],
        &loans,
        &play,
        &office_of,
    )
    .await?;
    tx.commit().await?;
    progress.step("committed");
    // Statistics now, not when autovacuum comes round: the payments' (the most partitions) on a
    // second connection while this one does the other tables, directories included.
    let mut second = PgConnection::connect_with(connect).await?;
    let (payments_analyzed, others_analyzed) = tokio::join!(
        sqlx::raw_sql("ANALYZE core.payments").execute(&mut second),
        sqlx::raw_sql(
            "ANALYZE core.customers; ANALYZE core.loans; ANALYZE core.loan_directory; \
             ANALYZE core.payment_directory; ANALYZE core.loan_installments; \
             ANALYZE core.payment_allocations; ANALYZE core.journal_entries; \
             ANALYZE core.journal_lines"
        )
        .execute(&mut *conn),
    );
    payments_analyzed?;
    others_analyzed?;
    second.close().await?;
    progress.step("analyzed");
    // Interest falling due, late fees and defaults through today: the service's own servicing
    // run, recorded like every run, so the scheduler finds the day done.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(connect.clone())
        .await?;
    let today = ledger::servicing::today(&mut *conn).await?;
    let days = lakehouse_api::domain::jobs::servicing::Days::new(None, None, today, false, "to")
        .map_err(|e| e.reason)?;
    let session = lakehouse_api::domain::jobs::Session::Owner(pool.clone());
    let run = lakehouse_api::domain::jobs::servicing::run(&session, days, 2)
        .await
        .map_err(|e| format!("servicing failed: {e:?}"))?;
    pool.close().await;
    progress.step(&format!(
        "serviced through {today}: {} entries",
        run.records_written.unwrap_or_default()
    ));
    eprintln!(
        "\ngenerated {} customers, {loan_count} loans, {payment_count} payments, \
         {book_rows} installment, allocation and journal rows in {:.1}s",
        volume.customers,
        progress.started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The tables of a loan's books, loaded after the loans and payments.
const BOOKS: [&str; 4] = [
    "core.loan_installments",
    "core.payment_allocations",
    "core.journal_entries",
    "core.journal_lines",
];

/// What a loan's history leaves on its row.
struct Outcome {
    status: ledger::model::LoanStatus,
    balances: ledger::Balances,
    total_paid: Decimal,
    closed_at: Option<DateTime<Utc>>,
}

impl Outcome {
    fn of(history: &history::History) -> Self {
        Self {
            status: history.status,
            balances: history.books.balances(),
            total_paid: history.total_paid,
            closed_at: history.closed_at,
        }
    }
}

/// Loans played again, a chunk at a time, to write their installments, allocations and journal
/// (the same choices as the first time: each loan's come from its id). The tables' keys and
/// indexes are rebuilt once at the end, and the journal's balance check, a statement trigger
/// that would look up each entry in a table without its index, is replaced by one check of
/// every entry at the end.
#[allow(clippy::too_many_lines)] // to split: one function per table loaded
async fn load_books(
    tx: &mut PgConnection,
    progress: &mut Progress,
    deferred: &[Vec<Deferred>],
    loans: &[generated::Loan],
    play: &impl Fn(&generated::Loan) -> history::History,
    office_of: &impl Fn(&Uuid) -> i32,
) -> CliResult<u64> {
    const CHUNK: usize = 2_000;
    sqlx::raw_sql(
        "ALTER TABLE core.journal_lines DISABLE TRIGGER journal_lines_balanced; \
         ALTER TABLE core.journal_lines DISABLE TRIGGER stamp_office; \
         ALTER TABLE core.journal_entries DISABLE TRIGGER stamp_office; \
         ALTER TABLE core.loan_installments DISABLE TRIGGER stamp_office; \
         ALTER TABLE core.payment_allocations DISABLE TRIGGER stamp_office",
    )
    .execute(&mut *tx)
    .await?;
    for structure in deferred.iter().flatten() {
        sqlx::raw_sql(&structure.drop_sql).execute(&mut *tx).await?;
    }
    let mut rows = 0;
    for chunk in loans.chunks(CHUNK) {
        let histories: Vec<(&generated::Loan, history::History)> =
            chunk.iter().map(|loan| (loan, play(loan))).collect();
        let mut copy = BinaryCopy::begin(
            &mut *tx,
            "COPY core.loan_installments (loan_id, customer_id, installment_number, due_date, \
             principal_due, interest_due, interest_posted, principal_paid, interest_paid, \
             branch_id) FROM STDIN (FORMAT binary)",
        )
        .await?;
        for (loan, history) in &histories {
            let office = office_of(&loan.customer_id);
            for s in &history.books.installments {
                copy.row(10);
                copy.field(&loan.id)?;
                copy.field(&loan.customer_id)?;
                copy.field(&s.number)?;
                copy.field(&s.due_date)?;
                copy.field(&s.principal_due)?;
                copy.field(&s.interest_due)?;
                copy.field(&s.interest_posted)?;
                copy.field(&s.principal_paid)?;
                copy.field(&s.interest_paid)?;
                copy.field(&office)?;
            }
            copy.send_full_chunk().await?;
        }
        rows += copy.finish().await?;
        let mut copy = BinaryCopy::begin(
            &mut *tx,
            "COPY core.payment_allocations (payment_id, loan_id, customer_id, installment_number, \
             component, amount, posted, created_at, branch_id) FROM STDIN (FORMAT binary)",
        )
        .await?;
        for (loan, history) in &histories {
            let office = office_of(&loan.customer_id);
            for r in &history.repayments {
                for a in &r.allocations {
                    copy.row(9);
                    copy.field(&r.id)?;
                    copy.field(&loan.id)?;
                    copy.field(&loan.customer_id)?;
                    copy.field(&a.installment)?;
                    copy.field(&a.component.as_str())?;
                    copy.field(&a.amount)?;
                    copy.field(&a.posted)?;
                    copy.field(&r.paid_at)?;
                    copy.field(&office)?;
                }
            }
            copy.send_full_chunk().await?;
        }
        rows += copy.finish().await?;
        let mut copy = BinaryCopy::begin(
            &mut *tx,
            "COPY core.journal_entries (entry_id, loan_id, customer_id, kind, business_date, \
             payment_id, installment_number, posted_at, posted_by, branch_id) \
             FROM STDIN (FORMAT binary)",
        )
        .await?;
        for (loan, history) in &histories {
            let office = office_of(&loan.customer_id);
            for e in &history.entries {
                copy.row(10);
                copy.field(&e.id)?;
                copy.field(&loan.id)?;
                copy.field(&loan.customer_id)?;
                copy.field(&e.kind.as_str())?;
                copy.field(&e.business_date)?;
                copy.field(&e.payment_id)?;
                copy.field(&e.installment)?;
                copy.field(&e.posted_at)?;
                copy.field(&"system|seed")?;
                copy.field(&office)?;
            }
            copy.send_full_chunk().await?;
        }
        rows += copy.finish().await?;
        let mut copy = BinaryCopy::begin(
            &mut *tx,
            "COPY core.journal_lines (entry_id, line_number, loan_id, customer_id, account, \
             amount, branch_id) FROM STDIN (FORMAT binary)",
        )
        .await?;
        for (loan, history) in &histories {
            let office = office_of(&loan.customer_id);
            for e in &history.entries {
                for (number, (account, amount)) in e
                    .lines
                    .accounts()
                    .into_iter()
                    .zip(e.lines.amounts())
                    .enumerate()
                {
                    copy.row(7);
                    copy.field(&e.id)?;
                    copy.field(&(number as i16 + 1))?;
                    copy.field(&loan.id)?;
                    copy.field(&loan.customer_id)?;
                    copy.field(&account)?;
                    copy.field(&amount)?;
                    copy.field(&office)?;
                }
            }
            copy.send_full_chunk().await?;
        }
        rows += copy.finish().await?;
    }
    progress.step(&format!("the books: {rows} rows"));
    for structure in deferred.iter().flatten() {
        sqlx::raw_sql(&structure.create_sql)
            .execute(&mut *tx)
            .await?;
    }
    progress.step("the books: keys and indexes rebuilt");
    sqlx::raw_sql(
        "ALTER TABLE core.journal_lines ENABLE TRIGGER journal_lines_balanced; \
         ALTER TABLE core.journal_lines ENABLE TRIGGER stamp_office; \
         ALTER TABLE core.journal_entries ENABLE TRIGGER stamp_office; \
         ALTER TABLE core.loan_installments ENABLE TRIGGER stamp_office; \
         ALTER TABLE core.payment_allocations ENABLE TRIGGER stamp_office",
    )
    .execute(&mut *tx)
    .await?;
    let unbalanced: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT entry_id FROM core.journal_lines GROUP BY entry_id \
                               HAVING sum(amount) <> 0) e",
    )
    .fetch_one(&mut *tx)
    .await?;
    if unbalanced > 0 {
        return Err(format!("{unbalanced} generated journal entries do not balance").into());
    }
    progress.step("the books: every entry balances");
    Ok(rows)
}

/// Inserts `customers` load-test customers, [`BATCH`] at a time, each ID number encrypted here as
/// the API does and each batch one `UNNEST` insert.
async fn insert_customers(
    conn: &mut PgConnection,
    cipher: &PiiCipher,
    run: u32,
    customers: u32,
    progress: &mut Progress,
) -> CliResult<Vec<Uuid>> {
    let mut all = Vec::with_capacity(customers as usize);
    let mut done = 0;
    while done < customers {
        let n = BATCH.min(customers - done);
        let mut ids = Vec::with_capacity(n as usize);
        let mut codes = Vec::with_capacity(n as usize);
        let mut names = Vec::with_capacity(n as usize);
        let mut ciphertexts = Vec::with_capacity(n as usize);
        let mut hashes = Vec::with_capacity(n as usize);
        let mut last4s = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let id = Uuid::now_v7();
            let number = IdNumber::parse(&format!("{run}{i:08}")).map_err(|e| e.to_string())?;
            let sealed = cipher.seal(&number, id)?;
            ids.push(id);
            codes.push(format!("LT{run}{i:08}"));
            names.push(format!("Load Test {i}"));
            ciphertexts.push(sealed.ciphertext);
            hashes.push(sealed.hash);
            last4s.push(sealed.last4);
        }
        sqlx::query(&format!(
            "INSERT INTO core.customers (customer_id, customer_code, full_name, \
                 id_number_ciphertext, id_number_hash, id_number_last4, address, kyc_status, \
                 kyc_decided_at, credit_score, branch_id) \
                 SELECT id, code, name, ct, h, l4, jsonb_build_object('city', city), \
                        'APPROVED', now(), 500 + abs(hashtext(code)) % 350, {} \
                 FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], \
                             $6::text[]) AS t(id, code, name, ct, h, l4) \
                 CROSS JOIN LATERAL (SELECT (ARRAY['Ho Chi Minh','Ha Noi','Da Nang','Can Tho']) \
                                     [1 + abs(hashtext(code)) % 4] AS city) AS c",
            BRANCH_OF_CITY
                .replace("$city", "c.city")
                .replace("$key", "t.code")
        ))
        .bind(&ids)
        .bind(&codes)
        .bind(&names)
        .bind(&ciphertexts)
        .bind(&hashes)
        .bind(&last4s)
        .execute(&mut *conn)
        .await?;
        all.extend(ids);
        done += n;
        progress.step(&format!("customers {done}/{}", customers));
    }
    Ok(all)
}

/// A one-line progress bar on stderr: the load's steps done, and the last one.
struct Progress {
    started: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    const WIDTH: usize = 30;

    fn new(total: usize) -> Self {
        Self {
            started: Instant::now(),
            done: 0,
            total: total.max(1),
        }
    }

    fn step(&mut self, label: &str) {
        self.done = (self.done + 1).min(self.total);
        let filled = Self::WIDTH * self.done / self.total;
        eprint!(
            "\r[{}{}] {:>3}% {:>6.1}s  {:<50.50}",
            "#".repeat(filled),
            ".".repeat(Self::WIDTH - filled),
            100 * self.done / self.total,
            self.started.elapsed().as_secs_f64(),
            label
        );
        let _ = std::io::stderr().flush();
    }
}

/// A generated table and its directory: where the rows go and how to write the `index`-th.
struct Load<'a, D, T> {
    table: &'a str,
    /// Triggers to skip: generated history is not news, and the directory is filled with its
    /// own copy instead of by a trigger.
    triggers: &'a [&'a str],
    directory: &'a str,
    /// `COPY … FROM STDIN (FORMAT binary)` statements.
    directory_copy: &'a str,
    table_copy: &'a str,
    rows: usize,
    directory_entry: D,
    table_row: T,
}

/// A directory row: the id, the business number unique across partitions, the customer, and
/// the date that names the row's partition.
struct DirectoryEntry {
    id: Uuid,
    number: String,
    customer_id: Uuid,
    at: DateTime<Utc>,
    office: i32,
}

/// Fills the directory, then the table with those triggers off; returns the table's rows.
/// `deferred` holds the [`deferred_structures`] of the directory and of the table.
async fn load_with_directory<D, T>(
    tx: &mut PgConnection,
    progress: &mut Progress,
    deferred: [&[Deferred]; 2],
    load: Load<'_, D, T>,
) -> CliResult<u64>
where
    D: FnMut(usize) -> DirectoryEntry,
    T: FnMut(&mut BinaryCopy, usize) -> CliResult,
{
    let toggle = |action: &str| {
        let triggers: Vec<String> = load
            .triggers
            .iter()
            .map(|t| format!("{action} TRIGGER {t}"))
            .collect();
        format!("ALTER TABLE {} {}", load.table, triggers.join(", "))
    };
    sqlx::raw_sql(&toggle("DISABLE")).execute(&mut *tx).await?;
    sqlx::raw_sql(&format!(
        "ALTER TABLE {} DISABLE TRIGGER stamp_office",
        load.directory
    ))
    .execute(&mut *tx)
    .await?;
    let directory = CopyTarget {
        table: load.directory,
        statement: load.directory_copy,
        rows: load.rows,
    };
    let mut directory_entry = load.directory_entry;
    let directory_row = |copy: &mut BinaryCopy, index: usize| {
        let entry = directory_entry(index);
        copy.row(5);
        copy.field(&entry.id)?;
        copy.field(&entry.number)?;
        copy.field(&entry.customer_id)?;
        copy.field(&entry.at)?;
        copy.field(&entry.office)
    };
    bulk_copy(tx, progress, directory, directory_row, deferred[0]).await?;
    let table = CopyTarget {
        table: load.table,
        statement: load.table_copy,
        rows: load.rows,
    };
    let rows = bulk_copy(tx, progress, table, load.table_row, deferred[1]).await?;
    sqlx::raw_sql(&toggle("ENABLE")).execute(&mut *tx).await?;
    sqlx::raw_sql(&format!(
        "ALTER TABLE {} ENABLE TRIGGER stamp_office",
        load.directory
    ))
    .execute(&mut *tx)
    .await?;
    Ok(rows)
}

/// One binary copy of `rows` rows into `table`.
struct CopyTarget<'a> {
    table: &'a str,
    statement: &'a str,
    rows: usize,
}

/// Loads many rows the way the PostgreSQL manual recommends ("Populating a Database"): the
/// table's indexes and keys ([`deferred_structures`]) are dropped, the rows go in with one COPY,
/// then each index is rebuilt and each key validated in one pass. Definitions come from the
/// catalog, so the seed never restates the schema, and all of it runs in the caller's
/// transaction: a failed load leaves every index and key as it was.
async fn bulk_copy(
    tx: &mut PgConnection,
    progress: &mut Progress,
    copy: CopyTarget<'_>,
    mut write_row: impl FnMut(&mut BinaryCopy, usize) -> CliResult,
    deferred: &[Deferred],
) -> CliResult<u64> {
    for structure in deferred {
        sqlx::raw_sql(&structure.drop_sql).execute(&mut *tx).await?;
    }
    let mut rows = BinaryCopy::begin(&mut *tx, copy.statement).await?;
    for index in 0..copy.rows {
        write_row(&mut rows, index)?;
        rows.send_full_chunk().await?;
    }
    let rows = rows.finish().await?;
    progress.step(&format!("{}: {rows} rows", copy.table));
    for structure in deferred {
        sqlx::raw_sql(&structure.create_sql)
            .execute(&mut *tx)
            .await?;
        progress.step(&format!("{}: rebuilt {}", copy.table, structure.name));
    }
    Ok(rows)
}

/// An index or key a table is loaded without, and how to take it away and put it back.
#[derive(sqlx::FromRow)]
struct Deferred {
    name: String,
    drop_sql: String,
    create_sql: String,
}

/// What `table` can be loaded without: its primary and unique keys that no foreign key
/// references, its other indexes, and its foreign keys, in the order they are to be rebuilt.
async fn deferred_structures(conn: &mut PgConnection, table: &str) -> CliResult<Vec<Deferred>> {
    Ok(sqlx::query_as(
        "SELECT name, drop_sql, create_sql FROM ( \
             SELECT CASE contype WHEN 'f' THEN 3 ELSE 1 END AS step, conname::text AS name, \
                    format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname) AS drop_sql, \
                    format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, \
                           pg_get_constraintdef(oid)) AS create_sql \
             FROM pg_constraint k \
             WHERE conrelid = $1::regclass \
               AND (contype = 'f' \
                    OR (contype IN ('p', 'u') \
                        AND NOT EXISTS (SELECT 1 FROM pg_constraint f \
                                        WHERE f.contype = 'f' AND f.conindid = k.conindid))) \
             UNION ALL \
             SELECT 2, i.indexrelid::regclass::text, \
                    format('DROP INDEX %s', i.indexrelid::regclass), \
                    regexp_replace(pg_get_indexdef(i.indexrelid), ' ON ONLY ', ' ON ') \
             FROM pg_index i \
             WHERE i.indrelid = $1::regclass \
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c \
                               WHERE c.conrelid = i.indrelid AND c.conindid = i.indexrelid) \
         ) deferred ORDER BY step, name",
    )
    .bind(table)
    .fetch_all(conn)
    .await?)
}

/// Services every active loan for today (which catches up every earlier due date), as the
/// in-service scheduler does daily.
async fn service_through_today(conn: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
    let today = ledger::servicing::today(&mut *conn).await?;
    ledger::servicing::open_day(&mut *conn, today).await?;
    while ledger::servicing::service_batch(&mut *conn, today, None)
        .await?
        .last
        .is_some()
    {}
    ledger::servicing::close_day(&mut *conn, today).await?;
    Ok(())
}
