//! Browser-based branch tools: CORS for the configured origins only (a preflight needs no
//! token), and gzip for large responses to clients that ask.

use std::io::Read;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use lakehouse_api::app::{self, HttpLimits};

use crate::helpers::{send_via, Options, TestApp};

const BRANCH: &str = "https://branch.lakehouse.test";

fn router(app: &TestApp) -> axum::Router {
    let mut limits = HttpLimits::from_config(&Options::default().http());
    limits.cors_allowed_origins = vec![BRANCH.to_owned()];
    app::router(app.state.clone(), limits)
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_and_a_preflight_needs_no_token() {
    let app = TestApp::spawn().await;
    let router = router(&app);
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/payments")
            .header(header::ORIGIN, origin)
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .header(
                header::ACCESS_CONTROL_REQUEST_HEADERS,
                "authorization,content-type,idempotency-key,consistency-token",
            )
            .body(Body::empty())
            .unwrap()
    };
    let allowed = send_via(&router, preflight(BRANCH)).await;
    assert!(
        allowed.status.is_success(),
        "{} {}",
        allowed.status,
        allowed.text()
    );
    assert_eq!(allowed.header("access-control-allow-origin"), Some(BRANCH));
    let methods = allowed
        .header("access-control-allow-methods")
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    assert!(allowed
        .header("access-control-allow-headers")
        .unwrap()
        .contains("idempotency-key"));

    let other = send_via(&router, preflight("https://evil.example")).await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // An actual request from the origin: the header, and ETag readable by the page.
    let request = Request::builder()
        .uri("/v1/products")
        .header(header::ORIGIN, BRANCH)
        .header(header::AUTHORIZATION, format!("Bearer {}", app.staff()))
        .body(Body::empty())
        .unwrap();
    let response = send_via(&router, request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.header("access-control-allow-origin"), Some(BRANCH));
    let exposed = response
        .header("access-control-expose-headers")
        .unwrap()
        .to_owned();
    assert!(
        exposed.contains("etag") && exposed.contains("consistency-token"),
        "{exposed}"
    );

    // Without configured origins (the default), no CORS headers at all.
    let request = preflight(BRANCH);
    let plain = send_via(&app.router, request).await;
    assert_eq!(plain.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn large_responses_are_gzipped_for_clients_that_ask_and_small_ones_are_not() {
    let app = TestApp::spawn().await;
    for n in 0..20 {
        app.customer_id(&format!("GZIP{n:03}"), &format!("2201011{n:05}"))
            .await;
    }
    let get = |path: &str, gzip: bool| {
        let mut request = Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {}", app.staff()));
        if gzip {
            request = request.header(header::ACCEPT_ENCODING, "gzip");
        }
        request.body(Body::empty()).unwrap()
    };
    let plain = send_via(&app.router, get("/v1/customers?limit=20", false)).await;
    assert_eq!(plain.header("content-encoding"), None);
    let zipped = send_via(&app.router, get("/v1/customers?limit=20", true)).await;
    assert_eq!(zipped.status, StatusCode::OK);
    assert_eq!(zipped.header("content-encoding"), Some("gzip"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(&zipped.body[..])
        .read_to_string(&mut text)
        .unwrap();
    assert_eq!(text, plain.text(), "the same document");
    assert!(
        zipped.body.len() < plain.body.len() / 2,
        "{} of {}",
        zipped.body.len(),
        plain.body.len()
    );
    // Below 1 KiB it is not worth it.
    let small = send_via(&app.router, get("/health/live", true)).await;
    assert_eq!(small.header("content-encoding"), None);
}
