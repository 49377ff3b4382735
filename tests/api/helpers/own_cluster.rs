//! A cluster of a test's own, for the tests that stop or break PostgreSQL.

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

/// The service login's password on an [`OwnCluster`].
pub const OWN_CLUSTER_APP_PASSWORD: &str = "own-cluster-app-password";

/// A cluster of the test's own (for tests that stop PostgreSQL), with `database` migrated, and
/// the service's router on it with these timeouts and a staff token for it.
pub struct OwnCluster {
    pub cluster: TempCluster,
    /// The owner, on `database`.
    pub owner: PgConnectOptions,
    pub router: Router,
    pub staff: String,
}

impl OwnCluster {
    /// A request through the router as staff, as a future that owns what it needs (so it can be
    /// spawned).
    pub fn send(
        &self,
        method: Method,
        path: impl Into<String>,
        body: Value,
        key: Option<&str>,
    ) -> impl std::future::Future<Output = TestResponse> + Send + 'static {
        let mut request = Request::builder()
            .method(method)
            .uri(path.into())
            .header(header::AUTHORIZATION, format!("Bearer {}", self.staff))
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let request = request
            .body(Body::from(body.to_string()))
            .expect("a request");
        let router = self.router.clone();
        async move { send_via(&router, request).await }
    }

    /// A new customer whose KYC staff approved; their id.
    pub async fn approved_customer(&self, code: &str, id_number: &str) -> String {
        let customer = self
            .send(
                Method::POST,
                "/v1/customers",
                customer_body(code, id_number),
                None,
            )
            .await;
        assert_eq!(customer.status, StatusCode::CREATED, "{}", customer.text());
        let id = customer.json()["customer_id"].as_str().unwrap().to_owned();
        let kyc = self
            .send(
                Method::POST,
                format!("/v1/customers/{id}/kyc"),
                json!({"decision": "APPROVE"}),
                None,
            )
            .await;
        assert_eq!(kyc.status, StatusCode::OK, "{}", kyc.text());
        id
    }

    /// A disbursed loan of an interest-free product (created here) for a new customer; the loan.
    pub async fn disbursed_loan(&self, code: &str, id_number: &str) -> Value {
        let mut conn = PgConnection::connect_with(&self.owner)
            .await
            .expect("connect");
        sqlx::raw_sql(
            "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
             min_term_months, max_term_months, annual_interest_rate, day_count, currency_digits, \
             installment_multiple, arrears_tolerance) \
             VALUES ('ZERO_RATE', 'Interest-free', 'PERSONAL_LOAN', 1000000, 100000000, 1, 36, 0, \
                     'THIRTY_360_MONTHLY', 2, 0.01, 0) \
             ON CONFLICT DO NOTHING",
        )
        .execute(&mut conn)
        .await
        .expect("a product");
        conn.close().await.ok();
        let customer_id = self.approved_customer(code, id_number).await;
        let body = json!({"customer_id": customer_id, "product_code": "ZERO_RATE",
                          "amount": "1000000.00", "term_months": 10});
        let loan = self.send(Method::POST, "/v1/loans", body, None).await;
        assert_eq!(loan.status, StatusCode::CREATED, "{}", loan.text());
        let loan = loan.json();
        self.pay_out(loan["loan_id"].as_str().unwrap()).await;
        loan
    }

    /// Approves and disburses an applied loan.
    pub async fn pay_out(&self, loan_id: &str) {
        for verb in ["approve", "disburse"] {
            let path = format!("/v1/loans/{loan_id}/{verb}");
            let moved = self.send(Method::POST, path, json!({}), None).await;
            assert_eq!(moved.status, StatusCode::OK, "{}", moved.text());
        }
    }

    /// `None`, after saying why, where the PostgreSQL binaries are missing and DATABASE_URL
    /// names the server instead.
    pub async fn start(
        database: &str,
        statement_timeout: Duration,
        request_timeout: Duration,
    ) -> Option<Self> {
        let cluster = match TempCluster::start() {
            Ok(c) => c,
            Err(e) if std::env::var("DATABASE_URL").is_ok() => {
                eprintln!("skipped: no local PostgreSQL binaries to stop and start ({e})");
                return None;
            }
            Err(e) => panic!("cannot start a cluster: {e}"),
        };
        cluster
            .remove_when_process_exits(std::process::id())
            .expect("a watchdog for the cluster");
        let admin: PgConnectOptions = cluster.url("postgres").parse().expect("the cluster's URL");
        let mut conn = PgConnection::connect_with(&admin).await.expect("connect");
        sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await
            .expect("create the database");
        conn.close().await.ok();
        let owner = admin.database(database);
        let password = OWN_CLUSTER_APP_PASSWORD;
        db::migrate(&owner, Some(&Secret::new(password.as_bytes().to_vec())))
            .await
            .expect("migrate");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_millis(800))
            .test_before_acquire(false)
            .connect_lazy_with(
                owner
                    .clone()
                    .username(db::AUTHENTICATOR_ROLE)
                    .password(password),
            );
        let keys = JwtKeys::new(Secret::new(JWT_SECRET.as_bytes().to_vec()));
        let staff = keys.sign(&Claims {
            sub: format!("{database}-staff"),
            role: "staff".into(),
            customer_id: None,
            exp: chrono::Utc::now().timestamp() + 600,
            iat: None,
            branch: Some("HO".into()),
        });
        let http = HttpConfig {
            body_limit_bytes: 65536,
            rate_limits: unlimited(),
            request_timeout,
            ..HttpConfig::default()
        };
        let state = AppState::new(
            pool,
            keys,
            PiiCipher::new(&pii_keys()),
            statement_timeout,
            &http,
        );
        let router = app::router(state, HttpLimits::from_config(&http));
        Some(Self {
            cluster,
            owner,
            router,
            staff,
        })
    }
}
