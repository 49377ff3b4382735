//! Every failure a client can see, rendered as RFC 9457 `application/problem+json`.
//!
//! Handlers return `Result<_, ApiError>`. `ApiError::into_response` does not write the body itself:
//! it attaches a [`Problem`] to the response and [`crate::app::render_problems`] renders it, so
//! the body can carry the request's path as `instance` and so responses that axum or tower build
//! on their own (unknown route, wrong method, body too large) get the same shape.

use std::borrow::Cow;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// `Content-Type` of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The request field, as it is named in the JSON body or query string.
    pub field: Cow<'static, str>,
    pub message: Cow<'static, str>,
}

impl FieldError {
    pub fn new(field: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The error body of every 4xx and 5xx response.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "https://lakehouse-api.dev/problems/validation",
    "title": "Unprocessable Entity",
    "status": 422,
    "detail": "the request body has invalid fields",
    "instance": "/v1/customers",
    "errors": [{"field": "email", "message": "must be an e-mail address"}]
}))]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The path of the request that failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &str, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://lakehouse-api.dev/problems/{slug}"),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
            errors: Vec::new(),
        }
    }

    /// The problem for an error response that was produced without one (by axum or tower).
    pub fn for_status(status: StatusCode) -> Self {
        let (slug, detail) = match status {
            StatusCode::NOT_FOUND => ("not-found", "no resource at this path"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method-not-allowed",
                "this path does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "the request body is too large"),
            StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => {
                ("timeout", "the request took too long and was abandoned")
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                ("unavailable", "the service is overloaded; retry later")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported-media-type",
                "the request body must be application/json",
            ),
            s if s.is_server_error() => ("internal", "the server failed to answer this request"),
            _ => ("bad-request", "the request could not be understood"),
        };
        Self::new(status, slug, detail)
    }
}

/// Everything a handler can fail with. Each variant has one status; see [`ApiError::status`].
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (bad query string, bad cursor, date out of range).
    BadRequest(String),
    /// 401: no token, or a token that does not verify. The reason is logged, never sent.
    Unauthorized(&'static str),
    /// 403: the caller's role may not do this.
    Forbidden,
    /// 403: this caller may not do this, for the reason given (a maker checking their own
    /// proposal, a limit that does not cover the amount).
    ForbiddenBecause(String),
    /// 404: not found, or not the caller's to see (the two are indistinguishable on purpose).
    NotFound,
    /// 409: a uniqueness conflict or an illegal state transition.
    Conflict {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 412: `If-Match` names a version that is no longer current.
    PreconditionFailed,
    /// 413: the request body is over the configured limit.
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType(String),
    /// 422: well-formed, but the values are unacceptable.
    Unprocessable {
        detail: String,
        errors: Vec<FieldError>,
    },
    /// 428: a conditional request is required (PATCH without `If-Match`).
    PreconditionRequired,
    /// 408: the client took longer than the body-read deadline to send its body.
    RequestTimeout,
    /// 429: the caller is over its rate, or too many imports run at once.
    TooManyRequests { retry_after_secs: u32 },
    /// 503 after retries: serialization failure or deadlock. The retry layer re-runs the request
    /// while it sees this; the client only gets it when retries are exhausted.
    Transient,
    /// 503: the database cannot be reached or the pool is exhausted.
    Unavailable { retry_after_secs: u32 },
    /// 504: a statement or the whole request ran past its timeout.
    Timeout,
    /// 500: a bug. The cause is logged with the request id; the client learns nothing of it.
    Internal(String),
}

/// Marks a response whose request may be re-run from the start (see [`crate::platform::retry`]).
#[derive(Debug, Clone, Copy)]
pub struct RetryableFailure;

impl ApiError {
    pub fn validation(errors: Vec<FieldError>) -> Self {
        Self::Unprocessable {
            detail: "the request has invalid fields".into(),
            errors,
        }
    }

    pub fn invalid_field(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::Conflict {
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Transient | Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn problem(self) -> Problem {
        let status = self.status();
        match self {
            Self::BadRequest(detail) => Problem::new(status, "bad-request", detail),
            Self::Unauthorized(_) => Problem::new(
                status,
                "unauthorized",
                "a valid bearer token is required",
            ),
            Self::Forbidden => Problem::new(status, "forbidden", "your role may not do this"),
            Self::ForbiddenBecause(detail) => Problem::new(status, "forbidden", detail),
            Self::NotFound => Problem::new(status, "not-found", "no such resource"),
            Self::Conflict { detail, errors } => Problem {
                errors,
                ..Problem::new(status, "conflict", detail)
            },
            Self::PreconditionFailed => Problem::new(
                status,
                "stale-version",
                "the resource changed since you read it; fetch it again and retry with the new ETag",
            ),
            Self::PayloadTooLarge => Problem::for_status(status),
            Self::UnsupportedMediaType(detail) => {
                Problem::new(status, "unsupported-media-type", detail)
            }
            Self::Unprocessable { detail, errors } => Problem {
                errors,
                ..Problem::new(status, "validation", detail)
            },
            Self::PreconditionRequired => Problem::new(
                status,
                "precondition-required",
                "send If-Match with the ETag you last read",
            ),
            Self::RequestTimeout => Problem::new(
                status,
                "request-timeout",
                "the request body did not arrive in time",
            ),
            Self::TooManyRequests { .. } => Problem::new(
                status,
                "rate-limited",
                "too many requests; retry after the time Retry-After gives",
            ),
            Self::Transient => Problem::new(
                status,
                "contention",
                "the request conflicted with concurrent changes; retry it",
            ),
            Self::Unavailable { .. } => Problem::new(
                status,
                "unavailable",
                "the database is unavailable; retry later",
            ),
            Self::Timeout => Problem::for_status(status),
            Self::Internal(_) => Problem::for_status(status),
        }
    }
}

impl ApiError {
    /// The complete problem body, byte for byte what `render_problems` writes for a request to
    /// `instance` (for responses that must be stored and replayed).
    pub fn render(self, instance: &str) -> (StatusCode, Vec<u8>) {
        let status = self.status();
        let mut problem = self.problem();
        problem.instance = Some(instance.to_owned());
        (status, problem_body(&problem).1)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            Self::Internal(cause) => tracing::error!(%cause, "internal error"),
            Self::Unauthorized(reason) => tracing::info!(reason, "unauthorized"),
            _ => {}
        }
        let status = self.status();
        let retry_after = match &self {
            Self::Transient => Some(1),
            Self::Unavailable { retry_after_secs } | Self::TooManyRequests { retry_after_secs } => {
                Some(*retry_after_secs)
            }
            _ => None,
        };
        let retryable = matches!(self, Self::Transient);
        let unauthorized = matches!(self, Self::Unauthorized(_));

        let mut response = (status, self.problem()).into_response();
        let headers = response.headers_mut();
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if unauthorized {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if retryable {
            response.extensions_mut().insert(RetryableFailure);
        }
        response
    }
}

impl IntoResponse for Problem {
    /// The problem travels as an extension and is serialised by `render_problems`, which knows
    /// the request path.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = status.into_response();
        response.extensions_mut().insert(self);
        response
    }
}

/// Serialises a problem into a complete response body.
pub fn problem_body(problem: &Problem) -> (HeaderValue, Vec<u8>) {
    let body = serde_json::to_vec(problem).unwrap_or_else(|_| b"{}".to_vec());
    (HeaderValue::from_static(PROBLEM_JSON), body)
}

/// Error responses for the OpenAPI document, one type per status so each path lists exactly the
/// ones it can return.
pub mod responses {
    use utoipa::IntoResponses;

    use super::Problem;

    /// Every authenticated route: bad token, wrong role, malformed request, database trouble.
    #[derive(IntoResponses)]
    pub enum Common {
        #[response(
            status = 400,
            description = "Malformed request: bad path or query parameter, broken JSON",
            content_type = "application/problem+json"
        )]
        BadRequest(Problem),
        #[response(
            status = 401,
            description = "No bearer token, or one that is expired, forged or unusable",
            content_type = "application/problem+json"
        )]
        Unauthorized(Problem),
        #[response(
            status = 403,
            description = "The token's role may not do this",
            content_type = "application/problem+json"
        )]
        Forbidden(Problem),
        #[response(
            status = 408,
            description = "The request body did not arrive before the body-read deadline",
            content_type = "application/problem+json"
        )]
        RequestTimeout(Problem),
        #[response(
            status = 429,
            description = "Over the caller's rate limit",
            content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
        )]
        TooManyRequests(Problem),
        #[response(
            status = 503,
            description = "Database unreachable, pool exhausted, too many bodies in flight, or contention outlasted retries",
            content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait before retrying"))
        )]
        Unavailable(Problem),
        #[response(
            status = 504,
            description = "The request or one of its statements ran out of time",
            content_type = "application/problem+json"
        )]
        Timeout(Problem),
    }

    #[derive(IntoResponses)]
    #[response(
        status = 404,
        description = "No such resource, or not yours to see",
        content_type = "application/problem+json"
    )]
    pub struct NotFound(pub Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 409,
        description = "Conflicts with an existing record or the resource's state",
        content_type = "application/problem+json"
    )]
    pub struct Conflict(pub Problem);

    #[derive(IntoResponses)]
    #[response(
        status = 422,
        description = "Well-formed but unacceptable; `errors` names the fields",
        content_type = "application/problem+json"
    )]
    pub struct Unprocessable(pub Problem);

    /// Routes that take a JSON body.
    #[derive(IntoResponses)]
    pub enum JsonBody {
        #[response(
            status = 413,
            description = "The body is over the size limit",
            content_type = "application/problem+json"
        )]
        TooLarge(Problem),
        #[response(
            status = 415,
            description = "The body is not application/json",
            content_type = "application/problem+json"
        )]
        UnsupportedMediaType(Problem),
    }

    /// Routes that take `If-Match`.
    #[derive(IntoResponses)]
    pub enum Conditional {
        #[response(
            status = 412,
            description = "If-Match does not name the current version",
            content_type = "application/problem+json"
        )]
        PreconditionFailed(Problem),
        #[response(
            status = 428,
            description = "If-Match is required",
            content_type = "application/problem+json"
        )]
        PreconditionRequired(Problem),
    }
}
