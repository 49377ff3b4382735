//! The connection pool, migrations, the LISTEN connection, error mapping and partition upkeep.

mod closed_set;
pub mod consistency_token;
pub mod errors;
pub mod outbox_watch;
pub mod partitions;
pub mod replicas;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

use crate::platform::config::{PoolConfig, Secret};
use crate::CliResult;

pub use crate::platform::config::AUTHENTICATOR_ROLE;

/// The pool and how long a request's statements may run: what a request transaction needs;
/// and the read replicas, when there are any.
#[derive(Clone)]
pub struct Database {
    pub pool: PgPool,
    pub statement_timeout: Duration,
    pub replicas: Option<std::sync::Arc<replicas::ReplicaSet>>,
}

/// The schema, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Opens the service's pool. Connections are made lazily, so the service starts (and answers
/// `/health/live`) while the database is still coming up.
pub fn connect_pool(config: &PoolConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .min_connections(0)
        .acquire_timeout(config.acquire_timeout)
        // Every request begins with a round trip anyway; a dead connection fails that and is
        // discarded, so a ping before each acquire would only add latency.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(config.connect.clone())
}

/// Applies pending migrations as the owner, gives the authenticator its login password, and
/// creates the partitions the near future needs.
pub async fn migrate(owner: &PgConnectOptions, app_password: Option<&Secret>) -> CliResult {
    migrate_with_logins(owner, app_password, None).await
}

/// [`migrate`], also giving Trino's read-only role a login when `trino_password` is set.
pub async fn migrate_with_logins(
    owner: &PgConnectOptions,
    app_password: Option<&Secret>,
    trino_password: Option<&Secret>,
) -> CliResult {
    let mut conn = PgConnection::connect_with(owner).await?;
    MIGRATOR.run(&mut conn).await?;
    for (role, password) in [
        (AUTHENTICATOR_ROLE, app_password),
        ("lakehouse_trino", trino_password),
    ] {
        if let Some(password) = password {
            let verifier = postgres_protocol::password::scram_sha_256(password.expose());
            // A SCRAM verifier, not the password, goes into the statement (and so any log).
            let statement = format!("ALTER ROLE {role} WITH LOGIN PASSWORD '{verifier}'");
            sqlx::raw_sql(&statement).execute(&mut conn).await?;
        }
    }
    ensure_partitions(&mut conn).await?;
    // The catalog follows the schema the migrations left.
    sqlx::query_scalar!(r#"SELECT metadata.refresh_catalog() AS "described!""#)
        .fetch_one(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Sets the time zone of the business day (BUSINESS_TIMEZONE), kept with the books so that every
/// instance agrees on due dates and on "today". A zone PostgreSQL does not know is refused.
pub async fn set_business_timezone(owner: &PgConnectOptions, zone: &str) -> CliResult {
    let mut conn = PgConnection::connect_with(owner).await?;
    sqlx::query!(
        r#"
            UPDATE core.business_settings SET timezone = $1
        "#,
        zone,
    )
    .execute(&mut conn)
    .await
    .map_err(|e| format!("BUSINESS_TIMEZONE {zone:?} is not a time zone PostgreSQL knows: {e}"))?;
    conn.close().await?;
    Ok(())
}

/// Sets the country code that national phone numbers take when they are written in E.164
/// (PHONE_COUNTRY_CODE; numbers already stored keep theirs).
pub async fn set_phone_country_code(owner: &PgConnectOptions, code: &str) -> CliResult {
    let mut conn = PgConnection::connect_with(owner).await?;
    sqlx::query!(
        r#"
            UPDATE core.business_settings SET phone_country_code = $1
        "#,
        code,
    )
    .execute(&mut conn)
    .await
    .map_err(|e| format!("PHONE_COUNTRY_CODE {code:?} must be 1 to 3 digits: {e}"))?;
    conn.close().await?;
    Ok(())
}

/// Creates the partitions for the window around today (see `core.ensure_partitions_around`).
pub async fn ensure_partitions(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query!(r#"SELECT core.ensure_partitions_around(now())"#)
        .fetch_one(conn)
        .await?;
    Ok(())
}

/// Whether the database has every migration this binary knows, and no failed one.
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let latest = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
    // Inside a transaction, so PgBouncer keeps the statement on one server connection.
    let mut tx = pool.begin().await?;
    let state = sqlx::query!(
        r#"
        SELECT max(version) FILTER (WHERE success) AS applied,
               coalesce(bool_or(NOT success), false) AS "failed!"
        FROM _sqlx_migrations
        "#
    )
    .fetch_one(&mut *tx)
    .await?;
    let (applied, failed) = (state.applied, state.failed);
    tx.commit().await?;
    Ok(!failed && applied == Some(latest))
}

/// Chooses the one TLS crypto provider of the whole binary, aws-lc-rs (the identity work's
/// token verification uses the same). rustls panics at the first TLS connection when more than
/// one provider is compiled in and none was chosen, so every entry point calls this first.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
