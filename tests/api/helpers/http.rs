//! Requests through a router and what came back.

#![allow(unused_imports)]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::auth::{Authenticator, Claims, JwtKeys};
use lakehouse_api::platform::config::{
    HttpConfig, PiiKeys, Rate, RateLimitConfig, Secret, TokenConfig,
};
use lakehouse_api::platform::db;
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::platform::server::ConnectionLimits;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;

use super::*;

/// Sends a request through `router` and reads the whole response.
pub async fn send_via(router: &Router, request: Request<Body>) -> TestResponse {
    let response = router
        .clone()
        .oneshot(request)
        .await
        .expect("the router is infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("read the body");
    TestResponse {
        status,
        headers,
        body,
    }
}

pub fn customer_body(code: &str, id_number: &str) -> Value {
    json!({
        "customer_code": code,
        "full_name": format!("Customer {code}"),
        "id_number": id_number,
        "phone_number": "0901234567",
        "email": format!("{}@example.com", code.to_lowercase()),
        "date_of_birth": "1990-01-02",
        "address": {"city": "Ho Chi Minh", "district": "District 1"},
        "credit_score": 700
    })
}

pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json body with `status`, and returns it.
    #[track_caller]
    pub fn problem(&self, status: StatusCode) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE),
            Some(&HeaderValue::from_static("application/problem+json")),
            "body: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["status"], status.as_u16(), "{body}");
        assert!(
            body["type"].is_string() && body["title"].is_string(),
            "{body}"
        );
        assert!(
            body["detail"].is_string() && body["instance"].is_string(),
            "{body}"
        );
        body
    }
}
