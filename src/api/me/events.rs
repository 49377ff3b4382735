//! `GET /v1/me/events`: the calling customer's own loan and payment events.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures_util::stream::Stream;

use crate::domain::events::feed::{Audience, Feed};
use crate::domain::events::{last_event_id, open, EventStreamQuery, SseEvent};
use crate::platform::auth::{CustomerOnly, RequestTx};
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::state::AppState;

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
pub(super) async fn stream_my_events(
    State(state): State<AppState>,
    tx: RequestTx<CustomerOnly>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<EventStreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let last = last_event_id(&headers, query.last_event_id)?;
    let customer = tx.caller().customer_id.ok_or(ApiError::Forbidden)?;
    let place = state.customer_streams.take(&customer.to_string())?;
    let feed = Feed::subscribe(
        &state,
        tx.caller().clone(),
        Audience::Customer(customer),
        Some(place),
    );
    open(tx, feed, last).await
}
