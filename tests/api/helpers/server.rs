//! The PostgreSQL server every test of a run shares, and the template database each test copies.

#![allow(unused_imports)]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use axum::Router;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};
use tower::ServiceExt;
use uuid::Uuid;

use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::auth::{Authenticator, Claims, JwtKeys};
use lakehouse_api::platform::config::{
    HttpConfig, PiiKeys, Rate, RateLimitConfig, Secret, TokenConfig,
};
use lakehouse_api::platform::db;
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::platform::server::ConnectionLimits;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;

use super::*;

/// The server every test of this run uses.
pub struct Server {
    /// Owner (superuser) connect options, database unset.
    pub admin: PgConnectOptions,
    /// The same as a URL.
    pub admin_url: String,
    pub template: String,
    pub app_password: String,
    /// Whether tests drop their databases (on a server we did not create).
    pub external: bool,
    pub _cluster: Option<TempCluster>,
}

pub static SERVER: OnceLock<Result<Arc<Server>, String>> = OnceLock::new();

pub fn server() -> Arc<Server> {
    db::install_crypto_provider();
    // TEST_LOG=error (or any filter) shows the service's logs while debugging a test.
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    let server = SERVER.get_or_init(|| {
        // Set up on a thread with its own runtime: the tests' runtimes come and go.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start_server())
                .map_err(|e| e.to_string())
        })
        .join()
        .map_err(|_| "server setup panicked".to_string())
        .and_then(|r| r)
        .map(Arc::new)
    });
    match server {
        Ok(server) => server.clone(),
        Err(e) => panic!("test database server unavailable: {e}"),
    }
}

pub async fn start_server() -> lakehouse_api::CliResult<Server> {
    let (url, cluster, external) =
        match std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()) {
            Some(url) => (url, None, true),
            None => {
                let cluster = TempCluster::start()?;
                cluster.remove_when_process_exits(std::process::id())?;
                (cluster.url("postgres"), Some(cluster), false)
            }
        };
    let admin: PgConnectOptions = url.parse()?;
    let admin = admin.disable_statement_logging();
    let app_password = std::env::var("APP_DB_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| DEFAULT_APP_PASSWORD.into());
    let template = format!("lakehouse_template_{}", Uuid::now_v7().simple());
    let mut conn = PgConnection::connect_with(&admin).await?;
    sqlx::raw_sql(&format!("CREATE DATABASE {template}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    db::migrate(
        &admin.clone().database(&template),
        Some(&Secret::new(app_password.clone().into_bytes())),
    )
    .await?;
    Ok(Server {
        admin,
        admin_url: url,
        template,
        app_password,
        external,
        _cluster: cluster,
    })
}

/// `url` with its database replaced by `database`.
pub fn database_url(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let server = &base[..base.rfind('/').unwrap_or(base.len())];
    if query.is_empty() {
        format!("{server}/{database}")
    } else {
        format!("{server}/{database}?{query}")
    }
}

pub const TEST_PII_ENCRYPTION_KEY: [u8; 32] = [0x42; 32];
pub const TEST_PII_HASH_KEY: [u8; 32] = [0x24; 32];

pub fn pii_keys() -> PiiKeys {
    PiiKeys::new(
        Secret::new(TEST_PII_ENCRYPTION_KEY.to_vec()),
        Secret::new(TEST_PII_HASH_KEY.to_vec()),
    )
}
