//! `GET /v1/events/loans`: loan status changes as Server-Sent Events, for staff.
//!
//! Live events come from the process's LISTEN connection ([`hub`]); a client that reconnects
//! with `Last-Event-ID` first gets what it missed from `metadata.outbox_events`, in order.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use sqlx::PgConnection;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{self, RequestTx};
use crate::auth::{Caller, StaffOnly};
use crate::db::listen::{HubMessage, LoanEvent, CHANNEL};
use crate::error::{responses, ApiError};
use crate::extract::AppQuery;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream_loan_events))
}

/// One Server-Sent Event as it appears on the wire (`id:`, `event:`, `data:` lines).
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct SseEvent {
    /// The outbox event id; send the last one back as `Last-Event-ID`.
    pub id: String,
    /// Always `loan_status_changed`.
    pub event: String,
    /// JSON: loan_id, loan_number, customer_id, old_status, new_status, changed_at, actor, event_id.
    pub data: String,
}

/// Outbox rows replayed per query; a stream holds at most one batch in memory.
const REPLAY_BATCH: i64 = 1000;

/// How many of the latest sent ids a stream remembers to skip an event both replayed and
/// received live. A live event waits at most the hub's channel capacity (1,024) behind the
/// replay that also finds it, so four times that is ample, and memory stays bounded on a stream
/// that runs for days.
const SENT_WINDOW: usize = 4096;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventStreamQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
}

/// Events with an id above `after`, oldest first.
async fn outbox_after(conn: &mut PgConnection, after: i64) -> Result<Vec<LoanEvent>, sqlx::Error> {
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT event_id, (payload || jsonb_build_object('event_id', event_id))::text \
         FROM metadata.outbox_events WHERE topic = $1 AND event_id > $2 \
         ORDER BY event_id LIMIT $3",
    )
    .bind(CHANNEL)
    .bind(after)
    .bind(REPLAY_BATCH)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(event_id, json)| LoanEvent {
            event_id,
            json: json.into(),
        })
        .collect())
}

async fn latest_event_id(conn: &mut PgConnection) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(max(event_id), 0) FROM metadata.outbox_events WHERE topic = $1",
    )
    .bind(CHANNEL)
    .fetch_one(conn)
    .await
}

/// The state of one subscriber's stream.
struct Feed {
    state: AppState,
    caller: Caller,
    live: broadcast::Receiver<HubMessage>,
    shutdown: watch::Receiver<bool>,
    pending: VecDeque<LoanEvent>,
    sent: SentIds,
    /// Replays start after this id.
    replayed_to: i64,
    /// The outbox may hold more past `replayed_to` than was read: read the next batch before
    /// anything live.
    replaying: bool,
}

impl Feed {
    fn queue(&mut self, events: Vec<LoanEvent>) {
        self.replaying = events.len() >= REPLAY_BATCH as usize;
        for event in events {
            self.replayed_to = self.replayed_to.max(event.event_id);
            if self.sent.insert(event.event_id) {
                self.pending.push_back(event);
            }
        }
    }

    /// Reads the next batch of the outbox past what was replayed; a failure is logged and
    /// retried at the next resync rather than ending the stream.
    async fn catch_up(&mut self) {
        let timeout = self.state.db.statement_timeout.as_millis();
        let result = async {
            let mut tx = auth::begin_as(&self.state.db.pool, &self.caller, true, timeout).await?;
            let batch = outbox_after(&mut tx, self.replayed_to).await?;
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

    async fn next(&mut self) -> Option<LoanEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.replaying {
                self.catch_up().await;
                continue;
            }
            let (live, shutdown) = (&mut self.live, &mut self.shutdown);
            let message = tokio::select! {
                m = live.recv() => m,
                // wait_for also sees a shutdown signalled before this stream subscribed.
                _ = shutdown.wait_for(|stopping| *stopping) => return None,
            };
            match message {
                Ok(HubMessage::Event(event)) => {
                    if self.sent.insert(event.event_id) {
                        return Some(event);
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

fn to_sse(event: &LoanEvent) -> Event {
    Event::default()
        .id(event.event_id.to_string())
        .event(CHANNEL)
        .data(event.json.as_ref())
}

/// Loan status changes as they commit (staff). Each event's id is its outbox id; reconnect
/// with `Last-Event-ID` to receive, in order, what you missed. A change that rolls back is never
/// sent.
#[utoipa::path(
    get,
    path = "/v1/events/loans",
    tag = "events",
    operation_id = "stream_loan_events",
    security(("bearer" = [])),
    params(
        EventStreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The id of the last event received")
    ),
    responses(
        (status = 200, description = "An endless text/event-stream of `loan_status_changed` events",
         content_type = "text/event-stream", body = SseEvent),
        responses::Common
    )
)]
async fn stream_loan_events(
    State(state): State<AppState>,
    mut tx: RequestTx<StaffOnly>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<EventStreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event id".into()))
        })
        .transpose()?;
    // Subscribe before reading the outbox, so nothing falls between the two.
    let live = state.events.subscribe();
    let shutdown = state.events.shutdown_signal();
    let mut feed = Feed {
        caller: tx.caller().clone(),
        live,
        shutdown,
        pending: VecDeque::new(),
        sent: SentIds::default(),
        replayed_to: 0,
        replaying: false,
        state: state.clone(),
    };
    match header.or(query.last_event_id) {
        Some(last) => {
            // The first batch in this transaction; the rest as the client reads them.
            feed.replayed_to = last;
            let batch = outbox_after(&mut tx, last).await?;
            feed.queue(batch);
        }
        None => feed.replayed_to = latest_event_id(&mut tx).await?,
    }
    tx.commit().await?;
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(to_sse(&event)), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
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
}
