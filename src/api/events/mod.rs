//! `/v1/events/…`: every event as it commits, for staff and administrators.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use futures_util::stream::Stream;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::domain::events::feed::{Audience, Feed};
use crate::domain::events::{last_event_id, open, SseEvent};
use crate::platform::auth::{RequestTx, StaffOnly};
use crate::platform::db::outbox_watch::TOPICS;
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;
use crate::platform::routing::Tagged;
use crate::platform::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(stream_loan_events))
        .tagged("events")
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaffStreamQuery {
    /// Same as the `Last-Event-ID` header, for clients that cannot set headers.
    pub last_event_id: Option<i64>,
    /// Comma-separated event types to receive; default all.
    pub topics: Option<String>,
}

/// Every event as it commits (staff, administrators): loan status changes, fees, contact
/// changes and payments (see EventType), or only the `topics` asked for. Each event's id is its
/// outbox id; reconnect with `Last-Event-ID` to receive, in order, what you missed. A change
/// that rolls back is never sent. Streams at once are bounded: `MAX_STREAMS_PER_PRINCIPAL` for
/// one staff or admin principal (beyond it, 429) and `MAX_STAFF_STREAMS` for the instance
/// (beyond it, 503), each with Retry-After.
#[utoipa::path(
    get,
    path = "/v1/events/loans",
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
    let caller = tx.caller();
    let place = state
        .staff_streams
        .take(&format!("{}|{}", caller.issuer, caller.subject))?;
    let feed = Feed::subscribe(
        &state,
        tx.caller().clone(),
        Audience::Staff { topics },
        Some(place),
    );
    open(tx, feed, last).await
}
