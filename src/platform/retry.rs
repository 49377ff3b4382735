//! Re-runs a request whose transaction lost a serialization failure or deadlock.
//!
//! Such a failure rolls back the whole transaction, so the only correct retry is of the whole
//! request. The layer buffers the body (bounded by the body limit), runs the inner service, and
//! while the response carries [`RetryableFailure`] runs it again with the same head and body,
//! after a short jittered pause. The last attempt's response (503 with `Retry-After`) goes out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service, ServiceExt};

use crate::platform::error::{ApiError, RetryableFailure};

#[derive(Debug, Clone, Copy)]
pub struct RetryLayer {
    attempts: u32,
    body_limit: usize,
}

impl RetryLayer {
    pub fn new(attempts: u32, body_limit: usize) -> Self {
        Self {
            attempts: attempts.max(1),
            body_limit,
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            config: *self,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    config: RetryLayer,
}

impl<S> Service<Request> for Retry<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let inner = self.inner.clone();
        let RetryLayer {
            attempts,
            body_limit,
        } = self.config;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match axum::body::to_bytes(body, body_limit).await {
                Ok(bytes) => bytes,
                Err(_) => return Ok(ApiError::PayloadTooLarge.into_response()),
            };
            let mut attempt = 1;
            loop {
                let request = Request::from_parts(parts.clone(), Body::from(Bytes::clone(&body)));
                let response = inner.clone().oneshot(request).await?;
                if attempt >= attempts || response.extensions().get::<RetryableFailure>().is_none()
                {
                    return Ok(response);
                }
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
        })
    }
}

/// 10–20 ms, then 20–40 ms, …: short, and jittered so that two requests that deadlocked each
/// other do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = 10u64 << attempt.min(6);
    let jitter = u64::from(uuid::Uuid::now_v7().as_bytes()[15]) % base;
    Duration::from_millis(base / 2 + jitter / 2)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    use axum::http::StatusCode;
    use tower::service_fn;

    use super::*;

    /// A service that fails transiently `failures` times, then answers 200 with the body it got.
    fn flaky(
        failures: u32,
        calls: Arc<AtomicU32>,
    ) -> Retry<
        impl Service<Request, Response = Response, Error = Infallible, Future = impl Send> + Clone,
    > {
        let inner = service_fn(move |request: Request| {
            let call = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if call <= failures {
                    return Ok::<_, Infallible>(ApiError::Transient.into_response());
                }
                let body = axum::body::to_bytes(request.into_body(), 1024)
                    .await
                    .unwrap_or_default();
                Ok((StatusCode::OK, body).into_response())
            }
        });
        RetryLayer::new(3, 1024).layer(inner)
    }

    #[tokio::test]
    async fn a_transient_failure_is_retried_with_the_same_body() {
        let calls = Arc::new(AtomicU32::new(0));
        let response = flaky(2, calls.clone())
            .oneshot(Request::new(Body::from("payload")))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        assert_eq!(&body[..], b"payload");
    }

    #[tokio::test]
    async fn retries_give_up_with_503_and_retry_after() {
        let calls = Arc::new(AtomicU32::new(0));
        let response = flaky(10, calls.clone())
            .oneshot(Request::new(Body::empty()))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(response.headers().contains_key("retry-after"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_413_before_the_service_runs() {
        let calls = Arc::new(AtomicU32::new(0));
        let response = flaky(0, calls.clone())
            .oneshot(Request::new(Body::from(vec![b'x'; 2048])))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }
}
