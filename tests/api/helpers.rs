//! The test harness: one PostgreSQL server per test run, one database per test, and a `TestApp`
//! that sends requests through the real router (every middleware included).
//!
//! Without `DATABASE_URL` the first test starts a throwaway cluster from the installed PostgreSQL
//! binaries, migrates a template database once, and every test then gets a copy of it
//! (`CREATE DATABASE … TEMPLATE`, milliseconds). A watchdog removes the cluster when the test
//! process exits. With `DATABASE_URL`, that server is used the same way and each test drops its
//! database when it ends.

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
use lakehouse_devtools::TempCluster;

pub const JWT_SECRET: &str = "test-jwt-secret-test-jwt-secret-0123456789";
const DEFAULT_APP_PASSWORD: &str = "test-app-password-0123456789";

/// The server every test of this run uses.
struct Server {
    /// Owner (superuser) connect options, database unset.
    admin: PgConnectOptions,
    /// The same as a URL.
    admin_url: String,
    template: String,
    app_password: String,
    /// Whether tests drop their databases (on a server we did not create).
    external: bool,
    _cluster: Option<TempCluster>,
}

static SERVER: OnceLock<Result<Arc<Server>, String>> = OnceLock::new();

fn server() -> Arc<Server> {
    db::install_crypto_provider();
    // TEST_LOG=error (or any filter) shows the service's logs while debugging a test.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let server = SERVER.get_or_init(|| {
        // Set up on a thread with its own runtime: the tests' runtimes come and go.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start_server())
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "server setup panicked".to_string())
        .and_then(|r| r)
        .map(Arc::new)
    });
    match server {
        Ok(server) => server.clone(),
        Err(e) => panic!("test database server unavailable: {e}"),
    }
}

async fn start_server() -> lakehouse_api::CliResult<Server> {
    let (url, cluster, external) =
        match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => (url, None, true),
            None => {
                let cluster = TempCluster::start()?;
                cluster.remove_when_process_exits(std::process::id())?;
                (cluster.url("postgres"), Some(cluster), false)
            }
        };
    let admin: PgConnectOptions = url.parse()?;
    let admin = admin.disable_statement_logging();
    let app_password = std::env::var("APP_DB_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_APP_PASSWORD.into());
    let template = format!("lakehouse_template_{}", Uuid::now_v7().simple());
    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {template}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    db::migrate(
        &admin.clone().database(&template),
        Some(&Secret::new(app_password.clone().into_bytes())),
    )
    .await?;
    Ok(Server {
        admin,
        admin_url: url,
        template,
        app_password,
        external,
        _cluster: cluster,
    })
}

/// `url` with its database replaced by `database`.
pub fn database_url(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let server = &base[..base.rfind('/').unwrap_or(base.len())];
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

pub fn pii_keys() -> PiiKeys {
    PiiKeys::new(Secret::new(vec![0x42; 32]), Secret::new(vec![0x24; 32]))
}

/// Knobs a test may turn.
#[derive(Clone, Copy)]
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
    server: Arc<Server>,
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

    /// A token with a chosen subject.
    pub fn token_for(&self, sub: &str, role: &str, customer_id: Option<Uuid>) -> String {
        self.keys.sign(&Claims {
            sub: sub.into(),
            role: role.into(),
            customer_id,
            exp: chrono::Utc::now().timestamp() + 600,
            iat: None,
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
        let http = Options::default().http();
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

    pub fn staff(&self) -> String {
        self.token("staff", None)
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

    /// Creates a customer as staff; returns the response body.
    pub async fn create_customer(&self, code: &str, id_number: &str) -> Value {
        let response = self
            .json(
                Method::POST,
                "/v1/customers",
                &self.staff(),
                &customer_body(code, id_number),
            )
            .await;
        assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
        response.json()
    }

    /// Creates a customer and returns its id.
    pub async fn customer_id(&self, code: &str, id_number: &str) -> Uuid {
        let body = self.create_customer(code, id_number).await;
        body["customer_id"].as_str().unwrap().parse().unwrap()
    }

    /// The standard products (as the lab seed has them), once.
    pub async fn ensure_products(&self) {
        sqlx::raw_sql(
            "INSERT INTO core.products (product_code, name, product_type, min_amount, max_amount, \
                 min_term_months, max_term_months, annual_interest_rate) VALUES \
             ('PERSONAL_STD', 'Personal loan', 'PERSONAL_LOAN', 5000000, 500000000, 6, 60, 0.1250), \
             ('BUSINESS_STD', 'Business loan', 'BUSINESS_LOAN', 20000000, 5000000000, 12, 120, 0.1150), \
             ('ZERO_RATE', 'Staff interest-free loan', 'PERSONAL_LOAN', 1000000, 100000000, 1, 36, 0) \
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

/// A PgBouncer in transaction mode in front of the test server, started once per run.
pub struct Bouncer {
    pub port: u16,
}

static BOUNCER: OnceLock<Option<Bouncer>> = OnceLock::new();

fn find_pgbouncer() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.exists())
}

fn start_bouncer(server: &Server) -> Result<Bouncer, String> {
    use std::process::Command;
    let binary = find_pgbouncer().ok_or("pgbouncer is not installed")?;
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let dir = std::env::temp_dir().join(format!("lakehouse-pgbouncer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let ini = format!(
        "[databases]\n* = host={host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 40\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\nlogfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n",
        host = server.admin.get_host(),
        pg_port = server.admin.get_port(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("userlist.txt"),
        format!(
            "\"{}\" \"{}\"\n",
            db::AUTHENTICATOR_ROLE,
            server.app_password
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut command = if as_root {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    let status = command
        .arg("-d")
        .arg(dir.join("pgbouncer.ini"))
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "pgbouncer did not start: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        ));
    }
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $(cat '{dir}/pgbouncer.pid') 2>/dev/null; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .spawn()
        .map_err(|e| e.to_string())?;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Bouncer { port });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("pgbouncer never accepted connections".into())
}

impl TestApp {
    /// A TestApp whose pool goes through PgBouncer in transaction mode (LISTEN stays direct, as
    /// in production). `None` when PgBouncer is not installed, unless LAKEHOUSE_REQUIRE_PGBOUNCER
    /// is set (CI sets it), in which case its absence fails the test.
    pub async fn spawn_via_pgbouncer() -> Option<Self> {
        let server = server();
        let bouncer = BOUNCER.get_or_init(|| match start_bouncer(&server) {
            Ok(b) => Some(b),
            Err(e) if std::env::var_os("LAKEHOUSE_REQUIRE_PGBOUNCER").is_some() => {
                panic!("PgBouncer is required: {e}")
            }
            Err(e) => {
                eprintln!("PgBouncer tests skipped: {e}");
                None
            }
        });
        let port = bouncer.as_ref()?.port;
        let mut app = Self::spawn().await;
        let direct = (*app.pool.connect_options()).clone();
        let through = direct
            .clone()
            .host("127.0.0.1")
            .port(port)
            .statement_cache_capacity(0);
        app.pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(through);
        let http = Options::default().http();
        let state = AppState::new(
            app.pool.clone(),
            app.keys.clone(),
            app.cipher.clone(),
            Duration::from_secs(5),
            &http,
        )
        .with_listen_connection(direct);
        app.state = state.clone();
        app.router = app::router(state, HttpLimits::from_config(&http));
        Some(app)
    }
}

/// The app served on a real TCP socket on loopback, with hyper's timers, until dropped.
pub struct Served {
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl TestApp {
    pub async fn serve_tcp(
        &self,
        limits: lakehouse_api::platform::server::ConnectionLimits,
    ) -> Served {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let router = self.router.clone();
        let task = tokio::spawn(lakehouse_api::platform::server::serve(
            listener,
            router,
            limits,
            async move {
                let _ = stopped.await;
            },
        ));
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }
}

impl Served {
    /// Signals shutdown; the task ends when connections have closed or the deadline passed.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

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
             min_term_months, max_term_months, annual_interest_rate) \
             VALUES ('ZERO_RATE', 'Interest-free', 'PERSONAL_LOAN', 1000000, 100000000, 1, 36, 0) \
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
