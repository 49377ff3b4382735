//! The loan status feed: SSE over a LISTEN connection, replay from the outbox.

use std::time::{Duration, Instant};

use axum::body::{Body, BodyDataStream};
use axum::http::{Method, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::TestApp;

struct EventStream {
    body: BodyDataStream,
    buffer: String,
}

impl EventStream {
    async fn open(app: &TestApp, last_event_id: Option<i64>) -> Self {
        let mut request = app.request(Method::GET, "/v1/events/loans", Some(&app.staff()));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = app
            .router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        }
    }

    /// The next event (id, data), or None if none arrives within `wait`.
    async fn next(&mut self, wait: Duration) -> Option<(i64, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                match (id, data) {
                    (Some(id), Some(data)) => return Some((id, data)),
                    _ => continue, // a keep-alive comment
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }
}

#[tokio::test]
async fn a_subscriber_sees_committed_changes_within_a_second_and_never_rolled_back_ones() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST300", "300300300").await;
    let mut stream = EventStream::open(&app, None).await;

    let started = Instant::now();
    let loan = app.loan_for(customer, "10000000").await;
    let (applied_id, applied) = stream
        .next(Duration::from_secs(1))
        .await
        .expect("APPLIED within 1 s");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(applied["loan_id"], loan["loan_id"]);
    assert_eq!(applied["new_status"], "APPLIED");
    assert_eq!(applied["old_status"], Value::Null);

    let started = Instant::now();
    assert_eq!(
        app.act(&app.staff(), &loan, "approve").await.status,
        StatusCode::OK
    );
    let (approved_id, approved) = stream
        .next(Duration::from_secs(1))
        .await
        .expect("APPROVED within 1 s");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(approved_id > applied_id);
    assert_eq!(
        (
            approved["old_status"].as_str(),
            approved["new_status"].as_str()
        ),
        (Some("APPLIED"), Some("APPROVED"))
    );
    assert_eq!(approved["actor"], "local|test-staff|staff");

    // A change that rolls back: no event, no outbox row.
    let outbox_before = app
        .count("SELECT count(*) FROM metadata.outbox_events")
        .await;
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::query(
        "UPDATE core.loans SET status = 'CANCELLED', cancelled_at = now() WHERE loan_id = $1::uuid",
    )
    .bind(loan["loan_id"].as_str().unwrap())
    .execute(&mut *tx)
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        stream.next(Duration::from_millis(700)).await,
        None,
        "a rolled-back change was sent"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.outbox_events")
            .await,
        outbox_before
    );
}

#[tokio::test]
async fn reconnecting_with_last_event_id_replays_what_was_missed_in_order() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST310", "310310310").await;
    let mut stream = EventStream::open(&app, None).await;
    let loan = app.loan_for(customer, "10000000").await;
    let (first, _) = stream.next(Duration::from_secs(2)).await.unwrap();
    drop(stream);

    // Missed while disconnected.
    app.act(&app.staff(), &loan, "approve").await;
    app.act(&app.staff(), &loan, "disburse").await;
    let other = app.loan_for(customer, "20000000").await;

    let mut stream = EventStream::open(&app, Some(first)).await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(
            stream
                .next(Duration::from_secs(2))
                .await
                .expect("a missed event"),
        );
    }
    let ids: Vec<i64> = replayed.iter().map(|(id, _)| *id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]) && ids[0] > first,
        "{ids:?}"
    );
    let statuses: Vec<&str> = replayed
        .iter()
        .map(|(_, e)| e["new_status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["APPROVED", "DISBURSED", "APPLIED"]);
    assert_eq!(replayed[2].1["loan_id"], other["loan_id"]);

    // And then it is live again.
    app.act(&app.staff(), &other, "reject").await;
    let (_, live) = stream
        .next(Duration::from_secs(2))
        .await
        .expect("live after replay");
    assert_eq!(live["new_status"], "REJECTED");
}

/// A long absence is replayed a batch (1,000 events) at a time as the client reads, not loaded
/// whole into memory first: events deleted from the outbox after the first batch was read are
/// never sent.
#[tokio::test]
async fn a_long_gap_is_replayed_a_batch_at_a_time() {
    let app = TestApp::spawn().await;
    let first: i64 = sqlx::query_scalar(
        "INSERT INTO metadata.outbox_events (topic, aggregate_id, payload) \
         SELECT 'loan_status_changed', gen_random_uuid(), jsonb_build_object('n', n) \
         FROM generate_series(1, 2500) n RETURNING event_id",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
    .into_iter()
    .min()
    .unwrap();

    let mut stream = EventStream::open(&app, Some(first - 1)).await;
    let (id, event) = stream.next(Duration::from_secs(2)).await.unwrap();
    assert_eq!((id, event["n"].as_i64()), (first, Some(1)));
    sqlx::query("DELETE FROM metadata.outbox_events WHERE event_id >= $1")
        .bind(first + 1000)
        .execute(&app.owner)
        .await
        .unwrap();

    let mut ids = vec![id];
    while let Some((id, _)) = stream.next(Duration::from_millis(500)).await {
        ids.push(id);
    }
    assert_eq!(ids, (first..first + 1000).collect::<Vec<_>>());
}

/// Event ids follow commit order: a status change waits to take its id until the transaction
/// holding the previous one has committed, so a replay past an id can never miss a lower one
/// committed later.
#[tokio::test]
async fn a_status_change_takes_its_event_id_after_the_previous_one_commits() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST320", "320320320").await;
    let first = app.loan_for(customer, "10000000").await;
    let second = app.loan_for(customer, "20000000").await;
    let approve = "UPDATE core.loans SET status = 'APPROVED', approval_date = now() \
                   WHERE loan_id = $1::uuid";

    let mut holder = app.owner.begin().await.unwrap();
    sqlx::query(approve)
        .bind(first["loan_id"].as_str().unwrap())
        .execute(&mut *holder)
        .await
        .unwrap();
    let owner = app.owner.clone();
    let second_id = second["loan_id"].as_str().unwrap().to_owned();
    let waiter = tokio::spawn(async move {
        let mut tx = owner.begin().await.unwrap();
        sqlx::query(approve)
            .bind(second_id)
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second change waits for the first to commit"
    );
    holder.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the second change goes on once the first committed")
        .unwrap();

    let ids: Vec<(String, i64)> = sqlx::query_as(
        "SELECT aggregate_id::text, event_id FROM metadata.outbox_events \
         WHERE payload->>'new_status' = 'APPROVED' ORDER BY event_id",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    let order: Vec<&str> = ids.iter().map(|(loan, _)| loan.as_str()).collect();
    assert_eq!(
        order,
        [
            first["loan_id"].as_str().unwrap(),
            second["loan_id"].as_str().unwrap()
        ]
    );
}

#[tokio::test]
async fn only_staff_may_subscribe() {
    let app = TestApp::spawn().await;
    for role in ["analyst", "etl"] {
        app.get("/v1/events/loans", &app.token(role, None))
            .await
            .problem(StatusCode::FORBIDDEN);
    }
    app.get("/v1/events/loans", &app.customer(uuid::Uuid::now_v7()))
        .await
        .problem(StatusCode::FORBIDDEN);
    let bad = app
        .send(
            app.request(Method::GET, "/v1/events/loans", Some(&app.staff()))
                .header("last-event-id", "yesterday")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    bad.problem(StatusCode::BAD_REQUEST);
}
