//! Every kind of bad input and failure answers problem+json with its documented status.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::http::{header, Method, StatusCode};
use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::config::HttpConfig;
use lakehouse_api::platform::db::errors::classify;
use lakehouse_api::platform::error::ApiError;
use lakehouse_api::platform::state::AppState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::helpers::{customer_body, send_via, Options, TestApp};

async fn no_customers_written(app: &TestApp) {
    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 0);
}

#[tokio::test]
async fn axum_rejections_become_problems_and_write_nothing() {
    let app = TestApp::spawn_with(Options {
        body_limit_bytes: 2048,
        ..Options::default()
    })
    .await;
    let staff = app.staff();
    let post = |content_type: Option<&str>, body: String| {
        let mut builder = app.request(Method::POST, "/v1/customers", Some(&staff));
        if let Some(ct) = content_type {
            builder = builder.header(header::CONTENT_TYPE, ct);
        }
        builder.body(Body::from(body)).unwrap()
    };

    let broken = app
        .send(post(
            Some("application/json"),
            "{\"customer_code\": ".into(),
        ))
        .await;
    broken.problem(StatusCode::BAD_REQUEST);

    let untyped = app
        .send(post(
            None,
            customer_body("CUST001", "123456789").to_string(),
        ))
        .await;
    untyped.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let text = app
        .send(post(
            Some("text/plain"),
            customer_body("CUST001", "123456789").to_string(),
        ))
        .await;
    text.problem(StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let mut huge = customer_body("CUST001", "123456789");
    huge["full_name"] = serde_json::json!("x".repeat(4096));
    let too_large = app
        .send(post(Some("application/json"), huge.to_string()))
        .await;
    too_large.problem(StatusCode::PAYLOAD_TOO_LARGE);

    let mut extra = customer_body("CUST001", "123456789");
    extra["is_admin"] = serde_json::json!(true);
    let unknown_field = app
        .send(post(Some("application/json"), extra.to_string()))
        .await;
    unknown_field.problem(StatusCode::UNPROCESSABLE_ENTITY);

    let wrong_type = app
        .send(post(
            Some("application/json"),
            r#"{"customer_code": 5}"#.into(),
        ))
        .await;
    wrong_type.problem(StatusCode::UNPROCESSABLE_ENTITY);

    no_customers_written(&app).await;
}

#[tokio::test]
async fn bad_paths_queries_routes_and_methods_are_problems() {
    let app = TestApp::spawn().await;
    let staff = app.staff();

    let bad_id = app.get("/v1/customers/not-a-uuid", &staff).await;
    assert_eq!(
        bad_id.problem(StatusCode::BAD_REQUEST)["instance"],
        "/v1/customers/not-a-uuid"
    );
    app.get("/v1/customers?limit=abc", &staff)
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/v1/customers?limit=1000", &staff)
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/v1/customers?kyc_status=MAYBE", &staff)
        .await
        .problem(StatusCode::BAD_REQUEST);
    app.get("/v1/customers?cursor=garbage", &staff)
        .await
        .problem(StatusCode::BAD_REQUEST);

    app.get("/v1/nothing-here", &staff)
        .await
        .problem(StatusCode::NOT_FOUND);
    app.get("/nothing-here-either", &staff)
        .await
        .problem(StatusCode::NOT_FOUND);

    let delete = app
        .send(
            app.request(Method::DELETE, "/v1/customers", Some(&staff))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    delete.problem(StatusCode::METHOD_NOT_ALLOWED);
    assert!(delete.header("allow").is_some_and(|a| a.contains("POST")));

    no_customers_written(&app).await;
}

/// A router whose pool points at `connect`, with short timeouts, and that pool.
fn router_with_pool(app: &TestApp, connect: PgConnectOptions, size: u32) -> (axum::Router, PgPool) {
    let pool = PgPoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_millis(300))
        .connect_lazy_with(connect);
    let http = HttpConfig {
        body_limit_bytes: 65536,
        rate_limits: crate::helpers::unlimited(),
        request_timeout: Duration::from_secs(5),
        ..HttpConfig::default()
    };
    let state = AppState::new(
        pool.clone(),
        app.keys.clone(),
        app.cipher.clone(),
        Duration::from_secs(5),
        &http,
    );
    let limits = HttpLimits::from_config(&http);
    (app::router(state, limits), pool)
}

fn get(path: &str, token: &str) -> Request<Body> {
    Request::get(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn an_unreachable_database_is_503_with_retry_after() {
    let app = TestApp::spawn().await;
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = PgConnectOptions::new()
        .host("127.0.0.1")
        .port(closed_port)
        .username("nobody");
    let (router, _) = router_with_pool(&app, nowhere, 2);
    for path in ["/v1/customers", "/health/ready"] {
        let response = send_via(&router, get(path, &app.staff())).await;
        response.problem(StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.header("retry-after").is_some(), "{path}");
    }
}

#[tokio::test]
async fn an_exhausted_pool_is_503_with_retry_after_and_recovers() {
    let app = TestApp::spawn().await;
    let connect = (*app.pool.connect_options()).clone();
    let (router, pool) = router_with_pool(&app, connect, 1);
    assert_eq!(
        send_via(&router, get("/v1/customers", &app.staff()))
            .await
            .status,
        StatusCode::OK
    );

    let held = pool.acquire().await.unwrap();
    let started = std::time::Instant::now();
    let response = send_via(&router, get("/v1/customers", &app.staff())).await;
    response.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert!(response.header("retry-after").is_some());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "answered, did not hang"
    );

    drop(held);
    assert_eq!(
        send_via(&router, get("/v1/customers", &app.staff()))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn real_database_errors_map_to_the_documented_statuses() {
    let app = TestApp::spawn().await;
    let cases = [
        ("23505", StatusCode::CONFLICT),
        ("23503", StatusCode::UNPROCESSABLE_ENTITY),
        ("23514", StatusCode::UNPROCESSABLE_ENTITY),
        ("22003", StatusCode::UNPROCESSABLE_ENTITY),
        ("40001", StatusCode::SERVICE_UNAVAILABLE),
        ("40P01", StatusCode::SERVICE_UNAVAILABLE),
        ("57014", StatusCode::GATEWAY_TIMEOUT),
        ("42501", StatusCode::FORBIDDEN),
    ];
    for (state, status) in cases {
        let error = sqlx::raw_sql(&format!(
            "DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '{state}'; END $$"
        ))
        .execute(&app.owner)
        .await
        .unwrap_err();
        assert_eq!(classify(error).status(), status, "SQLSTATE {state}");
    }
    let transient =
        sqlx::raw_sql("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '40001'; END $$")
            .execute(&app.owner)
            .await
            .unwrap_err();
    assert!(matches!(classify(transient), ApiError::Transient));
}

/// A NUL in a path or query parameter is a malformed request (400), not a database error: no
/// text column can hold one (found by schemathesis: `GET /v1/loans?product_type=…%00…` was 422).
#[tokio::test]
async fn a_nul_in_a_path_or_query_parameter_is_400() {
    let app = crate::helpers::TestApp::spawn().await;
    for path in [
        "/v1/loans?product_type=a%00b&status=APPLIED",
        "/v1/payments?client_reference=%00",
        "/v1/products/AB%00C",
    ] {
        let response = app.get(path, &app.staff()).await;
        let problem = response.problem(axum::http::StatusCode::BAD_REQUEST);
        assert!(
            problem["detail"].as_str().unwrap().contains("NUL"),
            "{path}: {problem}"
        );
    }
}
