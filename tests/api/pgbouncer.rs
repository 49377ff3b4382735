//! Every resource through a real PgBouncer in transaction mode: the per-request role and
//! settings are transaction-local, so pooled server connections never carry them over.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{customer_body, TestApp};

#[tokio::test]
async fn customers_loans_payments_and_jobs_work_through_pgbouncer() {
    let Some(app) = TestApp::spawn_via_pgbouncer().await else {
        return;
    };
    // The pool really goes through PgBouncer (every statement inside a transaction, as the
    // service's are).
    let mut tx = app.pool.begin().await.unwrap();
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_ne!(
        port as u16,
        app.pool.connect_options().get_port(),
        "the server is behind the bouncer"
    );

    // Customers: create, read, list, patch, KYC.
    let customer = app.approved_customer("CUSTP01", "616161616").await;
    let token = app.customer(customer);
    assert_eq!(
        app.get("/v1/me", &token).await.json()["customer_id"],
        customer.to_string()
    );
    let patched = app
        .json_with(
            Method::PATCH,
            &format!("/v1/customers/{customer}"),
            &app.staff(),
            &json!({"email": "p@example.com"}),
            &[("if-match", "*")],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());

    // Loans and payments, with idempotency.
    let loan = app
        .disbursed_loan(customer, "ZERO_RATE", "1000000.00", 10)
        .await;
    let body =
        json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1000.00"});
    let first = app.pay(&app.staff(), "pgb-1", &body).await;
    let replay = app.pay(&app.staff(), "pgb-1", &body).await;
    assert_eq!((first.status, &first.body), (replay.status, &replay.body));
    assert_eq!(app.loan(&loan).await["total_paid"], "1000.00");
    let schedule = app
        .get(&format!("/v1/loans/{}/schedule", loan.id), &token)
        .await;
    assert_eq!(schedule.status, StatusCode::OK);
    let payments = app
        .get(&format!("/v1/payments?loan_id={}", loan.id), &token)
        .await
        .json();
    assert_eq!(payments["data"].as_array().unwrap().len(), 2);

    // Products, analytics jobs and metadata.
    assert_eq!(app.get("/v1/products", &token).await.status, StatusCode::OK);
    let run = app
        .json(
            Method::POST,
            "/v1/analytics/customer-metrics/refresh",
            &app.token("analyst", None),
            &json!({}),
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text());
    assert_eq!(
        app.get("/v1/metadata/jobs", &app.token("analyst", None))
            .await
            .status,
        StatusCode::OK
    );
    let health = app
        .get("/v1/admin/database", &app.token("admin", None))
        .await;
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn customer_scopes_never_leak_across_pooled_server_connections() {
    let Some(app) = TestApp::spawn_via_pgbouncer().await else {
        return;
    };
    let app = Arc::new(app);
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.customer_id(&format!("CUSTQ{i:02}"), &format!("71717171{i}"))
                .await,
        );
    }
    // A branch with one customer: its teller's scope (kept in a transaction-local setting for
    // the transaction) must never reach another transaction on the same server connection.
    let admin = app.token("admin", None);
    let office = json!({"code": "HN01", "name": "Ha Noi", "kind": "BRANCH", "parent": "HO"});
    assert_eq!(
        app.json(Method::POST, "/v1/offices", &admin, &office)
            .await
            .status,
        StatusCode::CREATED
    );
    let mut body = customer_body("CUSTQBR", "717171799");
    body["branch"] = json!("HN01");
    let created = app
        .json(Method::POST, "/v1/customers", &app.staff(), &body)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let in_branch = created.json()["customer_id"].as_str().unwrap().to_owned();
    // Many customers reading at once, interleaved with staff writes and tellers of the branch and
    // of none, on few server connections.
    let mut tasks = Vec::new();
    for round in 0..40 {
        let app = app.clone();
        let me = ids[round % ids.len()];
        let in_branch = in_branch.clone();
        tasks.push(tokio::spawn(async move {
            let teller = app.token_at("teller-q", "staff", None, Some("HN01"));
            let listed = app.get("/v1/customers", &teller).await.json();
            assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");
            assert_eq!(listed["data"][0]["customer_id"], in_branch.as_str());
            let nowhere = app.token_at("teller-none", "staff", None, None);
            assert_eq!(
                app.get("/v1/customers", &nowhere).await.json()["data"],
                json!([])
            );
            if round % 4 == 0 {
                let body =
                    customer_body(&format!("CUSTW{round:03}"), &format!("9191919{round:03}"));
                assert_eq!(
                    app.json(Method::POST, "/v1/customers", &app.staff(), &body)
                        .await
                        .status,
                    StatusCode::CREATED
                );
            }
            let listed = app.get("/v1/customers", &app.customer(me)).await.json();
            let seen: Vec<String> = listed["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["customer_id"].as_str().unwrap().to_owned())
                .collect();
            assert_eq!(seen, [me.to_string()]);
            let stranger = app
                .get("/v1/customers", &app.customer(Uuid::now_v7()))
                .await
                .json();
            assert_eq!(stranger["data"], json!([]));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn the_event_stream_listens_directly_while_requests_go_through_pgbouncer() {
    let Some(app) = TestApp::spawn_via_pgbouncer().await else {
        return;
    };
    let customer = app.approved_customer("CUSTP02", "626262626").await;
    let request = app
        .request(Method::GET, "/v1/events/loans", Some(&app.staff()))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.router.clone(), request)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body().into_data_stream();
    let loan = app.loan_for(customer, "10000000").await;
    let mut seen = String::new();
    // Long enough for any transaction of another test on the shared server to end (they hold
    // back the horizon events wait for).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains(loan["loan_id"].as_str().unwrap()) {
        let Ok(chunk) =
            tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut body)).await
        else {
            // What holds the horizon back, if anything.
            let holders: Vec<String> = sqlx::query_scalar(
                "SELECT concat_ws(' | ', datname, backend_xid, now() - xact_start, \
                                  left(query, 120)) \
                 FROM pg_stat_activity WHERE backend_xid IS NOT NULL ORDER BY xact_start",
            )
            .fetch_all(&app.owner)
            .await
            .unwrap();
            panic!("the event did not arrive; {seen:?}; transactions with an id: {holders:?}");
        };
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap().unwrap()));
    }
}
