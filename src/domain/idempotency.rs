//! `Idempotency-Key` for requests that move money (Stripe semantics), as two calls around the
//! work: [`try_processing`] before it (replay, 409, 422 or go ahead) and [`save_response`] after
//! it, in the same transaction.
//!
//! Keys belong to a principal (issuer, subject, role, customer: `app.actor`). The first request
//! with a key claims it inside its own transaction, and its response, business errors included
//! (the work rolled back to a savepoint), commits with it; it is replayed byte for byte to any
//! later request with the same key and body. The same key with another body is 422; a request
//! that finds the first still running waits for it a little, then gets 409. A request that
//! fails with a 5xx, a timeout or a lost connection leaves no key. Keys are kept 24 hours.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use serde::Serialize;

use crate::platform::error::{ApiError, PROBLEM_JSON};

/// The caller's key `$1`: the predicate of every statement on a claimed key (written out in each,
/// as `query!` takes literal SQL; a test reads its plan). The primary key
/// leads with the actor and the key (migration 0014), so this is one index probe:
/// `db_role = current_user` compares text with a `name` and bounds no index scan.
pub const THIS_KEY: &str =
    "db_role = current_user AND actor = core.current_actor() AND idempotency_key = $1";

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
struct StoredResponse {
    status: u16,
    body: Vec<u8>,
    location: Option<String>,
}

impl StoredResponse {
    fn into_response(self, replayed: bool) -> Response {
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

struct StoredKey {
    state: String,
    request_hash: Vec<u8>,
    response_status: Option<i32>,
    response_body: Option<Vec<u8>>,
    response_location: Option<String>,
}

enum Claim {
    /// Ours: do the work.
    Fresh,
    /// Done before: send this again.
    Replay(StoredResponse),
    /// Another request with this key is running.
    InFlight,
    /// Used before with a different request.
    Mismatch,
}

/// How long a request waits for another with the same key to finish before it is told 409: the
/// lock timeout of the transaction the claim is made in (`RequestTx::begin_bounded`).
pub const WAIT_FOR_FIRST: std::time::Duration = std::time::Duration::from_secs(3);

/// Claims `key` inside the work's own transaction, on `conn`, before the work starts; the
/// transaction was begun with [`WAIT_FOR_FIRST`] as its lock timeout.
///
/// The key's row is inserted uncommitted, so it holds the key until the transaction ends: a
/// concurrent request with the same key waits on it (at most three seconds, then
/// [`Claim::InFlight`]) and then sees the committed response, or claims the key itself if the
/// first rolled back. A key is therefore only ever committed together with its response: a
/// 5xx, a timeout or a lost connection rolls the claim back and leaves no key behind.
async fn claim(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Claim, ApiError> {
    // A committed IN_FLIGHT row comes from before claims lived in the work's transaction; it
    // has no response and no work behind it, so it is taken over.
    let inserted = sqlx::query_scalar!(
        r#"
        INSERT INTO core.idempotency_keys AS k (db_role, actor, idempotency_key, request_hash)
        VALUES (current_user, core.current_actor(), $1, $2)
        ON CONFLICT (db_role, actor, idempotency_key) DO UPDATE
            SET locked_at = now(), request_hash = EXCLUDED.request_hash
            WHERE k.state = 'IN_FLIGHT'
        RETURNING true AS "claimed!"
        "#,
        key.0,
        fingerprint,
    )
    .fetch_optional(&mut *conn)
    .await;
    let fresh = match inserted {
        Ok(fresh) => fresh,
        // lock_not_available: the first request with this key is still running.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55P03") => {
            return Ok(Claim::InFlight)
        }
        Err(e) => return Err(e.into()),
    };
    if fresh.is_some() {
        // The work may be undone to this point (its lock waits keep the same bound: one that
        // runs out is a 5xx, and the claim goes with it).
        sqlx::query!(r#"SAVEPOINT idempotent_work"#)
            .execute(&mut *conn)
            .await?;
        return Ok(Claim::Fresh);
    }
    // The predicate is THIS_KEY's.
    let row = sqlx::query_as!(
        StoredKey,
        r#"
        SELECT state, request_hash, response_status, response_body, response_location
        FROM core.idempotency_keys
        WHERE db_role = current_user AND actor = core.current_actor() AND idempotency_key = $1
        "#,
        key.0,
    )
    .fetch_one(&mut *conn)
    .await?;
    let StoredKey {
        state,
        request_hash: hash,
        response_status: status,
        response_body: body,
        response_location: location,
    } = row;
    Ok(match (hash == fingerprint, state.as_str(), status) {
        (false, _, _) => Claim::Mismatch,
        (true, "DONE", Some(status)) => Claim::Replay(StoredResponse {
            status: u16::try_from(status)
                .map_err(|_| ApiError::Internal(format!("stored status {status}")))?,
            body: body
                .ok_or_else(|| ApiError::Internal("a stored response without its body".into()))?,
            location,
        }),
        _ => Claim::InFlight,
    })
}

/// Undoes the work of a [`Claim::Fresh`] request that ended in a business error (4xx), keeping
/// the claim, so that the error can be stored as the key's response.
async fn undo_work(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(r#"ROLLBACK TO SAVEPOINT idempotent_work"#)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores the response for `key` in the work's transaction, as it commits.
async fn record(
    conn: &mut PgConnection,
    key: &IdempotencyKey,
    response: &StoredResponse,
) -> Result<(), sqlx::Error> {
    // The predicate is THIS_KEY's.
    sqlx::query!(
        r#"
        UPDATE core.idempotency_keys
        SET state = 'DONE', response_status = $2, response_body = $3, response_location = $4
        WHERE db_role = current_user AND actor = core.current_actor() AND idempotency_key = $1
        "#,
        key.0,
        i32::from(response.status),
        response.body,
        response.location,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// What [`try_processing`] found for a key.
pub enum Processing {
    /// The key is ours, held until the transaction ends: do the work, then [`save_response`].
    Proceed(Claimed),
    /// The key's request was done before: its first response, again, byte for byte.
    Replayed(Response),
}

/// A key claimed by this request's transaction; only [`try_processing`] makes one.
pub struct Claimed(IdempotencyKey);

/// The first call, before the work, in the work's transaction (begun with [`WAIT_FOR_FIRST`] as
/// its lock timeout): the replay of a finished request with this key and body, 409 while
/// another request with the key runs, 422 if the key was used for another request, or
/// [`Processing::Proceed`].
pub async fn try_processing(
    conn: &mut PgConnection,
    key: IdempotencyKey,
    fingerprint: &[u8],
) -> Result<Processing, ApiError> {
    match claim(conn, &key, fingerprint).await? {
        Claim::Fresh => Ok(Processing::Proceed(Claimed(key))),
        Claim::Replay(stored) => Ok(Processing::Replayed(stored.into_response(true))),
        Claim::InFlight => Err(ApiError::conflict(
            "a request with this Idempotency-Key is still being processed",
        )),
        Claim::Mismatch => Err(ApiError::invalid_field(
            "Idempotency-Key",
            "was used for a different request",
        )),
    }
}

/// What the work made: a resource, answered 201 with its location.
pub struct Created<T> {
    pub location: String,
    pub body: T,
}

/// The second call, after the work and before the commit: stores the outcome as the key's
/// response and returns it. A business error (4xx) undoes the work but keeps the key, so a
/// retry gets the same error; a 5xx is returned as it is, and rolling the transaction back
/// frees the key.
pub async fn save_response<T: Serialize>(
    conn: &mut PgConnection,
    claimed: Claimed,
    outcome: Result<Created<T>, ApiError>,
    instance: &str,
) -> Result<Response, ApiError> {
    let stored = match outcome {
        Ok(created) => StoredResponse {
            status: StatusCode::CREATED.as_u16(),
            body: serde_json::to_vec(&created.body)
                .map_err(|e| ApiError::Internal(format!("response body: {e}")))?,
            location: Some(created.location),
        },
        Err(error) if error.status().is_server_error() => return Err(error),
        Err(error) => {
            undo_work(conn).await?;
            let (status, body) = error.render(instance);
            StoredResponse {
                status: status.as_u16(),
                body,
                location: None,
            }
        }
    };
    record(conn, &claimed.0, &stored).await?;
    Ok(stored.into_response(false))
}
