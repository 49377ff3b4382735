//! `GET /v1/admin/database`: the seed guide's monitoring queries, for administrators, about
//! this database only: other databases on the cluster, their names and their query text are
//! none of this service's business.
//!
//! The guide filtered statistics with `schemaname LIKE 'lakehouse_%'`, which matches none of the
//! schemas; these queries name the four real ones.

use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};

use crate::platform::auth::AdminOnly;
use crate::platform::auth::RequestTx;
use crate::platform::error::{responses, ApiError};
use crate::platform::extract::AppQuery;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct DatabaseSize {
    pub database: String,
    pub bytes: i64,
    pub pretty: String,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct ConnectionCount {
    /// active, idle, idle in transaction, …
    pub state: Option<String>,
    pub connections: i64,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SlowQuery {
    pub pid: i32,
    pub state: Option<String>,
    pub seconds: f64,
    /// The statement, cut to 200 characters (bind values are never part of it).
    pub query: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct IndexUsage {
    pub schema: String,
    pub table: String,
    pub index: String,
    pub scans: i64,
    pub tuples_read: i64,
    pub tuples_fetched: i64,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SequentialScans {
    pub schema: String,
    pub table: String,
    pub seq_scans: i64,
    pub seq_tuples_read: i64,
    pub average_tuples_per_scan: i64,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct BlockedSession {
    pub blocked_pid: i32,
    pub blocked_user: Option<String>,
    pub blocking_pids: Vec<i32>,
    pub waiting_seconds: Option<f64>,
    pub blocked_statement: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TableSize {
    pub schema: String,
    pub table: String,
    pub bytes: i64,
    pub pretty: String,
}

/// A statement by total execution time since statistics were last reset (pg_stat_statements).
#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct TopStatement {
    pub query_id: i64,
    /// The normalised text, parameters as `$n`, at most 500 characters.
    pub query: String,
    pub calls: i64,
    pub total_ms: f64,
    pub mean_ms: f64,
    pub rows: i64,
}

/// The database's health at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct DatabaseHealth {
    pub checked_at: DateTime<Utc>,
    pub databases: Vec<DatabaseSize>,
    pub connections: Vec<ConnectionCount>,
    pub slow_queries: Vec<SlowQuery>,
    pub index_usage: Vec<IndexUsage>,
    pub sequential_scans: Vec<SequentialScans>,
    pub blocked_sessions: Vec<BlockedSession>,
    pub table_sizes: Vec<TableSize>,
    /// This database's ten statements with the most execution time (pg_stat_statements);
    /// `null` where the extension is not loaded.
    pub top_statements: Option<Vec<TopStatement>>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HealthQuery {
    /// A query running longer than this many seconds is slow (default 300).
    pub slow_seconds: Option<u32>,
}

/// Size, connections, slow queries, index use, sequential scans, locks, table sizes and the top
/// statements (admin).
#[utoipa::path(
    get,
    path = "/v1/admin/database",
    params(HealthQuery),
    responses((status = 200, description = "The report", body = DatabaseHealth), responses::Common)
)]
pub async fn get_database_health(
    mut tx: RequestTx<AdminOnly>,
    AppQuery(query): AppQuery<HealthQuery>,
) -> Result<Json<DatabaseHealth>, ApiError> {
    let slow = f64::from(query.slow_seconds.unwrap_or(300));
    let databases = sqlx::query_as!(
        DatabaseSize,
        r#"
        SELECT datname AS "database!", pg_database_size(datname) AS "bytes!",
               pg_size_pretty(pg_database_size(datname)) AS "pretty!"
        FROM pg_database WHERE datname = current_database()
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let connections = sqlx::query_as!(
        ConnectionCount,
        r#"
        SELECT state, count(*) AS "connections!" FROM pg_stat_activity
        WHERE datname = current_database() GROUP BY state ORDER BY 2 DESC
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let slow_queries = sqlx::query_as!(
        SlowQuery,
        r#"
        SELECT pid AS "pid!", state, extract(epoch FROM now() - query_start)::float8 AS "seconds!",
               left(query, 200) AS query
        FROM pg_stat_activity
        WHERE datname = current_database() AND state <> 'idle'
          AND query_start < now() - make_interval(secs => $1)
        ORDER BY 3 DESC LIMIT 50
        "#,
        slow,
    )
    .fetch_all(&mut *tx)
    .await?;
    // The report covers the application's schemas: core, analytics, metadata, staging.
    let index_usage = sqlx::query_as!(
        IndexUsage,
        r#"
        SELECT schemaname::text AS "schema!", relname::text AS "table!",
               indexrelname::text AS "index!", idx_scan AS "scans!",
               idx_tup_read AS "tuples_read!", idx_tup_fetch AS "tuples_fetched!"
        FROM pg_stat_user_indexes
        WHERE schemaname IN ('core', 'analytics', 'metadata', 'staging')
        ORDER BY idx_scan DESC LIMIT 100
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let sequential_scans = sqlx::query_as!(
        SequentialScans,
        r#"
        SELECT schemaname::text AS "schema!", relname::text AS "table!", seq_scan AS "seq_scans!",
               seq_tup_read AS "seq_tuples_read!",
               seq_tup_read / seq_scan AS "average_tuples_per_scan!"
        FROM pg_stat_user_tables
        WHERE schemaname IN ('core', 'analytics', 'metadata', 'staging') AND seq_scan > 0
        ORDER BY seq_tup_read DESC LIMIT 50
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let blocked_sessions = sqlx::query_as!(
        BlockedSession,
        r#"
        SELECT a.pid AS "blocked_pid!", a.usename::text AS blocked_user,
               pg_blocking_pids(a.pid) AS "blocking_pids!",
               extract(epoch FROM now() - a.query_start)::float8 AS waiting_seconds,
               left(a.query, 200) AS blocked_statement
        FROM pg_stat_activity a
        WHERE a.datname = current_database() AND cardinality(pg_blocking_pids(a.pid)) > 0
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let table_sizes = sqlx::query_as!(
        TableSize,
        r#"
        SELECT n.nspname::text AS "schema!", c.relname::text AS "table!",
               pg_total_relation_size(c.oid) AS "bytes!",
               pg_size_pretty(pg_total_relation_size(c.oid)) AS "pretty!"
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('core', 'analytics', 'metadata', 'staging') AND c.relkind IN ('r', 'p')
        ORDER BY 3 DESC LIMIT 100
        "#
    )
    .fetch_all(&mut *tx)
    .await?;
    let top_statements = top_statements(&mut tx).await?;
    tx.answer(DatabaseHealth {
        checked_at: Utc::now(),
        databases,
        connections,
        slow_queries,
        index_usage,
        sequential_scans,
        blocked_sessions,
        table_sizes,
        top_statements,
    })
    .await
}

/// The ten statements that took the most time, where pg_stat_statements is loaded.
async fn top_statements(conn: &mut PgConnection) -> Result<Option<Vec<TopStatement>>, sqlx::Error> {
    let statements_loaded: bool = sqlx::query_scalar!(
        r#"
            SELECT current_setting('shared_preload_libraries') ~ 'pg_stat_statements'
            AND to_regclass('public.pg_stat_statements') IS NOT NULL AS "loaded!"
        "#,
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(if statements_loaded {
        Some(
            sqlx::query_as!(
                TopStatement,
                r#"
                SELECT queryid AS "query_id!", left(query, 500) AS "query!", calls AS "calls!",
                       total_exec_time AS "total_ms!", mean_exec_time AS "mean_ms!",
                       rows AS "rows!"
                FROM public.pg_stat_statements
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                ORDER BY total_exec_time DESC LIMIT 10
                "#
            )
            .fetch_all(&mut *conn)
            .await?,
        )
    } else {
        None
    })
}
