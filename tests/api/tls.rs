//! TLS to PostgreSQL: a cluster of the test's own with a certificate the test makes (an IP SAN
//! for 127.0.0.1, signed by the test's root), and every connection the service opens asking for
//! `sslmode=verify-full`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, StatusCode};
use lakehouse_api::app::{self, HttpLimits};
use lakehouse_api::platform::config::{HttpConfig, PoolConfig, Secret};
use lakehouse_api::platform::db;
use lakehouse_api::platform::state::AppState;
use lakehouse_cluster::TempCluster;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::{pii_keys, send_via, JWT_SECRET};

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A root CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certificates(dir: &Path, name: &str) {
    let ca = [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
    ];
    let mut args = ca.to_vec();
    let subject = format!("/CN={name} test root");
    let (ca_key, ca_crt) = (format!("{name}-ca.key"), format!("{name}-ca.crt"));
    args.extend([
        subject.as_str(),
        "-keyout",
        &ca_key,
        "-out",
        &ca_crt,
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    openssl(dir, &args);
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            "server.crt",
            "-extfile",
            "server.ext",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_and_listen_connection_use_verified_tls_and_pg_stat_ssl_shows_it() {
    if Command::new("openssl").arg("version").output().is_err() {
        assert!(
            std::env::var_os("LAKEHOUSE_REQUIRE_TLS").is_none(),
            "openssl is required to make the test certificates"
        );
        eprintln!("TLS test skipped: openssl is not installed");
        return;
    }
    db::install_crypto_provider();
    let dir = std::env::temp_dir().join(format!("lakehouse-tls-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certificates(&dir, "lakehouse");
    let mut cluster = TempCluster::start().unwrap();
    cluster
        .enable_tls(
            &std::fs::read(dir.join("server.crt")).unwrap(),
            &std::fs::read(dir.join("server.key")).unwrap(),
        )
        .unwrap();
    let root = dir.join("lakehouse-ca.crt");
    let verified =
        |url: String| format!("{url}?sslmode=verify-full&sslrootcert={}", root.display());

    // migrate: the owner's connection over verified TLS.
    let owner: PgConnectOptions = verified(cluster.url("postgres")).parse().unwrap();
    let mut conn = PgConnection::connect_with(&owner).await.unwrap();
    let (ssl,): (bool,) =
        sqlx::query_as("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(ssl, "the owner connection is encrypted");
    sqlx::raw_sql("CREATE DATABASE lakehouse_tls")
        .execute(&mut conn)
        .await
        .unwrap();
    let url = verified(cluster.url("lakehouse_tls"));
    let password = "tls-app-password-0123456789";
    db::migrate(
        &url.parse().unwrap(),
        Some(&Secret::new(password.as_bytes().to_vec())),
    )
    .await
    .unwrap();

    // The pool and the LISTEN connection, configured as `serve` configures them.
    let source = [
        ("DATABASE_URL", url.as_str()),
        ("LISTEN_DATABASE_URL", url.as_str()),
        ("APP_DB_PASSWORD", password),
    ];
    let config = PoolConfig::from_source(&source).unwrap();
    let pool = db::connect_pool(&config);
    let keys =
        lakehouse_api::platform::auth::JwtKeys::new(Secret::new(JWT_SECRET.as_bytes().to_vec()));
    let staff = keys.sign(&lakehouse_api::platform::auth::Claims {
        sub: "tls-test".into(),
        role: "staff".into(),
        customer_id: None,
        exp: chrono::Utc::now().timestamp() + 600,
        iat: None,
        branch: Some("HO".into()),
    });
    let state = AppState::new(
        pool.clone(),
        keys,
        lakehouse_api::platform::pii::PiiCipher::new(&pii_keys()),
        Duration::from_secs(5),
        &HttpConfig::default(),
    )
    .with_listen_connection(config.listen.clone().unwrap());
    let router = app::router(state, HttpLimits::from_config(&HttpConfig::default()));
    let request = |path: &str| {
        axum::http::Request::builder()
            .method(Method::GET)
            .uri(path)
            .header("authorization", format!("Bearer {staff}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        send_via(&router, request("/v1/customers")).await.status,
        StatusCode::OK
    );
    // An event stream makes the hub LISTEN; its response streams until the router goes.
    let events = request("/v1/events/loans");
    let stream = tokio::spawn({
        let router = router.clone();
        async move { send_via(&router, events).await.status }
    });

    let started = Instant::now();
    let connections: Vec<(String, bool)> = loop {
        let rows: Vec<(String, bool)> = sqlx::query_as(
            "SELECT a.application_name, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'lakehouse_authenticator' ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        if rows
            .iter()
            .any(|(name, _)| name == "lakehouse-outbox-watch")
            || started.elapsed() > Duration::from_secs(10)
        {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let names: Vec<&str> = connections.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"lakehouse-api"), "{connections:?}");
    assert!(names.contains(&"lakehouse-outbox-watch"), "{connections:?}");
    assert!(
        connections.iter().all(|(_, ssl)| *ssl),
        "every service connection is encrypted: {connections:?}"
    );
    stream.abort();

    // verify-full means verified: another root, or a name the certificate does not carry, fails.
    make_certificates(&dir, "stranger");
    let stranger = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        cluster.url("lakehouse_tls"),
        dir.join("stranger-ca.crt").display()
    );
    assert!(
        PgConnection::connect(&stranger).await.is_err(),
        "an unknown root was trusted"
    );
    let by_name = verified(cluster.url("lakehouse_tls")).replace("127.0.0.1", "localhost");
    assert!(
        PgConnection::connect(&by_name).await.is_err(),
        "a name outside the certificate was accepted"
    );

    conn.close().await.ok();
    pool.close().await;
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
