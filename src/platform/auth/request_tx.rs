//! The per-request transaction: born switched to the caller's database role.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::Method;
use axum::Json;
use sqlx::{PgConnection, Postgres, Transaction};

use std::sync::Arc;

use axum::extract::FromRef;

use super::{Access, AnyCaller, Authenticator, Caller};
use crate::platform::db::replicas::{PRIMARY_ONLY_READS, TOKEN_HEADER};
use crate::platform::db::Database;
use crate::platform::error::ApiError;

/// A transaction already running as the caller's database role, with the caller's customer id,
/// actor and statement timeout set, all transaction-locally. Handlers touch data only through
/// this. [`RequestTx::commit`] ends it; dropping it (an early `?`) rolls it back.
///
/// `A` names the roles allowed to make the request; others get 403 before a connection is taken.
pub struct RequestTx<A = AnyCaller> {
    caller: Caller,
    tx: Transaction<'static, Postgres>,
    read_only: bool,
    _access: PhantomData<A>,
}

impl<A: Access> RequestTx<A> {
    /// Begins a transaction for `caller` outside extraction (for handlers that must do
    /// something before it, like claiming an idempotency key). 403 unless `A` permits the role.
    pub async fn begin(db: &Database, caller: Caller, read_only: bool) -> Result<Self, ApiError> {
        let begin = begin_statement(&caller, read_only, db.statement_timeout.as_millis());
        Self::begin_with(&db.pool, caller, read_only, begin).await
    }

    /// Begins a writing transaction whose every lock wait ends after `lock_timeout` (with
    /// SQLSTATE 55P03), set in the same message as the `BEGIN`: for commands that claim an
    /// idempotency key first, so that a request whose key is still held waits that long.
    ///
    /// Its prepared statements run their generic plans. The money commands' statements are
    /// keyed by ids, and their partitions are pruned when the plan starts either way; but the
    /// plan cache judges a generic plan over every partition of `core.loans` dearer than a
    /// custom one and so planned the ledger's posting statement afresh on every repayment:
    /// half a millisecond of PostgreSQL's CPU each (pg_stat_statements with track_planning).
    pub async fn begin_bounded(
        db: &Database,
        caller: Caller,
        lock_timeout: std::time::Duration,
    ) -> Result<Self, ApiError> {
        let begin = format!(
            "{}; SET LOCAL lock_timeout = {}; SET LOCAL plan_cache_mode = force_generic_plan",
            begin_statement(&caller, false, db.statement_timeout.as_millis()),
            lock_timeout.as_millis()
        );
        Self::begin_with(&db.pool, caller, false, begin).await
    }

    /// Begins on `pool` (the primary's, or a replica's) with the `begin` message.
    async fn begin_with(
        pool: &sqlx::PgPool,
        caller: Caller,
        read_only: bool,
        begin: String,
    ) -> Result<Self, ApiError> {
        if !A::permits(caller.role) {
            return Err(ApiError::Forbidden);
        }
        let waiting = metrics::gauge!("db_pool_acquire_waiting");
        waiting.increment(1.0);
        // On a task of its own: if the client goes away while BEGIN is in flight, sqlx would
        // drop the connection back into the pool with the server-side transaction still open
        // (its rollback guard only covers a BEGIN it has seen complete), and the next request
        // on it would run inside that transaction. A spawned begin always completes, and its
        // Transaction, if unused, rolls back properly.
        let pool = pool.clone();
        let tx = tokio::spawn(async move { pool.begin_with(begin).await }).await;
        waiting.decrement(1.0);
        let tx = tx.map_err(|e| ApiError::Internal(format!("begin task failed: {e}")))??;
        Ok(Self {
            caller,
            tx,
            read_only,
            _access: PhantomData,
        })
    }

    /// A read transaction on a replica when the replica set allows one (see
    /// [`crate::platform::db::replicas`]), else on the primary. A replica that fails to begin is marked
    /// down and the read runs on the primary: a replica never costs a read its answer.
    async fn begin_read(
        db: &Database,
        caller: Caller,
        token: Option<u64>,
    ) -> Result<Self, ApiError> {
        if !A::permits(caller.role) {
            return Err(ApiError::Forbidden);
        }
        let begin = begin_statement(&caller, true, db.statement_timeout.as_millis());
        if let Some(replicas) = &db.replicas {
            if let Some((index, pool)) = replicas.choose(token).await {
                // Bounded: a replica that stopped answering (a frozen host) must not hold the
                // read; the BEGIN left behind completes or fails on its own task.
                let begun = tokio::time::timeout(
                    replicas.timeout(),
                    Self::begin_with(&pool, caller.clone(), true, begin.clone()),
                )
                .await;
                match begun {
                    Ok(Ok(tx)) => {
                        replicas.routed(index);
                        return Ok(tx);
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(?error, "a replica failed to begin a read");
                        replicas.failed(index);
                    }
                    Err(_) => replicas.timed_out(index),
                }
            }
        }
        Self::begin_with(&db.pool, caller, true, begin).await
    }
}

impl<A> RequestTx<A> {
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Ends the transaction. A read-only one has nothing to make durable, so it is not
    /// committed but dropped: its ROLLBACK is queued and travels with the check sqlx's pool
    /// makes of every connection it takes back (a Sync), one round trip instead of two, and the
    /// response does not wait for it. The pool hands the connection out again only after both.
    pub async fn commit(self) -> Result<(), ApiError> {
        if !self.read_only {
            self.tx.commit().await?;
        }
        Ok(())
    }

    /// Ends the transaction and answers with `body`.
    pub async fn answer<T>(self, body: T) -> Result<Json<T>, ApiError> {
        self.commit().await?;
        Ok(Json(body))
    }

    /// Ends the transaction and answers with what a lookup found, or 404.
    pub async fn answer_found<T>(self, found: Option<T>) -> Result<Json<T>, ApiError> {
        let body = found.ok_or(ApiError::NotFound)?;
        self.answer(body).await
    }
}

impl<A> Deref for RequestTx<A> {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.tx
    }
}

impl<A> DerefMut for RequestTx<A> {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.tx
    }
}

/// The statement that opens every request transaction, in one round trip: `BEGIN` and the
/// settings (and a staff member's office, `app.branch`) travel as one simple-protocol message. `SET LOCAL` rather than `SELECT set_config`:
/// utility statements skip planning and send no rows back (a quarter less server time for this
/// message, measured with pgbench). The values are not bind parameters (the simple protocol has
/// none), so each is either ours (the role name comes from [`crate::platform::auth::Role`], the timeout is a
/// number) or validated to a safe alphabet before it gets here (a UUID, and the actor, see
/// `auth::is_valid_subject`); `quote` is a second line of defence. A writing transaction also
/// carries the request id, which the audit log records (`edge` admits only a safe alphabet).
pub fn begin_statement(caller: &Caller, read_only: bool, statement_timeout_ms: u128) -> String {
    let customer = caller
        .customer_id
        .map(|id| id.to_string())
        .unwrap_or_default();
    let request = match (&caller.request_id, read_only) {
        (Some(id), false) => format!("; SET LOCAL app.request_id = {}", quote(id)),
        _ => String::new(),
    };
    let branch = match &caller.branch {
        Some(code) => format!("; SET LOCAL app.branch = {}", quote(code)),
        None => String::new(),
    };
    format!(
        "BEGIN ISOLATION LEVEL READ COMMITTED{}; SET LOCAL ROLE {}; \
         SET LOCAL app.current_customer_id = {}; SET LOCAL app.actor = {}; \
         SET LOCAL statement_timeout = {}{branch}{request}",
        if read_only { ", READ ONLY" } else { "" },
        quote(caller.role.db_role()),
        quote(&customer),
        quote(&caller.principal()),
        statement_timeout_ms,
    )
}

/// A transaction as `caller` outside any request extractor (claiming an idempotency key, a
/// job's bookkeeping, an event stream's replay after its handler returned).
pub async fn begin_as(
    pool: &sqlx::PgPool,
    caller: &Caller,
    read_only: bool,
    statement_timeout_ms: u128,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pool.begin_with(begin_statement(caller, read_only, statement_timeout_ms))
        .await
}

/// A SQL string literal (standard_conforming_strings is on in every supported PostgreSQL).
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''").replace('\0', ""))
}

impl<A: Access, S: Send + Sync> FromRequestParts<S> for RequestTx<A>
where
    Database: FromRef<S>,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, state).await?;
        // Reads run READ ONLY: a bug cannot write through a GET, and PostgreSQL can skip work.
        let read_only = matches!(parts.method, Method::GET | Method::HEAD);
        let db = Database::from_ref(state);
        if !read_only || db.replicas.is_none() {
            return Self::begin(&db, caller, read_only).await;
        }
        let on_primary = parts
            .extensions
            .get::<MatchedPath>()
            .is_some_and(|path| PRIMARY_ONLY_READS.contains(&path.as_str()));
        if on_primary {
            return Self::begin(&db, caller, true).await;
        }
        let token = parts
            .headers
            .get(TOKEN_HEADER)
            .map(|value| {
                let opened = value.to_str().ok().and_then(|text| {
                    db.replicas
                        .as_ref()
                        .and_then(|replicas| replicas.position(text))
                });
                opened.ok_or_else(|| {
                    ApiError::BadRequest(
                        "Consistency-Token must be a token from a response of this API".into(),
                    )
                })
            })
            .transpose()?;
        Self::begin_read(&db, caller, token).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::auth::Role;
    use uuid::Uuid;

    #[test]
    fn the_begin_statement_sets_everything_transaction_locally() {
        let id = Uuid::nil();
        let caller = Caller {
            issuer: "local".into(),
            subject: "mobile:o'hara".into(),
            role: Role::Customer,
            customer_id: Some(id),
            request_id: Some("0193-req".into()),
            expires_at: None,
            linked: false,
            branch: None,
        };
        let sql = begin_statement(&caller, true, 5000);
        assert_eq!(
            sql,
            "BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY; SET LOCAL ROLE 'lakehouse_app_user'; \
             SET LOCAL app.current_customer_id = '00000000-0000-0000-0000-000000000000'; \
             SET LOCAL app.actor = 'local|mobile:o''hara|customer|00000000-0000-0000-0000-000000000000'; SET LOCAL statement_timeout = 5000"
        );
        assert!(begin_statement(&caller, false, 5000).ends_with(
            "SET LOCAL statement_timeout = 5000; SET LOCAL app.request_id = '0193-req'"
        ));
        let teller = Caller {
            role: Role::Staff,
            customer_id: None,
            branch: Some("HN01".into()),
            ..caller
        };
        assert!(begin_statement(&teller, false, 5000).ends_with(
            "SET LOCAL statement_timeout = 5000; SET LOCAL app.branch = 'HN01'; \
             SET LOCAL app.request_id = '0193-req'"
        ));
    }
}
