//! Plans on a realistically partitioned table: a loan found by id or number touches one
//! partition's index, however many partitions there are.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use lakehouse_api::api::loans::repo::find_sql;
use lakehouse_api::platform::auth::begin_statement;
use lakehouse_api::platform::auth::{Caller, Role};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{OwnCluster, TestApp};

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
        linked: false,
        branch: Some("HO".into()),
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
    // Historical load: no status events for it (the trigger is off inside each transaction
    // only). Ten transactions rather than one: a transaction that holds an id for a minute would
    // hold back the event streams of every other test on the cluster.
    sqlx::raw_sql(
        "SELECT core.ensure_loans_partition(make_timestamptz(y, 6, 1, 0, 0, 0, 'UTC')) \
           FROM generate_series(2014, 2025) y",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    for chunk in 0..10 {
        let (first, last) = (chunk * n / 10 + 1, (chunk + 1) * n / 10);
        sqlx::raw_sql(&format!(
            "BEGIN; \
             ALTER TABLE core.loans DISABLE TRIGGER loan_status_change_trigger; \
             INSERT INTO core.loans (loan_id, loan_number, customer_id, product_code, product_type, \
                                     loan_amount, interest_rate, term_months, application_date, \
                                     terms_version) \
             SELECT gen_random_uuid(), 'LX' || g, '{customer}', 'PERSONAL_STD', 'PERSONAL_LOAN', \
                    1000000, 0.1250, 12, \
                    make_timestamptz(2014 + g % 12, 1 + g % 12, 1 + g % 28, g % 24, 0, 0, 'UTC'), \
                    (SELECT terms_version FROM core.products WHERE product_code = 'PERSONAL_STD') \
             FROM generate_series({first}, {last}) g; \
             ALTER TABLE core.loans ENABLE TRIGGER loan_status_change_trigger; \
             COMMIT;"
        ))
        .execute(&app.owner)
        .await
        .unwrap();
    }
    sqlx::raw_sql("ANALYZE core.loans; ANALYZE core.loan_directory;")
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

/// The partitions a plan's nodes ran on (`Actual Loops` above zero), by name.
fn partitions_run(plan: &Value, into: &mut std::collections::BTreeSet<String>) {
    let ran = plan["Actual Loops"].as_u64().is_some_and(|loops| loops > 0);
    if let (true, Some(name)) = (ran, plan["Relation Name"].as_str()) {
        let partition = |prefix: &str, digits: usize| {
            name.strip_prefix(prefix).is_some_and(|rest| {
                rest.replace('_', "").len() == digits
                    && rest.replace('_', "").bytes().all(|b| b.is_ascii_digit())
            })
        };
        if partition("loans_", 4) || partition("payments_", 6) {
            into.insert(name.to_owned());
        }
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        partitions_run(child, into);
    }
}

/// Every statement of a repayment, explained with its real parameters as it runs (auto_explain,
/// nested statements too), reaches only the loan's yearly partition and this month's payments
/// partition, though loans and payments span several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_statement_of_a_repayment_runs_only_on_its_loans_and_payments_partitions() {
    let Some(own) =
        OwnCluster::start("explained", Duration::from_secs(5), Duration::from_secs(10)).await
    else {
        return;
    };
    let mut owner_conn = PgConnection::connect_with(&own.owner).await.unwrap();
    sqlx::raw_sql(
        "ALTER DATABASE explained SET session_preload_libraries = 'auto_explain'; \
         ALTER DATABASE explained SET auto_explain.log_min_duration = 0; \
         ALTER DATABASE explained SET auto_explain.log_analyze = on; \
         ALTER DATABASE explained SET auto_explain.log_timing = off; \
         ALTER DATABASE explained SET auto_explain.log_nested_statements = on; \
         ALTER DATABASE explained SET auto_explain.log_format = 'json'; \
         INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
             min_term_months, max_term_months, annual_interest_rate) \
         VALUES ('EXPLAINED', 'Explained', 'PERSONAL_LOAN', 1000000, 100000000, 1, 36, 0.12)",
    )
    .execute(&mut owner_conn)
    .await
    .unwrap();
    let customer_id = own.approved_customer("CUSTX01", "810810810").await;
    // Loans in three yearly partitions, each paid out and repaid once (payments in this month's
    // partition, and the backdated repayments in earlier months').
    let mut loans = Vec::new();
    for applied in [
        None,
        Some("2024-06-03T10:00:00Z"),
        Some("2025-06-03T10:00:00Z"),
    ] {
        let mut body = json!({"customer_id": customer_id, "product_code": "EXPLAINED", "amount": "1000000.00", "term_months": 12});
        if let Some(at) = applied {
            body["application_date"] = json!(at);
        }
        let loan = own.send(Method::POST, "/v1/loans", body, None).await;
        assert_eq!(loan.status, StatusCode::CREATED, "{}", loan.text());
        let loan_id = loan.json()["loan_id"].as_str().unwrap().to_owned();
        own.pay_out(&loan_id).await;
        loans.push(loan_id);
    }
    // The API pays a loan out now; this one stands as if paid out before the backdated
    // repayment, which may not precede its disbursement.
    sqlx::query(
        "UPDATE core.loans SET disbursement_date = '2025-12-01T10:00:00Z' WHERE loan_id = $1::uuid",
    )
    .bind(&loans[1])
    .execute(&mut owner_conn)
    .await
    .unwrap();
    let backdated = own.send(
        Method::POST,
        "/v1/payments",
        json!({"loan_id": loans[1], "payment_type": "REPAYMENT", "amount": "10.00", "payment_date": "2026-01-15T10:00:00Z"}),
        Some(&uuid::Uuid::now_v7().to_string()),
    )
    .await;
    assert_eq!(
        backdated.status,
        StatusCode::CREATED,
        "{}",
        backdated.text()
    );
    let (loan_partition, payments_partition): (String, String) = sqlx::query_as(
        "SELECT (SELECT tableoid::regclass::text FROM core.loans WHERE loan_id = $1), \
                (SELECT tableoid::regclass::text FROM core.payments WHERE payment_date = \
                    (SELECT max(payment_date) FROM core.payments))",
    )
    .bind(uuid::Uuid::parse_str(&loans[0]).unwrap())
    .fetch_one(&mut owner_conn)
    .await
    .unwrap();

    let before = own.cluster.log().len();
    let paid = own
        .send(
            Method::POST,
            "/v1/payments",
            json!({"loan_id": loans[0], "payment_type": "REPAYMENT", "amount": "100.00"}),
            Some(&uuid::Uuid::now_v7().to_string()),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = own.cluster.log();
    let mut plans = 0;
    let mut ran = std::collections::BTreeSet::new();
    for (at, _) in log[before..].match_indices("plan:") {
        let rest = log[before + at + "plan:".len()..].trim_start();
        let Some(Ok(plan)) = serde_json::Deserializer::from_str(rest)
            .into_iter::<Value>()
            .next()
        else {
            continue;
        };
        plans += 1;
        partitions_run(&plan["Plan"], &mut ran);
    }
    assert!(plans >= 6, "auto_explain logged {plans} plans");
    let loan_partition = loan_partition.trim_start_matches("core.").to_owned();
    let payments_partition = payments_partition.trim_start_matches("core.").to_owned();
    assert!(ran.contains(&loan_partition), "{ran:?}");
    assert!(
        ran.iter()
            .all(|p| *p == loan_partition || *p == payments_partition),
        "a repayment's statements ran on {ran:?}; only {loan_partition} and {payments_partition} \
         were theirs"
    );
    // The new payment was routed to this month's partition.
    let routed: String = sqlx::query_scalar(
        "SELECT tableoid::regclass::text FROM core.payments WHERE loan_id = $1 AND amount = 100",
    )
    .bind(uuid::Uuid::parse_str(&loans[0]).unwrap())
    .fetch_one(&mut owner_conn)
    .await
    .unwrap();
    assert_eq!(routed.trim_start_matches("core."), payments_partition);
    let partitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_inherits WHERE inhparent IN ('core.loans'::regclass, 'core.payments'::regclass)",
    )
    .fetch_one(&mut owner_conn)
    .await
    .unwrap();
    assert!(partitions >= 6, "{partitions} partitions to choose from");
}
