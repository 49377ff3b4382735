//! One subscriber's stream: what it has sent, what the outbox still holds for it, and the live
//! events it waits for.
//!
//! A stream sends only what it reads from the outbox, in a transaction of its caller's own (their
//! role and, for a customer, their id), where row-level security decides what they receive. The
//! hub's watcher only tells it that something it wants became readable. It reads in the
//! outbox's order, `(xact_id, event_id)`, and only rows that no running transaction can precede
//! (migration 0027), so what it sent is never preceded by anything later.

use std::collections::{HashSet, VecDeque};

use sqlx::PgConnection;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::platform::auth::{self, Caller};
use crate::platform::db::outbox_watch::{HubMessage, OutboxEvent, Position};
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

/// The events past `after` that the caller's transaction may read and that no running
/// transaction can still precede, in the outbox's order.
pub async fn outbox_after(
    conn: &mut PgConnection,
    audience: &Audience,
    after: Position,
) -> Result<Vec<OutboxEvent>, sqlx::Error> {
    // Staff may ask for some topics; a customer's rows are the policy's to choose (their own
    // id, their topics).
    let topics = match audience {
        Audience::Staff { topics } => topics.as_deref(),
        Audience::Customer(_) => None,
    };
    let rows = sqlx::query!(
        r#"
        SELECT xact_id::text::bigint AS "xact_id!", event_id, topic, customer_id,
               (payload || jsonb_build_object('event_id', event_id))::text AS "json!"
        FROM metadata.outbox_events
        WHERE (xact_id, event_id) > ($1::bigint::text::xid8, $2)
          AND xact_id < pg_snapshot_xmin(pg_current_snapshot())
          AND ($4::text[] IS NULL OR topic = ANY($4))
        ORDER BY xact_id, event_id LIMIT $3
        "#,
        after.xact_id,
        after.event_id,
        REPLAY_BATCH,
        topics as Option<&[String]>,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| OutboxEvent {
            position: Position {
                xact_id: r.xact_id,
                event_id: r.event_id,
            },
            topic: r.topic.into(),
            customer_id: r.customer_id,
            json: r.json.into(),
        })
        .collect())
}

/// Where a stream starts that has seen nothing: the horizon, before every event that is not
/// readable yet.
pub async fn head(conn: &mut PgConnection) -> Result<Position, sqlx::Error> {
    let horizon = sqlx::query_scalar!(
        r#"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS "horizon!""#
    )
    .fetch_one(conn)
    .await?;
    Ok(Position {
        xact_id: horizon,
        event_id: 0,
    })
}

/// The events past `head` that have already committed, as the caller may read them: a stream that
/// opens at `head` does not send them (it opened after they happened).
pub async fn committed_past(
    conn: &mut PgConnection,
    head: Position,
) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT event_id FROM metadata.outbox_events \
         WHERE xact_id >= $1::bigint::text::xid8 ORDER BY xact_id, event_id LIMIT $2",
        head.xact_id,
        SENT_WINDOW as i64,
    )
    .fetch_all(conn)
    .await
}

/// Where a stream resumes after event `event_id` (a `Last-Event-ID`, as every stream has sent
/// them): that event's position. An id the caller cannot read (another customer's, purged, or
/// from before their first event) resumes before the first later event they can read, and one
/// past every such event resumes at the head.
pub async fn resume_after(conn: &mut PgConnection, event_id: i64) -> Result<Position, sqlx::Error> {
    let found = sqlx::query!(
        r#"
        SELECT (SELECT xact_id::text::bigint FROM metadata.outbox_events
                WHERE event_id = $1) AS "at?",
               (SELECT xact_id::text::bigint FROM metadata.outbox_events
                WHERE event_id > $1 ORDER BY xact_id LIMIT 1) AS "later?"
        "#,
        event_id,
    )
    .fetch_one(&mut *conn)
    .await?;
    match (found.at, found.later) {
        (Some(xact_id), _) => Ok(Position { xact_id, event_id }),
        (None, Some(xact_id)) => Ok(Position {
            xact_id,
            event_id: 0,
        }),
        (None, None) => head(conn).await,
    }
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
    /// Replays start after this position.
    replayed_to: Position,
    /// The outbox may hold more past `replayed_to` than was read: read the next batch before
    /// anything live.
    replaying: bool,
    /// When the caller's token expires: the stream ends then (a client reconnects with a fresh
    /// token and `Last-Event-ID`), so a revoked or unlinked caller does not listen on.
    expires: Option<tokio::time::Instant>,
    /// For a customer who came from an identity link: when to check the link is still there
    /// (every link-cache TTL); the stream ends once it is gone.
    link_check: Option<tokio::time::Interval>,
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
        let link_check = caller.linked.then(|| {
            let every = state
                .auth
                .link_ttl()
                .unwrap_or(std::time::Duration::from_secs(60));
            tokio::time::interval_at(tokio::time::Instant::now() + every, every)
        });
        Self {
            expires,
            link_check,
            live: state.events.subscribe(),
            shutdown: state.events.shutdown_signal(),
            state: state.clone(),
            caller,
            audience,
            pending: VecDeque::new(),
            sent: SentIds::default(),
            replayed_to: Position::default(),
            replaying: false,
            _place: place,
        }
    }

    pub fn audience(&self) -> &Audience {
        &self.audience
    }

    pub fn start_after(&mut self, position: Position) {
        self.replayed_to = position;
    }

    /// Events the stream must not send (they committed before it opened).
    pub fn skip(&mut self, event_ids: Vec<i64>) {
        for id in event_ids {
            self.sent.insert(id);
        }
    }

    pub fn queue(&mut self, events: Vec<OutboxEvent>) {
        self.replaying = events.len() >= REPLAY_BATCH as usize;
        for event in events {
            self.replayed_to = self.replayed_to.max(event.position);
            if self.sent.insert(event.event_id()) {
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
            let link_check = &mut self.link_check;
            let link_due = async move {
                match link_check {
                    Some(interval) => {
                        interval.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            let message = tokio::select! {
                m = live.recv() => Some(m),
                // wait_for also sees a shutdown signalled before this stream subscribed.
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
                () = expired => return None,
                () = link_due => None,
            };
            let Some(message) = message else {
                if !self.state.auth.still_linked(&self.caller).await {
                    return None;
                }
                continue;
            };
            match message {
                // The watcher only says that an event became readable: what the stream sends is
                // read from the outbox, in the caller's transaction and under their rights.
                Ok(HubMessage::Event(event)) => {
                    if self.audience.wants(&event) && event.position > self.replayed_to {
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
            position: Position {
                xact_id: 1,
                event_id: 1,
            },
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
