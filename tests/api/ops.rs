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

/// No personal value reaches the PostgreSQL log. Every statement is logged as slow, a customer is
/// created, changed and searched for, and a unique and a check violation hit `core.customers`:
/// the log shows the statements and the errors (`log_error_verbosity = terse` drops a DETAIL's
/// "Failing row contains (…)"; `log_parameter_max_length = 0` the bound values), never a name,
/// phone, e-mail, address or ID number.
#[tokio::test]
async fn personal_data_never_reaches_the_postgresql_log() {
    use serde_json::json;
    use sqlx::{ConnectOptions, Connection};
    let Some(own) = crate::helpers::OwnCluster::start(
        "pii_logs",
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(10),
    )
    .await
    else {
        return;
    };
    let mut conn = own.owner.connect().await.unwrap();
    sqlx::raw_sql("ALTER DATABASE pii_logs SET log_min_duration_statement = 0")
        .execute(&mut conn)
        .await
        .unwrap();
    let before = own.cluster.log().len();
    let secrets = [
        "Zyxwvut Phamnguyen",
        "0987650123",
        "zyxwvut.secret@example.com",
        "Quarterdeck Ward",
        "864213579",
        "Thuydiem Renamed",
    ];
    let mut body = customer_body("CUSTLOG1", secrets[4]);
    body["full_name"] = json!(secrets[0]);
    body["phone_number"] = json!(secrets[1]);
    body["email"] = json!(secrets[2]);
    body["address"] = json!({"city": "Ho Chi Minh", "district": secrets[3]});
    let created = own
        .send(Method::POST, "/v1/customers", body.clone(), None)
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    let id = created.json()["customer_id"].as_str().unwrap().to_owned();
    // The same customer again: a unique violation.
    let again = own.send(Method::POST, "/v1/customers", body, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text());
    let patch = axum::http::Request::builder()
        .method(Method::PATCH)
        .uri(format!("/v1/customers/{id}"))
        .header("authorization", format!("Bearer {}", own.staff))
        .header("content-type", "application/json")
        .header("if-match", "*")
        .body(Body::from(json!({"full_name": secrets[5]}).to_string()))
        .unwrap();
    let patched = crate::helpers::send_via(&own.router, patch).await;
    assert!(patched.status.is_success(), "{}", patched.text());
    for query in [
        json!({"phone": secrets[1]}),
        json!({"national_id": secrets[4]}),
        json!({"name": secrets[5]}),
    ] {
        let found = own
            .send(Method::POST, "/v1/customers/search", query, None)
            .await;
        assert!(found.status.is_success(), "{}", found.text());
    }
    // A check violation, its values bound as the service binds them.
    let refused = sqlx::query(
        "INSERT INTO core.customers (customer_id, customer_code, full_name, id_number_ciphertext, \
         id_number_hash, id_number_last4, phone_number, email, credit_score) \
         VALUES (gen_random_uuid(), 'CUSTLOG2', $1, '\\x00', sha256('x'), '0000', $2, $3, 5000)",
    )
    .bind(secrets[0])
    .bind(secrets[1])
    .bind(secrets[2])
    .execute(&mut conn)
    .await;
    assert!(refused.is_err());
    conn.close().await.unwrap();
    let log = own.cluster.log()[before..].to_owned();
    assert!(log.contains("duration:"), "statements were logged: {log}");
    assert!(
        log.contains("duplicate key") && log.contains("check constraint"),
        "{log}"
    );
    for secret in secrets {
        assert!(
            !log.contains(secret),
            "{secret} is in the server log:\n{log}"
        );
    }
}
