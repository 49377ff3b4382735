use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use tracing_subscriber::fmt::MakeWriter;

use crate::helpers::{customer_body, TestApp};

#[tokio::test]
async fn liveness_and_readiness_answer_ok_on_a_migrated_database() {
    let app = TestApp::spawn().await;
    for path in ["/health/live", "/health/ready"] {
        let response = app
            .send(
                app.request(Method::GET, path, None)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{path}: {}",
            response.text()
        );
        assert_eq!(response.json()["status"], "ok");
    }
}

#[tokio::test]
async fn readiness_fails_when_the_database_lacks_a_migration() {
    let app = TestApp::spawn().await;
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let response = app
        .send(
            app.request(Method::GET, "/health/ready", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    response.problem(StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn request_ids_are_generated_or_echoed() {
    let app = TestApp::spawn().await;
    let generated = app
        .send(
            app.request(Method::GET, "/health/live", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    let id = generated
        .header("x-request-id")
        .expect("a generated request id");
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    let echoed = app
        .send(
            app.request(Method::GET, "/v1/customers/not-a-uuid", Some(&app.staff()))
                .header("x-request-id", "abc-123")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(echoed.header("x-request-id"), Some("abc-123"));
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

#[tokio::test]
async fn logs_carry_route_and_status_but_never_tokens_id_numbers_or_bodies() {
    let app = TestApp::spawn().await;
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_max_level(tracing::Level::TRACE)
        .with_current_span(true)
        .with_writer(captured.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let staff = app.staff();
    let body = customer_body("CUST950", "950950950123");
    let created = app.json(Method::POST, "/v1/customers", &staff, &body).await;
    assert_eq!(created.status, StatusCode::CREATED);
    let id = created.json()["customer_id"].as_str().unwrap().to_owned();
    // Other tests' threads register the same callsites with no subscriber of theirs, which can
    // leave them cached as "nobody listens" for a moment; rebuild the cache and try again
    // until this thread's subscriber hears the requests (the leak checks below need logs).
    let mut logs = String::new();
    for _ in 0..10 {
        tracing::callsite::rebuild_interest_cache();
        let duplicate = app.json(Method::POST, "/v1/customers", &staff, &body).await;
        assert_eq!(duplicate.status, StatusCode::CONFLICT);
        app.get(&format!("/v1/customers/{id}?city=Secret%20Town"), &staff)
            .await;
        app.get("/v1/customers", "forged.token.value").await;
        logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        if logs.contains("/v1/customers/{id}") && logs.contains("\"status\":409") {
            break;
        }
    }
    assert!(
        logs.contains("/v1/customers/{id}"),
        "route templates are logged: {logs}"
    );
    assert!(logs.contains("\"status\":409"), "{logs}");
    for secret in [
        staff.as_str(),
        "950950950123",
        "Customer CUST950",
        "cust950@example.com",
        "Secret Town",
        "forged.token.value",
        &id,
    ] {
        assert!(
            !logs.contains(secret),
            "{secret} leaked into the logs:\n{logs}"
        );
    }
}
