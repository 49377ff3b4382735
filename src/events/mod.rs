//! Server-Sent Events from the outbox: `GET /v1/events/loans` for staff (every event, or the
//! topics asked for) and `GET /v1/me/events` for a customer (their own loan and payment events).
//!
//! Live events come from the process's LISTEN connection ([`crate::db::listen`]); a client that
//! reconnects with `Last-Event-ID` first gets what it missed from `metadata.outbox_events`, in
//! order ([`feed`]).

mod feed;

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::feed::{latest_event_id, outbox_after, Audience, Feed};
use crate::auth::{CustomerOnly, RequestTx, StaffOnly};
use crate::db::listen::{OutboxEvent, TOPICS};
use crate::error::{responses, ApiError};
use crate::extract::AppQuery;
use crate::state::{AppState, StreamsFull};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream_loan_events))
        .routes(routes!(stream_my_events))
}

/// The event types; each is also the SSE `event:` name. Every `data` is JSON with `event_id`,
/// `changed_at` (RFC 3339) and `actor` (the principal whose request made the change), and:
///
/// - `loan_status_changed`: a loan was applied for or changed status. loan_id, loan_number,
///   customer_id, old_status (null when applied), new_status.
/// - `loan_fee_charged`: a fee or late fee was charged. loan_id, loan_number, customer_id, kind,
///   payment_id, amount, charged_on.
/// - `customer_contact_changed` (staff stream only): a customer's phone, e-mail or address
///   changed. customer_id, changed (the fields), previous (phone_number and email before).
/// - `payment_recorded`: a payment was recorded, in the status it starts in (COMPLETED from
///   staff, PENDING from the app; disbursements too). payment_id, transaction_id,
///   client_reference, loan_id, customer_id, payment_type, amount, channel, old_status (null),
///   new_status, payment_date, reason.
/// - `payment_confirmed`: a PENDING payment was applied (COMPLETED); fields as above.
/// - `payment_failed`: a PENDING payment failed; fields as above, with the reason.
/// - `payment_reversed`: a COMPLETED payment was reversed; fields as above, with the reason.
///
/// A customer's stream carries the loan and payment types about their own loans only.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventType {
    LoanStatusChanged,
    LoanFeeCharged,
    CustomerContactChanged,
    PaymentRecorded,
    PaymentConfirmed,
    PaymentFailed,
    PaymentReversed,
}

/// One Server-Sent Event as it appears on the wire (`id:`, `event:`, `data:` lines).
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct SseEvent {
    /// The outbox event id; send the last one back as `Last-Event-ID`.
    pub id: String,
    /// The event type.
    #[schema(value_type = EventType)]
    pub event: String,
    /// JSON; its fields depend on the event type (see EventType).
    pub data: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventStreamQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaffStreamQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
    /// Comma-separated event types to receive; default all.
    pub topics: Option<String>,
}

fn to_sse(event: &OutboxEvent) -> Event {
    Event::default()
        .id(event.event_id.to_string())
        .event(event.topic.as_ref())
        .data(event.json.as_ref())
}

fn last_event_id(headers: &HeaderMap, query: Option<i64>) -> Result<Option<i64>, ApiError> {
    let header = headers
        .get("last-event-id")
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
                .ok_or_else(|| ApiError::BadRequest("Last-Event-ID must be an event id".into()))
        })
        .transpose()?;
    Ok(header.or(query))
}

/// Starts `feed` after `last` (replaying the first batch in the request's transaction), or
/// after the latest event the caller may read; then streams it.
async fn open<A>(
    mut tx: RequestTx<A>,
    mut feed: Feed,
    last: Option<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    match last {
        Some(last) => {
            feed.start_after(last);
            let batch = outbox_after(&mut tx, feed.audience(), last).await?;
            feed.queue(batch);
        }
        None => feed.start_after(latest_event_id(&mut tx).await?),
    }
    tx.commit().await?;
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(to_sse(&event)), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// Every event as it commits (staff, administrators): loan status changes, fees, contact
/// changes and payments (see EventType), or only the `topics` asked for. Each event's id is its
/// outbox id; reconnect with `Last-Event-ID` to receive, in order, what you missed. A change
/// that rolls back is never sent.
#[utoipa::path(
    get,
    path = "/v1/events/loans",
    tag = "events",
    operation_id = "stream_loan_events",
    security(("bearer" = [])),
    params(
        StaffStreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The id of the last event received")
    ),
    responses(
        (status = 200, description = "An endless text/event-stream of events",
         content_type = "text/event-stream", body = SseEvent),
        responses::Common
    )
)]
async fn stream_loan_events(
    State(state): State<AppState>,
    tx: RequestTx<StaffOnly>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<StaffStreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = last_event_id(&headers, query.last_event_id)?;
    let topics = query
        .topics
        .map(|list| {
            list.split(',')
                .map(|t| {
                    let t = t.trim();
                    if TOPICS.contains(&t) {
                        Ok(t.to_owned())
                    } else {
                        Err(ApiError::BadRequest(format!(
                            "topics: {t:?} is not one of {}",
                            TOPICS.join(", ")
                        )))
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let feed = Feed::subscribe(
        &state,
        tx.caller().clone(),
        Audience::Staff { topics },
        None,
    );
    open(tx, feed, last).await
}

/// The calling customer's own loan and payment events as they commit (customer): loan status
/// changes, fees and payments (see EventType; never another customer's, never contact
/// changes). Each event is read from the outbox in the customer's own transaction, under
/// row-level security. Reconnect with `Last-Event-ID` to receive what you missed. Streams at
/// once are bounded: `MAX_STREAMS_PER_CUSTOMER` for one customer (beyond it, 429) and
/// `MAX_CUSTOMER_STREAMS` for the instance (beyond it, 503), each with Retry-After.
#[utoipa::path(
    get,
    path = "/v1/me/events",
    tag = "events",
    operation_id = "stream_my_events",
    security(("bearer" = [])),
    params(
        EventStreamQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "The id of the last event received")
    ),
    responses(
        (status = 200, description = "An endless text/event-stream of the customer's events",
         content_type = "text/event-stream", body = SseEvent),
        responses::Common
    )
)]
async fn stream_my_events(
    State(state): State<AppState>,
    tx: RequestTx<CustomerOnly>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<EventStreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = last_event_id(&headers, query.last_event_id)?;
    let customer = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let place = state
        .customer_streams
        .take(customer)
        .map_err(|full| match full {
            StreamsFull::Customer => ApiError::TooManyRequests {
                retry_after_secs: 5,
            },
            StreamsFull::Instance => ApiError::Unavailable {
                retry_after_secs: 5,
            },
        })?;
    let feed = Feed::subscribe(
        &state,
        tx.caller().clone(),
        Audience::Customer(customer),
        Some(place),
    );
    open(tx, feed, last).await
}
