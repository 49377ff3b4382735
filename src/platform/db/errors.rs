//! Database errors mapped to API errors by SQLSTATE class and constraint name, never by message.

use sqlx::postgres::PgDatabaseError;

use crate::platform::error::{ApiError, FieldError};

/// Counts a database error under its class for the metrics.
fn count(error: &sqlx::Error) {
    let class = match error {
        sqlx::Error::Database(db) => db
            .code()
            .map(|c| format!("sqlstate_{}", &c[..c.len().min(2)]))
            .unwrap_or_else(|| "database".into()),
        sqlx::Error::PoolTimedOut => "pool_timeout".into(),
        sqlx::Error::PoolClosed => "pool_closed".into(),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) => "connection".into(),
        sqlx::Error::RowNotFound => "row_not_found".into(),
        _ => "other".into(),
    };
    metrics::counter!("db_errors_total", "class" => class).increment(1);
}

/// Maps any sqlx error to the API error a client should see, counting it by class.
pub fn classify(error: sqlx::Error) -> ApiError {
    count(&error);
    match error {
        sqlx::Error::RowNotFound => ApiError::NotFound,
        sqlx::Error::PoolTimedOut => ApiError::Unavailable {
            retry_after_secs: 1,
        },
        // Protocol: a reply that is not PostgreSQL's, as when a proxy in front of a server that
        // just went away (HAProxy during a failover) accepts the connection and closes it.
        sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => ApiError::Unavailable {
            retry_after_secs: 2,
        },
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => classify_sqlstate(pg),
            None => ApiError::Internal(db.to_string()),
        },
        other => ApiError::Internal(other.to_string()),
    }
}

fn classify_sqlstate(pg: &PgDatabaseError) -> ApiError {
    let code = pg.code();
    match code {
        // unique_violation: the caller asked for something that already exists.
        "23505" => ApiError::conflict("a record with the same unique value already exists"),
        // foreign_key_violation, check_violation, not_null_violation, exclusion_violation
        "23503" | "23514" | "23502" | "23P01" => ApiError::Unprocessable {
            detail: "the values break a rule of the data model".into(),
            errors: pg
                .constraint()
                .map(|c| vec![FieldError::new(c.to_owned(), "violates this rule")])
                .unwrap_or_default(),
        },
        // serialization_failure, deadlock_detected: safe to run the whole request again.
        "40001" | "40P01" => ApiError::Transient,
        // query_canceled (statement_timeout) and lock_not_available (lock_timeout).
        "57014" | "55P03" => ApiError::Timeout,
        // insufficient_privilege: includes a row that row-level security refuses to write.
        "42501" => ApiError::Forbidden,
        // admin_shutdown, crash_shutdown, cannot_connect_now, and the connection_exception class;
        // read_only_sql_transaction: a write that reached a server which is no longer (or not
        // yet) the primary, as in a failover; idle_in_transaction_session_timeout: the server
        // ended a session left idle in a transaction (nothing of it committed).
        "57P01" | "57P02" | "57P03" | "25006" | "25P03" => ApiError::Unavailable {
            retry_after_secs: 2,
        },
        c if c.starts_with("08") => ApiError::Unavailable {
            retry_after_secs: 2,
        },
        // data_exception class: a value the column cannot hold (numeric overflow, bad date).
        c if c.starts_with("22") => ApiError::Unprocessable {
            detail: "a value is out of range for its field".into(),
            errors: Vec::new(),
        },
        _ => ApiError::Internal(format!("database error {code}: {}", pg.message())),
    }
}

/// The name of the violated constraint, when `error` is one.
pub fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}

/// Turns a named constraint's violation into a specific API error, as close to the query as
/// possible; every other error goes through [`classify`].
pub trait ResultExt<T> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, OnConstraint>;
}

/// A result being mapped: either already turned into an [`ApiError`] or still a raw sqlx error.
pub enum OnConstraint {
    Mapped(ApiError),
    Raw(sqlx::Error),
}

impl From<OnConstraint> for ApiError {
    fn from(value: OnConstraint) -> Self {
        match value {
            OnConstraint::Mapped(e) => e,
            OnConstraint::Raw(e) => classify(e),
        }
    }
}

impl<T> ResultExt<T> for Result<T, sqlx::Error> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, OnConstraint> {
        self.map_err(|e| {
            if violated_constraint(&e) == Some(name) {
                count(&e);
                OnConstraint::Mapped(map())
            } else {
                OnConstraint::Raw(e)
            }
        })
    }
}

impl<T> ResultExt<T> for Result<T, OnConstraint> {
    fn on_constraint(self, name: &str, map: impl FnOnce() -> ApiError) -> Result<T, OnConstraint> {
        self.map_err(|e| match e {
            OnConstraint::Raw(raw) if violated_constraint(&raw) == Some(name) => {
                count(&raw);
                OnConstraint::Mapped(map())
            }
            other => other,
        })
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        classify(error)
    }
}
