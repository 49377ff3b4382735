//! The router with its middleware, and the service's life cycle: the top of the crate.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{BoxError, Router};
use tokio::net::TcpListener;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tracing::Span;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::platform::auth::{Authenticator, LINK_CODE_HEADER};
use crate::platform::config::{HttpConfig, ServeConfig};
use crate::platform::db::consistency_token::TokenSeal;
use crate::platform::db::replicas::TOKEN_HEADER;
use crate::platform::edge::{self, BodyGate, Gatekeeper};
use crate::platform::error::{problem_body, ApiError, Problem, PROBLEM_JSON};
use crate::platform::pii::PiiCipher;
use crate::platform::server::{self, ConnectionLimits};
use crate::platform::state::AppState;
use crate::platform::{db, retry};
use crate::{api, openapi};

/// Limits the HTTP layer enforces.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
    /// For job routes (metrics, risk, imports).
    pub job_timeout: Duration,
    /// Requests served at once; beyond it, 503 with Retry-After at once rather than a queue.
    pub max_concurrent_requests: usize,
    /// A body must arrive within this (408), outside the concurrency limit.
    pub body_read_timeout: Duration,
    /// Bodies read at once; beyond it, 503 with Retry-After.
    pub max_buffered_bodies: usize,
    /// Browser origins allowed to call the API.
    pub cors_allowed_origins: Vec<String>,
}

impl HttpLimits {
    pub fn from_config(http: &HttpConfig) -> Self {
        Self {
            body_limit_bytes: http.body_limit_bytes,
            request_timeout: http.request_timeout,
            job_timeout: http.job_timeout,
            max_concurrent_requests: http.max_concurrent_requests,
            body_read_timeout: http.body_read_timeout,
            max_buffered_bodies: http.max_buffered_bodies,
            cors_allowed_origins: http.cors_allowed_origins.clone(),
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The API's routes and their documentation, without middleware or state.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::base()).merge(api::routes())
}

/// Routes that run batch jobs or stream uploads (see [`api::job_routes`]).
pub fn job_routes() -> OpenApiRouter<AppState> {
    api::job_routes().merge(api::upload_routes())
}

/// The OpenAPI document for every route; what `/openapi.json` serves and `openapi/openapi.json`
/// holds.
pub fn openapi_document() -> OpenApi {
    let mut spec = api_routes().split_for_parts().1;
    spec.merge(job_routes().split_for_parts().1);
    spec.merge(api::health_routes().split_for_parts().1);
    spec
}

/// The complete application: routes, Swagger UI, and the middleware stack.
///
/// Authenticated routes pass, outermost first: the token and the caller's rate
/// ([`edge::authenticate`], before any body is read), the body read under its deadline and its
/// own bound ([`edge::buffer_body`]; imports stream theirs under the import bound instead),
/// then a global concurrency slot, the timeout, and the retry of a lost serialization.
pub fn router(state: AppState, limits: HttpLimits) -> Router {
    // Installed before anything can count: database errors are counted wherever they happen.
    crate::platform::telemetry::metrics_recorder();
    let (api, _) = api_routes().split_for_parts();
    let (runs, _) = api::job_routes().split_for_parts();
    let (uploads, _) = api::upload_routes().split_for_parts();
    // Health probes stay outside the concurrency limit: an overloaded instance is alive, and
    // saying so is cheap.
    let (ops, _) = api::health_routes().split_for_parts();
    // A spec that does not serialise is a bug: /openapi.json says so (500) rather than serve
    // an empty document.
    let spec_json: Result<Arc<str>, Arc<str>> = openapi::to_json(&openapi_document())
        .map(Into::into)
        .map_err(|e| e.to_string().into());

    // Every write's Consistency-Token (only when replicas are configured).
    let replicas = state.db.replicas.clone();
    let token = || middleware::from_fn_with_state(replicas.clone(), edge::consistency_token);
    let api = api
        .layer(retry::RetryLayer::new(3, limits.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            limits.request_timeout,
        ))
        .layer(token());
    let job_timeout =
        || TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, limits.job_timeout);
    let runs = runs.layer(job_timeout()).layer(token());
    let uploads = uploads.layer(job_timeout()).layer(token());
    let bodies = BodyGate::new(
        limits.max_buffered_bodies,
        limits.body_read_timeout,
        limits.body_limit_bytes,
    );
    let overload = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(|_: BoxError| async {
            ApiError::Unavailable {
                retry_after_secs: 1,
            }
        }))
        .layer(LoadShedLayer::new())
        // Global: Router::layer clones the layer into every route, and the limit is for all.
        .layer(GlobalConcurrencyLimitLayer::new(
            limits.max_concurrent_requests.max(1),
        ));
    api.merge(runs)
        .layer(overload)
        .layer(middleware::from_fn_with_state(bodies, edge::buffer_body))
        .merge(uploads)
        .layer(middleware::from_fn_with_state(
            Gatekeeper {
                auth: state.auth.clone(),
                rate_limits: state.rate_limits.clone(),
            },
            edge::authenticate,
        ))
        .merge(ops)
        .route(
            "/openapi.json",
            axum::routing::get(move || serve_spec(spec_json.clone())),
        )
        .merge(
            SwaggerUi::new("/docs").config(
                utoipa_swagger_ui::Config::new(["/openapi.json"]).persist_authorization(true),
            ),
        )
        .fallback(|| async { ApiError::NotFound })
        .route_layer(middleware::from_fn(
            crate::platform::telemetry::http_metrics::track,
        ))
        .with_state(state)
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal("handler panicked".into()).into_response()
        }))
        .layer(middleware::from_fn(render_problems))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_response(on_response)
                .on_request(())
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID.clone(),
            MakeRequestUuidV7,
        ))
        // Outermost: a preflight carries no token and is answered here, before authentication;
        // responses of 1 KiB or more (lists, statements) are gzipped for clients that ask, never
        // an event stream.
        .layer(CompressionLayer::new().gzip(true).compress_when(
            SizeAbove::new(1024).and(NotForContentType::const_new("text/event-stream")),
        ))
        .layer(cors(&limits.cors_allowed_origins))
}

/// CORS for the configured origins: the methods and headers the API uses, and the response
/// headers a branch tool reads. No origin configured: no CORS headers at all.
fn cors(origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| o.parse().ok()).collect();
    if origins.is_empty() {
        return CorsLayer::new();
    }
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_MATCH,
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static(TOKEN_HEADER),
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static(LINK_CODE_HEADER),
            X_REQUEST_ID.clone(),
        ])
        .expose_headers([
            header::ETAG,
            header::LOCATION,
            header::RETRY_AFTER,
            HeaderName::from_static(TOKEN_HEADER),
            X_REQUEST_ID.clone(),
        ])
        .max_age(Duration::from_secs(600))
}

/// `/metrics`, for the metrics listener only (never the public one).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            axum::routing::get(crate::platform::telemetry::http_metrics::render),
        )
        .with_state(state)
}

async fn serve_spec(json: Result<Arc<str>, Arc<str>>) -> Response {
    match json {
        Ok(json) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            json.to_string(),
        )
            .into_response(),
        Err(cause) => ApiError::Internal(format!("the OpenAPI document: {cause}")).into_response(),
    }
}

/// Request ids are UUIDv7 unless the client sent one.
#[derive(Clone, Copy)]
struct MakeRequestUuidV7;

impl MakeRequestId for MakeRequestUuidV7 {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// One span per request: method, route template (never the raw path, which holds ids, nor the
/// query, which can hold personal data), request id.
fn make_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str)
        .unwrap_or("unmatched");
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %request.method(), route, request_id)
}

fn on_response(response: &Response, latency: Duration, _: &Span) {
    tracing::info!(
        status = response.status().as_u16(),
        latency_ms = latency.as_secs_f64() * 1000.0,
        "response"
    );
}

/// Gives every error response a problem+json body: renders the [`Problem`] a handler attached,
/// with the request path as `instance`, and replaces the empty bodies axum and tower produce
/// for unknown routes, wrong methods, oversized bodies and timeouts.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let path = request.uri().path().to_owned();
    let mut response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let attached = response.extensions_mut().remove::<Problem>();
    let already_rendered = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|ct| ct == PROBLEM_JSON);
    if attached.is_none() && already_rendered {
        return response;
    }
    let mut problem = attached.unwrap_or_else(|| Problem::for_status(status));
    problem.instance = Some(path);
    let (content_type, body) = problem_body(&problem);
    let (mut parts, _) = response.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, content_type);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}

/// Builds the state and serves until SIGTERM or SIGINT, then lets in-flight requests finish
/// within the shutdown deadline. Metrics are served on their own listener.
pub async fn serve(config: ServeConfig) -> crate::CliResult {
    let pool = db::connect_pool(&config.pool);
    let cipher = PiiCipher::new(&config.pii);
    check_pii_keys(&pool, &cipher).await?;
    let mut state = AppState::new(
        pool.clone(),
        Authenticator::new(&config.tokens)?,
        cipher,
        config.pool.statement_timeout,
        &config.http,
    );
    if let Some(listen) = config.pool.listen.clone() {
        state = state.with_listen_connection(listen);
    }
    if !config.pool.replicas.is_empty() {
        tracing::info!(
            replicas = config.pool.replicas.len(),
            "reads may run on replicas"
        );
        let seal = match config
            .pool
            .consistency_token_key
            .as_ref()
            .and_then(|key| <[u8; 32]>::try_from(key.expose()).ok())
        {
            Some(key) => TokenSeal::new(&key),
            // The look-up hash key, which (unlike the encryption key) is never rotated.
            None => TokenSeal::derived_from(config.pii.hash.expose()),
        };
        state = state.with_replicas(db::replicas::ReplicaSet::new(
            pool.clone(),
            config.pool.replicas.clone(),
            config.pool.replica_policy,
            config.pool.max_connections,
            seal,
        ));
    }
    // Taken once the LISTEN connection is chosen: the hub the streams use is the one to stop.
    let events = state.events.clone();
    let connections = ConnectionLimits {
        header_read_timeout: config.http.header_read_timeout,
        shutdown_timeout: config.http.shutdown_timeout,
    };
    let key_refresh = state.auth.start_key_refresh();
    let maintenance = tokio::spawn(crate::platform::maintenance::run(state.rate_limits.clone()));
    let scheduler = (!config.http.scheduler_interval.is_zero()).then(|| {
        let session = crate::domain::jobs::Session::Caller {
            pool: pool.clone(),
            caller: crate::platform::auth::Caller::system("scheduler"),
            statement_timeout_ms: config.http.job_timeout.as_millis(),
        };
        let schedule = crate::domain::jobs::scheduler::Schedule {
            period: config.http.scheduler_interval,
            retention: config.http.retention,
            servicing_workers: config.http.servicing_workers,
            lake_after_close: config
                .http
                .lake_export_after_close
                .then(|| config.http.lake_catalog.clone()),
        };
        tokio::spawn(crate::domain::jobs::scheduler::run(
            pool.clone(),
            session,
            schedule,
        ))
    });
    let metrics_listener = TcpListener::bind(config.http.metrics_addr).await?;
    tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
    let metrics = tokio::spawn(server::serve(
        metrics_listener,
        metrics_router(state.clone()),
        connections,
        std::future::pending(),
    ));
    let listener = TcpListener::bind(config.http.listen_addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let router = router(state, HttpLimits::from_config(&config.http));
    server::serve(listener, router, connections, async move {
        shutdown_signal().await;
        // Event streams never end by themselves; end them so in-flight requests can finish.
        events.shutdown();
    })
    .await;
    metrics.abort();
    maintenance.abort();
    if let Some(refresh) = key_refresh {
        refresh.abort();
    }
    if let Some(scheduler) = scheduler {
        scheduler.abort();
    }
    // Connections still held by requests cut off at the deadline are not waited for.
    let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
    tracing::info!("stopped");
    Ok(())
}

/// Refuses to serve with a PII key that is not the one this database knows (see
/// `pii::verify_keys`). Waits for the database meanwhile: a key cannot be checked without it.
async fn check_pii_keys(pool: &sqlx::PgPool, cipher: &PiiCipher) -> crate::CliResult {
    loop {
        let checked = match pool.acquire().await {
            Ok(mut conn) => crate::platform::pii::verify_keys(&mut conn, cipher).await,
            Err(e) => Err(crate::platform::pii::KeyCheckError::Database(e)),
        };
        match checked {
            Ok(()) => return Ok(()),
            Err(crate::platform::pii::KeyCheckError::Database(error)) => {
                tracing::warn!(%error, "cannot check the PII keys yet; retrying in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(wrong) => return Err(wrong.into()),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Applies the migrations as the owner (`DATABASE_URL`), sets the service login's password and
/// the business's settings from the environment: `lakehouse-api migrate`, and `dev`.
pub async fn migrate(src: &dyn crate::platform::config::Source) -> crate::CliResult {
    let owner = crate::platform::config::OwnerDb::from_source(src)?;
    let login = crate::platform::config::AppDbLogin::from_source(src)?;
    let trino = src
        .get("TRINO_DB_PASSWORD")
        .map(|p| crate::platform::config::Secret::new(p.into_bytes()));
    crate::platform::db::migrate_with_logins(&owner.connect, Some(&login.password), trino.as_ref())
        .await?;
    if let Some(zone) = src.get("BUSINESS_TIMEZONE") {
        crate::platform::db::set_business_timezone(&owner.connect, &zone).await?;
    }
    if let Some(code) = src.get("PHONE_COUNTRY_CODE") {
        crate::platform::db::set_phone_country_code(&owner.connect, &code).await?;
    }
    eprintln!("migrations applied");
    Ok(())
}
