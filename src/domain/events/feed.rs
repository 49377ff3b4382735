//! One subscriber's stream: what it has sent, what the outbox still holds for it, and the live
//! events it waits for.
//!
//! Staff streams send live events as the hub receives them. A customer's stream never sends a
//! notification's payload: a notification about them only tells it to read the outbox, in a
//! transaction of their own (their role and customer id), where row-level security decides
//! what they receive.

use std::collections::{HashSet, VecDeque};

use sqlx::PgConnection;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::platform::auth::{self, Caller};
use crate::platform::db::listen::{HubMessage, OutboxEvent};
use crate::platform::state::{AppState, StreamPlace};

/// Outbox rows replayed per query; a stream holds at most one batch in memory.
pub const REPLAY_BATCH: i64 = 1000;

/// How many of the latest sent ids a stream remembers to skip an event both replayed and
/// received live. A live event waits at most the hub's channel capacity (1,024) behind the
/// replay that also finds it, so four times that is ample, and memory stays bounded on a stream
/// that runs for days.
const SENT_WINDOW: usize = 4096;

/// Whose stream it is, and so which events it carries.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Every event, or only the listed topics.
    Staff { topics: Option<Vec<String>> },
    /// The customer's own loan and payment events, read under row-level security.
    Customer(Uuid),
}

impl Audience {
    fn wants(&self, event: &OutboxEvent) -> bool {
        match self {
            Self::Staff { topics: None } => true,
            Self::Staff {
                topics: Some(topics),
            } => topics.iter().any(|t| **t == *event.topic),
            Self::Customer(id) => event.customer_id == Some(*id),
        }
    }
}

/// Events with an id above `after` that the caller's transaction may read, oldest first.
pub async fn outbox_after(
    conn: &mut PgConnection,
    audience: &Audience,
    after: i64,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    // Staff may ask for some topics; a customer's rows are the policy's to choose (their own
    // id, their topics).
    let topics = match audience {
        Audience::Staff { topics } => topics.as_deref(),
        Audience::Customer(_) => None,
    };
    let rows = sqlx::query!(
        r#"
        SELECT event_id, topic, customer_id,
               (payload || jsonb_build_object('event_id', event_id))::text AS "json!"
        FROM metadata.outbox_events
        WHERE event_id > $1 AND ($3::text[] IS NULL OR topic = ANY($3))
        ORDER BY event_id LIMIT $2
        "#,
        after,
        REPLAY_BATCH,
        topics as Option<&[String]>,
    )
    .fetch_all(conn)
    .await?;
    let rows = rows
        .into_iter()
        .map(|r| (r.event_id, r.topic, r.customer_id, r.json));
    Ok(rows
        .map(|(event_id, topic, customer_id, json)| OutboxEvent {
            event_id,
            topic: topic.into(),
            customer_id,
            json: json.into(),
        })
        .collect())
}

/// Where a stream without `Last-Event-ID` starts: after the latest event the caller may read.
pub async fn latest_event_id(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(max(event_id), 0) AS "last!" FROM metadata.outbox_events"#
    )
    .fetch_one(conn)
    .await
}

/// The state of one subscriber's stream.
pub struct Feed {
    state: AppState,
    caller: Caller,
    audience: Audience,
    live: broadcast::Receiver<HubMessage>,
    shutdown: watch::Receiver<bool>,
    pending: VecDeque<OutboxEvent>,
    sent: SentIds,
    /// Replays start after this id.
    replayed_to: i64,
    /// The outbox may hold more past `replayed_to` than was read: read the next batch before
    /// anything live.
    replaying: bool,
    /// When the caller's token expires: the stream ends then (a client reconnects with a fresh
    /// token and `Last-Event-ID`), so a revoked or unlinked caller does not listen on.
    expires: Option<tokio::time::Instant>,
    /// A customer stream's place under the bound on customer streams, given back when the
    /// stream ends.
    _place: Option<StreamPlace>,
}

impl Feed {
    /// A stream that subscribes now, before the outbox is first read, so nothing falls between.
    pub fn subscribe(
        state: &AppState,
        caller: Caller,
        audience: Audience,
        place: Option<StreamPlace>,
    ) -> Self {
        let expires = caller.expires_at.map(|exp| {
            let left = exp.saturating_sub(chrono::Utc::now().timestamp()).max(0);
            tokio::time::Instant::now()
                + std::time::Duration::from_secs(u64::try_from(left).unwrap_or(0))
        });
        Self {
            expires,
            live: state.events.subscribe(),
            shutdown: state.events.shutdown_signal(),
            state: state.clone(),
            caller,
            audience,
            pending: VecDeque::new(),
            sent: SentIds::default(),
            replayed_to: 0,
            replaying: false,
            _place: place,
        }
    }

    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    pub fn start_after(&mut self, id: i64) {
        self.replayed_to = id;
    }

    pub fn queue(&mut self, events: Vec<OutboxEvent>) {
        self.replaying = events.len() >= REPLAY_BATCH as usize;
        for event in events {
            self.replayed_to = self.replayed_to.max(event.event_id);
            if self.sent.insert(event.event_id) {
                self.pending.push_back(event);
            }
        }
    }

    /// Reads the next batch of the outbox past what was replayed, in the caller's own
    /// transaction; a failure is logged and retried at the next resync rather than ending the
    /// stream.
    async fn catch_up(&mut self) {
        let timeout = self.state.db.statement_timeout.as_millis();
        // After the LISTEN connection comes back, every stream catches up at once: a few at a
        // time, so that they do not take the request pool from everyone else.
        let _turn = self.state.events.catch_up_turn().await;
        let result = async {
            let mut tx = auth::begin_as(&self.state.db.pool, &self.caller, true, timeout).await?;
            let batch = outbox_after(&mut tx, &self.audience, self.replayed_to).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(batch)
        }
        .await;
        match result {
            Ok(batch) => self.queue(batch),
            Err(error) => {
                self.replaying = false;
                tracing::warn!(%error, "event replay failed");
            }
        }
    }

    pub async fn next(&mut self) -> Option<OutboxEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.replaying {
                self.catch_up().await;
                continue;
            }
            let (live, shutdown) = (&mut self.live, &mut self.shutdown);
            let expiry = self.expires;
            let expired = async move {
                match expiry {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                m = live.recv() => m,
                // wait_for also sees a shutdown signalled before this stream subscribed.
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
                () = expired => return None,
            };
            match message {
                // A notification only wakes the stream: what it sends is read from the outbox,
                // in the caller's transaction and under their rights. Any login may NOTIFY on
                // these channels, so a forged one finds nothing past the stream's position and
                // moves nothing.
                Ok(HubMessage::Event(event)) => {
                    if self.audience.wants(&event) && event.event_id > self.replayed_to {
                        self.catch_up().await;
                    }
                }
                Ok(HubMessage::Resync) | Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// The latest [`SENT_WINDOW`] ids a stream sent.
#[derive(Default)]
struct SentIds {
    ids: HashSet<i64>,
    order: VecDeque<i64>,
}

impl SentIds {
    /// Remembers `id`; false if it is already remembered.
    fn insert(&mut self, id: i64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > SENT_WINDOW {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sent_ids_skip_a_repeat_and_forget_the_oldest_beyond_the_window() {
        let mut sent = SentIds::default();
        assert!(sent.insert(1));
        assert!(!sent.insert(1));
        for id in 2..=(SENT_WINDOW as i64 + 1) {
            assert!(sent.insert(id));
        }
        assert_eq!(sent.ids.len(), SENT_WINDOW);
        assert!(sent.insert(1), "1 fell out of the window");
        assert!(!sent.insert(SENT_WINDOW as i64 + 1));
    }

    #[test]
    fn a_customer_hears_only_of_events_about_them_and_staff_of_their_topics() {
        let me = Uuid::now_v7();
        let event = |topic: &str, customer: Option<Uuid>| OutboxEvent {
            event_id: 1,
            topic: topic.into(),
            customer_id: customer,
            json: "{}".into(),
        };
        let customer = Audience::Customer(me);
        assert!(customer.wants(&event("payment_recorded", Some(me))));
        assert!(!customer.wants(&event("payment_recorded", Some(Uuid::now_v7()))));
        assert!(!customer.wants(&event("payment_recorded", None)));
        let staff = Audience::Staff {
            topics: Some(vec!["payment_failed".into()]),
        };
        assert!(staff.wants(&event("payment_failed", None)));
        assert!(!staff.wants(&event("payment_recorded", None)));
        assert!(Audience::Staff { topics: None }.wants(&event("anything", None)));
    }
}
