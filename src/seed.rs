//! Sample data: the seed guide's lab rows, and generated volume for load tests.
//!
//! Runs as the owner (`DATABASE_URL`), encrypting ID numbers exactly as the API does.

use std::io::Write;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::pii::{IdNumber, PiiCipher};
use crate::CliResult;

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
    sqlx::raw_sql(
        "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
             min_term_months, max_term_months, annual_interest_rate) VALUES \
         ('PERSONAL_STD', 'Personal loan', 'PERSONAL_LOAN', 5000000, 500000000, 6, 60, 0.1250), \
         ('BUSINESS_STD', 'Business loan', 'BUSINESS_LOAN', 20000000, 5000000000, 12, 120, 0.1150), \
         ('AUTO_STD', 'Car loan', 'AUTO_LOAN', 50000000, 2000000000, 12, 84, 0.0990), \
         ('MORTGAGE_STD', 'Home loan', 'MORTGAGE', 200000000, 20000000000, 60, 360, 0.0850) \
         ON CONFLICT (product_code) DO NOTHING",
    )
    .execute(&mut *tx)
    .await?;

    for c in lab_customers() {
        let id = Uuid::now_v7();
        let number = IdNumber::parse(c.id_number).map_err(|e| format!("{}: {e}", c.code))?;
        let sealed = cipher.seal(&number, id);
        let (y, m, d) = c.born;
        sqlx::query(
            "INSERT INTO core.customers (customer_id, customer_code, full_name, \
             id_number_ciphertext, id_number_hash, id_number_last4, phone_number, email, \
             date_of_birth, address, kyc_status, kyc_decided_at, credit_score) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                     CASE WHEN $11 = 'PENDING' THEN NULL ELSE now() END, $12)",
        )
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
        sqlx::query(
            "INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
             loan_amount, interest_rate, term_months, status, application_date, approval_date, \
             disbursement_date, maturity_date, collateral_info) \
             SELECT $1, $2, customer_id, $4, $5, $6, $7::numeric, $8, 'DISBURSED', $9, $9, $10, \
                    ($10 AT TIME ZONE 'UTC' + make_interval(months => $8))::date, $11 \
             FROM core.customers WHERE customer_code = $3",
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
        .execute(&mut *tx)
        .await?;
        insert_payment(
            &mut tx,
            &format!("DSB-{number}"),
            loan_id,
            "DISBURSEMENT",
            amount,
            disbursed,
            "SYSTEM",
            "COMPLETED",
        )
        .await?;
    }

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
    insert_payment(
        &mut tx,
        "TXN2024001",
        loan_id,
        "REPAYMENT",
        Decimal::new(250_000_000, 2),
        paid_at,
        "MOBILE_APP",
        "COMPLETED",
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

#[allow(clippy::too_many_arguments)]
async fn insert_payment(
    conn: &mut PgConnection,
    transaction_id: &str,
    loan_id: Uuid,
    kind: &str,
    amount: Decimal,
    at: DateTime<Utc>,
    channel: &str,
    status: &str,
) -> CliResult {
    sqlx::query(
        "INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, payment_type, \
         amount, payment_method, payment_date, status, channel) \
         SELECT $1, $2, loan_id, customer_id, $3, $4, 'BANK_TRANSFER', $5, $6, $7 \
         FROM core.loan_directory WHERE loan_id = $8",
    )
    .bind(Uuid::now_v7())
    .bind(transaction_id)
    .bind(kind)
    .bind(amount)
    .bind(at)
    .bind(status)
    .bind(channel)
    .bind(loan_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// How much to generate for load tests.
#[derive(Debug, Clone, Copy)]
pub struct Volume {
    pub customers: u32,
    pub loans_per_customer: u32,
    pub payments_per_loan: u32,
}

const BATCH: u32 = 5_000;

/// Generates `volume` customers (in batches, each encrypted in the service and inserted with one
/// `UNNEST`), then their loans and payments with set-based SQL spread over the last years.
pub async fn generate(conn: &mut PgConnection, cipher: &PiiCipher, volume: Volume) -> CliResult {
    let run = Uuid::now_v7().as_u128() as u32 % 9_000 + 1_000;
    let mut done = 0;
    while done < volume.customers {
        let n = BATCH.min(volume.customers - done);
        let mut ids = Vec::with_capacity(n as usize);
        let mut codes = Vec::with_capacity(n as usize);
        let mut names = Vec::with_capacity(n as usize);
        let mut ciphertexts = Vec::with_capacity(n as usize);
        let mut hashes = Vec::with_capacity(n as usize);
        let mut last4s = Vec::with_capacity(n as usize);
        for i in done..done + n {
            let id = Uuid::now_v7();
            let number = IdNumber::parse(&format!("{run}{i:08}")).map_err(|e| e.to_string())?;
            let sealed = cipher.seal(&number, id);
            ids.push(id);
            codes.push(format!("LT{run}{i:08}"));
            names.push(format!("Load Test {i}"));
            ciphertexts.push(sealed.ciphertext);
            hashes.push(sealed.hash);
            last4s.push(sealed.last4);
        }
        sqlx::query(
            "INSERT INTO core.customers (customer_id, customer_code, full_name, \
             id_number_ciphertext, id_number_hash, id_number_last4, address, kyc_status, \
             kyc_decided_at, credit_score) \
             SELECT id, code, name, ct, h, l4, \
                    jsonb_build_object('city', (ARRAY['Ho Chi Minh','Ha Noi','Da Nang','Can Tho'])[1 + abs(hashtext(code)) % 4]), \
                    'APPROVED', now(), 500 + abs(hashtext(code)) % 350 \
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[]) \
                  AS t(id, code, name, ct, h, l4)",
        )
        .bind(&ids)
        .bind(&codes)
        .bind(&names)
        .bind(&ciphertexts)
        .bind(&hashes)
        .bind(&last4s)
        .execute(&mut *conn)
        .await?;
        done += n;
        eprint!("\rcustomers {done}/{}", volume.customers);
        let _ = std::io::stderr().flush();
    }
    eprintln!();

    let prefix = format!("LT{run}");
    sqlx::raw_sql(
        "SELECT core.ensure_loans_partition(make_timestamptz(y, 6, 1, 0, 0, 0, 'UTC')) \
         FROM generate_series(extract(year FROM now())::int - 8, extract(year FROM now())::int) y; \
         SELECT core.ensure_payments_partition(date_trunc('month', now()) - make_interval(months => m)) \
         FROM generate_series(0, 26) m",
    )
    .execute(&mut *conn)
    .await?;
    eprintln!("loans…");
    // Generated history is not news: the status-event trigger is off for this one transaction.
    let mut tx = conn.begin().await?;
    sqlx::raw_sql("ALTER TABLE core.loans DISABLE TRIGGER loan_status_change_trigger")
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
         loan_amount, interest_rate, term_months, status, application_date, approval_date, \
         disbursement_date, maturity_date) \
         SELECT gen_random_uuid(), c.customer_code || '-' || k, c.customer_id, 'PERSONAL_STD', \
                'PERSONAL_LOAN', (10 + (abs(hashtext(c.customer_code || k)) % 490)) * 1000000, \
                0.1250, 24, 'DISBURSED', d, d, d + interval '1 day', (d + interval '25 months')::date \
         FROM core.customers c CROSS JOIN generate_series(1, $2) k \
         CROSS JOIN LATERAL (SELECT now() - make_interval(days => abs(hashtext(c.customer_code || k || 'd')) % 2900) AS d) dd \
         WHERE c.customer_code LIKE $1 || '%'",
    )
    .bind(&prefix)
    .bind(i32::try_from(volume.loans_per_customer)?)
    .execute(&mut *tx)
    .await?;
    sqlx::raw_sql("ALTER TABLE core.loans ENABLE TRIGGER loan_status_change_trigger")
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    eprintln!("payments…");
    sqlx::query(
        "INSERT INTO core.payments (payment_id, transaction_id, loan_id, customer_id, payment_type, \
         amount, payment_method, payment_date, status, channel) \
         SELECT gen_random_uuid(), l.loan_number || '-P' || k, l.loan_id, l.customer_id, 'REPAYMENT', \
                round(l.loan_amount / 24, 2), 'BANK_TRANSFER', \
                now() - make_interval(days => abs(hashtext(l.loan_number || k)) % 790), 'COMPLETED', 'BRANCH' \
         FROM core.loans l CROSS JOIN generate_series(1, $2) k \
         WHERE l.loan_number LIKE $1 || '%'",
    )
    .bind(&prefix)
    .bind(i32::try_from(volume.payments_per_loan)?)
    .execute(&mut *conn)
    .await?;
    sqlx::raw_sql("ANALYZE core.customers; ANALYZE core.loans; ANALYZE core.payments")
        .execute(&mut *conn)
        .await?;
    eprintln!("generated {} customers", volume.customers);
    Ok(())
}
