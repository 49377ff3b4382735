//! One watcher of the outbox per process, fanned out to every subscriber.
//!
//! Events are ordered by their position, `(xact_id, event_id)`: the writing transaction's id,
//! then the row's id. A reader takes only rows of transactions older than the oldest one still
//! running (`xact_id < pg_snapshot_xmin(pg_current_snapshot())`), which can no longer commit, so
//! nothing ever appears before a position once it has been read, and no writer waits for another
//! (migration 0027). The watcher reads the positions, topics and customers of new events every
//! [`POLL`] and tells the streams; each stream then reads what it may send from the outbox itself,
//! under its caller's rights. A watch carries no event data, and nothing outside the outbox can
//! make one (NOTIFY, which any login could send, is no longer read).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Every topic the outbox carries.
pub const TOPICS: [&str; 10] = [
    "loan_status_changed",
    "loan_imported",
    "loan_fee_charged",
    "customer_contact_changed",
    "payment_recorded",
    "payment_confirmed",
    "payment_failed",
    "payment_reversed",
    "customer_identity_linked",
    "customer_identity_unlinked",
];

/// How often the watcher reads the outbox: the longest a committed event waits to be seen, once
/// every transaction older than its own has ended.
pub const POLL: Duration = Duration::from_millis(50);

/// The watcher's `application_name`, as `pg_stat_activity` shows it (whatever login and server it
/// uses: LISTEN_DATABASE_URL's, or the pool's).
pub const WATCHER_NAME: &str = "lakehouse-outbox-watch";

/// New events read per watch.
const WATCH_BATCH: i64 = 1000;

/// Where an event stands in the outbox's order: its transaction's id, then its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub xact_id: i64,
    pub event_id: i64,
}

/// One event: from a stream's read of the outbox with its JSON, or from the watcher without.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub position: Position,
    pub topic: Arc<str>,
    /// The customer the event is about, when it is about one.
    pub customer_id: Option<Uuid>,
    /// The outbox payload plus `event_id` (empty in a watch).
    pub json: Arc<str>,
}

impl OutboxEvent {
    pub fn event_id(&self) -> i64 {
        self.position.event_id
    }
}

#[derive(Debug, Clone)]
pub enum HubMessage {
    /// An event became readable; streams that want it read the outbox.
    Event(OutboxEvent),
    /// Events may have been missed (the watcher was cut off); read the outbox.
    Resync,
}

pub struct EventHub {
    connect: PgConnectOptions,
    sender: broadcast::Sender<HubMessage>,
    started: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Streams reading the outbox at once (after a reconnect, all of them want to).
    catch_ups: Arc<Semaphore>,
    /// When the watcher last saw the horizon move, in ms since the Unix epoch (for `/metrics`).
    horizon_moved_at_ms: Arc<AtomicI64>,
}

/// Streams that may read the outbox at the same time.
const CATCH_UPS_AT_ONCE: usize = 4;

impl EventHub {
    pub fn new(connect: PgConnectOptions) -> Arc<Self> {
        let (sender, _) = broadcast::channel(1024);
        let (shutdown, _) = watch::channel(false);
        Arc::new(Self {
            connect,
            sender,
            started: AtomicBool::new(false),
            shutdown,
            catch_ups: Arc::new(Semaphore::new(CATCH_UPS_AT_ONCE)),
            horizon_moved_at_ms: Arc::new(AtomicI64::new(0)),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMessage> {
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(watch_outbox(
                self.connect.clone(),
                self.sender.clone(),
                self.shutdown.subscribe(),
                self.horizon_moved_at_ms.clone(),
            ));
        }
        self.sender.subscribe()
    }

    /// A turn to read the outbox; `None` only if the hub is gone.
    pub async fn catch_up_turn(&self) -> Option<OwnedSemaphorePermit> {
        self.catch_ups.clone().acquire_owned().await.ok()
    }

    /// Resolves when the service is shutting down; open streams end so shutdown can finish.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

async fn watch_outbox(
    connect: PgConnectOptions,
    sender: broadcast::Sender<HubMessage>,
    mut shutdown: watch::Receiver<bool>,
    horizon_moved_at_ms: Arc<AtomicI64>,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(connect.application_name(WATCHER_NAME));
    let mut head: Option<Position> = None;
    let mut horizon = None;
    let mut connected = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        }
        match read_past(&pool, head).await {
            Ok(read) => {
                if !connected {
                    // Anything written while the watcher was away is in the outbox.
                    connected = true;
                    let _ = sender.send(HubMessage::Resync);
                }
                if horizon != Some(read.horizon) {
                    horizon = Some(read.horizon);
                    horizon_moved_at_ms
                        .store(chrono::Utc::now().timestamp_millis(), Ordering::Relaxed);
                }
                for event in read.events {
                    let _ = sender.send(HubMessage::Event(event));
                }
                head = Some(read.head);
            }
            Err(error) => {
                if connected {
                    tracing::warn!(%error, "the outbox watcher lost the database; retrying");
                }
                connected = false;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let moved = horizon_moved_at_ms.load(Ordering::Relaxed);
        if moved > 0 {
            let age = (chrono::Utc::now().timestamp_millis() - moved).max(0);
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!("outbox_horizon_age_seconds").set(age as f64 / 1000.0);
        }
    }
}

struct Read {
    head: Position,
    horizon: i64,
    events: Vec<OutboxEvent>,
}

/// The events past `head` (or, the first time, past the horizon) that no running transaction can
/// still precede, as administrators see them: every branch's (each stream then reads what its
/// own caller may).
async fn read_past(pool: &PgPool, head: Option<Position>) -> Result<Read, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET LOCAL ROLE lakehouse_admin_api")
        .execute(&mut *tx)
        .await?;
    let horizon = sqlx::query_scalar!(
        r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS "horizon!""#
    )
    .fetch_one(&mut *tx)
    .await?;
    let from = head.unwrap_or(Position {
        xact_id: horizon,
        event_id: 0,
    });
    let rows = sqlx::query!(
        r#"
        SELECT xact_id::text::bigint AS "xact_id!", event_id, topic, customer_id
        FROM metadata.outbox_events
        WHERE (xact_id, event_id) > ($1::bigint::text::xid8, $2)
          AND xact_id < $3::bigint::text::xid8
        ORDER BY xact_id, event_id LIMIT $4
        "#,
        from.xact_id,
        from.event_id,
        horizon,
        WATCH_BATCH,
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let events: Vec<OutboxEvent> = rows
        .into_iter()
        .map(|r| OutboxEvent {
            position: Position {
                xact_id: r.xact_id,
                event_id: r.event_id,
            },
            topic: r.topic.into(),
            customer_id: r.customer_id,
            json: "".into(),
        })
        .collect();
    Ok(Read {
        head: events.last().map_or(from, |e| e.position),
        horizon,
        events,
    })
}
