//! `seed` and `dev`: the lab data (and volume), and everything for a first look.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use log::LevelFilter;
use sqlx::{ConnectOptions, Connection, PgConnection};
use uuid::Uuid;

use crate::{seed, TempCluster};
use lakehouse_api::platform::auth::mint;
use lakehouse_api::platform::auth::{JwtKeys, Role};
use lakehouse_api::platform::config::{Environment, OwnerDb, PiiKeys, ServeConfig, Source};
use lakehouse_api::platform::pii::PiiCipher;
use lakehouse_api::{app, CliResult};

/// Lab data always; generated volume when asked. Returns the lab customer CUST001's id.
pub async fn seed_data(src: &dyn Source, volume: Option<seed::Volume>) -> CliResult<Option<Uuid>> {
    let owner = OwnerDb::from_source(src)?;
    let cipher = PiiCipher::new(&PiiKeys::from_source(src)?);
    // Bulk statements are slow by design; the seed reports its own timings.
    let connect = owner
        .connect
        .clone()
        .log_statements(LevelFilter::Off)
        .log_slow_statements(LevelFilter::Off, Duration::ZERO);
    let mut conn = PgConnection::connect_with(&connect).await?;
    lakehouse_api::platform::pii::verify_keys(&mut conn, &cipher).await?;
    if seed::lab(&mut conn, &cipher).await? {
        eprintln!("lab data inserted");
    }
    if let Some(volume) = volume {
        seed::generate(&mut conn, &connect, &cipher, volume).await?;
    }
    let id = seed::customer_id(&mut conn, "CUST001").await?;
    conn.close().await?;
    Ok(id)
}

/// Environment first, then values `dev` made up.
struct Overlay(HashMap<&'static str, String>);

impl Source for Overlay {
    fn get(&self, key: &str) -> Option<String> {
        Environment.get(key).or_else(|| self.0.get(key).cloned())
    }
}

fn random_base64(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    OsRng.fill_bytes(&mut bytes);
    STANDARD.encode(bytes)
}

pub async fn dev() -> CliResult {
    let mut made_up = HashMap::new();
    let cluster = if Environment.get("DATABASE_URL").is_none() {
        eprintln!("DATABASE_URL is unset: starting a throwaway PostgreSQL cluster…");
        let cluster = TempCluster::start()?;
        cluster.remove_when_process_exits(std::process::id())?;
        made_up.insert("DATABASE_URL", cluster.url("postgres"));
        Some(cluster)
    } else {
        None
    };
    // Local tokens beside a provider's, if one is configured: a development machine.
    made_up.insert("DEV_MODE", "true".to_owned());
    // The metrics listener on any free port, so that two dev instances can run side by side.
    if Environment.get("METRICS_LISTEN_ADDR").is_none() {
        made_up.insert("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned());
    }
    for (key, value) in [
        ("APP_DB_PASSWORD", random_base64(24)),
        ("JWT_SECRET", random_base64(48)),
        ("PII_ENCRYPTION_KEY", random_base64(32)),
        ("PII_HASH_KEY", random_base64(32)),
    ] {
        if Environment.get(key).is_none() {
            eprintln!("{key} is unset: using a random value for this run only");
            made_up.insert(key, value);
        }
    }
    let src = Overlay(made_up);
    app::migrate(&src).await?;
    let cust001 = seed_data(&src, None).await?;

    let config = ServeConfig::from_source(&src)?;
    let secret = config
        .tokens
        .local_secret
        .clone()
        .ok_or("dev needs JWT_SECRET")?;
    let keys = Arc::new(JwtKeys::new(secret));
    // Printed with write! rather than println!, which would panic if stdout were closed.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "\nTokens (valid 12 hours):");
    for role in Role::ALL {
        let customer = if role == Role::Customer {
            cust001
        } else {
            None
        };
        let token = mint(&keys, role.as_str(), customer, "12h", None, None)?;
        let note = if role == Role::Customer {
            " (CUST001)"
        } else {
            ""
        };
        let _ = writeln!(out, "  {:<8}{note} {token}", role.as_str());
    }
    let _ = writeln!(
        out,
        "\nSwagger UI: http://{0}/docs   health: http://{0}/health/ready   Ctrl-C stops{1}\n",
        config.http.listen_addr,
        if cluster.is_some() {
            " and removes the database"
        } else {
            ""
        }
    );
    let _ = out.flush();
    drop(out);
    let served = app::serve(config).await;
    drop(cluster);
    served
}
