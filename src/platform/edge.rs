//! The HTTP edge in front of the handlers: who is calling (before any body is read), how fast
//! they may call, and how bodies are read.
//!
//! Order on the way in, outermost first: [`authenticate`] checks the bearer token and the
//! caller's rate, then [`buffer_body`] reads the body under a deadline, bounded by its own
//! count of bodies in flight, and only then does the request take one of the global
//! concurrency slots. A client that trickles its body holds a body permit for at most the
//! deadline, never a slot, and never gets that far without a valid token.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::sync::Semaphore;

use crate::platform::auth::{Authenticator, Caller, Role};
use crate::platform::config::RateLimitConfig;
use crate::platform::db::replicas::{ReplicaSet, TOKEN_HEADER};
use crate::platform::error::ApiError;

/// What [`authenticate`] needs: the token checks and the rate limits.
#[derive(Clone)]
pub struct Gatekeeper {
    pub auth: Arc<Authenticator>,
    pub rate_limits: Arc<RateLimits>,
}

/// Authenticates before anything else, and holds each principal to its role's rate. The
/// [`Caller`] travels on as a request extension, so handlers do not verify the token again.
pub async fn authenticate(
    State(state): State<Gatekeeper>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut caller = match state.auth.caller(request.headers()).await {
        Ok(caller) => caller,
        Err(error) => return error.into_response(),
    };
    caller.request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_safe_request_id(id))
        .map(str::to_owned);
    if let Err(retry_after_secs) = state.rate_limits.check(&caller) {
        metrics::counter!("http_rate_limited_total", "role" => caller.role.as_str()).increment(1);
        return ApiError::TooManyRequests { retry_after_secs }.into_response();
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// A request id the audit log may record: ours (a UUID) or a client's of up to 100 letters,
/// digits and `-_.:`.
fn is_safe_request_id(id: &str) -> bool {
    (1..=100).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// Token buckets per principal, one limiter per role (a GCRA from `governor`).
pub struct RateLimits {
    limiters: Vec<(Role, DefaultKeyedRateLimiter<String>)>,
}

impl RateLimits {
    pub fn new(config: &RateLimitConfig) -> Self {
        let limiters = Role::ALL
            .into_iter()
            .map(|role| {
                let rate = match role {
                    Role::Customer => config.customer,
                    Role::Staff => config.staff,
                    Role::Analyst => config.analyst,
                    Role::Etl => config.etl,
                    Role::Admin => config.admin,
                };
                let quota =
                    Quota::per_second(NonZeroU32::new(rate.per_second).unwrap_or(NonZeroU32::MIN))
                        .allow_burst(NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN));
                (role, DefaultKeyedRateLimiter::keyed(quota))
            })
            .collect();
        Self { limiters }
    }

    /// `Err(seconds to wait)` when the caller is over its rate.
    pub fn check(&self, caller: &Caller) -> Result<(), u32> {
        let Some((_, limiter)) = self.limiters.iter().find(|(r, _)| *r == caller.role) else {
            return Ok(());
        };
        limiter.check_key(&caller.principal()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            u32::try_from(wait.as_secs())
                .unwrap_or(u32::MAX)
                .saturating_add(1)
        })
    }

    /// Forgets principals whose buckets are full again (the hourly upkeep), so the maps hold
    /// only recent callers.
    pub fn forget_idle(&self) {
        for (_, limiter) in &self.limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// How bodies are read before a handler runs.
#[derive(Clone)]
pub struct BodyGate {
    permits: Arc<Semaphore>,
    deadline: Duration,
    limit_bytes: usize,
}

impl BodyGate {
    pub fn new(max_buffered: usize, deadline: Duration, limit_bytes: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(max_buffered.max(1))),
            deadline,
            limit_bytes,
        }
    }
}

/// Reads the whole body, at most `limit_bytes`, within the deadline (then 408), while at most
/// so many bodies are read at once (beyond it, 503 with `Retry-After` at once).
pub async fn buffer_body(State(gate): State<BodyGate>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    if body.is_end_stream() {
        return next.run(Request::from_parts(parts, body)).await;
    }
    let Ok(permit) = gate.permits.clone().try_acquire_owned() else {
        metrics::counter!("http_body_gate_full_total").increment(1);
        return ApiError::Unavailable {
            retry_after_secs: 1,
        }
        .into_response();
    };
    let read = axum::body::to_bytes(body, gate.limit_bytes);
    let bytes = match tokio::time::timeout(gate.deadline, read).await {
        Err(_) => {
            let mut response = ApiError::RequestTimeout.into_response();
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
        Ok(Err(_)) => return ApiError::PayloadTooLarge.into_response(),
        Ok(Ok(bytes)) => bytes,
    };
    drop(permit);
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// Gives a write's response its `Consistency-Token` when the service reads from replicas: the
/// primary's WAL insert position read after the handler returned, sealed (`consistency_token`), so after whatever the request
/// committed (the insert position is global: any connection's reading is at or past the commit
/// record, with `synchronous_commit=off` too). Every successful request other than GET and
/// HEAD gets one: imports, job runs and idempotent replays included. A client sends the
/// latest one back, and its reads then see its writes.
pub async fn consistency_token(
    State(replicas): State<Option<Arc<ReplicaSet>>>,
    request: Request,
    next: Next,
) -> Response {
    let writes = !matches!(*request.method(), Method::GET | Method::HEAD);
    let mut response = next.run(request).await;
    if let (true, Some(replicas)) = (writes && response.status().is_success(), replicas) {
        if let Some(lsn) = replicas.insert_position().await {
            if let Ok(value) = header::HeaderValue::from_str(&replicas.token(lsn)) {
                response.headers_mut().insert(TOKEN_HEADER, value);
            }
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::Rate;

    #[test]
    fn rates_parse_with_and_without_a_burst() {
        let rate = |per_second, burst| Rate { per_second, burst };
        assert_eq!("20/40".parse(), Ok(rate(20, 40)));
        assert_eq!("5".parse(), Ok(rate(5, 5)));
        for bad in ["", "0", "x/2", "3/0", "-1"] {
            assert_eq!(bad.parse::<Rate>(), Err(()), "{bad}");
        }
    }

    #[test]
    fn a_principal_over_its_burst_waits_and_others_do_not() {
        let slow = Rate {
            per_second: 1,
            burst: 2,
        };
        let limits = RateLimits::new(&RateLimitConfig {
            customer: slow,
            staff: slow,
            analyst: slow,
            etl: slow,
            admin: slow,
        });
        let caller = |subject: &str| Caller {
            issuer: "local".into(),
            subject: subject.into(),
            role: Role::Staff,
            customer_id: None,
            request_id: None,
            expires_at: None,
            linked: false,
            branch: None,
        };
        assert!(limits.check(&caller("a")).is_ok());
        assert!(limits.check(&caller("a")).is_ok());
        assert!(matches!(limits.check(&caller("a")), Err(wait) if wait >= 1));
        assert!(limits.check(&caller("b")).is_ok());
    }
}
