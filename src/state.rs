//! What every handler can reach, in parts. Extractors and helpers below the resources take only
//! the part they need, through `FromRef` (`Database`, `Arc<Authenticator>`, …), so nothing below the
//! resources names [`AppState`].

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::Semaphore;

use crate::auth::Authenticator;
use crate::config::HttpConfig;
use crate::db::listen::EventHub;
use crate::db::partitions::{DateWindow, Partitions};
use crate::db::Database;
use crate::edge::RateLimits;
use crate::pii::PiiCipher;

/// The state of the service. Cheap to clone: everything inside is shared.
#[derive(Clone, FromRef)]
pub struct AppState {
    /// Request transactions, as the service login.
    pub db: Database,
    /// Bearer tokens to callers.
    pub auth: Arc<Authenticator>,
    pub pii: Arc<PiiCipher>,
    /// On-demand partition creation, on a small pool of its own.
    pub partitions: Arc<Partitions>,
    /// The LISTEN connection behind the event stream.
    pub events: Arc<EventHub>,
    pub jobs: JobLimits,
    /// The dates clients may give loans and payments.
    pub date_window: DateWindow,
    /// Request rates per principal.
    pub rate_limits: Arc<RateLimits>,
    /// Places for customers' event streams (`MAX_CUSTOMER_STREAMS`).
    pub customer_streams: Arc<Semaphore>,
}

/// Limits of batch jobs (refreshes, imports).
#[derive(Clone)]
pub struct JobLimits {
    /// statement_timeout of job transactions.
    pub statement_timeout: Duration,
    /// The largest import body.
    pub import_limit_bytes: usize,
    /// An import's body must arrive within this.
    pub import_read_timeout: Duration,
    /// Imports running at once: each holds a pooled connection for its whole upload.
    pub imports: Arc<Semaphore>,
}

impl AppState {
    /// The state for `pool`, with the limits of `http`. The partition-maintenance pool and the
    /// LISTEN connection use the pool's server and login.
    pub fn new(
        pool: PgPool,
        auth: impl Into<Authenticator>,
        pii: PiiCipher,
        statement_timeout: Duration,
        http: &HttpConfig,
    ) -> Self {
        let auth = Arc::new(auth.into().with_links(pool.clone()));
        let connect = (*pool.connect_options()).clone();
        let maintenance = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(connect.clone());
        Self {
            db: Database {
                pool,
                statement_timeout,
                replicas: None,
            },
            auth,
            pii: Arc::new(pii),
            partitions: Arc::new(Partitions::new(maintenance)),
            events: EventHub::new(connect),
            jobs: JobLimits {
                statement_timeout: http.job_timeout,
                import_limit_bytes: http.import_limit_bytes,
                import_read_timeout: http.import_read_timeout,
                imports: Arc::new(Semaphore::new(http.max_concurrent_imports.max(1))),
            },
            date_window: DateWindow {
                backdating_limit_days: http.backdating_limit_days,
            },
            rate_limits: Arc::new(RateLimits::new(&http.rate_limits)),
            customer_streams: Arc::new(Semaphore::new(http.max_customer_streams)),
        }
    }

    /// GET requests run on these replicas when they can (see [`crate::db::replicas`]).
    pub fn with_replicas(mut self, replicas: Arc<crate::db::replicas::ReplicaSet>) -> Self {
        self.db.replicas = Some(replicas);
        self
    }

    /// LISTEN on this direct connection instead of the pool's server (which may be PgBouncer,
    /// whose transaction mode cannot carry LISTEN).
    pub fn with_listen_connection(mut self, connect: PgConnectOptions) -> Self {
        self.events = EventHub::new(connect);
        self
    }
}
