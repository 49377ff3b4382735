//! Server-Sent Events from the outbox, as `GET /v1/events/loans` streams them to staff (every
//! event, or the topics asked for) and `GET /v1/me/events` to a customer (their own loan and
//! payment events).
//!
//! Live events come from the process's outbox watcher ([`crate::platform::db::outbox_watch`]); a client that
//! reconnects with `Last-Event-ID` first gets what it missed from `metadata.outbox_events`, in
//! order ([`feed`]).

pub mod feed;

use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use self::feed::{committed_past, head, outbox_after, resume_after, Feed};
use crate::platform::auth::RequestTx;
use crate::platform::db::outbox_watch::OutboxEvent;
use crate::platform::error::ApiError;

/// The event types; each is also the SSE `event:` name. Every `data` is JSON with `event_id`,
/// `changed_at` (RFC 3339) and `actor` (the principal whose request made the change), and:
///
/// - `loan_status_changed`: a loan was applied for or changed status. loan_id, loan_number,
///   customer_id, old_status (null when applied), new_status.
/// - `loan_imported` (staff stream only): a loan granted elsewhere was imported with its history
///   (`POST /v1/imports/loans`), one event per loan, none for its historical payments.
///   loan_id, loan_number, customer_id, source_system, source_reference, product_code,
///   loan_amount, disbursement_date, status, and its principal, interest, fees and penalties
///   outstanding.
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
/// - `customer_identity_linked`, `customer_identity_unlinked`: a login was linked to a customer
///   (after it proved the link) or unlinked; addressed to the customer's stored contact
///   (`notify.email`, `notify.phone_number`), for a messaging service to tell them.
///
/// A customer's stream carries the loan and payment types about their own loans only.
#[derive(Debug, ToSchema)]
#[schema(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum EventType {
    LoanStatusChanged,
    LoanImported,
    LoanFeeCharged,
    CustomerContactChanged,
    PaymentRecorded,
    PaymentConfirmed,
    PaymentFailed,
    PaymentReversed,
    CustomerIdentityLinked,
    CustomerIdentityUnlinked,
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

fn to_sse(event: &OutboxEvent) -> Event {
    Event::default()
        .id(event.event_id().to_string())
        .event(event.topic.as_ref())
        .data(event.json.as_ref())
}

pub fn last_event_id(headers: &HeaderMap, query: Option<i64>) -> Result<Option<i64>, ApiError> {
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

/// Starts `feed` after event `last` (replaying the first batch in the request's transaction), or
/// at the head; then streams it.
pub async fn open<A>(
    mut tx: RequestTx<A>,
    mut feed: Feed,
    last: Option<i64>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    match last {
        Some(last) => {
            let position = resume_after(&mut tx, last).await?;
            feed.start_after(position);
            let batch = outbox_after(&mut tx, feed.audience(), position).await?;
            feed.queue(batch);
        }
        None => {
            // From now on: the head, less what has already committed past it (a transaction
            // older than the horizon may still commit an event before those).
            let head = head(&mut tx).await?;
            feed.start_after(head);
            feed.skip(committed_past(&mut tx, head).await?);
        }
    }
    tx.commit().await?;
    let events = stream::unfold(feed, |mut feed| async move {
        let event = feed.next().await?;
        Some((Ok(to_sse(&event)), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
