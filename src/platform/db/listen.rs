//! One LISTEN connection per process, fanned out to every subscriber.
//!
//! LISTEN needs a session of its own (PgBouncer's transaction mode cannot carry it), so the hub
//! holds a dedicated connection outside the request pool. It starts with the first subscriber.
//! If the connection drops, notifications sent meanwhile are lost: the hub tells subscribers to
//! catch up from the outbox.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;
use sqlx::postgres::{PgListener, PgPoolOptions};
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// Every topic the outbox carries; each is also the NOTIFY channel its trigger sends on.
pub const TOPICS: [&str; 7] = [
    "loan_status_changed",
    "loan_fee_charged",
    "customer_contact_changed",
    "payment_recorded",
    "payment_confirmed",
    "payment_failed",
    "payment_reversed",
];

/// One event, as committed.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub event_id: i64,
    pub topic: Arc<str>,
    /// The customer the event is about, when it is about one.
    pub customer_id: Option<Uuid>,
    /// The JSON the trigger sent (the outbox payload plus `event_id`).
    pub json: Arc<str>,
}

#[derive(Debug, Clone)]
pub enum HubMessage {
    Event(OutboxEvent),
    /// Notifications may have been missed; read the outbox.
    Resync,
}

pub struct EventHub {
    connect: PgConnectOptions,
    sender: broadcast::Sender<HubMessage>,
    started: AtomicBool,
    shutdown: watch::Sender<bool>,
    /// Streams reading the outbox at once (after a reconnect, all of them want to).
    catch_ups: Arc<Semaphore>,
}

/// Streams that may read the outbox at the same time.
const CATCH_UPS_AT_ONCE: usize = 4;

#[derive(Deserialize)]
struct Notified {
    event_id: i64,
    customer_id: Option<Uuid>,
}

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
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<HubMessage> {
        if !self.started.swap(true, Ordering::SeqCst) {
            tokio::spawn(listen(
                self.connect.clone(),
                self.sender.clone(),
                self.shutdown.subscribe(),
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

async fn listen(
    connect: PgConnectOptions,
    sender: broadcast::Sender<HubMessage>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_lazy_with(connect);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(mut l) => match l.listen_all(TOPICS).await {
                Ok(()) => l,
                Err(error) => {
                    tracing::warn!(%error, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            Err(error) => {
                tracing::warn!(%error, "event listener cannot connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        // Anything committed while we were not listening is in the outbox.
        let _ = sender.send(HubMessage::Resync);
        loop {
            let received = tokio::select! {
                r = listener.try_recv() => r,
                _ = shutdown.wait_for(|stopping| *stopping) => return,
            };
            match received {
                Ok(Some(notification)) => {
                    let payload = notification.payload();
                    match serde_json::from_str::<Notified>(payload) {
                        Ok(n) => {
                            let _ = sender.send(HubMessage::Event(OutboxEvent {
                                event_id: n.event_id,
                                topic: notification.channel().into(),
                                customer_id: n.customer_id,
                                json: payload.into(),
                            }));
                        }
                        Err(error) => tracing::warn!(%error, "unreadable notification"),
                    }
                }
                // The connection dropped; try_recv reconnects on the next call.
                Ok(None) => {
                    let _ = sender.send(HubMessage::Resync);
                }
                Err(error) => {
                    tracing::warn!(%error, "event listener failed; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    break;
                }
            }
        }
    }
}
