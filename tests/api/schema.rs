//! The schema itself: no index that another index already serves.

use crate::helpers::TestApp;

/// Pairs (redundant, covered by) in the API's schemas: a non-unique index without INCLUDE
/// columns whose key columns, with the same operator classes and collations, lead another index
/// of the same kind on the same table, sorted the same way or exactly the other way round (a
/// scan can run backwards). Of two copies, the non-unique or the younger one is reported.
/// Partial and expression indexes are left out.
const REDUNDANT_INDEXES: &str = "\
    SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text \
    FROM pg_index a \
    JOIN pg_index b ON b.indrelid = a.indrelid AND b.indexrelid <> a.indexrelid \
    JOIN pg_class t ON t.oid = a.indrelid \
    JOIN pg_class ia ON ia.oid = a.indexrelid \
    JOIN pg_class ib ON ib.oid = b.indexrelid \
    WHERE t.relnamespace::regnamespace::text IN ('core', 'analytics', 'metadata', 'staging') \
      AND NOT t.relispartition \
      AND NOT a.indisunique \
      AND a.indnatts = a.indnkeyatts \
      AND a.indpred IS NULL AND a.indexprs IS NULL \
      AND b.indpred IS NULL AND b.indexprs IS NULL \
      AND ia.relam = ib.relam \
      AND a.indnkeyatts <= b.indnkeyatts \
      AND (a.indkey::int2[])[0:a.indnkeyatts - 1] = (b.indkey::int2[])[0:a.indnkeyatts - 1] \
      AND (a.indclass::oid[])[0:a.indnkeyatts - 1] = (b.indclass::oid[])[0:a.indnkeyatts - 1] \
      AND (a.indcollation::oid[])[0:a.indnkeyatts - 1] \
          = (b.indcollation::oid[])[0:a.indnkeyatts - 1] \
      AND ((a.indoption::int2[])[0:a.indnkeyatts - 1] = (b.indoption::int2[])[0:a.indnkeyatts - 1] \
           OR ARRAY(SELECT (o # 3)::int2 FROM unnest((a.indoption::int2[])[0:a.indnkeyatts - 1]) o) \
              = (b.indoption::int2[])[0:a.indnkeyatts - 1]) \
      AND (a.indnkeyatts < b.indnkeyatts OR b.indisunique OR a.indexrelid > b.indexrelid) \
    ORDER BY 1, 2";

async fn redundant_indexes(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as(REDUNDANT_INDEXES)
        .fetch_all(&app.owner)
        .await
        .expect("redundant index query")
}

#[tokio::test]
async fn no_index_is_a_leading_part_of_another() {
    let app = TestApp::spawn().await;
    assert_eq!(
        redundant_indexes(&app).await,
        Vec::<(String, String)>::new()
    );
}

#[tokio::test]
async fn the_redundancy_check_finds_prefixes_and_copies() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(
        "CREATE INDEX test_payments_date ON core.payments (payment_date); \
         CREATE INDEX test_payments_loan_date ON core.payments (loan_id, payment_date DESC); \
         CREATE INDEX test_loans_copy ON core.loans (customer_id, application_date DESC, loan_id DESC); \
         CREATE INDEX test_loans_reversed ON core.loans (customer_id DESC, application_date); \
         CREATE INDEX test_loans_other_order ON core.loans (customer_id, status DESC); \
         CREATE INDEX test_payments_customer_amount ON core.payments (customer_id) INCLUDE (amount); \
         CREATE INDEX test_products_name ON core.products (name); \
         CREATE UNIQUE INDEX test_products_name_unique ON core.products (name)",
    )
    .execute(&app.owner)
    .await
    .expect("create indexes");
    let found = redundant_indexes(&app).await;
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    // Found: a prefix sorted the other way, a two-column prefix, an exact copy, a prefix sorted
    // exactly the other way round, and a plain index older than a unique one on the same column.
    // Not found: an index whose second column sorts differently from the other's (status DESC
    // against status), and one whose INCLUDE column allows index-only scans the other cannot.
    assert_eq!(
        found,
        vec![
            pair("core.test_loans_copy", "core.idx_loans_customer_date"),
            pair("core.test_loans_reversed", "core.idx_loans_customer_date"),
            pair("core.test_loans_reversed", "core.test_loans_copy"),
            pair("core.test_payments_date", "core.idx_payments_date_id"),
            pair(
                "core.test_payments_loan_date",
                "core.idx_payments_loan_date_amount"
            ),
            pair("core.test_products_name", "core.test_products_name_unique"),
        ]
    );
}

/// Migration 0031 pins every existing loan to version 1 of its product's terms, its product's
/// terms at the migration, without rewriting any loan row (their `xmin` stays) or touching a
/// schedule or the journal; and servicing reads those terms.
#[tokio::test]
async fn pinning_existing_loans_to_their_terms_rewrites_no_loan_schedule_or_balance() {
    use lakehouse_api::platform::db::MIGRATOR;
    use sqlx::migrate::Migrator;
    use sqlx::{Connection, PgConnection};

    let app = TestApp::spawn().await;
    let database = format!("{}_upgrade", app.database);
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&app.owner)
        .await
        .unwrap();
    let url = crate::helpers::database_url(&app.owner_url, &database);
    let mut conn = PgConnection::connect(&url).await.unwrap();
    let before_terms = Migrator {
        migrations: MIGRATOR
            .migrations
            .iter()
            .filter(|m| m.version < 31)
            .cloned()
            .collect(),
        ..Migrator::DEFAULT
    };
    before_terms.run(&mut conn).await.unwrap();
    sqlx::raw_sql(
        "SELECT core.ensure_partitions_around('2026-01-05'); \
         INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
             min_term_months, max_term_months, annual_interest_rate, grace_days, late_fee_amount) \
         VALUES ('OLD_TERMS', 'Old terms', 'PERSONAL_LOAN', 1000, 100000000, 1, 36, 0.12, 7, 25000); \
         INSERT INTO core.customers (customer_id, customer_code, full_name, id_number_ciphertext, \
             id_number_hash, id_number_last4, kyc_status, kyc_decided_at) \
         VALUES ('00000000-0000-7000-8000-000000000001', 'CUSTU01', 'Upgraded', '\\x00', sha256('u'), \
                 '0001', 'APPROVED', now()); \
         INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
             loan_amount, interest_rate, term_months, status, application_date, approval_date, \
             disbursement_date, maturity_date, principal_outstanding, interest_outstanding, \
             next_due_date) \
         VALUES ('00000000-0000-7000-8000-000000000002', 'LN202600000001', \
                 '00000000-0000-7000-8000-000000000001', 'OLD_TERMS', 'PERSONAL_LOAN', 1000000, \
                 0.12, 2, 'DISBURSED', '2026-01-05', '2026-01-05', '2026-01-06', '2026-03-06', \
                 1000000, 0, '2026-02-06'); \
         INSERT INTO core.loan_installments (loan_id, customer_id, installment_number, due_date, \
             principal_due, interest_due) \
         SELECT '00000000-0000-7000-8000-000000000002', '00000000-0000-7000-8000-000000000001', \
                n, date '2026-01-06' + make_interval(months => n), 497512.44 + (n - 1) * 4975.12, \
                10000 - (n - 1) * 4975.12 \
         FROM generate_series(1, 2) n",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    const BOOKS: &str = "SELECT \
         (SELECT jsonb_agg((to_jsonb(l) - 'terms_version' - 'term_periods' - 'first_repayment_date' - 'branch_id' - 'xact_id') || jsonb_build_object('xmin', l.xmin::text)) \
          FROM core.loans l)::text, \
         (SELECT jsonb_agg((to_jsonb(i) - 'interest_reduction' - 'prepaid_weight' - 'branch_id' - 'xact_id') \
                            || jsonb_build_object('xmin', i.xmin::text) ORDER BY i.installment_number) \
          FROM core.loan_installments i)::text, \
         (SELECT count(*) FROM core.journal_lines)::text";
    let before: (String, String, String) =
        sqlx::query_as(BOOKS).fetch_one(&mut conn).await.unwrap();
    MIGRATOR.run(&mut conn).await.unwrap();
    let after: (String, String, String) = sqlx::query_as(BOOKS).fetch_one(&mut conn).await.unwrap();
    assert_eq!(after, before, "no loan, installment or entry moved");
    let pinned: (i32, i32, String, String) = sqlx::query_as(
        "SELECT l.terms_version, t.grace_days, t.late_fee_amount::text, \
                concat_ws(' ', t.day_count, t.amortization, t.interest_method, t.frequency, \
                          t.currency, t.currency_digits, t.installment_multiple) \
         FROM core.loans l JOIN core.loan_terms t USING (product_code, terms_version)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    // The convention that computed every schedule so far (a twelfth of the rate a month, to
    // the cent): `Contract::legacy`, whose figures src/domain/contract.rs checks.
    assert_eq!(
        pinned,
        (
            1,
            7,
            "25000.00".to_owned(),
            "THIRTY_360_MONTHLY ANNUITY DECLINING_BALANCE MONTHLY VND 2 0.01".to_owned()
        )
    );
    let schedule = lakehouse_api::domain::contract::Contract::legacy("0.12".parse().unwrap())
        .schedule(
            "1000000".parse().unwrap(),
            "2026-01-06".parse().unwrap(),
            None,
            2,
        );
    assert_eq!(
        schedule
            .iter()
            .map(|i| (
                i.due_date.to_string(),
                i.principal.to_string(),
                i.interest.to_string()
            ))
            .collect::<Vec<_>>(),
        [
            (
                "2026-02-06".to_owned(),
                "497512.44".to_owned(),
                "10000.00".to_owned()
            ),
            (
                "2026-03-06".to_owned(),
                "502487.56".to_owned(),
                "5024.88".to_owned()
            ),
        ]
    );
    // The loan's stored schedule is exactly that: the convention it is pinned to reproduces it.
    let stored: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT due_date::text, principal_due::text, interest_due::text \
         FROM core.loan_installments ORDER BY installment_number",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(
        stored,
        schedule
            .iter()
            .map(|i| (
                i.due_date.to_string(),
                i.principal.to_string(),
                i.interest.to_string()
            ))
            .collect::<Vec<_>>()
    );
    conn.close().await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE {database}"))
        .execute(&app.owner)
        .await
        .unwrap();
}
