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
