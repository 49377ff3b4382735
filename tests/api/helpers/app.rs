//! `TestApp`: a test's own database and the real router on it, with tokens and request helpers.

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
    FourEyesConfig, HttpConfig, PiiKeys, Rate, RateLimitConfig, Secret, TokenConfig,
};
use lakehouse_api::platform::db;
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::platform::server::ConnectionLimits;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;

use super::*;

/// Knobs a test may turn.
#[derive(Clone)]
pub struct Options {
    pub pool_size: u32,
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    pub max_concurrent_requests: usize,
    pub body_read_timeout: Duration,
    pub max_buffered_bodies: usize,
    /// Per principal; the tests' default is high enough never to bite.
    pub rate_limits: RateLimitConfig,
    pub max_concurrent_imports: usize,
    pub import_read_timeout: Duration,
    pub max_customer_streams: usize,
    pub max_streams_per_customer: usize,
    pub max_staff_streams: usize,
    pub max_streams_per_principal: usize,
    /// Which decisions need a checker: none in most tests, which act as one person;
    /// `tests/api/four_eyes.rs` turns them on.
    pub four_eyes: FourEyesConfig,
}

impl Default for Options {
    /// The service's own defaults, but a smaller body limit, a longer acquire timeout and rates
    /// no test reaches unless it means to.
    fn default() -> Self {
        let http = HttpConfig::default();
        Self {
            pool_size: 8,
            body_limit_bytes: 64 * 1024,
            request_timeout: http.request_timeout,
            acquire_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(5),
            max_concurrent_requests: http.max_concurrent_requests,
            body_read_timeout: http.body_read_timeout,
            max_buffered_bodies: http.max_buffered_bodies,
            rate_limits: unlimited(),
            max_concurrent_imports: http.max_concurrent_imports,
            import_read_timeout: http.import_read_timeout,
            max_customer_streams: http.max_customer_streams,
            max_streams_per_customer: http.max_streams_per_customer,
            max_staff_streams: http.max_staff_streams,
            max_streams_per_principal: http.max_streams_per_principal,
            four_eyes: FourEyesConfig {
                actions: Vec::new(),
                ..FourEyesConfig::default()
            },
        }
    }
}

impl Options {
    /// The service's HTTP settings with these knobs turned.
    pub fn http(&self) -> HttpConfig {
        HttpConfig {
            body_limit_bytes: self.body_limit_bytes,
            request_timeout: self.request_timeout,
            max_concurrent_requests: self.max_concurrent_requests,
            body_read_timeout: self.body_read_timeout,
            max_buffered_bodies: self.max_buffered_bodies,
            rate_limits: self.rate_limits,
            max_concurrent_imports: self.max_concurrent_imports,
            import_read_timeout: self.import_read_timeout,
            max_customer_streams: self.max_customer_streams,
            max_streams_per_customer: self.max_streams_per_customer,
            max_staff_streams: self.max_staff_streams,
            max_streams_per_principal: self.max_streams_per_principal,
            four_eyes: self.four_eyes.clone(),
            ..HttpConfig::default()
        }
    }
}

/// The connection limits `serve` uses by default.
pub fn connection_limits() -> ConnectionLimits {
    let http = HttpConfig::default();
    ConnectionLimits {
        header_read_timeout: http.header_read_timeout,
        shutdown_timeout: http.shutdown_timeout,
    }
}

/// Rates no test reaches unless it means to.
pub fn unlimited() -> RateLimitConfig {
    let rate = Rate {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    RateLimitConfig {
        customer: rate,
        staff: rate,
        analyst: rate,
        etl: rate,
        admin: rate,
    }
}

pub struct TestApp {
    pub router: Router,
    /// The state behind `router` (for the metrics router, and serving on a socket).
    pub state: AppState,
    /// The service's own pool (as lakehouse_authenticator).
    pub pool: PgPool,
    /// The owner, for checks below the API.
    pub owner: PgPool,
    pub database: String,
    /// A postgres:// URL for the owner on this test's database (for running the binary).
    pub owner_url: String,
    pub keys: JwtKeys,
    pub cipher: PiiCipher,
    pub server: Arc<Server>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    pub async fn spawn_with(options: Options) -> Self {
        let server = server();
        let database = format!("lakehouse_test_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect_with(&server.admin)
            .await
            .expect("connect as owner");
        sqlx::raw_sql(&format!(
            "CREATE DATABASE {database} TEMPLATE {}",
            server.template
        ))
        .execute(&mut admin)
        .await
        .expect("create the test database");
        admin.close().await.ok();

        let owner_options = server.admin.clone().database(&database);
        let owner = PgPoolOptions::new()
            .max_connections(4)
            .connect_with(owner_options.clone())
            .await
            .expect("owner pool");
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with(
                owner_options
                    .username(db::AUTHENTICATOR_ROLE)
                    .password(&server.app_password),
            );
        let keys = JwtKeys::new(Secret::new(JWT_SECRET.as_bytes().to_vec()));
        let cipher = PiiCipher::new(&pii_keys());
        let http = options.http();
        let state = AppState::new(
            pool.clone(),
            keys.clone(),
            cipher.clone(),
            options.statement_timeout,
            &http,
        );
        let router = app::router(state.clone(), HttpLimits::from_config(&http));
        let owner_url = database_url(&server.admin_url, &database);
        Self {
            router,
            state,
            pool,
            owner,
            owner_url,
            database,
            keys,
            cipher,
            server,
        }
    }

    /// Another instance of the service on this test's database, as a second process would be:
    /// its own pool, state (LISTEN connection, rate limits, caches) and router.
    pub fn another_instance(&self) -> Router {
        let options = Options::default();
        let pool = PgPoolOptions::new()
            .max_connections(options.pool_size)
            .acquire_timeout(options.acquire_timeout)
            .test_before_acquire(false)
            .connect_lazy_with((*self.pool.connect_options()).clone());
        let http = options.http();
        let state = AppState::new(
            pool,
            self.keys.clone(),
            self.cipher.clone(),
            options.statement_timeout,
            &http,
        );
        app::router(state, HttpLimits::from_config(&http))
    }

    pub fn token(&self, role: &str, customer_id: Option<Uuid>) -> String {
        let sub = match customer_id {
            Some(id) if role == "customer" => format!("test-customer-{id}"),
            _ => format!("test-{role}"),
        };
        self.token_for(&sub, role, customer_id)
    }

    /// A token with a chosen subject; a staff member's works at the head office (every branch).
    pub fn token_for(&self, sub: &str, role: &str, customer_id: Option<Uuid>) -> String {
        let branch = (role == "staff").then_some("HO");
        self.token_at(sub, role, customer_id, branch)
    }

    /// A token whose `branch` claim is `branch` (or none).
    pub fn token_at(
        &self,
        sub: &str,
        role: &str,
        customer_id: Option<Uuid>,
        branch: Option<&str>,
    ) -> String {
        self.keys.sign(&Claims {
            sub: sub.into(),
            role: role.into(),
            customer_id,
            exp: chrono::Utc::now().timestamp() + 600,
            iat: None,
            branch: branch.map(Into::into),
        })
    }

    /// This app with its tokens checked as `env` (`OIDC_*`, `JWT_SECRET`, `DEV_MODE`) configures
    /// them, the provider's keys refreshing in the background as in `serve`.
    pub fn with_tokens(self, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = TokenConfig::from_source(&env).expect("token configuration");
        let app = self.rebuilt(Authenticator::new(&config).expect("authenticator"));
        app.state.auth.start_key_refresh();
        app
    }

    /// This app with its ID numbers sealed and opened with `keys` (a key rotation).
    pub fn with_pii_keys(mut self, keys: &PiiKeys) -> Self {
        self.cipher = PiiCipher::new(keys);
        let local = self.keys.clone();
        self.rebuilt(local.into())
    }

    /// The state and router again, with `auth` and this app's cipher.
    fn rebuilt(mut self, auth: Authenticator) -> Self {
        let http = Options {
            four_eyes: (*self.state.four_eyes).clone(),
            ..Options::default()
        }
        .http();
        let state = AppState::new(
            self.pool.clone(),
            auth,
            self.cipher.clone(),
            Duration::from_secs(5),
            &http,
        );
        self.state = state.clone();
        self.router = app::router(state, HttpLimits::from_config(&http));
        self
    }

    /// The pool login's password (for running the binary against this test's database).
    pub fn app_password(&self) -> String {
        self.server.app_password.clone()
    }

    /// Today's business date (in `BUSINESS_TIMEZONE`), as the database reckons it.
    pub async fn today(&self) -> chrono::NaiveDate {
        sqlx::query_scalar("SELECT core.business_date(now())")
            .fetch_one(&self.owner)
            .await
            .unwrap()
    }

    pub fn staff(&self) -> String {
        self.token("staff", None)
    }

    /// The in-service scheduler's session on this app's pool (an administrator, `system`).
    pub fn scheduler_session(&self) -> lakehouse_api::domain::jobs::Session {
        lakehouse_api::domain::jobs::Session::Caller {
            pool: self.state.db.pool.clone(),
            caller: lakehouse_api::platform::auth::Caller::system("scheduler"),
            statement_timeout_ms: 60_000,
        }
    }

    pub fn customer(&self, id: Uuid) -> String {
        self.token("customer", Some(id))
    }

    /// Sends a request through the whole router.
    pub async fn send(&self, request: Request<Body>) -> TestResponse {
        send_via(&self.router, request).await
    }

    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> axum::http::request::Builder {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        builder
    }

    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.send(
            self.request(Method::GET, path, Some(token))
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    pub async fn json(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
    ) -> TestResponse {
        self.json_with(method, path, token, body, &[]).await
    }

    pub async fn json_with(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: &Value,
        extra_headers: &[(&str, &str)],
    ) -> TestResponse {
        let mut builder = self
            .request(method, path, Some(token))
            .header(header::CONTENT_TYPE, "application/json");
        for (name, value) in extra_headers {
            builder = builder.header(*name, *value);
        }
        self.send(builder.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// The standard products (as the lab seed has them: the contract of the books before
    /// conventions, a twelfth of the rate a month to the cent), once.
    pub async fn ensure_products(&self) {
        sqlx::raw_sql(
            "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
                 min_term_months, max_term_months, annual_interest_rate, day_count, \
                 currency_digits, installment_multiple, arrears_tolerance) VALUES \
             ('PERSONAL_STD', 'Personal loan', 'PERSONAL_LOAN', 5000000, 500000000, 6, 60, 0.1250, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
             ('BUSINESS_STD', 'Business loan', 'BUSINESS_LOAN', 20000000, 5000000000, 12, 120, 0.1150, 'THIRTY_360_MONTHLY', 2, 0.01, 0), \
             ('ZERO_RATE', 'Staff interest-free loan', 'PERSONAL_LOAN', 1000000, 100000000, 1, 36, 0, 'THIRTY_360_MONTHLY', 2, 0.01, 0) \
             ON CONFLICT (product_code) DO NOTHING",
        )
        .execute(&self.owner)
        .await
        .expect("insert products");
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.owner)
            .await
            .expect("count query")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if !self.server.external {
            return; // the whole throwaway cluster goes when the run ends
        }
        let admin = self.server.admin.clone();
        let database = self.database.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(runtime) = runtime {
                runtime.block_on(async {
                    if let Ok(mut conn) = PgConnection::connect_with(&admin).await {
                        let _ = sqlx::raw_sql(&format!(
                            "DROP DATABASE IF EXISTS {database} WITH (FORCE)"
                        ))
                        .execute(&mut conn)
                        .await;
                    }
                });
            }
        })
        .join();
    }
}
