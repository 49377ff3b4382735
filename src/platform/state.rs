//! What every handler can reach, in parts. Extractors and helpers below the resources take only
//! the part they need, through `FromRef` (`Database`, `Arc<Authenticator>`, …), so nothing below the
//! resources names [`AppState`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::FromRef;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::platform::auth::Authenticator;
use crate::platform::config::{FourEyesConfig, HttpConfig};
use crate::platform::db::outbox_watch::EventHub;
use crate::platform::db::partitions::{DateWindow, Partitions};
use crate::platform::db::Database;
use crate::platform::edge::RateLimits;
use crate::platform::error::ApiError;
use crate::platform::pii::PiiCipher;

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
    /// The outbox watcher behind the event streams.
    pub events: Arc<EventHub>,
    pub jobs: JobLimits,
    /// The dates clients may give loans and payments.
    pub date_window: DateWindow,
    /// Request rates per principal.
    pub rate_limits: Arc<RateLimits>,
    /// Places for customers' event streams (`MAX_CUSTOMER_STREAMS`, `MAX_STREAMS_PER_CUSTOMER`).
    #[from_ref(skip)]
    pub customer_streams: Arc<StreamPlaces>,
    /// Places for staff and administrators' event streams (`MAX_STAFF_STREAMS`,
    /// `MAX_STREAMS_PER_PRINCIPAL`).
    #[from_ref(skip)]
    pub staff_streams: Arc<StreamPlaces>,
    /// Which decisions need a second person (`FOUR_EYES_ACTIONS`), and the staff's limit.
    pub four_eyes: Arc<FourEyesConfig>,
}

/// Limits of batch jobs (refreshes, imports).
#[derive(Clone)]
pub struct JobLimits {
    /// statement_timeout of job transactions.
    pub statement_timeout: Duration,
    /// Tasks of a servicing run (`SERVICING_WORKERS`).
    pub servicing_workers: usize,
    /// The largest import body.
    pub import_limit_bytes: usize,
    /// An import's body must arrive within this.
    pub import_read_timeout: Duration,
    /// Imports running at once: each holds a pooled connection for its whole upload.
    pub imports: Arc<Semaphore>,
    /// Job runs asked for over HTTP at once (`MAX_CONCURRENT_JOBS`).
    pub runs: Arc<Semaphore>,
    /// The pool those runs use, so that no refresh takes the requests' connections.
    pub pool: PgPool,
    /// How far an imported loan's replayed balances may be from its source's.
    pub loan_import_tolerance: rust_decimal::Decimal,
    /// The lake whose exports administrators ask for (`LAKE_CATALOG`).
    pub lake_catalog: String,
}

impl AppState {
    /// The state for `pool`, with the limits of `http`. The partition-maintenance pool and the
    /// outbox watcher use the pool's server and login.
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
        // Each run holds its runner lock's connection and works on another; servicing's workers
        // each take one more.
        let runs = http.max_concurrent_jobs.max(1);
        let job_connections = 2 * runs + http.servicing_workers.saturating_sub(1);
        let job_pool = PgPoolOptions::new()
            .max_connections(u32::try_from(job_connections).unwrap_or(u32::MAX))
            .acquire_timeout(Duration::from_secs(30))
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
                servicing_workers: http.servicing_workers,
                import_limit_bytes: http.import_limit_bytes,
                import_read_timeout: http.import_read_timeout,
                imports: Arc::new(Semaphore::new(http.max_concurrent_imports.max(1))),
                runs: Arc::new(Semaphore::new(runs)),
                pool: job_pool,
                loan_import_tolerance: http.loan_import_tolerance,
                lake_catalog: http.lake_catalog.clone(),
            },
            date_window: DateWindow {
                backdating_limit_days: http.backdating_limit_days,
            },
            rate_limits: Arc::new(RateLimits::new(&http.rate_limits)),
            customer_streams: Arc::new(StreamPlaces::new(
                http.max_customer_streams,
                http.max_streams_per_customer,
            )),
            staff_streams: Arc::new(StreamPlaces::new(
                http.max_staff_streams,
                http.max_streams_per_principal,
            )),
            four_eyes: Arc::new(http.four_eyes.clone()),
        }
    }

    /// GET requests run on these replicas when they can (see [`crate::platform::db::replicas`]).
    pub fn with_replicas(
        mut self,
        replicas: Arc<crate::platform::db::replicas::ReplicaSet>,
    ) -> Self {
        self.db.replicas = Some(replicas);
        self
    }

    /// Watch the outbox on this connection instead of the pool's server (LISTEN_DATABASE_URL).
    pub fn with_listen_connection(mut self, connect: PgConnectOptions) -> Self {
        self.events = EventHub::new(connect);
        self
    }
}

/// Places for event streams: at most so many at once on this instance, and at most so many for
/// any one principal (a customer, or a staff subject), so that one token cannot take them all.
pub struct StreamPlaces {
    total: Arc<Semaphore>,
    per_principal: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// Why there is no place for a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamsFull {
    /// The principal has all the streams one principal may have.
    Principal,
    /// The instance has all the streams of the kind it takes.
    Instance,
}

/// Beyond one principal's share, 429; beyond the instance's, 503; each with Retry-After.
impl From<StreamsFull> for ApiError {
    fn from(full: StreamsFull) -> Self {
        match full {
            StreamsFull::Principal => ApiError::TooManyRequests {
                retry_after_secs: 5,
            },
            StreamsFull::Instance => ApiError::Unavailable {
                retry_after_secs: 5,
            },
        }
    }
}

/// A stream's place, given back when the stream ends.
pub struct StreamPlace {
    _total: OwnedSemaphorePermit,
    principal: String,
    streams: Arc<StreamPlaces>,
}

impl StreamPlaces {
    pub fn new(total: usize, per_principal: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            per_principal: per_principal.max(1),
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A place for one more of `principal`'s streams, or which limit refuses it.
    pub fn take(self: &Arc<Self>, principal: &str) -> Result<StreamPlace, StreamsFull> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let theirs = open.entry(principal.to_owned()).or_insert(0);
        if *theirs >= self.per_principal {
            return Err(StreamsFull::Principal);
        }
        let total = self
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| StreamsFull::Instance)?;
        *theirs += 1;
        Ok(StreamPlace {
            _total: total,
            principal: principal.to_owned(),
            streams: self.clone(),
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.principal) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_principal_gets_their_share_of_stream_places_and_closing_one_frees_it() {
        let streams = Arc::new(StreamPlaces::new(3, 2));
        let (me, you, them) = ("me", "you", "them");
        let first = streams.take(me).unwrap();
        let _second = streams.take(me).unwrap();
        assert_eq!(
            streams.take(me).err(),
            Some(StreamsFull::Principal),
            "two each"
        );
        let _yours = streams.take(you).unwrap();
        assert_eq!(
            streams.take(them).err(),
            Some(StreamsFull::Instance),
            "three in all"
        );
        drop(first);
        assert!(streams.take(me).is_ok());
    }
}
