//! What an on-call engineer relies on: metrics, the database report, limits that answer instead
//! of hanging, backups that restore, and recovery from a database restart.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{customer_body, Options, TestApp, TestResponse};

#[tokio::test]
async fn metrics_count_requests_by_route_template_status_and_database_error_class() {
    let app = TestApp::spawn().await;
    let id = app.customer_id("CUSTO01", "111000111").await;
    app.get(&format!("/v1/customers/{id}"), &app.staff()).await;
    let duplicate = app
        .json(
            Method::POST,
            "/v1/customers",
            &app.staff(),
            &customer_body("CUSTO01", "111000111"),
        )
        .await;
    assert_eq!(duplicate.status, StatusCode::CONFLICT);

    // Not on the public router: on the metrics listener's own.
    let public = app
        .send(
            app.request(Method::GET, "/metrics", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    public.problem(StatusCode::NOT_FOUND);
    let scraped = crate::helpers::send_via(
        &lakehouse_api::app::metrics_router(app.state.clone()),
        app.request(Method::GET, "/metrics", None)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(scraped.status, StatusCode::OK);
    let text = scraped.text();
    for needle in [
        "http_requests_total{route=\"/v1/customers\",method=\"POST\",status=\"201\"}",
        "http_requests_total{route=\"/v1/customers/{id}\",method=\"GET\",status=\"200\"}",
        "http_request_duration_seconds_bucket{route=\"/v1/customers\",method=\"POST\",status=\"409\",le=\"0.005\"}",
        "http_requests_in_flight",
        "db_pool_connections",
        "db_pool_idle",
        "db_errors_total{class=\"sqlstate_23\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(
        !text.contains(&id.to_string()),
        "raw paths with ids are not labels"
    );
}

#[tokio::test]
async fn administrators_get_the_database_report_and_no_one_else_does() {
    let app = TestApp::spawn().await;
    app.customer_id("CUSTO02", "222000222").await;
    app.get("/v1/customers", &app.staff()).await;
    let report = app
        .get(
            "/v1/admin/database?slow_seconds=0",
            &app.token("admin", None),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    let report = report.json();
    assert!(report["databases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["database"] == app.database.as_str()));
    assert!(!report["connections"].as_array().unwrap().is_empty());
    let tables: Vec<&str> = report["table_sizes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert!(tables.contains(&"customers"), "{tables:?}");
    let indexes = report["index_usage"].as_array().unwrap();
    assert!(
        indexes.iter().any(|i| i["schema"] == "core"),
        "the schema filter matches our schemas"
    );
    assert!(report["slow_queries"].is_array() && report["blocked_sessions"].is_array());
    assert!(report["sequential_scans"].is_array());
    // The tests' own cluster preloads pg_stat_statements, as deploy/postgresql.conf does.
    if std::env::var("DATABASE_URL").is_err() {
        let top = report["top_statements"].as_array().expect("top statements");
        assert!(
            top.iter()
                .any(|s| s["query"].as_str().unwrap().contains("core.customers")),
            "{top:?}"
        );
        assert!(top.len() <= 10);
    }
    for role in ["staff", "analyst", "etl"] {
        app.get("/v1/admin/database", &app.token(role, None))
            .await
            .problem(StatusCode::FORBIDDEN);
    }
}

/// Holds a row lock on `customer` in an open owner transaction until the returned connection
/// is dropped or rolled back.
async fn lock_customer(app: &TestApp, customer: Uuid) -> PgConnection {
    let options = (*app.owner.connect_options()).clone();
    let mut conn = PgConnection::connect_with(&options).await.unwrap();
    sqlx::raw_sql(&format!(
        "BEGIN; SELECT 1 FROM core.customers WHERE customer_id = '{customer}' FOR UPDATE"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn
}

/// Renames customer `id` as staff, whatever its version.
async fn rename(app: &TestApp, id: Uuid, name: &str) -> TestResponse {
    app.json_with(
        Method::PATCH,
        &format!("/v1/customers/{id}"),
        &app.staff(),
        &json!({"full_name": name}),
        &[("if-match", "*")],
    )
    .await
}

/// A rename of a customer another session has locked: 504 within three seconds, not a hang.
async fn blocked_rename_times_out(app: &TestApp, id: Uuid) {
    let started = Instant::now();
    rename(app, id, "Blocked")
        .await
        .problem(StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_statement_past_its_timeout_is_504_and_writes_nothing() {
    let app = TestApp::spawn_with(Options {
        statement_timeout: Duration::from_millis(300),
        ..Options::default()
    })
    .await;
    let id = app.customer_id("CUSTO03", "333000333").await;
    let _lock = lock_customer(&app, id).await;
    blocked_rename_times_out(&app, id).await;
    drop(_lock);
    let name = app
        .get(&format!("/v1/customers/{id}"), &app.staff())
        .await
        .json()["full_name"]
        .clone();
    assert_eq!(name, "Customer CUSTO03");
}

#[tokio::test]
async fn a_request_past_its_timeout_is_504_not_a_hang() {
    let app = TestApp::spawn_with(Options {
        request_timeout: Duration::from_millis(400),
        ..Options::default()
    })
    .await;
    let id = app.customer_id("CUSTO04", "444000444").await;
    let lock = lock_customer(&app, id).await;
    blocked_rename_times_out(&app, id).await;
    drop(lock);
    // Serving again once the load is gone.
    let ok = rename(&app, id, "Free").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn beyond_the_concurrency_limit_requests_get_503_with_retry_after_and_service_resumes() {
    let app = Arc::new(
        TestApp::spawn_with(Options {
            max_concurrent_requests: 2,
            ..Options::default()
        })
        .await,
    );
    // Two requests stuck behind a lock occupy both places (a body still on its way holds none:
    // see edge.rs).
    let mut locker = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE core.products IN ACCESS EXCLUSIVE MODE")
        .execute(&mut locker)
        .await
        .unwrap();
    let mut stuck = Vec::new();
    for _ in 0..2 {
        let app = app.clone();
        stuck.push(tokio::spawn(async move {
            app.get("/v1/products", &app.staff()).await.status
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let refused = app.get("/v1/customers", &app.staff()).await;
    refused.problem(StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, not queued"
    );
    let health = app
        .send(
            app.request(Method::GET, "/health/live", None)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(
        health.status,
        StatusCode::OK,
        "probes stay outside the limit"
    );

    sqlx::raw_sql("COMMIT").execute(&mut locker).await.unwrap();
    for request in stuck {
        assert_eq!(request.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        app.get("/v1/products", &app.staff()).await.status,
        StatusCode::OK
    );
}

fn script(name: &str) -> String {
    format!("{}/scripts/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[tokio::test]
async fn a_backup_restores_into_a_new_database_with_rows_grants_and_row_level_security() {
    let app = TestApp::spawn().await;
    let a = app.approved_customer("CUSTB01", "555000111").await;
    let b = app.approved_customer("CUSTB02", "555000222").await;
    let loan = app.disbursed_loan(a, "ZERO_RATE", "1000000.00", 10).await;
    app.pay(
        &app.staff(),
        "backup-1",
        &json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": "1000.00"}),
    )
    .await;

    let dir = std::env::temp_dir().join(format!("lakehouse-backup-{}", Uuid::now_v7().simple()));
    let backup = Command::new("bash")
        .arg(script("backup.sh"))
        .arg(&app.owner_url)
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        backup.status.success(),
        "{}",
        String::from_utf8_lossy(&backup.stderr)
    );
    let dump = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "dump"))
        .expect("a custom-format dump");
    assert!(std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with("schema.sql")));

    let restored_db = format!("{}_restored", app.database);
    let restored_url = crate::helpers::database_url(&app.owner_url, &restored_db);
    let restore = Command::new("bash")
        .arg(script("restore.sh"))
        .arg(&dump)
        .arg(&restored_url)
        .output()
        .unwrap();
    assert!(
        restore.status.success(),
        "{}",
        String::from_utf8_lossy(&restore.stderr)
    );

    let mut restored = PgConnection::connect(&restored_url).await.unwrap();
    for table in [
        "core.customers",
        "core.loans",
        "core.payments",
        "core.loan_installments",
        "core.payment_allocations",
        "core.loan_directory",
    ] {
        let sql = format!("SELECT count(*) FROM {table}");
        let here: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&app.owner)
            .await
            .unwrap();
        let there: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&mut restored)
            .await
            .unwrap();
        assert_eq!(here, there, "{table}");
        assert!(here > 0, "{table} is populated");
    }
    let (staff_may_insert, customer_may_update): (bool, bool) = sqlx::query_as(
        "SELECT has_table_privilege('lakehouse_staff', 'core.payments', 'INSERT'), \
                has_column_privilege('lakehouse_app_user', 'core.loans', 'term_months', 'UPDATE')",
    )
    .fetch_one(&mut restored)
    .await
    .unwrap();
    assert!(
        staff_may_insert && !customer_may_update,
        "grants came back as they were"
    );

    // Row-level security works in the copy: customer A sees only A.
    let mut tx = restored.begin().await.unwrap();
    sqlx::query("SELECT set_config('role', 'lakehouse_app_user', true), set_config('app.current_customer_id', $1, true)")
        .bind(a.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let visible: Vec<Uuid> = sqlx::query_scalar("SELECT customer_id FROM core.customers")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(visible, [a]);
    let loans_of_b: i64 =
        sqlx::query_scalar("SELECT count(*) FROM core.loans WHERE customer_id = $1")
            .bind(b)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(loans_of_b, 0);
    tx.rollback().await.unwrap();
    restored.close().await.unwrap();
    sqlx::raw_sql(&format!("DROP DATABASE {restored_db} WITH (FORCE)"))
        .execute(&app.owner)
        .await
        .unwrap();
    let _ = std::fs::remove_dir_all(dir);
}
