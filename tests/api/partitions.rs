//! Plans on a realistically partitioned table: a loan found by id or number touches one
//! partition's index, however many partitions there are.

use std::time::Instant;

use lakehouse_api::api::loans::repo::find_sql;
use lakehouse_api::platform::auth::begin_statement;
use lakehouse_api::platform::auth::{Caller, Role};
use serde_json::Value;
use uuid::Uuid;

use crate::helpers::TestApp;

/// Loans loaded for the plan test: 1,000,000 by default (`LOANS_FOR_EXPLAIN` to change it).
fn volume() -> i64 {
    std::env::var("LOANS_FOR_EXPLAIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Every plan node, depth first.
fn nodes(plan: &Value, out: &mut Vec<Value>) {
    out.push(plan.clone());
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes(child, out);
    }
}

async fn explain(app: &TestApp, by_number: bool, key: &str) -> (Vec<Value>, f64) {
    let staff = Caller {
        issuer: "local".into(),
        subject: "explain".into(),
        role: Role::Staff,
        customer_id: None,
        request_id: None,
        expires_at: None,
    };
    let mut tx = app
        .pool
        .begin_with(begin_statement(&staff, true, 60_000))
        .await
        .unwrap();
    let sql = format!("EXPLAIN (ANALYZE, FORMAT JSON) {}", find_sql(by_number));
    let query = sqlx::query_scalar::<_, Value>(&sql);
    let plan: Value = if by_number {
        query.bind(key).fetch_one(&mut *tx).await.unwrap()
    } else {
        query
            .bind(key.parse::<Uuid>().unwrap())
            .fetch_one(&mut *tx)
            .await
            .unwrap()
    };
    tx.rollback().await.unwrap();
    let mut all = Vec::new();
    nodes(&plan[0]["Plan"], &mut all);
    (all, plan[0]["Execution Time"].as_f64().unwrap_or(0.0))
}

#[tokio::test]
async fn a_loan_is_found_by_id_or_number_with_one_index_probe_across_many_partitions() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST400", "400400400").await;
    app.ensure_products().await;
    let n = volume();
    let started = Instant::now();
    // Historical load: no status events for it (the trigger is off inside this transaction only).
    sqlx::raw_sql(&format!(
        "SELECT core.ensure_loans_partition(make_timestamptz(y, 6, 1, 0, 0, 0, 'UTC')) \
           FROM generate_series(2014, 2025) y; \
         BEGIN; \
         ALTER TABLE core.loans DISABLE TRIGGER loan_status_change_trigger; \
         INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
                                 loan_amount, interest_rate, term_months, application_date) \
         SELECT gen_random_uuid(), 'LX' || g, '{customer}', 'PERSONAL_STD', 'PERSONAL_LOAN', \
                1000000, 0.1250, 12, \
                make_timestamptz(2014 + g % 12, 1 + g % 12, 1 + g % 28, g % 24, 0, 0, 'UTC') \
         FROM generate_series(1, {n}) g; \
         ALTER TABLE core.loans ENABLE TRIGGER loan_status_change_trigger; \
         COMMIT; \
         ANALYZE core.loans; ANALYZE core.loan_directory;"
    ))
    .execute(&app.owner)
    .await
    .unwrap();
    let loaded = started.elapsed();

    let number = format!("LX{}", n / 2);
    let id: Uuid =
        sqlx::query_scalar("SELECT loan_id FROM core.loan_directory WHERE loan_number = $1")
            .bind(&number)
            .fetch_one(&app.owner)
            .await
            .unwrap();
    let partitions = app
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.loans'::regclass")
        .await;
    assert!(partitions >= 12, "{partitions} partitions");

    for (by_number, key) in [(false, id.to_string()), (true, number.clone())] {
        let (plan, ms) = explain(&app, by_number, &key).await;
        let executed_index_scans: Vec<&Value> = plan
            .iter()
            .filter(|n| {
                n["Node Type"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("Index"))
            })
            .filter(|n| n["Actual Loops"].as_i64().unwrap_or(0) > 0)
            .collect();
        let relations: Vec<&str> = executed_index_scans
            .iter()
            .filter_map(|n| n["Relation Name"].as_str())
            .collect();
        let partition_probes = relations.iter().filter(|r| r.starts_with("loans_")).count();
        assert_eq!(
            partition_probes, 1,
            "by_number={by_number}: {relations:?}\n{plan:#?}"
        );
        assert_eq!(
            relations.iter().filter(|r| **r == "loan_directory").count(),
            1,
            "{relations:?}"
        );
        let rows_from_partitions: i64 = executed_index_scans
            .iter()
            .filter(|n| {
                n["Relation Name"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("loans_"))
            })
            .map(|n| n["Actual Rows"].as_i64().unwrap_or(0))
            .sum();
        assert_eq!(rows_from_partitions, 1);
        eprintln!(
            "EXPLAIN find loan by {}: {n} loans in {partitions} partitions (loaded in {loaded:.1?}): \
             1 directory probe + 1 partition probe, execution {ms:.3} ms",
            if by_number { "number" } else { "id" }
        );
    }

    let response = app.get(&format!("/v1/loans/{id}"), &app.staff()).await;
    assert_eq!(response.json()["loan_number"], number.as_str());
}
