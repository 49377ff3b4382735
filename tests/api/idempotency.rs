//! Idempotency-Key on the money commands: one transaction per command, the key claimed inside it,
//! replayed, refused or freed exactly as the contract says.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{repayment, OwnCluster, TestApp};

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

#[tokio::test]
async fn idempotency_keys_belong_to_the_whole_principal_not_the_subject() {
    let app = TestApp::spawn().await;
    let alice = app.approved_customer("CUSTH04", "904904904").await;
    let bob = app.approved_customer("CUSTH05", "905905905").await;
    let loan = app
        .disbursed_loan(alice, "ZERO_RATE", "1000000.00", 10)
        .await;
    let bob_loan = app.disbursed_loan(bob, "ZERO_RATE", "1000000.00", 10).await;
    // Two customers whose tokens share one subject (a provider that reuses it, or an old CLI).
    let as_alice = app.token_for("shared-subject", "customer", Some(alice));
    let as_bob = app.token_for("shared-subject", "customer", Some(bob));

    let first = app
        .pay(&as_alice, "shared-key", &repayment(&loan, "10.00"))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.text());
    // Bob replays Alice's key and body: not Alice's payment, but a request of his own, which
    // RLS refuses like any other (Alice's loan is not his).
    let replay = app
        .pay(&as_bob, "shared-key", &repayment(&loan, "10.00"))
        .await;
    assert_ne!(replay.body, first.body);
    assert_eq!(replay.header("idempotent-replayed"), None);
    replay.problem(StatusCode::NOT_FOUND);
    // With another body, his own key is new to him: no 422 revealing Alice's.
    let other = app
        .pay(&as_bob, "shared-key-2", &repayment(&bob_loan, "5.00"))
        .await;
    assert_eq!(other.status, StatusCode::CREATED);
    let first_key = app
        .pay(&as_alice, "shared-key-2", &repayment(&loan, "7.00"))
        .await;
    assert_eq!(
        first_key.status,
        StatusCode::CREATED,
        "{}",
        first_key.text()
    );

    // The principal is what the audit columns record.
    let created_by: String =
        sqlx::query_scalar("SELECT created_by FROM core.payments WHERE payment_id = $1")
            .bind(
                first.json()["payment_id"]
                    .as_str()
                    .unwrap()
                    .parse::<Uuid>()
                    .unwrap(),
            )
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(created_by, format!("local|shared-subject|customer|{alice}"));
}
