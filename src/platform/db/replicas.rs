//! Read replicas: which one a read may run on, and how far behind each is.
//!
//! A poller reads the primary's WAL position and each replica's replay position about every
//! `poll` (100 ms), and at once when a read is waiting for a replica. A read that carries a
//! consistency token (the primary's insert position after a write's commit) goes to a replica
//! that has replayed that far, waiting at most `wait` for one, else to the primary:
//! read-your-writes. It goes to the primary at once when no replica is up and within the lag
//! bound, or when every such replica is further behind than the wait it has left. A read without
//! a token goes to a replica whose lag is within `max_lag`, else to the primary.
//!
//! A replica is a server in recovery: one that is not (promoted outside the service, or never a
//! standby) gets no reads. Getting a replica connection and beginning on it take at most
//! `timeout`; a replica that does not answer in time is down until the poller hears from it.
//!
//! Lag is how long ago the poller first saw the primary's position pass the replica's replay
//! position: zero while the replica keeps up, whatever the traffic. (`now() -
//! pg_last_xact_replay_timestamp()` grows without bound while the primary is idle, so it would
//! call an idle, caught-up replica late.)

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{watch, Notify};

use super::consistency_token::TokenSeal;

pub use crate::platform::config::ReplicaPolicy;

/// GET routes that always run on the primary, and why:
/// - the event streams: they LISTEN, which a hot standby refuses, and their replay must not
///   start behind the notifications they then receive from the primary.
/// - the database report: it describes the primary (its sessions, locks, statements).
pub const PRIMARY_ONLY_READS: [&str; 3] =
    ["/v1/events/loans", "/v1/me/events", "/v1/admin/database"];

impl ReplicaSet {
    /// The `Consistency-Token` of primary position `lsn`.
    pub fn token(&self, lsn: u64) -> String {
        self.seal.seal(lsn)
    }

    /// The position a `Consistency-Token` carries; `None` for one this service did not issue or
    /// that was edited (the request is then 400 at once, with no wait).
    pub fn position(&self, token: &str) -> Option<u64> {
        self.seal.open(token)
    }
}

/// The request header that carries a consistency token, and the response header that gives it.
pub const TOKEN_HEADER: &str = "consistency-token";

struct Replica {
    /// `host:port`, for metrics and logs (never the credentials).
    name: String,
    pool: PgPool,
    /// Replayed through here; meaningful only while `up`.
    replay: AtomicU64,
    up: AtomicBool,
    /// Answered the poller, but is not in recovery: not a replica.
    not_in_recovery: AtomicBool,
    lag_ms: AtomicU64,
    reads: AtomicU64,
}

/// What the service knows of one replica (for metrics and tests).
#[derive(Debug, Clone)]
pub struct ReplicaStatus {
    pub name: String,
    pub up: bool,
    pub replayed: u64,
    pub lag: Duration,
    pub reads: u64,
}

pub struct ReplicaSet {
    replicas: Vec<Replica>,
    /// Seals and opens the `Consistency-Token`s.
    seal: TokenSeal,
    /// Two connections of its own to the primary, so that neither the poll nor a write's token
    /// waits behind busy requests.
    primary: PgPool,
    /// When the primary's position was last read; a replica's lag is at least the time since.
    primary_read_at: Mutex<Option<Instant>>,
    policy: ReplicaPolicy,
    /// Primary positions as first seen, oldest first; only those some replica has yet to reach.
    seen: Mutex<VecDeque<(u64, Instant)>>,
    /// Bumped after every poll, for reads waiting on a position.
    polled: watch::Sender<u64>,
    /// A read waits on a position: poll now rather than at the next period.
    wanted: Arc<Notify>,
    started: AtomicBool,
    next: AtomicUsize,
    fallbacks: AtomicU64,
}

/// Why a read went to the primary.
#[derive(Debug, Clone, Copy)]
enum Fallback {
    /// No replica reached the token in time.
    Behind,
    /// No replica was up and within the lag bound.
    Unavailable,
    /// A replica did not begin a read within the timeout.
    Timeout,
}

/// The least time between two polls that waiting reads ask for.
const MIN_POLL_GAP: Duration = Duration::from_millis(2);

impl ReplicaSet {
    /// Replicas reached with `connect` options (the service's login), checked against
    /// `primary`, the request pool.
    pub fn new(
        primary: PgPool,
        replicas: Vec<PgConnectOptions>,
        policy: ReplicaPolicy,
        pool_size: u32,
        seal: TokenSeal,
    ) -> Arc<Self> {
        let replicas = replicas
            .into_iter()
            .map(|options| Replica {
                name: format!("{}:{}", options.get_host(), options.get_port()),
                pool: PgPoolOptions::new()
                    .max_connections(pool_size)
                    .min_connections(0)
                    // A replica that does not answer quickly is treated as down; the read then
                    // runs on the primary.
                    .acquire_timeout(policy.timeout)
                    .test_before_acquire(false)
                    .idle_timeout(Some(Duration::from_secs(300)))
                    .connect_lazy_with(options.application_name("lakehouse-api-replica")),
                replay: AtomicU64::new(0),
                up: AtomicBool::new(false),
                not_in_recovery: AtomicBool::new(false),
                lag_ms: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            })
            .collect();
        let (polled, _) = watch::channel(0);
        Arc::new(Self {
            replicas,
            seal,
            primary: PgPoolOptions::new()
                .max_connections(2)
                .min_connections(0)
                .acquire_timeout(Duration::from_millis(500))
                .connect_lazy_with((*primary.connect_options()).clone()),
            primary_read_at: Mutex::new(None),
            policy,
            seen: Mutex::new(VecDeque::new()),
            polled,
            wanted: Arc::new(Notify::new()),
            started: AtomicBool::new(false),
            next: AtomicUsize::new(0),
            fallbacks: AtomicU64::new(0),
        })
    }

    fn start(self: &Arc<Self>) {
        if !self.started.swap(true, Ordering::SeqCst) {
            let set = Arc::downgrade(self);
            let wanted = self.wanted.clone();
            tokio::spawn(async move {
                let mut round = 0u64;
                loop {
                    let Some(set) = set.upgrade() else { return };
                    set.poll().await;
                    round += 1;
                    let _ = set.polled.send(round);
                    let pause = set.policy.poll;
                    drop(set);
                    tokio::time::sleep(MIN_POLL_GAP).await;
                    tokio::select! {
                        () = tokio::time::sleep(pause.saturating_sub(MIN_POLL_GAP)) => {}
                        () = wanted.notified() => {}
                    }
                }
            });
        }
    }

    /// One round: the primary's position, then each replica's.
    async fn poll(&self) {
        let bound = self.policy.poll.max(Duration::from_millis(200)) * 2;
        let primary = tokio::time::timeout(
            bound,
            sqlx::query_scalar!(r#"SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8 AS "lsn!""#)
                .fetch_one(&self.primary),
        )
        .await;
        let now = Instant::now();
        if let Ok(Ok(lsn)) = primary {
            *self
                .primary_read_at
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = Some(now);
            let lsn = u64::try_from(lsn).unwrap_or(0);
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.back().is_none_or(|(last, _)| lsn > *last) {
                seen.push_back((lsn, now));
            }
        }
        // A promoted standby keeps answering pg_last_wal_replay_lsn() (the last position it
        // replayed), so recovery is asked for in so many words.
        let replay = "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";
        for replica in &self.replicas {
            let read = tokio::time::timeout(
                self.policy.timeout.min(bound),
                sqlx::query_as::<_, (bool, Option<i64>)>(replay).fetch_one(&replica.pool),
            )
            .await;
            match read {
                Ok(Ok((true, Some(lsn)))) => {
                    replica
                        .replay
                        .store(u64::try_from(lsn).unwrap_or(0), Ordering::SeqCst);
                    replica.not_in_recovery.store(false, Ordering::SeqCst);
                    replica.up.store(true, Ordering::SeqCst);
                }
                Ok(Ok((false, _))) => {
                    replica.up.store(false, Ordering::SeqCst);
                    if !replica.not_in_recovery.swap(true, Ordering::SeqCst) {
                        tracing::error!(replica = %replica.name,
                            "listed replica is not in recovery (promoted?); it gets no reads");
                        metrics::counter!("replica_not_in_recovery_total", "replica" => replica.name.clone())
                            .increment(1);
                    }
                }
                Ok(Ok((true, None))) | Ok(Err(_)) | Err(_) => {
                    if replica.up.swap(false, Ordering::SeqCst) {
                        tracing::warn!(replica = %replica.name, "replica unreachable; reads go to the primary");
                    }
                }
            }
        }
        // Without a fresh reading of the primary, nobody is known to be current: a replica is
        // at least as far behind as that reading is old (beyond one poll).
        let unknown = self
            .primary_read_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(Duration::MAX, |at| now.saturating_duration_since(at))
            .saturating_sub(self.policy.poll * 2);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for replica in &self.replicas {
            let replayed = replica.replay.load(Ordering::SeqCst);
            let lag = seen
                .iter()
                .find(|(lsn, _)| *lsn > replayed)
                .map_or(Duration::ZERO, |(_, at)| now.saturating_duration_since(*at))
                .max(unknown);
            replica.lag_ms.store(
                u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
                Ordering::SeqCst,
            );
            let lag_seconds = if replica.up.load(Ordering::SeqCst) {
                lag.as_secs_f64()
            } else {
                f64::NAN
            };
            metrics::gauge!("replica_lag_seconds", "replica" => replica.name.clone())
                .set(lag_seconds);
        }
        // Keep what some replica has yet to replay (one that is down too, so that its lag is
        // right when it returns), and the latest; at most 10,000 positions.
        let slowest = self
            .replicas
            .iter()
            .map(|r| r.replay.load(Ordering::SeqCst))
            .min();
        while seen.len() > 1 && (slowest.is_some_and(|s| seen[0].0 <= s) || seen.len() > 10_000) {
            seen.pop_front();
        }
    }

    /// The pool a read runs on: a replica's, or `None` for the primary. `token` is the
    /// position the read must see.
    pub async fn choose(self: &Arc<Self>, token: Option<u64>) -> Option<(usize, PgPool)> {
        self.start();
        let pick = |fits: &dyn Fn(&Replica) -> bool| {
            let count = self.replicas.len();
            let first = self.next.fetch_add(1, Ordering::Relaxed);
            (0..count)
                .map(|i| (first + i) % count)
                .find(|&i| self.replicas[i].up.load(Ordering::SeqCst) && fits(&self.replicas[i]))
        };
        let max_lag = u64::try_from(self.policy.max_lag.as_millis()).unwrap_or(u64::MAX);
        let current = |r: &Replica| r.lag_ms.load(Ordering::SeqCst) <= max_lag;
        let chosen = match token {
            // Both: the write is there, and the rest is no staler than a read without a token
            // would get (an old token must not pull a read onto a lagging replica).
            Some(token) => {
                let deadline = tokio::time::Instant::now() + self.policy.wait;
                let mut polled = self.polled.subscribe();
                loop {
                    if let Some(i) =
                        pick(&|r| r.replay.load(Ordering::SeqCst) >= token && current(r))
                    {
                        break Ok(i);
                    }
                    // Nothing to wait for: no replica can serve, or none will reach the token
                    // before the wait is over.
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if !self
                        .replicas
                        .iter()
                        .any(|r| r.up.load(Ordering::SeqCst) && current(r))
                    {
                        break Err(Fallback::Unavailable);
                    }
                    if !self.may_reach(token, left, &current) {
                        break Err(Fallback::Behind);
                    }
                    self.wanted.notify_one();
                    if tokio::time::timeout_at(deadline, polled.changed())
                        .await
                        .is_err()
                    {
                        break Err(Fallback::Behind);
                    }
                }
            }
            None => pick(&current).ok_or(Fallback::Unavailable),
        };
        match chosen {
            Ok(i) => Some((i, self.replicas[i].pool.clone())),
            Err(reason) => {
                self.fell_back(reason);
                None
            }
        }
    }

    /// Whether some replica fit for reads may replay through `token` within `left`: a replica
    /// replays a position about its lag after the primary wrote it, and the poller saw when the
    /// primary first passed each position.
    fn may_reach(&self, token: u64, left: Duration, current: &dyn Fn(&Replica) -> bool) -> bool {
        let written = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(lsn, _)| *lsn >= token)
            .map(|(_, at)| *at);
        // Not seen yet: written after the last poll, so just now.
        let age = written.map_or(Duration::ZERO, |at| at.elapsed());
        self.replicas
            .iter()
            .filter(|r| r.up.load(Ordering::SeqCst) && current(r))
            .any(|r| {
                Duration::from_millis(r.lag_ms.load(Ordering::SeqCst)).saturating_sub(age) <= left
            })
    }

    fn fell_back(&self, reason: Fallback) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        let reason = match reason {
            Fallback::Behind => "behind_token",
            Fallback::Unavailable => "none_available",
            Fallback::Timeout => "replica_timeout",
        };
        metrics::counter!("replica_fallbacks_total", "reason" => reason).increment(1);
    }

    /// A read began on replica `i`.
    pub fn routed(&self, i: usize) {
        if let Some(replica) = self.replicas.get(i) {
            replica.reads.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("replica_reads_total", "replica" => replica.name.clone())
                .increment(1);
        }
    }

    /// Replica `i` failed to begin a read: it is down until the poller finds it again, and the
    /// read runs on the primary.
    pub fn failed(&self, i: usize) {
        if let Some(replica) = self.replicas.get(i) {
            if replica.up.swap(false, Ordering::SeqCst) {
                tracing::warn!(replica = %replica.name, "replica failed a read; reads go to the primary");
            }
        }
        self.fell_back(Fallback::Unavailable);
    }

    /// Replica `i` did not begin a read within the timeout: it is down until the poller hears
    /// from it, and the read runs on the primary.
    pub fn timed_out(&self, i: usize) {
        if let Some(replica) = self.replicas.get(i) {
            if replica.up.swap(false, Ordering::SeqCst) {
                tracing::warn!(replica = %replica.name, timeout_ms = self.policy.timeout.as_millis(),
                    "replica did not begin a read in time; reads go to the primary");
            }
            metrics::counter!("replica_timeouts_total", "replica" => replica.name.clone())
                .increment(1);
        }
        self.fell_back(Fallback::Timeout);
    }

    /// How long getting a replica connection and beginning on it may take.
    pub fn timeout(&self) -> Duration {
        self.policy.timeout
    }

    /// Reads that went to the primary although replicas are configured.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    pub fn status(&self) -> Vec<ReplicaStatus> {
        self.replicas
            .iter()
            .map(|r| ReplicaStatus {
                name: r.name.clone(),
                up: r.up.load(Ordering::SeqCst),
                replayed: r.replay.load(Ordering::SeqCst),
                lag: Duration::from_millis(r.lag_ms.load(Ordering::SeqCst)),
                reads: r.reads.load(Ordering::Relaxed),
            })
            .collect()
    }

    /// The primary's insert position now: a write's consistency token, read after its commit.
    /// Bounded: past 250 ms the response goes out without a token rather than late.
    pub async fn insert_position(&self) -> Option<u64> {
        let read = sqlx::query_scalar!(
            r#"SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8 AS "lsn!""#
        )
        .fetch_one(&self.primary);
        match tokio::time::timeout(Duration::from_millis(250), read).await {
            Ok(Ok(lsn)) => u64::try_from(lsn).ok(),
            Ok(Err(error)) => {
                tracing::warn!(%error, "no consistency token after a write");
                None
            }
            Err(_) => {
                tracing::warn!("no consistency token after a write: the primary was slow to say");
                None
            }
        }
    }
}
