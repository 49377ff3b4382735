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
use tokio::sync::{broadcast, watch};

pub const CHANNEL: &str = "loan_status_changed";

/// One event, as committed.
#[derive(Debug, Clone)]
pub struct LoanEvent {
    pub event_id: i64,
    /// The JSON the trigger sent (the outbox payload plus `event_id`).
    pub json: Arc<str>,
}

#[derive(Debug, Clone)]
pub enum HubMessage {
    Event(LoanEvent),
    /// Notifications may have been missed; read the outbox.
    Resync,
}

pub struct EventHub {
    connect: PgConnectOptions,
    sender: broadcast::Sender<HubMessage>,
    started: AtomicBool,
    shutdown: watch::Sender<bool>,
}

#[derive(Deserialize)]
struct Notified {
    event_id: i64,
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
            Ok(mut l) => match l.listen(CHANNEL).await {
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
                            let _ = sender.send(HubMessage::Event(LoanEvent {
                                event_id: n.event_id,
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
