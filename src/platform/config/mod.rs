//! Settings from the environment. Each command reads only what it needs, and a missing or
//! malformed value becomes one [`ConfigError`] line naming the variable.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sqlx::postgres::PgConnectOptions;

mod four_eyes;
mod oidc;

pub use four_eyes::{FourEyesConfig, CHECKABLE_ACTIONS};
pub use oidc::{check_transport, KeySource, OidcConfig};

/// The login role of the service's pool (created by the first migration); every URL's user is
/// replaced by it.
pub const AUTHENTICATOR_ROLE: &str = "lakehouse_authenticator";

/// Bytes that must not be printed: `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret([{} bytes])", self.0.len())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "configuration error: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Where settings come from: the process environment, or a map in tests.
pub trait Source {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment; empty values count as unset.
pub struct Environment;

impl Source for Environment {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Source for [(&str, &str); N] {
    fn get(&self, key: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| (*v).to_owned())
    }
}

impl Source for Vec<(String, String)> {
    fn get(&self, key: &str) -> Option<String> {
        self.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
    }
}

fn required(src: &dyn Source, key: &str) -> Result<String, ConfigError> {
    src.get(key)
        .ok_or_else(|| ConfigError(format!("{key} is not set (see .env.example)")))
}

fn parsed<T: std::str::FromStr>(
    src: &dyn Source,
    key: &str,
    default: T,
    what: &str,
) -> Result<T, ConfigError> {
    match src.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{key}={v:?} is not {what}"))),
    }
}

fn millis(src: &dyn Source, key: &str, default: Duration) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    let ms: u64 = parsed(src, key, default_ms, "a whole number of milliseconds")?;
    if ms == 0 {
        return Err(ConfigError(format!("{key} must be greater than zero")));
    }
    Ok(Duration::from_millis(ms))
}

fn database_url(src: &dyn Source, key: &str) -> Result<PgConnectOptions, ConfigError> {
    let url = required(src, key)?;
    url.parse().map_err(|_| {
        ConfigError(format!(
            "{key} is not a postgres:// URL (postgres://user:password@host:port/database)"
        ))
    })
}

/// A base64 key of exactly `len` bytes (`openssl rand -base64 32` makes one).
fn key_bytes(src: &dyn Source, key: &str, len: usize) -> Result<Secret, ConfigError> {
    let text = required(src, key)?;
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|_| ConfigError(format!("{key} is not valid base64")))?;
    if bytes.len() != len {
        return Err(ConfigError(format!(
            "{key} must decode to {len} bytes, got {} (make one with: openssl rand -base64 {len})",
            bytes.len()
        )));
    }
    Ok(Secret(bytes))
}

/// The owner connection: migrations and seeding (`DATABASE_URL`).
#[derive(Clone)]
pub struct OwnerDb {
    pub connect: PgConnectOptions,
}

impl OwnerDb {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            connect: database_url(src, "DATABASE_URL")?,
        })
    }
}

/// The password of the service's login role, `lakehouse_authenticator` (created by the
/// migrations; `migrate` sets this password on it).
#[derive(Debug, Clone)]
pub struct AppDbLogin {
    pub password: Secret,
}

impl AppDbLogin {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let password = required(src, "APP_DB_PASSWORD")?;
        if password.len() < 16 {
            return Err(ConfigError(
                "APP_DB_PASSWORD must be at least 16 characters".into(),
            ));
        }
        if !password.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError(
                "APP_DB_PASSWORD must be printable ASCII without spaces".into(),
            ));
        }
        Ok(Self {
            password: Secret(password.into_bytes()),
        })
    }
}

/// The service pool: where it connects (`APP_DATABASE_URL`, else `DATABASE_URL`'s server) and
/// how it behaves. It always logs in as `lakehouse_authenticator` with [`AppDbLogin`]'s
/// password, whatever user a URL names.
#[derive(Clone)]
pub struct PoolConfig {
    pub connect: PgConnectOptions,
    /// A connection of its own for the outbox watcher (the event streams); by default the pool's
    /// server.
    pub listen: Option<PgConnectOptions>,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
    pub statement_timeout: Duration,
    /// Hot standbys for reads (`DATABASE_REPLICA_URLS`), reached with the same login.
    pub replicas: Vec<PgConnectOptions>,
    pub replica_policy: ReplicaPolicy,
    /// Seals `Consistency-Token`s (`CONSISTENCY_TOKEN_KEY`, 32 bytes base64); when unset, a key
    /// derived from the PII look-up hash key, which every instance shares too.
    pub consistency_token_key: Option<Secret>,
}

/// How read replicas are used (see `db::replicas`).
#[derive(Debug, Clone, Copy)]
pub struct ReplicaPolicy {
    /// A read without a token skips a replica further behind than this (`MAX_REPLICA_LAG_MS`).
    pub max_lag: Duration,
    /// How long a read with a token waits for a replica to reach it before using the primary
    /// (`REPLICA_WAIT_MS`).
    pub wait: Duration,
    /// How often WAL positions are read (`REPLICA_POLL_MS`).
    pub poll: Duration,
    /// How long a read may take to get a replica connection and begin on it before it runs on
    /// the primary, and the replica counts as down (`REPLICA_TIMEOUT_MS`).
    pub timeout: Duration,
}

impl Default for ReplicaPolicy {
    fn default() -> Self {
        Self {
            max_lag: Duration::from_millis(1_000),
            // A read waiting longer than a read takes costs its client more than the primary's
            // work it saves (docs/performance.md, "Read-your-writes on a standby").
            wait: Duration::from_millis(30),
            poll: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        }
    }
}

impl ReplicaPolicy {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let policy = Self {
            max_lag: millis(src, "MAX_REPLICA_LAG_MS", d.max_lag)?,
            wait: millis(src, "REPLICA_WAIT_MS", d.wait)?,
            poll: millis(src, "REPLICA_POLL_MS", d.poll)?,
            timeout: millis(src, "REPLICA_TIMEOUT_MS", d.timeout)?,
        };
        if policy.poll.is_zero() {
            return Err(ConfigError("REPLICA_POLL_MS must be above 0".into()));
        }
        if policy.timeout.is_zero() {
            return Err(ConfigError("REPLICA_TIMEOUT_MS must be above 0".into()));
        }
        Ok(policy)
    }
}

impl PoolConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let login = AppDbLogin::from_source(src)?;
        let server = if src.get("APP_DATABASE_URL").is_some() {
            database_url(src, "APP_DATABASE_URL")?
        } else {
            database_url(src, "DATABASE_URL").map_err(|_| {
                ConfigError("set APP_DATABASE_URL or DATABASE_URL (see .env.example)".into())
            })?
        };
        let password = String::from_utf8_lossy(login.password.expose()).into_owned();
        let max_connections = parsed(src, "DB_POOL_SIZE", 8u32, "a number of connections")?;
        // PgBouncer before 1.21 cannot keep prepared statements across transactions in
        // transaction mode: 0 makes every statement unnamed.
        let statement_cache: usize = parsed(
            src,
            "DB_STATEMENT_CACHE_CAPACITY",
            100usize,
            "a number of statements",
        )?;
        let listen = match src.get("LISTEN_DATABASE_URL") {
            None => None,
            Some(_) => Some(
                database_url(src, "LISTEN_DATABASE_URL")?
                    .username(AUTHENTICATOR_ROLE)
                    .password(&password),
            ),
        };
        if !(1..=1000).contains(&max_connections) {
            return Err(ConfigError(
                "DB_POOL_SIZE must be between 1 and 1000".into(),
            ));
        }
        Ok(Self {
            connect: server
                .username(AUTHENTICATOR_ROLE)
                .password(&password)
                .application_name("lakehouse-api")
                .statement_cache_capacity(statement_cache),
            listen,
            max_connections,
            acquire_timeout: millis(src, "DB_ACQUIRE_TIMEOUT_MS", Duration::from_millis(2_000))?,
            statement_timeout: millis(src, "STATEMENT_TIMEOUT_MS", Duration::from_millis(5_000))?,
            replicas: replica_urls(src)?
                .into_iter()
                .map(|url| {
                    url.username(AUTHENTICATOR_ROLE)
                        .password(&password)
                        .statement_cache_capacity(statement_cache)
                })
                .collect(),
            replica_policy: ReplicaPolicy::from_source(src)?,
            consistency_token_key: match src.get("CONSISTENCY_TOKEN_KEY") {
                Some(key) if !key.trim().is_empty() => {
                    Some(key_bytes(src, "CONSISTENCY_TOKEN_KEY", 32)?)
                }
                _ => None,
            },
        })
    }
}

/// `DATABASE_REPLICA_URLS`: comma-separated URLs of hot standbys (their user and password are
/// replaced by the service login's, as for the primary).
fn replica_urls(src: &dyn Source) -> Result<Vec<PgConnectOptions>, ConfigError> {
    let Some(list) = src.get("DATABASE_REPLICA_URLS") else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<PgConnectOptions>().map_err(|_| {
                ConfigError("DATABASE_REPLICA_URLS must be comma-separated postgres:// URLs".into())
            })
        })
        .collect()
}

impl fmt::Debug for PoolConfig {
    /// Leaves out the connect options, which hold the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolConfig")
            .field("host", &self.connect.get_host())
            .field("port", &self.connect.get_port())
            .field("database", &self.connect.get_database())
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .finish()
    }
}

/// Keys for the ID-number column: AES-256-GCM encryption (the current key and its id, and
/// earlier keys still needed to decrypt) and the HMAC-SHA256 look-up hash.
#[derive(Debug, Clone)]
pub struct PiiKeys {
    pub encryption: Secret,
    /// The id new ciphertexts carry (`PII_ENCRYPTION_KEY_ID`, 1 to 255; default 1).
    pub encryption_key_id: u8,
    /// Earlier keys, by id (`PII_ENCRYPTION_PREVIOUS_KEYS`, `id:base64,…`): decryption only.
    pub previous: Vec<(u8, Secret)>,
    pub hash: Secret,
}

impl PiiKeys {
    /// Keys with id 1 and no earlier ones.
    pub fn new(encryption: Secret, hash: Secret) -> Self {
        Self {
            encryption,
            encryption_key_id: 1,
            previous: Vec::new(),
            hash,
        }
    }

    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let encryption_key_id: u8 =
            parsed(src, "PII_ENCRYPTION_KEY_ID", 1u8, "a key id from 1 to 255")?;
        if encryption_key_id == 0 {
            return Err(ConfigError(
                "PII_ENCRYPTION_KEY_ID must be from 1 to 255".into(),
            ));
        }
        let mut previous = Vec::new();
        for item in src
            .get("PII_ENCRYPTION_PREVIOUS_KEYS")
            .unwrap_or_default()
            .split(',')
        {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            let bad = || {
                ConfigError(
                    "PII_ENCRYPTION_PREVIOUS_KEYS must be id:base64-key pairs separated by commas \
                     (ids 1 to 255, each key 32 bytes)"
                        .into(),
                )
            };
            let (id, key) = item.split_once(':').ok_or_else(bad)?;
            let id: u8 = id.trim().parse().map_err(|_| bad())?;
            let key = STANDARD.decode(key.trim()).map_err(|_| bad())?;
            if id == 0 || key.len() != 32 {
                return Err(bad());
            }
            if id == encryption_key_id || previous.iter().any(|(other, _)| *other == id) {
                return Err(ConfigError(format!(
                    "PII encryption key id {id} is given twice (PII_ENCRYPTION_KEY_ID and \
                     PII_ENCRYPTION_PREVIOUS_KEYS name each key once)"
                )));
            }
            previous.push((id, Secret(key)));
        }
        Ok(Self {
            encryption: key_bytes(src, "PII_ENCRYPTION_KEY", 32)?,
            encryption_key_id,
            previous,
            hash: key_bytes(src, "PII_HASH_KEY", 32)?,
        })
    }
}

/// Tasks of a servicing run (`SERVICING_WORKERS`, default 1), for the command line's runs.
pub fn servicing_workers(src: &dyn Source) -> Result<usize, ConfigError> {
    let workers = parsed(
        src,
        "SERVICING_WORKERS",
        HttpConfig::default().servicing_workers,
        "a number of workers",
    )?;
    Ok(workers.max(1))
}

/// The token secret (`JWT_SECRET`), at least 32 bytes.
pub fn jwt_secret(src: &dyn Source) -> Result<Secret, ConfigError> {
    let secret = required(src, "JWT_SECRET")?;
    if secret.len() < 32 {
        return Err(ConfigError(
            "JWT_SECRET must be at least 32 characters".into(),
        ));
    }
    Ok(Secret(secret.into_bytes()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A request rate: so many a second, with a burst (`RATE_LIMIT_*` as `"20/40"`, or `"20"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: u32,
    pub burst: u32,
}

impl std::str::FromStr for Rate {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (rate, burst) = text.split_once('/').unwrap_or((text, text));
        let per_second: u32 = rate.trim().parse().map_err(|_| ())?;
        let burst: u32 = burst.trim().parse().map_err(|_| ())?;
        if per_second == 0 || burst == 0 {
            return Err(());
        }
        Ok(Self { per_second, burst })
    }
}

/// Each token role's rate, per principal. People at a counter or on a phone need far less than
/// staff tools and administrators, whose pages fan out into several calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitConfig {
    pub customer: Rate,
    pub staff: Rate,
    pub analyst: Rate,
    pub etl: Rate,
    pub admin: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let rate = |per_second, burst| Rate { per_second, burst };
        Self {
            customer: rate(20, 40),
            staff: rate(100, 200),
            analyst: rate(20, 40),
            etl: rate(20, 40),
            admin: rate(100, 200),
        }
    }
}

impl RateLimitConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let what = "a rate like 20/40 (per second / burst)";
        Ok(Self {
            customer: parsed(src, "RATE_LIMIT_CUSTOMER", d.customer, what)?,
            staff: parsed(src, "RATE_LIMIT_STAFF", d.staff, what)?,
            analyst: parsed(src, "RATE_LIMIT_ANALYST", d.analyst, what)?,
            etl: parsed(src, "RATE_LIMIT_ETL", d.etl, what)?,
            admin: parsed(src, "RATE_LIMIT_ADMIN", d.admin, what)?,
        })
    }
}

/// The HTTP side: addresses, limits, timeouts, log format. The defaults are stated here once.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub listen_addr: SocketAddr,
    /// Browser origins allowed to call the API (`CORS_ALLOWED_ORIGINS`); none: no CORS headers.
    pub cors_allowed_origins: Vec<String>,
    /// Where `/metrics` is served: off the public listener.
    pub metrics_addr: SocketAddr,
    pub request_timeout: Duration,
    pub body_limit_bytes: usize,
    /// The whole body must arrive within this (then 408).
    pub body_read_timeout: Duration,
    /// Bodies read at once; beyond it, 503 with Retry-After.
    pub max_buffered_bodies: usize,
    /// A request's head must arrive within this after the connection opens or goes idle; in
    /// hyper the same timer closes an idle keep-alive connection.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may finish after SIGTERM.
    pub shutdown_timeout: Duration,
    /// Timeout of job routes (metrics, risk indicators, imports), and their statement_timeout.
    pub job_timeout: Duration,
    /// How often the in-service scheduler checks which jobs are due; zero: never.
    pub scheduler_interval: Duration,
    /// Tasks of a servicing run that take batches off a day's queue at once.
    pub servicing_workers: usize,
    /// How long what the retention job deletes is kept.
    pub retention: RetentionConfig,
    pub import_limit_bytes: usize,
    /// Imports running at once; beyond it, 429 with Retry-After.
    pub max_concurrent_imports: usize,
    /// Job runs asked for over HTTP at once (refreshes, servicing); beyond it, 429. They run on
    /// a pool of their own, two connections each.
    pub max_concurrent_jobs: usize,
    /// An import's body must arrive within this (then 408).
    pub import_read_timeout: Duration,
    pub max_concurrent_requests: usize,
    /// Customers' event streams open at once; beyond it, 503 with Retry-After.
    pub max_customer_streams: usize,
    /// One customer's event streams open at once; beyond it, 429 with Retry-After.
    pub max_streams_per_customer: usize,
    /// Staff and administrators' event streams open at once; beyond it, 503 with Retry-After.
    pub max_staff_streams: usize,
    /// One staff or admin principal's event streams open at once; beyond it, 429.
    pub max_streams_per_principal: usize,
    /// How far back staff may date loans and payments.
    pub backdating_limit_days: u32,
    /// How far an imported loan's replayed balances may be from its source's
    /// (`LOAN_IMPORT_TOLERANCE`, in the loan's currency; default 0: to the unit).
    pub loan_import_tolerance: rust_decimal::Decimal,
    pub rate_limits: RateLimitConfig,
    pub log_format: LogFormat,
    /// Which decisions need a second person, and the staff's approval limit.
    pub four_eyes: FourEyesConfig,
    /// The lake whose exports the service asks for (`LAKE_CATALOG`, as the exporter's).
    pub lake_catalog: String,
    /// The scheduler asks for an export of the lake after each daily close
    /// (`LAKE_EXPORT_AFTER_CLOSE`).
    pub lake_export_after_close: bool,
}

impl Default for HttpConfig {
    /// The defaults of every HTTP setting, stated once (`.env.example` documents them).
    fn default() -> Self {
        let ms = Duration::from_millis;
        Self {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cors_allowed_origins: Vec::new(),
            metrics_addr: SocketAddr::from(([127, 0, 0, 1], 9464)),
            request_timeout: ms(10_000),
            body_limit_bytes: 1_048_576,
            body_read_timeout: ms(30_000),
            max_buffered_bodies: 64,
            header_read_timeout: ms(10_000),
            shutdown_timeout: ms(30_000),
            job_timeout: ms(300_000),
            scheduler_interval: ms(600_000),
            servicing_workers: 1,
            retention: RetentionConfig::default(),
            import_limit_bytes: 268_435_456,
            max_concurrent_imports: 2,
            max_concurrent_jobs: 2,
            import_read_timeout: ms(120_000),
            max_concurrent_requests: 256,
            max_customer_streams: 1000,
            max_streams_per_customer: 5,
            max_staff_streams: 200,
            max_streams_per_principal: 5,
            backdating_limit_days: 3650,
            loan_import_tolerance: rust_decimal::Decimal::ZERO,
            rate_limits: RateLimitConfig::default(),
            log_format: LogFormat::Text,
            four_eyes: FourEyesConfig::default(),
            lake_catalog: "lakehouse".into(),
            lake_export_after_close: false,
        }
    }
}

impl HttpConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let log_format = match src.get("LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError(format!(
                    "LOG_FORMAT={other:?} is not \"text\" or \"json\""
                )))
            }
        };
        let address = "a host:port address";
        Ok(Self {
            listen_addr: parsed(src, "LISTEN_ADDR", d.listen_addr, address)?,
            metrics_addr: parsed(src, "METRICS_LISTEN_ADDR", d.metrics_addr, address)?,
            request_timeout: millis(src, "REQUEST_TIMEOUT_MS", d.request_timeout)?,
            body_limit_bytes: parsed(src, "BODY_LIMIT_BYTES", d.body_limit_bytes, "a byte count")?,
            body_read_timeout: millis(src, "BODY_READ_TIMEOUT_MS", d.body_read_timeout)?,
            max_buffered_bodies: parsed(
                src,
                "MAX_BUFFERED_BODIES",
                d.max_buffered_bodies,
                "a number of bodies",
            )?,
            header_read_timeout: millis(src, "HEADER_READ_TIMEOUT_MS", d.header_read_timeout)?,
            shutdown_timeout: millis(src, "SHUTDOWN_TIMEOUT_MS", d.shutdown_timeout)?,
            job_timeout: millis(src, "JOB_TIMEOUT_MS", d.job_timeout)?,
            scheduler_interval: Duration::from_millis(parsed(
                src,
                "SCHEDULER_INTERVAL_MS",
                u64::try_from(d.scheduler_interval.as_millis()).unwrap_or(u64::MAX),
                "a whole number of milliseconds (0: off)",
            )?),
            servicing_workers: servicing_workers(src)?,
            retention: RetentionConfig::from_source(src)?,
            import_limit_bytes: parsed(
                src,
                "IMPORT_BODY_LIMIT_BYTES",
                d.import_limit_bytes,
                "a byte count",
            )?,
            max_concurrent_imports: parsed(
                src,
                "MAX_CONCURRENT_IMPORTS",
                d.max_concurrent_imports,
                "a number of imports",
            )?,
            max_concurrent_jobs: parsed(
                src,
                "MAX_CONCURRENT_JOBS",
                d.max_concurrent_jobs,
                "a number of job runs",
            )?,
            import_read_timeout: millis(src, "IMPORT_READ_TIMEOUT_MS", d.import_read_timeout)?,
            max_concurrent_requests: parsed(
                src,
                "MAX_CONCURRENT_REQUESTS",
                d.max_concurrent_requests,
                "a number of requests",
            )?,
            max_customer_streams: parsed(
                src,
                "MAX_CUSTOMER_STREAMS",
                d.max_customer_streams,
                "a number of streams",
            )?,
            max_streams_per_customer: parsed(
                src,
                "MAX_STREAMS_PER_CUSTOMER",
                d.max_streams_per_customer,
                "a number of streams",
            )?,
            max_staff_streams: parsed(
                src,
                "MAX_STAFF_STREAMS",
                d.max_staff_streams,
                "a number of streams",
            )?,
            max_streams_per_principal: parsed(
                src,
                "MAX_STREAMS_PER_PRINCIPAL",
                d.max_streams_per_principal,
                "a number of streams",
            )?,
            cors_allowed_origins: cors_origins(src)?,
            backdating_limit_days: parsed(
                src,
                "BACKDATING_LIMIT_DAYS",
                d.backdating_limit_days,
                "a number of days",
            )?,
            loan_import_tolerance: tolerance(src, d.loan_import_tolerance)?,
            rate_limits: RateLimitConfig::from_source(src)?,
            log_format,
            four_eyes: FourEyesConfig::from_source(src)?,
            lake_catalog: lake_catalog(src, d.lake_catalog)?,
            lake_export_after_close: parsed(
                src,
                "LAKE_EXPORT_AFTER_CLOSE",
                d.lake_export_after_close,
                "true or false",
            )?,
        })
    }
}

/// `LAKE_CATALOG`: the lake's name in the Iceberg SQL catalog, 1 to 255 characters.
fn lake_catalog(src: &dyn Source, default: String) -> Result<String, ConfigError> {
    let name = src
        .get("LAKE_CATALOG")
        .map_or(default, |n| n.trim().to_owned());
    if name.is_empty() || name.chars().count() > 255 {
        return Err(ConfigError(format!(
            "LAKE_CATALOG={name:?} is not a name of 1 to 255 characters"
        )));
    }
    Ok(name)
}

/// `LOAN_IMPORT_TOLERANCE`: an amount of money, zero or more.
fn tolerance(
    src: &dyn Source,
    default: rust_decimal::Decimal,
) -> Result<rust_decimal::Decimal, ConfigError> {
    let tolerance: rust_decimal::Decimal =
        parsed(src, "LOAN_IMPORT_TOLERANCE", default, "an amount")?;
    if tolerance.is_sign_negative() {
        return Err(ConfigError(format!(
            "LOAN_IMPORT_TOLERANCE={tolerance} is negative"
        )));
    }
    Ok(tolerance)
}

/// `CORS_ALLOWED_ORIGINS`: exact origins (`https://branch.example.com`), comma-separated. A
/// wildcard is refused: the API takes bearer tokens, and any page on the web may not call it.
fn cors_origins(src: &dyn Source) -> Result<Vec<String>, ConfigError> {
    let Some(text) = src.get("CORS_ALLOWED_ORIGINS") else {
        return Ok(Vec::new());
    };
    text.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|origin| {
            let url = url::Url::parse(origin).ok().filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && !origin.ends_with('/')
            });
            match url {
                Some(_) => Ok(origin.to_owned()),
                None => Err(ConfigError(format!(
                    "CORS_ALLOWED_ORIGINS: {origin:?} is not an origin like https://branch.example.com \
                     (scheme, host and port only; no wildcard)"
                ))),
            }
        })
        .collect()
}

/// Retention periods (`*_RETENTION_DAYS`); idempotency keys are kept 24 hours, always.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionConfig {
    pub outbox: Duration,
    pub staging: Duration,
    pub jobs: Duration,
    /// How long a business date's risk indicators are kept (`RISK_INDICATORS_RETENTION_DAYS`).
    pub risk_indicators: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        Self {
            outbox: days(30),
            staging: days(30),
            jobs: days(90),
            risk_indicators: days(90),
        }
    }
}

impl RetentionConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let d = Self::default();
        let days = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
            let n: u64 = parsed(
                src,
                key,
                default.as_secs() / 86_400,
                "a whole number of days",
            )?;
            if n == 0 || n > 36_500 {
                return Err(ConfigError(format!("{key} must be from 1 to 36500 days")));
            }
            Ok(Duration::from_secs(n * 86_400))
        };
        Ok(Self {
            outbox: days("OUTBOX_RETENTION_DAYS", d.outbox)?,
            staging: days("STAGING_RETENTION_DAYS", d.staging)?,
            jobs: days("JOB_RETENTION_DAYS", d.jobs)?,
            risk_indicators: days("RISK_INDICATORS_RETENTION_DAYS", d.risk_indicators)?,
        })
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub http: HttpConfig,
    pub pool: PoolConfig,
    pub tokens: TokenConfig,
    pub pii: PiiKeys,
}

impl ServeConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        Ok(Self {
            http: HttpConfig::from_source(src)?,
            pool: PoolConfig::from_source(src)?,
            tokens: TokenConfig::from_source(src)?,
            pii: PiiKeys::from_source(src)?,
        })
    }
}

/// Whose tokens the service accepts: a provider's (`OIDC_*`), its own HS256 ones
/// (`JWT_SECRET`), or, in dev mode only, both.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    pub local_secret: Option<Secret>,
    pub provider: Option<OidcConfig>,
}

impl TokenConfig {
    pub fn from_source(src: &dyn Source) -> Result<Self, ConfigError> {
        let provider = OidcConfig::from_source(src)?;
        let local_secret = match src.get("JWT_SECRET") {
            Some(_) => Some(jwt_secret(src)?),
            None => None,
        };
        let dev_mode: bool = parsed(src, "DEV_MODE", false, "true or false")?;
        match (&local_secret, &provider) {
            (None, None) => Err(ConfigError(
                "set OIDC_ISSUER (an identity provider) or JWT_SECRET (the service's own tokens; \
                 see .env.example)"
                    .into(),
            )),
            (Some(_), Some(_)) if !dev_mode => Err(ConfigError(
                "JWT_SECRET and OIDC_ISSUER are both set: a shared secret beside a provider \
                 lets whoever holds it mint any caller. Unset one (or set DEV_MODE=true on a \
                 development machine)"
                    .into(),
            )),
            _ => Ok(Self {
                local_secret,
                provider,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_errors_are_one_line() {
        let e = ConfigError("JWT_SECRET is not set".into());
        assert!(!e.to_string().contains('\n'));
    }

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    fn full() -> [(&'static str, &'static str); 5] {
        [
            ("DATABASE_URL", "postgres://owner:pw@db:5432/lakehouse"),
            ("APP_DB_PASSWORD", "a-long-enough-password"),
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("PII_ENCRYPTION_KEY", KEY),
            ("PII_HASH_KEY", KEY),
        ]
    }

    #[test]
    fn a_complete_environment_gives_defaults_for_the_rest() {
        let config = ServeConfig::from_source(&full()).unwrap();
        assert_eq!(config.http.listen_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.pool.max_connections, 8);
        assert_eq!(
            config.pool.connect.get_username(),
            "lakehouse_authenticator"
        );
        assert_eq!(config.http.log_format, LogFormat::Text);
    }

    #[test]
    fn tokens_come_from_a_provider_or_the_secret_and_both_only_in_dev_mode() {
        let secret = ("JWT_SECRET", "0123456789abcdef0123456789abcdef");
        let issuer = ("OIDC_ISSUER", "https://idp.example");
        let audience = ("OIDC_AUDIENCE", "api");
        let neither = TokenConfig::from_source(&[("UNRELATED", "")]).unwrap_err();
        assert!(
            neither.0.contains("OIDC_ISSUER") && neither.0.contains("JWT_SECRET"),
            "{neither}"
        );
        let local = TokenConfig::from_source(&[secret]).unwrap();
        assert!(local.local_secret.is_some() && local.provider.is_none());
        let provider = TokenConfig::from_source(&[issuer, audience]).unwrap();
        assert!(provider.local_secret.is_none() && provider.provider.is_some());
        let both = TokenConfig::from_source(&[secret, issuer, audience]).unwrap_err();
        assert!(both.0.contains("DEV_MODE"), "{both}");
        let dev =
            TokenConfig::from_source(&[secret, issuer, audience, ("DEV_MODE", "true")]).unwrap();
        assert!(dev.local_secret.is_some() && dev.provider.is_some());
    }

    #[test]
    fn cors_origins_are_exact_origins_and_never_a_wildcard() {
        let with = |origins: &str| {
            let mut env: Vec<(String, String)> = full()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            env.push(("CORS_ALLOWED_ORIGINS".into(), origins.into()));
            HttpConfig::from_source(&env).map(|c| c.cors_allowed_origins)
        };
        assert_eq!(
            with("https://branch.example.com, http://localhost:5173").unwrap(),
            ["https://branch.example.com", "http://localhost:5173"]
        );
        for bad in [
            "*",
            "https://a.example/",
            "https://a.example/path",
            "branch.example.com",
            "ftp://a.example",
        ] {
            assert!(with(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn each_missing_secret_is_named() {
        for missing in [
            "APP_DB_PASSWORD",
            "JWT_SECRET",
            "PII_ENCRYPTION_KEY",
            "PII_HASH_KEY",
        ] {
            let mut env = full();
            for pair in env.iter_mut().filter(|(k, _)| *k == missing) {
                *pair = ("UNRELATED", "");
            }
            let err = ServeConfig::from_source(&env).unwrap_err();
            assert!(err.to_string().contains(missing), "{err}");
        }
    }

    #[test]
    fn malformed_values_are_named_with_the_variable() {
        let mut env = full();
        env[3] = ("PII_ENCRYPTION_KEY", "c2hvcnQ=");
        let err = ServeConfig::from_source(&env).unwrap_err().to_string();
        assert!(
            err.contains("PII_ENCRYPTION_KEY must decode to 32 bytes"),
            "{err}"
        );

        let bad_addr = [("LISTEN_ADDR", "localhost")];
        let err = HttpConfig::from_source(&bad_addr).unwrap_err().to_string();
        assert!(err.contains("LISTEN_ADDR"), "{err}");
    }

    #[test]
    fn secrets_do_not_print() {
        let secret = Secret::new(b"hunter2hunter2".to_vec());
        assert_eq!(format!("{secret:?}"), "Secret([14 bytes])");
    }
}
