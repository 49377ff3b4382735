use axum::body::Body;
use axum::http::{header, Method, StatusCode};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use lakehouse_api::platform::auth::{Claims, JwtKeys};
use lakehouse_api::platform::config::Secret;
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{customer_body, TestApp};

fn claims(role: &str, customer_id: Option<Uuid>, exp_offset: i64) -> Claims {
    Claims {
        sub: "mallory".into(),
        role: role.into(),
        customer_id,
        exp: chrono::Utc::now().timestamp() + exp_offset,
        iat: None,
        branch: None,
    }
}

/// Sends a customer creation with `authorization` and checks it is 401 and wrote nothing.
async fn assert_refused(app: &TestApp, authorization: Option<String>) {
    let mut request = app
        .request(Method::POST, "/v1/customers", None)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(value) = &authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let body = customer_body("CUST900", "900900900").to_string();
    let response = app.send(request.body(Body::from(body)).unwrap()).await;
    response.problem(StatusCode::UNAUTHORIZED);
    assert_eq!(response.header("www-authenticate"), Some("Bearer"));
    assert_eq!(
        app.count("SELECT count(*) FROM core.customers").await,
        0,
        "{authorization:?}"
    );
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401_and_write_nothing() {
    let app = TestApp::spawn().await;
    let bearer = |token: String| Some(format!("Bearer {token}"));
    let other_keys = JwtKeys::new(Secret::new(
        b"some-other-secret-some-other-secret!".to_vec(),
    ));
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims("staff", None, 600)).unwrap())
    );

    assert_refused(&app, None).await;
    assert_refused(&app, Some("Basic c3RhZmY6c3RhZmY=".into())).await;
    assert_refused(&app, bearer("not-a-jwt".into())).await;
    assert_refused(&app, bearer(app.keys.sign(&claims("staff", None, -5)))).await;
    assert_refused(&app, bearer(other_keys.sign(&claims("staff", None, 600)))).await;
    assert_refused(&app, bearer(unsigned)).await;
    assert_refused(&app, bearer(app.keys.sign(&claims("superuser", None, 600)))).await;
    assert_refused(&app, bearer(app.keys.sign(&claims("customer", None, 600)))).await;
}

#[tokio::test]
async fn a_role_that_may_not_do_something_gets_403_and_writes_nothing() {
    let app = TestApp::spawn().await;
    for role in ["analyst", "customer"] {
        let token = app.token(role, Some(Uuid::now_v7()));
        let response = app
            .json(
                Method::POST,
                "/v1/customers",
                &token,
                &customer_body("CUST901", "901901901"),
            )
            .await;
        response.problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 0);
}
