//! The loan status feed: SSE over a LISTEN connection, replay from the outbox.

use std::time::{Duration, Instant};

use axum::body::{Body, BodyDataStream};
use axum::http::{Method, StatusCode};
use futures_util::StreamExt;
use serde_json::Value;
use tower::ServiceExt;

use crate::helpers::TestApp;

pub(crate) struct EventStream {
    body: BodyDataStream,
    buffer: String,
}

/// How long a test waits for an event it expects. An event reaches a stream within the watcher's
/// poll once every transaction older than its own has ended, on the whole server; tests share
/// one server, where another test's long insert (100,000 customers) holds that horizon back for
/// seconds. The benchmark measures the real latency.
pub(crate) const SOON: Duration = Duration::from_secs(60);

/// The staff stream of loan status changes only.
const LOAN_STATUS: &str = "/v1/events/loans?topics=loan_status_changed";

impl EventStream {
    async fn open(app: &TestApp, last_event_id: Option<i64>) -> Self {
        Self::open_at(app, LOAN_STATUS, &app.staff(), last_event_id).await
    }

    pub(crate) async fn open_at(
        app: &TestApp,
        path: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        Self::open_on(&app.router, app, path, token, last_event_id).await
    }

    /// A stream on `router`, or `None` if it answers other than 200 (PostgreSQL down).
    async fn try_open(
        router: &axum::Router,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Option<Self> {
        let mut request = axum::http::Request::builder()
            .method(Method::GET)
            .uri(LOAN_STATUS)
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = router
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .ok()?;
        (response.status() == StatusCode::OK).then(|| Self {
            body: response.into_body().into_data_stream(),
            buffer: String::new(),
        })
    }

    async fn open_on(
        router: &axum::Router,
        app: &TestApp,
        path: &str,
        token: &str,
        last_event_id: Option<i64>,
    ) -> Self {
        let mut request = app.request(Method::GET, path, Some(token));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = router
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
    pub(crate) async fn next(&mut self, wait: Duration) -> Option<(i64, Value)> {
        self.next_event(wait).await.map(|(id, _, data)| (id, data))
    }

    /// The next event (id, type, data), or None if none arrives within `wait`.
    pub(crate) async fn next_event(&mut self, wait: Duration) -> Option<(i64, String, Value)> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let mut id = None;
                let mut event = None;
                let mut data = None;
                for line in frame.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim().parse().ok();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = serde_json::from_str(v.trim()).ok();
                    }
                }
                match (id, event, data) {
                    (Some(id), Some(event), Some(data)) => return Some((id, event, data)),
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
async fn a_subscriber_sees_committed_changes_in_order_and_never_rolled_back_ones() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST300", "300300300").await;
    let mut stream = EventStream::open(&app, None).await;

    let started = Instant::now();
    let loan = app.loan_for(customer, "10000000").await;
    let (applied_id, applied) = stream.next(SOON).await.expect("APPLIED");
    assert!(started.elapsed() < SOON);
    assert_eq!(applied["loan_id"], loan["loan_id"]);
    assert_eq!(applied["new_status"], "APPLIED");
    assert_eq!(applied["old_status"], Value::Null);

    let started = Instant::now();
    assert_eq!(
        app.act(&app.staff(), &loan, "approve").await.status,
        StatusCode::OK
    );
    let (approved_id, approved) = stream.next(SOON).await.expect("APPROVED");
    assert!(started.elapsed() < SOON);
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
    .bind(loan.id)
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
    let (first, _) = stream.next(SOON).await.unwrap();
    drop(stream);

    // Missed while disconnected.
    app.act(&app.staff(), &loan, "approve").await;
    app.act(&app.staff(), &loan, "disburse").await;
    let other = app.loan_for(customer, "20000000").await;

    let mut stream = EventStream::open(&app, Some(first)).await;
    let mut replayed = Vec::new();
    for _ in 0..3 {
        replayed.push(stream.next(SOON).await.expect("a missed event"));
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
    let (_, live) = stream.next(SOON).await.expect("live after replay");
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
    let (id, event) = stream.next(SOON).await.unwrap();
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

/// The next approval a stream sends, skipping any other status change.
async fn next_approval(stream: &mut EventStream, wait: Duration) -> Option<(i64, Value)> {
    let deadline = Instant::now() + wait;
    while let Some((id, data)) = stream
        .next(deadline.saturating_duration_since(Instant::now()))
        .await
    {
        if data["new_status"] == "APPROVED" {
            return Some((id, data));
        }
    }
    None
}

/// Writers never wait for each other's events, and a stream still never sends an event before one
/// that precedes it. A transaction that began first (here it took its id before it wrote) holds
/// back every later one until it ends; then its event is sent first, though its event id is the
/// higher, and a client resuming after it gets the other. Staff streams and the outbox's order
/// agree: (transaction, event id).
#[tokio::test]
async fn writers_do_not_wait_and_a_stream_never_sends_an_event_before_one_that_precedes_it() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUST320", "320320320").await;
    let first = app.loan_for(customer, "10000000").await;
    let second = app.loan_for(customer, "20000000").await;
    let mut stream = EventStream::open(&app, None).await;
    let approve = "UPDATE core.loans SET status = 'APPROVED', approval_date = now() \
                   WHERE loan_id = $1::uuid";

    // The early transaction takes its id, then waits.
    let mut early = app.owner.begin().await.unwrap();
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *early)
        .await
        .unwrap();
    // A later one approves `second` and commits at once: no lock shared by all writers.
    let started = Instant::now();
    let mut late = app.owner.begin().await.unwrap();
    sqlx::query(approve)
        .bind(second.id)
        .execute(&mut *late)
        .await
        .unwrap();
    late.commit().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    // (The applications above may still arrive: the stream opened at the horizon, which other
    // transactions on the server may hold back.)
    assert_eq!(
        next_approval(&mut stream, Duration::from_millis(600)).await,
        None,
        "sent while an earlier transaction could still write an event before it"
    );
    // The early one approves `first` (a higher event id) and commits.
    sqlx::query(approve)
        .bind(first.id)
        .execute(&mut *early)
        .await
        .unwrap();
    early.commit().await.unwrap();

    let (first_id, sent_first) = next_approval(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    let (second_id, sent_second) = next_approval(&mut stream, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(sent_first["loan_id"], first.id.to_string());
    assert_eq!(sent_second["loan_id"], second.id.to_string());
    assert!(
        first_id > second_id,
        "the order is the transactions', not the ids'"
    );
    // Resuming after the first sent gets the second; after the second, nothing.
    let mut resumed = EventStream::open(&app, Some(first_id)).await;
    let (id, _) = resumed.next(Duration::from_secs(10)).await.unwrap();
    assert_eq!(id, second_id);
    let mut resumed = EventStream::open(&app, Some(second_id)).await;
    assert_eq!(resumed.next(Duration::from_millis(600)).await, None);
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

/// A staff stream of payments only (`payment_*`).
const PAYMENTS: &str =
    "/v1/events/loans?topics=payment_recorded,payment_confirmed,payment_failed,payment_reversed";

async fn payment_action(app: &TestApp, payment: &Value, action: &str) {
    let path = format!(
        "/v1/payments/{}/{action}",
        payment["payment_id"].as_str().unwrap()
    );
    let response = app
        .json(
            Method::POST,
            &path,
            &app.staff(),
            &serde_json::json!({"reason": "test"}),
        )
        .await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "{action}: {}",
        response.text()
    );
}

#[tokio::test]
async fn payments_are_recorded_confirmed_failed_and_reversed_on_the_staff_stream() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("EVP001", "400400400").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let mut stream = EventStream::open_at(&app, PAYMENTS, &app.staff(), None).await;
    let body = serde_json::json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "100000.00"});
    let mine = app.customer(customer);
    let first = app.pay(&mine, &crate::payments::key(), &body).await.json();
    let second = app.pay(&mine, &crate::payments::key(), &body).await.json();
    payment_action(&app, &first, "confirm").await;
    payment_action(&app, &second, "fail").await;
    payment_action(&app, &first, "reverse").await;

    let mut seen = Vec::new();
    while let Some((id, event, data)) = stream.next_event(SOON).await {
        seen.push((id, event, data));
        if seen.len() == 5 {
            break;
        }
    }
    let kinds: Vec<(&str, &str, &str)> = seen
        .iter()
        .map(|(_, event, data)| {
            let payment = if data["payment_id"] == first["payment_id"] {
                "first"
            } else {
                "second"
            };
            (
                event.as_str(),
                payment,
                data["new_status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("payment_recorded", "first", "PENDING"),
            ("payment_recorded", "second", "PENDING"),
            ("payment_confirmed", "first", "COMPLETED"),
            ("payment_failed", "second", "FAILED"),
            ("payment_reversed", "first", "REVERSED"),
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0), "in commit order");
    assert_eq!(seen[0].2["customer_id"], customer.to_string());
    assert_eq!(seen[0].2["amount"], "100000.00");
    assert_eq!(seen[3].2["reason"], "test");
    // Nothing else: loan events are not among the topics asked for.
    assert_eq!(stream.next(Duration::from_millis(500)).await, None);
    app.get(
        "/v1/events/loans?topics=payment_recorded,nonsense",
        &app.staff(),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_customer_stream_carries_their_own_events_and_never_another_customers() {
    let app = TestApp::spawn().await;
    let me = app.approved_customer("EVC001", "410410410").await;
    let other = app.approved_customer("EVC002", "410410411").await;
    let my_loan = app
        .disbursed_loan(me, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let their_loan = app
        .disbursed_loan(other, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let mut stream = EventStream::open_at(&app, "/v1/me/events", &app.customer(me), None).await;

    // The other customer's payment and loan news first, then mine.
    let pay = |loan: &Value| serde_json::json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "100000.00"});
    let theirs = app
        .pay(
            &app.customer(other),
            &crate::payments::key(),
            &pay(&their_loan),
        )
        .await
        .json();
    payment_action(&app, &theirs, "confirm").await;
    app.loan_for(other, "10000000").await;
    let etag = app.get("/v1/me", &app.customer(me)).await;
    let etag = etag.header("etag").unwrap().to_owned();
    let patched = app
        .json_with(
            Method::PATCH,
            "/v1/me",
            &app.customer(me),
            &serde_json::json!({"email": "me@example.com"}),
            &[("if-match", etag.as_str())],
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());
    let mine = app
        .pay(&app.customer(me), &crate::payments::key(), &pay(&my_loan))
        .await
        .json();

    let (_, event, data) = stream.next_event(SOON).await.expect("my payment");
    assert_eq!(event, "payment_recorded");
    assert_eq!(data["payment_id"], mine["payment_id"]);
    assert_eq!(
        stream.next(Duration::from_millis(700)).await,
        None,
        "another customer's events, or a contact change, reached my stream"
    );

    // A replay from the start: my loan's and my payment's events, nobody else's.
    let mut replay = EventStream::open_at(&app, "/v1/me/events", &app.customer(me), Some(0)).await;
    let mut replayed = Vec::new();
    while let Some((_, event, data)) = replay.next_event(Duration::from_millis(700)).await {
        replayed.push((event, data));
    }
    assert!(replayed.len() >= 4, "{replayed:?}");
    for (event, data) in &replayed {
        assert_eq!(data["customer_id"], me.to_string(), "{event}: {data}");
        assert_ne!(event, "customer_contact_changed");
    }
    assert!(replayed
        .iter()
        .any(|(e, d)| e == "loan_status_changed" && d["loan_id"] == my_loan["loan_id"]));

    // Row-level security alone keeps the outbox to the customer's own loan and payment events.
    let visible: Vec<(String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT topic, customer_id FROM metadata.outbox_events")
            .fetch_all(&app.owner)
            .await
            .unwrap();
    assert!(
        visible.iter().any(|(_, c)| *c == Some(other)),
        "the outbox has their events"
    );
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET LOCAL ROLE lakehouse_app_user; SET LOCAL app.current_customer_id = '{me}'"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let seen: Vec<(String, Option<uuid::Uuid>)> =
        sqlx::query_as("SELECT topic, customer_id FROM metadata.outbox_events")
            .fetch_all(&mut *tx)
            .await
            .unwrap();
    tx.rollback().await.unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter()
            .all(|(topic, c)| *c == Some(me) && topic != "customer_contact_changed"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn customer_streams_are_bounded_per_customer_and_per_instance_and_a_closed_one_frees_its_place(
) {
    let app = TestApp::spawn_with(crate::helpers::Options {
        max_customer_streams: 2,
        max_streams_per_customer: 1,
        ..Default::default()
    })
    .await;
    let me = app.approved_customer("EVC010", "420420420").await;
    let you = app.approved_customer("EVC011", "420420421").await;
    let them = app.approved_customer("EVC012", "420420422").await;
    let first = EventStream::open_at(&app, "/v1/me/events", &app.customer(me), None).await;
    // One customer may not take more than their share...
    let mine_again = app.get("/v1/me/events", &app.customer(me)).await;
    mine_again.problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(mine_again.header("retry-after").is_some());
    // ...and the instance takes only so many in all.
    let yours = EventStream::open_at(&app, "/v1/me/events", &app.customer(you), None).await;
    let refused = app.get("/v1/me/events", &app.customer(them)).await;
    refused.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.header("retry-after").is_some());
    drop(first);
    let again = EventStream::open_at(&app, "/v1/me/events", &app.customer(me), None).await;
    drop((again, yours));
    app.get("/v1/me/events", &app.staff())
        .await
        .problem(StatusCode::FORBIDDEN);
}

/// Staff and admin streams are bounded as customers' are: per principal (429) and per instance
/// (503), each with Retry-After; a closed stream frees its place.
#[tokio::test]
async fn staff_streams_are_bounded_per_principal_and_per_instance() {
    let app = TestApp::spawn_with(crate::helpers::Options {
        max_staff_streams: 3,
        max_streams_per_principal: 2,
        ..Default::default()
    })
    .await;
    let teller = app.token_for("teller-1", "staff", None);
    let first = EventStream::open_at(&app, LOAN_STATUS, &teller, None).await;
    let _second = EventStream::open_at(&app, LOAN_STATUS, &teller, None).await;
    let third = app.get(LOAN_STATUS, &teller).await;
    third.problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(third.header("retry-after").is_some());
    let other = app.token_for("teller-2", "staff", None);
    let _others = EventStream::open_at(&app, LOAN_STATUS, &other, None).await;
    let admin = app.token_for("admin-1", "admin", None);
    let full = app.get(LOAN_STATUS, &admin).await;
    full.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(full.header("retry-after").is_some());
    drop(first);
    let _again = EventStream::open_at(&app, LOAN_STATUS, &teller, None).await;
}

/// Two instances of the service on one database: an event committed through one reaches a
/// stream open on the other (each has its own LISTEN connection), and the same Idempotency-Key
/// sent to both at once makes one payment.
#[tokio::test]
async fn two_instances_share_events_and_idempotency_keys() {
    let app = TestApp::spawn().await;
    let other = app.another_instance();
    let customer = app.approved_customer("TWO001", "430430430").await;
    let mut stream = EventStream::open_on(&other, &app, LOAN_STATUS, &app.staff(), None).await;
    let loan = app.loan_for(customer, "10000000").await;
    let (_, event) = stream
        .next(SOON)
        .await
        .expect("the other instance's stream has the change");
    assert_eq!(event["loan_id"], loan["loan_id"]);

    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 6)
        .await;
    let body = serde_json::json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "50000.00"});
    let request = |router: axum::Router| {
        let request = app
            .request(Method::POST, "/v1/payments", Some(&app.staff()))
            .header("content-type", "application/json")
            .header("idempotency-key", "two-instances-1")
            .body(Body::from(body.to_string()))
            .unwrap();
        async move { crate::helpers::send_via(&router, request).await }
    };
    let (first, second) = tokio::join!(
        tokio::spawn(request(app.router.clone())),
        tokio::spawn(request(other.clone()))
    );
    let answers = [first.unwrap(), second.unwrap()];
    let created: Vec<&crate::helpers::TestResponse> = answers
        .iter()
        .filter(|r| r.status == StatusCode::CREATED)
        .collect();
    assert!(!created.is_empty(), "one of them made the payment");
    for answer in &answers {
        assert!(
            answer.status == StatusCode::CREATED || answer.status == StatusCode::CONFLICT,
            "{} {}",
            answer.status,
            answer.text()
        );
    }
    if created.len() == 2 {
        assert_eq!(
            created[0].json()["payment_id"],
            created[1].json()["payment_id"]
        );
    }
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM core.payments WHERE loan_id = '{}' AND payment_type = 'REPAYMENT'",
            loan.id
        ))
        .await,
        1
    );
}

/// A stream ends when its caller's token expires: a revoked or unlinked customer does not listen
/// on (the client reconnects with a fresh token and `Last-Event-ID`).
#[tokio::test]
async fn a_stream_ends_when_its_token_expires() {
    let app = TestApp::spawn().await;
    let me = app.approved_customer("EVX001", "440440440").await;
    let short = app.keys.sign(&lakehouse_api::platform::auth::Claims {
        sub: format!("test-customer-{me}"),
        role: "customer".into(),
        customer_id: Some(me),
        exp: chrono::Utc::now().timestamp() + 2,
        iat: None,
        branch: None,
    });
    let mut stream = EventStream::open_at(&app, "/v1/me/events", &short, None).await;
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Some(chunk) = stream.body.next().await {
            chunk.expect("a chunk");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream outlived its token");
}

/// After the LISTEN connection comes back, a staff stream catches up from the last event it
/// sent live, not from where it started: more events than it remembers (4,096) go by, the
/// connection is cut, and not one is sent twice.
#[tokio::test]
async fn a_staff_stream_resumes_after_what_it_sent_live_when_its_watcher_reconnects() {
    let app = TestApp::spawn().await;
    let mut stream = EventStream::open(&app, None).await;
    let total = 5000;
    let owner = app.owner.clone();
    let producer = tokio::spawn(async move {
        for n in 0..total {
            sqlx::query(
                "INSERT INTO metadata.outbox_events (topic, aggregate_id, payload) \
                 VALUES ('loan_status_changed', gen_random_uuid(), jsonb_build_object('n', $1::int))",
            )
            .bind(n)
            .execute(&owner)
            .await
            .unwrap();
        }
    });
    let mut seen = std::collections::HashSet::new();
    while seen.len() < total as usize {
        let (id, _) = stream
            .next(Duration::from_secs(10))
            .await
            .expect("every event, live or caught up");
        assert!(seen.insert(id), "{id} sent twice");
    }
    producer.await.unwrap();
    // Cut the hub's watcher connection: it reconnects and tells every stream to catch up.
    let cut: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = current_database() AND application_name = $1",
    )
    .bind(lakehouse_api::platform::db::outbox_watch::WATCHER_NAME)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(cut, 1, "the hub's watcher connection");
    if let Some((id, _)) = stream.next(Duration::from_secs(3)).await {
        panic!("{id} was sent again after the reconnect");
    }
}

/// Any database login may NOTIFY on the event channels. A notification sent from Trino's
/// read-only login, shaped like a real one and with an id far past the head, delivers nothing to
/// a staff stream and moves nothing: the next real event arrives with its own id.
#[tokio::test]
async fn a_forged_notification_delivers_nothing_and_moves_no_position() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTF01", "616161616").await;
    let mut stream = EventStream::open(&app, None).await;
    let forged = serde_json::json!({
        "event_id": 4_611_686_018_427_387_904_i64,
        "loan_id": uuid::Uuid::now_v7(),
        "customer_id": customer,
        "old_status": "APPROVED",
        "new_status": "DISBURSED",
    });
    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE lakehouse_trino")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT pg_notify('loan_status_changed', $1)")
        .bind(forged.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        stream.next(Duration::from_millis(700)).await,
        None,
        "a forged notification was delivered"
    );

    let loan = app.loan_for(customer, "10000000").await;
    let (id, applied) = stream
        .next(SOON)
        .await
        .expect("the real event after the forged one");
    assert_eq!(applied["loan_id"], loan["loan_id"]);
    let outbox: i64 = sqlx::query_scalar("SELECT max(event_id) FROM metadata.outbox_events")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(
        id, outbox,
        "the stream's position is the outbox's, not the forged id"
    );
}

/// Writes `total` numbered loan_status_changed events one after another, each once even if a
/// write is retried across an outage (an insert whose answer was lost may have committed).
async fn numbered_events(owner: sqlx::postgres::PgConnectOptions, total: i64) {
    use sqlx::Connection;
    let mut conn: Option<sqlx::PgConnection> = None;
    let mut n = 0;
    while n < total {
        if conn.is_none() {
            conn = sqlx::PgConnection::connect_with(&owner).await.ok();
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let written = sqlx::query(
            "INSERT INTO metadata.outbox_events (topic, aggregate_id, payload) \
             SELECT 'loan_status_changed', gen_random_uuid(), jsonb_build_object('n', $1::bigint) \
             WHERE NOT EXISTS (SELECT 1 FROM metadata.outbox_events \
                               WHERE topic = 'loan_status_changed' AND payload->>'n' = $1::text)",
        )
        .bind(n)
        .execute(&mut *c)
        .await;
        if written.is_ok() {
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        } else {
            conn = None;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Reads `stream` until it has every number below `total`, reconnecting with the last id it got
/// through `reopen` when the stream ends or goes quiet; returns the ids in the order received.
/// Each number must arrive once.
async fn every_number_once<F, Fut>(
    mut stream: EventStream,
    total: i64,
    mut numbers: std::collections::HashSet<i64>,
    mut ids: Vec<i64>,
    mut reopen: F,
) -> Vec<i64>
where
    F: FnMut(Option<i64>) -> Fut,
    Fut: std::future::Future<Output = Option<EventStream>>,
{
    let deadline = Instant::now() + Duration::from_secs(120);
    while (numbers.len() as i64) < total {
        assert!(
            Instant::now() < deadline,
            "{} of {total} numbers",
            numbers.len()
        );
        match stream.next(Duration::from_secs(5)).await {
            Some((id, data)) => {
                let n = data["n"].as_i64().expect("a numbered event");
                assert!(numbers.insert(n), "number {n} arrived twice (id {id})");
                ids.push(id);
            }
            None => loop {
                if let Some(again) = reopen(ids.last().copied()).await {
                    stream = again;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            },
        }
    }
    ids
}

/// PostgreSQL restarts while a client follows the staff stream and events are being written:
/// reconnecting with its Last-Event-ID, the client gets every event exactly once, in the order of
/// the ids they were written with (one writer, one after another).
#[tokio::test]
async fn a_client_gets_every_event_once_across_a_postgres_restart() {
    let Some(own) = crate::helpers::OwnCluster::start(
        "eventsrestart",
        Duration::from_secs(2),
        Duration::from_secs(3),
    )
    .await
    else {
        return;
    };
    let total = 400;
    let stream = EventStream::try_open(&own.router, &own.staff, None)
        .await
        .expect("a stream");
    let producer = tokio::spawn(numbered_events(own.owner.clone(), total));
    let restart = {
        let cluster = &own.cluster;
        async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            cluster.stop().expect("stop PostgreSQL");
            tokio::time::sleep(Duration::from_millis(500)).await;
            cluster.restart().expect("start PostgreSQL again");
        }
    };
    let (router, staff) = (own.router.clone(), own.staff.clone());
    let (ids, ()) = tokio::join!(
        every_number_once(stream, total, Default::default(), Vec::new(), |last| {
            let (router, staff) = (router.clone(), staff.clone());
            async move { EventStream::try_open(&router, &staff, last).await }
        }),
        restart
    );
    producer.await.unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in the order written");
}

/// A client's instance dies mid-stream: it resumes on another instance with its Last-Event-ID
/// and gets every later event exactly once.
#[tokio::test]
async fn a_client_resumes_on_another_instance_when_its_instance_dies_mid_stream() {
    let app = TestApp::spawn().await;
    let total = 300;
    let first = app.another_instance();
    let mut stream = EventStream::open_on(&first, &app, LOAN_STATUS, &app.staff(), None).await;
    let producer = tokio::spawn(numbered_events(
        app.owner.connect_options().as_ref().clone(),
        total,
    ));
    let (mut numbers, mut ids) = (std::collections::HashSet::new(), Vec::new());
    while ids.len() < 100 {
        let (id, data) = stream
            .next(SOON)
            .await
            .expect("events on the first instance");
        assert!(numbers.insert(data["n"].as_i64().unwrap()));
        ids.push(id);
    }
    // The instance dies, and its streams with it.
    drop(stream);
    drop(first);
    let survivor = app.another_instance();
    let staff = app.staff();
    let resumed = EventStream::try_open(&survivor, &staff, ids.last().copied())
        .await
        .expect("a stream on the other instance");
    let ids = every_number_once(resumed, total, numbers, ids, |last| {
        let (survivor, staff) = (survivor.clone(), staff.clone());
        async move { EventStream::try_open(&survivor, &staff, last).await }
    })
    .await;
    producer.await.unwrap();
    assert_eq!(ids.len(), total as usize);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "in the order written");
}
