//! Optimistic concurrency: `ETag` out, `If-Match` in. Versions are the row's `version` column.

use axum::http::{header, HeaderMap, HeaderValue};

use crate::platform::error::ApiError;

/// The `ETag` of a row at `version`: the number in quotes.
pub fn etag(version: i32) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The version an `If-Match` header names: `None` for `*` (any version).
pub fn expected_version(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    let value = headers
        .get(header::IF_MATCH)
        .ok_or(ApiError::PreconditionRequired)?;
    let text = value
        .to_str()
        .map_err(|_| ApiError::PreconditionFailed)?
        .trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix("W/")
        .unwrap_or(text)
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| ApiError::PreconditionFailed)
}
