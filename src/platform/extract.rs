//! Extractors whose rejections are our [`ApiError`]s, so malformed input gets problem+json.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::platform::error::{ApiError, FieldError};

/// A JSON body: 415 without `Content-Type: application/json`, 400 for broken JSON, 422 naming
/// the field for JSON of the wrong shape, 413 past the body limit.
#[derive(Debug)]
pub struct AppJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AppJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let value = JsonValue::from_request(request, state).await?.0;
        from_json_value(value).map(AppJson)
    }
}

/// A JSON body as an untyped value (for handlers that fingerprint it before reading it).
#[derive(Debug)]
pub struct JsonValue(pub serde_json::Value);

impl<S: Send + Sync> FromRequest<S> for JsonValue {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(request.headers()) {
            return Err(not_json());
        }
        let bytes = read_body(request, state).await?;
        parse_json(&bytes).map(JsonValue)
    }
}

/// serde's messages quote the value they refused (`invalid type: integer `123456789``): an ID
/// number sent as a number would come back in the error, and be stored with an import's
/// report. The quoted value goes; the field and what was expected stay.
fn redact_values(message: &str) -> String {
    if !["invalid type", "invalid value", "invalid length"]
        .iter()
        .any(|p| message.starts_with(p))
    {
        return message.to_owned();
    }
    let (refused, expected) = message.split_once(", expected").unwrap_or((message, ""));
    let kind = refused
        .split(['`', '"'])
        .next()
        .unwrap_or(refused)
        .trim_end();
    if expected.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}, expected{expected}")
    }
}

/// An optional JSON body: an empty one (or only whitespace) is `None`, anything else is read
/// as [`AppJson`] reads it.
#[derive(Debug)]
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for MaybeJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(request.headers());
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(None));
        }
        if !json {
            return Err(not_json());
        }
        from_json_value(parse_json(&bytes)?).map(|v| Self(Some(v)))
    }
}

/// The whole body, within the body limit (413 beyond it).
async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })
}

fn parse_json(bytes: &[u8]) -> Result<serde_json::Value, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn not_json() -> ApiError {
    ApiError::UnsupportedMediaType(
        "send the body as JSON with Content-Type: application/json".into(),
    )
}

/// `application/json`, or any `application/…+json`, with or without parameters.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// Reads `value` as a `T`; a value of the wrong shape is 422 naming the field that is wrong
/// (`amount`, `collateral_info.value`), an unknown one, or a missing one.
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = redact_values(&error.inner().to_string());
        let named = ["unknown field `", "missing field `"]
            .iter()
            .find_map(|prefix| message.strip_prefix(prefix))
            .and_then(|rest| rest.split('`').next());
        // An unknown field is already the path's last segment; a missing one is not.
        let field = match (named, path.as_str()) {
            (Some(name), ".") => name.to_owned(),
            (Some(name), path) if path == name || path.ends_with(&format!(".{name}")) => {
                path.to_owned()
            }
            (Some(name), parent) => format!("{parent}.{name}"),
            (None, ".") => "body".to_owned(),
            (None, path) => path.to_owned(),
        };
        ApiError::Unprocessable {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    })
}

/// Path parameters: 400 when one does not parse (a malformed id, say), or holds a NUL.
#[derive(Debug)]
pub struct AppPath<T>(pub T);

/// Query parameters: 400 when one does not parse, or holds a NUL.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

/// A percent-encoded NUL: no text column can hold one (PostgreSQL refuses it with a data
/// exception), so it is a malformed request, refused before it reaches a statement.
fn has_nul(raw: &str) -> bool {
    raw.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

impl<T, S> FromRequestParts<S> for AppPath<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if has_nul(parts.uri.path()) {
            return Err(ApiError::BadRequest(
                "path parameters may not contain NUL".into(),
            ));
        }
        let axum::extract::Path(value) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl<T, S> FromRequestParts<S> for AppQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if has_nul(parts.uri.query().unwrap_or_default()) {
            return Err(ApiError::BadRequest(
                "query parameters may not contain NUL".into(),
            ));
        }
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Self(value))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// Tells a field sent as `null` (`Some(None)`) from a field not sent (`None`).
pub fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        value: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        id_number: String,
        inner: Option<Inner>,
    }

    fn field_and_message(value: serde_json::Value) -> (String, String) {
        match from_json_value::<Outer>(value) {
            Err(ApiError::Unprocessable { errors, detail }) => (
                errors[0].field.to_string(),
                format!("{} {detail}", errors[0].message),
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_wrong_value_names_its_field_without_repeating_it() {
        let (field, message) =
            field_and_message(serde_json::json!({"id_number": 123456789012_u64}));
        assert_eq!(field, "id_number");
        assert!(!message.contains("123456789012"), "{message}");
        let (field, message) =
            field_and_message(serde_json::json!({"id_number": ["079123456789"]}));
        assert_eq!(field, "id_number");
        assert!(!message.contains("0791"), "{message}");
        let (field, _) =
            field_and_message(serde_json::json!({"id_number": "x", "inner": {"value": 5}}));
        assert_eq!(field, "inner.value");
    }

    #[test]
    fn unknown_and_missing_fields_are_named() {
        let (field, _) = field_and_message(serde_json::json!({"id_number": "x", "secret": 1}));
        assert_eq!(field, "secret");
        let (field, _) = field_and_message(serde_json::json!({}));
        assert_eq!(field, "id_number");
        let (field, _) = field_and_message(serde_json::json!({"id_number": "x", "inner": {}}));
        assert_eq!(field, "inner.value");
    }
}
