//! `Idempotency-Key` for requests that move money (Stripe semantics).
//!
//! Keys belong to a principal (issuer, subject, role, customer: `app.actor`). The first request with a key claims
//! it in a short transaction of its own; its response, errors included, is stored with the work
//! (in the same transaction when the work commits) and replayed byte for byte to any later
//! request with the same key and body. The same key with another body is 422; while the first
//! is still running, 409. A claim whose request died (no response after a minute) can be taken
//! over. Keys are kept 24 hours.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::auth;
use crate::auth::Caller;
use crate::db::Database;
use crate::error::{ApiError, PROBLEM_JSON};

pub const HEADER: &str = "idempotency-key";

/// A key as sent: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        let value = headers.get(HEADER).ok_or_else(|| {
            ApiError::BadRequest("an Idempotency-Key header is required for this request".into())
        })?;
        let text = value.to_str().unwrap_or("").trim();
        if text.is_empty() || text.len() > 255 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be 1 to 255 visible ASCII characters".into(),
            ));
        }
        Ok(Self(text.to_owned()))
    }
}

/// A fingerprint of the request: method, path and the body's canonical JSON (object keys sorted,
/// no insignificant whitespace), so a retry that re-serialises the same body still matches.
pub fn fingerprint(method: &str, path: &str, body: &serde_json::Value) -> Vec<u8> {
    let mut hash = Sha256::new();
    hash.update(method.as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body.to_string().as_bytes());
    hash.finalize().to_vec()
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: Vec<u8>,
    pub location: Option<String>,
}

impl StoredResponse {
    pub fn into_response(self, replayed: bool) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        let content_type = if status.is_success() {
            HeaderValue::from_static("application/json")
        } else {
            HeaderValue::from_static(PROBLEM_JSON)
        };
        let mut response =
            (status, [(header::CONTENT_TYPE, content_type)], self.body).into_response();
        if let Some(location) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            response.headers_mut().insert(header::LOCATION, location);
        }
        if replayed {
            response
                .headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        response
    }
}

#[derive(sqlx::FromRow)]
struct StoredKey {
    state: String,
    request_hash: Vec<u8>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
    response_location: Option<String>,
}

pub enum Claim {
    /// Ours: do the work.
    Fresh,
    /// Done before: send this again.
    Replay(StoredResponse),
    /// Another request with this key is running.
    InFlight,
    /// Used before with a different request.
    Mismatch,
}

/// How long a claim without a response blocks its key before another request may take it over.
const ABANDONED_AFTER: &str = "60 seconds";

pub async fn claim(
    db: &Database,
    caller: &Caller,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Claim, ApiError> {
    let mut tx = auth::begin_as(&db.pool, caller, false, db.statement_timeout.as_millis()).await?;
    let fresh: Option<bool> = sqlx::query_scalar(&format!(
        "INSERT INTO core.idempotency_keys AS k (db_role, actor, idempotency_key, request_hash) \
         VALUES (current_user, core.current_actor(), $1, $2) \
         ON CONFLICT (db_role, actor, idempotency_key) DO UPDATE \
             SET locked_at = now(), request_hash = EXCLUDED.request_hash \
             WHERE k.state = 'IN_FLIGHT' AND k.locked_at < now() - interval '{ABANDONED_AFTER}' \
         RETURNING true"
    ))
    .bind(&key.0)
    .bind(fingerprint)
    .fetch_optional(&mut *tx)
    .await?;
    let claim = if fresh.is_some() {
        Claim::Fresh
    } else {
        let row: StoredKey = sqlx::query_as(
            "SELECT state, request_hash, response_status, response_body, response_location \
             FROM core.idempotency_keys \
             WHERE db_role = current_user AND actor = core.current_actor() AND idempotency_key = $1",
        )
        .bind(&key.0)
        .fetch_one(&mut *tx)
        .await?;
        let StoredKey {
            state,
            request_hash: hash,
            response_status: status,
            response_body: body,
            response_location: location,
        } = row;
        match (hash == fingerprint, state.as_str(), status) {
            (false, _, _) => Claim::Mismatch,
            (true, "DONE", Some(status)) => Claim::Replay(StoredResponse {
                status: u16::try_from(status)
                    .map_err(|_| ApiError::Internal(format!("stored status {status}")))?,
                body: body.ok_or_else(|| {
                    ApiError::Internal("a stored response without its body".into())
                })?,
                location,
            }),
            _ => Claim::InFlight,
        }
    };
    tx.commit().await?;
    Ok(claim)
}

/// Stores the response for `key` on `conn` (inside the work's transaction, or on its own).
pub async fn record(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE core.idempotency_keys SET state = 'DONE', response_status = $2, response_body = $3, \
         response_location = $4 \
         WHERE db_role = current_user AND actor = core.current_actor() AND idempotency_key = $1",
    )
    .bind(&key.0)
    .bind(i32::from(response.status))
    .bind(&response.body)
    .bind(&response.location)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores an error response after the work rolled back.
pub async fn record_alone(
    db: &Database,
    caller: &Caller,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), ApiError> {
    let mut tx = auth::begin_as(&db.pool, caller, false, db.statement_timeout.as_millis()).await?;
    record(&mut tx, key, response).await?;
    tx.commit().await?;
    Ok(())
}

/// Frees a key whose request failed for a reason worth retrying (database unavailable,
/// contention, timeout), so the client's retry does the work.
pub async fn release(db: &Database, caller: &Caller, key: &IdempotencyKey) {
    let result = async {
        let mut tx =
            auth::begin_as(&db.pool, caller, false, db.statement_timeout.as_millis()).await?;
        sqlx::query(
            "UPDATE core.idempotency_keys SET locked_at = '-infinity' \
             WHERE db_role = current_user AND actor = core.current_actor() \
               AND idempotency_key = $1 AND state = 'IN_FLIGHT'",
        )
        .bind(&key.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, "could not release an idempotency key; it frees itself in a minute");
    }
}

/// Removes keys older than 24 hours (the hourly upkeep).
pub async fn purge(pool: &sqlx::PgPool) -> Result<i64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let removed = sqlx::query_scalar("SELECT core.purge_idempotency_keys()")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(removed)
}
