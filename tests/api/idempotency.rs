//! The money core's commands: one transaction per command, the Idempotency-Key claim inside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};

use crate::helpers::{OwnCluster, TestApp};

fn repayment(loan: &Value, amount: &str) -> Value {
    json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": amount})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_with_one_key_wait_for_the_first_and_replay_its_response() {
    let app = Arc::new(TestApp::spawn().await);
    let customer = app.approved_customer("CUSTM01", "610610610").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let body = repayment(&loan, "1000.00");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (app, body) = (app.clone(), body.clone());
            tokio::spawn(async move {
                let r = app.pay(&app.staff(), "one-key", &body).await;
                let replayed = r.header("idempotent-replayed").is_some();
                (r.status, r.body, replayed)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    // No 409: each waited for the first and got its response.
    assert!(
        answers.iter().all(|(s, ..)| *s == StatusCode::CREATED),
        "{answers:?}"
    );
    assert!(answers.iter().all(|(_, b, _)| *b == answers[0].1));
    assert_eq!(answers.iter().filter(|(.., replayed)| !replayed).count(), 1);
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_request_whose_first_is_still_running_gets_409_after_a_bounded_wait() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTM02", "620620620").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    // A first request with this key, still running: its claim is inserted, not committed.
    let mut first = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::raw_sql(
        "BEGIN; INSERT INTO core.idempotency_keys (db_role, actor, idempotency_key, request_hash) \
         VALUES ('lakehouse_staff', 'local|test-staff|staff', 'held', '\\x00')",
    )
    .execute(&mut first)
    .await
    .unwrap();
    let started = Instant::now();
    let waited = app
        .pay(&app.staff(), "held", &repayment(&loan, "5.00"))
        .await;
    waited.problem(StatusCode::CONFLICT);
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the first"
    );
    // The first goes away without a response (a crash, say): the key is free at once.
    sqlx::raw_sql("ROLLBACK").execute(&mut first).await.unwrap();
    let retried = app
        .pay(&app.staff(), "held", &repayment(&loan, "5.00"))
        .await;
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text());
}

#[tokio::test]
async fn a_failed_request_leaves_no_key_and_a_business_error_is_stored() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTM03", "630630630").await;
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let too_much = app
        .pay(&app.staff(), "too-much", &repayment(&loan, "5000000.00"))
        .await;
    too_much.problem(StatusCode::UNPROCESSABLE_ENTITY);
    let stored: (String, i32) = sqlx::query_as(
        "SELECT state, response_status FROM core.idempotency_keys WHERE idempotency_key = 'too-much'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(stored, ("DONE".into(), 422));
    assert_eq!(
        app.count("SELECT count(*) FROM core.payments WHERE payment_type = 'REPAYMENT'")
            .await,
        0,
        "the refused work was rolled back, the claim kept"
    );
}

/// PostgreSQL stops while a payment waits for its loan's lock; after the restart the client's
/// retry with the same key is served at once (the old separate claim left the key "still being
/// processed" for a minute).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_an_outage_mid_payment_the_same_key_succeeds_at_once() {
    let Some(own) =
        OwnCluster::start("outage", Duration::from_secs(5), Duration::from_secs(10)).await
    else {
        return;
    };
    let mut owner_conn = PgConnection::connect_with(&own.owner).await.unwrap();
    let loan = own.disbursed_loan("CUSTM04", "640640640").await;
    let loan_id = loan["loan_id"].as_str().unwrap().to_owned();

    // The payment waits behind a lock on its loan while PostgreSQL goes down.
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT 1 FROM core.loans WHERE loan_id = '{loan_id}' FOR UPDATE"
    ))
    .execute(&mut owner_conn)
    .await
    .unwrap();
    let paying = tokio::spawn(own.send(
        Method::POST,
        "/v1/payments",
        repayment(&loan, "100.00"),
        Some("outage-key"),
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    own.cluster.stop().unwrap();
    let failed = paying.await.unwrap();
    assert!(
        failed.status.is_server_error(),
        "{} {}",
        failed.status,
        failed.text()
    );
    own.cluster.restart().unwrap();

    let started = Instant::now();
    let retried = loop {
        let r = own
            .send(
                Method::POST,
                "/v1/payments",
                repayment(&loan, "100.00"),
                Some("outage-key"),
            )
            .await;
        if r.status != StatusCode::SERVICE_UNAVAILABLE
            || started.elapsed() > Duration::from_secs(10)
        {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(retried.status, StatusCode::CREATED, "{}", retried.text());
    assert!(started.elapsed() < Duration::from_secs(10));
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

/// Replaying or storing a key reads a handful of index pages however many keys a day holds (with
/// the role leading the primary key it read the whole index: 0.6 ms a repayment at 7,000 keys).
#[tokio::test]
async fn a_key_is_found_with_one_index_probe_among_many() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(
        "INSERT INTO core.idempotency_keys (db_role, actor, idempotency_key, request_hash) \
         SELECT 'lakehouse_staff', 'local|staff-' || (n % 50) || '|staff', 'key-' || n, '\\x00' \
         FROM generate_series(1, 20000) n; \
         INSERT INTO core.idempotency_keys (db_role, actor, idempotency_key, request_hash) \
         VALUES ('lakehouse_staff', 'local|probe|staff', 'mine', '\\x00'); \
         ANALYZE core.idempotency_keys",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE lakehouse_staff; SET LOCAL app.actor = 'local|probe|staff'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT state FROM core.idempotency_keys WHERE {}",
        lakehouse_api::domain::idempotency::THIS_KEY.replace("$1", "'mine'")
    ))
    .fetch_one(&mut *tx)
    .await
    .unwrap();
    let top = &plan[0]["Plan"];
    assert_eq!(top["Actual Rows"], 1, "{plan}");
    let pages =
        top["Shared Hit Blocks"].as_u64().unwrap() + top["Shared Read Blocks"].as_u64().unwrap();
    assert!(
        pages <= 6,
        "{pages} pages read to find one key among 20,000: {plan}"
    );
}
