//! The HTTP edge over a real TCP socket: slow clients, timeouts, limits, where metrics live.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use lakehouse_api::platform::server::ConnectionLimits;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{Options, TestApp};

/// Reads what the server sends until it closes the connection or `limit` passes; returns the
/// text and whether the server closed it.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, bool) {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&raw).into_owned(), true),
            Ok(Ok(n)) => raw.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&raw).into_owned(), false),
        }
    }
}

/// Reads one response head (and whatever came with it), without waiting for the close.
async fn read_head(stream: &mut TcpStream, limit: Duration) -> String {
    let mut raw = Vec::new();
    let mut buffer = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while !String::from_utf8_lossy(&raw).contains("\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => raw.extend_from_slice(&buffer[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

fn status_of(response: &str) -> u16 {
    response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A POST whose head promises a body of `length` bytes, of which only `sent` are sent.
async fn trickling_post(
    addr: std::net::SocketAddr,
    path: &str,
    token: Option<&str>,
    length: usize,
    sent: &[u8],
) -> TcpStream {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {length}\r\n\r\n"
    );
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(sent).await.unwrap();
    stream
}

async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trickled_bodies_neither_pass_without_a_token_nor_take_the_concurrency_slots() {
    let app = TestApp::spawn_with(Options {
        max_concurrent_requests: 4,
        max_buffered_bodies: 6,
        body_read_timeout: Duration::from_millis(1500),
        ..Options::default()
    })
    .await;
    let served = app.serve_tcp(crate::helpers::connection_limits()).await;
    let staff = app.staff();

    // No token: refused before the body is read (none is ever sent).
    let started = Instant::now();
    let mut anonymous = trickling_post(served.addr, "/v1/customers", None, 1000, b"").await;
    let refused = read_head(&mut anonymous, Duration::from_secs(5)).await;
    assert_eq!(status_of(&refused), 401, "{refused}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Six valid callers trickle their bodies: they hold the six body permits, no slot.
    let mut trickling = Vec::new();
    for _ in 0..6 {
        trickling
            .push(trickling_post(served.addr, "/v1/customers", Some(&staff), 1000, b"{").await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listed = get(served.addr, "/v1/customers", &staff).await;
    assert_eq!(status_of(&listed), 200, "{listed}");
    // A seventh body finds the permits taken: 503 at once, with Retry-After.
    let mut seventh = trickling_post(served.addr, "/v1/customers", Some(&staff), 1000, b"{").await;
    let shed = read_head(&mut seventh, Duration::from_secs(5)).await;
    assert_eq!(status_of(&shed), 503, "{shed}");
    assert!(shed.to_ascii_lowercase().contains("retry-after:"), "{shed}");
    // The trickling bodies run out of time: 408.
    for stream in &mut trickling {
        let answer = read_head(stream, Duration::from_secs(5)).await;
        assert_eq!(status_of(&answer), 408, "{answer}");
    }
    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 0);
}

#[tokio::test]
async fn a_stalled_request_head_and_an_idle_connection_are_closed_by_the_header_timeout() {
    let app = TestApp::spawn().await;
    let served = app
        .serve_tcp(ConnectionLimits {
            header_read_timeout: Duration::from_millis(700),
            shutdown_timeout: Duration::from_secs(5),
        })
        .await;

    let started = Instant::now();
    let mut stalled = TcpStream::connect(served.addr).await.unwrap();
    stalled
        .write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut stalled, Duration::from_secs(5)).await;
    assert!(closed, "a head that never finishes keeps its connection");
    assert!(started.elapsed() < Duration::from_secs(3));

    let mut idle = TcpStream::connect(served.addr).await.unwrap();
    idle.write_all(b"GET /health/live HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let answered = read_head(&mut idle, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answered), 200);
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection stays open");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn shutdown_waits_for_open_requests_only_until_its_deadline() {
    let app = TestApp::spawn().await;
    let mut served = app
        .serve_tcp(ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            shutdown_timeout: Duration::from_millis(800),
        })
        .await;
    // A request whose body never finishes (the body deadline is 30 s).
    let _stuck = trickling_post(served.addr, "/v1/customers", Some(&app.staff()), 1000, b"{").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    served.shutdown();
    tokio::time::timeout(Duration::from_secs(5), &mut served.task)
        .await
        .expect("the server stops at its shutdown deadline")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(700));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn imports_are_bounded_and_a_stalled_upload_times_out() {
    let app = TestApp::spawn_with(Options {
        max_concurrent_imports: 1,
        import_read_timeout: Duration::from_millis(1500),
        pool_size: 2,
        ..Options::default()
    })
    .await;
    let served = app.serve_tcp(crate::helpers::connection_limits()).await;
    let etl = app.token("etl", None);
    let path = "/v1/imports/customers?batch_id=slow-1";
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {etl}\r\n\
         Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut slow = TcpStream::connect(served.addr).await.unwrap();
    slow.write_all(head.as_bytes()).await.unwrap();
    slow.write_all(b"1\r\n{\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let second = app
        .send(
            app.request(
                Method::POST,
                "/v1/imports/customers?batch_id=fast-1",
                Some(&etl),
            )
            .header("content-type", "application/x-ndjson")
            .body(axum::body::Body::from("{}\n"))
            .unwrap(),
        )
        .await;
    second.problem(StatusCode::TOO_MANY_REQUESTS);
    assert!(second.header("retry-after").is_some());

    let answer = read_head(&mut slow, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    // Its connection went back to the pool: the next import runs.
    let after = app
        .send(
            app.request(
                Method::POST,
                "/v1/imports/customers?batch_id=fast-2",
                Some(&etl),
            )
            .header("content-type", "application/x-ndjson")
            .body(axum::body::Body::from(
                serde_json::to_string(&crate::helpers::customer_body("CUSTE01", "550550550"))
                    .unwrap(),
            ))
            .unwrap(),
        )
        .await;
    assert_eq!(after.status, StatusCode::OK, "{}", after.text());
}

#[tokio::test]
async fn an_id_number_in_any_json_form_never_reaches_staging_or_the_report_in_clear() {
    let app = TestApp::spawn().await;
    let etl = app.token("etl", None);
    let mut as_number = crate::helpers::customer_body("CUSTE02", "x");
    as_number["id_number"] = json!(790123456789_u64);
    let mut as_array = crate::helpers::customer_body("CUSTE03", "x");
    as_array["id_number"] = json!(["790123456788"]);
    let mut as_object = crate::helpers::customer_body("CUSTE04", "x");
    as_object["id_number"] = json!({"value": "790123456787"});
    let body = [as_number, as_array, as_object]
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join("\n");
    let response = app
        .send(
            app.request(
                Method::POST,
                "/v1/imports/customers?batch_id=pii-1",
                Some(&etl),
            )
            .header("content-type", "application/x-ndjson")
            .body(axum::body::Body::from(body))
            .unwrap(),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let report = app.get("/v1/imports/pii-1", &etl).await;
    let staged: Vec<String> = sqlx::query_scalar(
        "SELECT raw_data::text || coalesce(error_message, '') FROM staging.customer_imports",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(staged.len(), 3);
    for text in staged.iter().chain([&response.text(), &report.text()]) {
        assert!(
            !text.contains("7901234567"),
            "an ID number in clear: {text}"
        );
    }
    assert_eq!(report.json()["failed"], 3, "{}", report.text());
}

#[tokio::test]
async fn each_principal_has_its_own_rate_and_beyond_it_gets_429() {
    let slow = lakehouse_api::platform::config::Rate {
        per_second: 1,
        burst: 3,
    };
    let app = TestApp::spawn_with(Options {
        rate_limits: lakehouse_api::platform::config::RateLimitConfig {
            customer: slow,
            ..crate::helpers::unlimited()
        },
        ..Options::default()
    })
    .await;
    let alice = app.customer_id("CUSTE05", "560560560").await;
    let bob = app.customer_id("CUSTE06", "570570570").await;
    let token = app.customer(alice);
    for _ in 0..3 {
        assert_eq!(app.get("/v1/me", &token).await.status, StatusCode::OK);
    }
    let limited = app.get("/v1/me", &token).await;
    limited.problem(StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&wait));
    // Another customer, and staff, are not held back by Alice.
    assert_eq!(
        app.get("/v1/me", &app.customer(bob)).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get("/v1/customers", &app.staff()).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_database_report_covers_only_this_database() {
    let app = TestApp::spawn().await;
    // A slow query in another database of the cluster.
    let other = app.owner_url.rsplit_once('/').unwrap().0.to_owned() + "/postgres";
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&other).await.unwrap();
    let sleeper = tokio::spawn(async move {
        let _ = sqlx::query("SELECT pg_sleep(3) /* another database's secret */")
            .execute(&mut conn)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = app
        .get(
            "/v1/admin/database?slow_seconds=0",
            &app.token("admin", None),
        )
        .await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    let text = report.text();
    assert!(!text.contains("secret"), "{text}");
    let databases = report.json()["databases"].as_array().unwrap().clone();
    assert_eq!(databases.len(), 1, "{databases:?}");
    assert_eq!(databases[0]["database"], app.database.as_str());
    sleeper.abort();
    let _ = Uuid::now_v7();
}
