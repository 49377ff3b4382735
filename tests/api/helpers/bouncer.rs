//! A PgBouncer in transaction mode in front of the test server, for the tests that need one.

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

/// A PgBouncer in transaction mode in front of the test server, started once per run.
pub struct Bouncer {
    pub port: u16,
}

pub static BOUNCER: OnceLock<Option<Bouncer>> = OnceLock::new();

pub fn find_pgbouncer() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join("pgbouncer"))
        .find(|p| p.exists())
}

pub fn start_bouncer(server: &Server) -> Result<Bouncer, String> {
    use std::process::Command;
    let binary = find_pgbouncer().ok_or("pgbouncer is not installed")?;
    let as_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let dir = std::env::temp_dir().join(format!("lakehouse-pgbouncer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let ini = format!(
        "[databases]\n* = host={host} port={pg_port}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
         listen_port = {port}\nunix_socket_dir =\nauth_type = trust\nauth_file = {dir}/userlist.txt\n\
         pool_mode = transaction\nmax_client_conn = 1000\ndefault_pool_size = 40\n\
         ignore_startup_parameters = extra_float_digits,options\n\
         server_reset_query = DISCARD ALL\nserver_reset_query_always = 1\nlogfile = {dir}/pgbouncer.log\n\
         pidfile = {dir}/pgbouncer.pid\n",
        host = server.admin.get_host(),
        pg_port = server.admin.get_port(),
        dir = dir.display(),
    );
    std::fs::write(dir.join("pgbouncer.ini"), ini).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("userlist.txt"),
        format!(
            "\"{}\" \"{}\"\n",
            db::AUTHENTICATOR_ROLE,
            server.app_password
        ),
    )
    .map_err(|e| e.to_string())?;
    let mut command = if as_root {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| e.to_string())?;
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&binary);
        c
    } else {
        Command::new(&binary)
    };
    let status = command
        .arg("-d")
        .arg(dir.join("pgbouncer.ini"))
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "pgbouncer did not start: {}",
            std::fs::read_to_string(dir.join("pgbouncer.log")).unwrap_or_default()
        ));
    }
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $(cat '{dir}/pgbouncer.pid') 2>/dev/null; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .spawn()
        .map_err(|e| e.to_string())?;
    for _ in 0..50 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(Bouncer { port });
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err("pgbouncer never accepted connections".into())
}

impl TestApp {
    /// A TestApp whose pool goes through PgBouncer in transaction mode (LISTEN stays direct, as
    /// in production). `None` when PgBouncer is not installed, unless LAKEHOUSE_REQUIRE_PGBOUNCER
    /// is set (CI sets it), in which case its absence fails the test.
    pub async fn spawn_via_pgbouncer() -> Option<Self> {
        let server = server();
        let bouncer = BOUNCER.get_or_init(|| match start_bouncer(&server) {
            Ok(b) => Some(b),
            Err(e) if std::env::var_os("LAKEHOUSE_REQUIRE_PGBOUNCER").is_some() => {
                panic!("PgBouncer is required: {e}")
            }
            Err(e) => {
                eprintln!("PgBouncer tests skipped: {e}");
                None
            }
        });
        let port = bouncer.as_ref()?.port;
        let mut app = Self::spawn().await;
        let direct = (*app.pool.connect_options()).clone();
        let through = direct
            .clone()
            .host("127.0.0.1")
            .port(port)
            .statement_cache_capacity(0);
        app.pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(through);
        let http = Options::default().http();
        let state = AppState::new(
            app.pool.clone(),
            app.keys.clone(),
            app.cipher.clone(),
            Duration::from_secs(5),
            &http,
        )
        .with_listen_connection(direct);
        app.state = state.clone();
        app.router = app::router(state, HttpLimits::from_config(&http));
        Some(app)
    }
}
