//! Point-in-time recovery with pgBackRest (Debian `pgbackrest`): WAL archived from the
//! cluster, a full backup, payments before and after a named restore point, and a restore to
//! that point into a new data directory that then holds exactly the payments before it.
//!
//! Skipped where pgBackRest is missing, unless LAKEHOUSE_REQUIRE_PGBACKREST is set (CI sets it).

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::helpers::OwnCluster;

fn available() -> bool {
    if std::process::Command::new("pgbackrest")
        .arg("version")
        .output()
        .is_ok()
    {
        return true;
    }
    if std::env::var_os("LAKEHOUSE_REQUIRE_PGBACKREST").is_some() {
        panic!("pgBackRest is required (Debian pgbackrest)");
    }
    eprintln!("pgBackRest test skipped: pgbackrest is not installed");
    false
}

/// The configuration `deploy/pgbackrest.conf` documents, for this cluster.
fn config(own: &OwnCluster) -> String {
    let root = own.cluster.root().display().to_string();
    format!(
        "[global]\nrepo1-path={root}/repo\nrepo1-retention-full=2\nlog-path={root}/pgbackrest-log\n\
         lock-path={root}/pgbackrest-lock\nlog-level-console=warn\nstart-fast=y\ncompress-type=none\n\n\
         [lakehouse]\npg1-path={}\npg1-port={}\npg1-socket-path={root}\n",
        own.cluster.data_path().display(),
        own.cluster.port()
    )
}

async fn repay(own: &OwnCluster, loan_id: &str, n: usize) -> String {
    let paid = own
        .send(
            Method::POST,
            "/v1/payments",
            json!({"loan_id": loan_id, "payment_type": "REPAYMENT", "amount": "100.00"}),
            Some(&format!("pitr-{loan_id}-{n}")),
        )
        .await;
    assert_eq!(paid.status, StatusCode::CREATED, "{}", paid.text());
    paid.json()["payment_id"].as_str().unwrap().to_owned()
}

async fn repayments(conn: &mut PgConnection, loan_id: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT payment_id::text FROM core.payments WHERE loan_id = $1::uuid \
         AND payment_type = 'REPAYMENT' ORDER BY payment_id",
    )
    .bind(loan_id)
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restore_to_a_named_point_holds_exactly_the_payments_made_before_it() {
    if !available() {
        return;
    }
    let Some(mut own) =
        OwnCluster::start("pitr", Duration::from_secs(5), Duration::from_secs(10)).await
    else {
        return;
    };
    // The throwaway cluster turns archiving off; this one archives, as production does.
    own.cluster.add_options("-c archive_mode=on");
    let cluster = &own.cluster;
    let root = cluster.root().to_path_buf();
    let conf = root.join("pgbackrest.conf");
    std::fs::write(&conf, config(&own)).unwrap();
    for dir in ["repo", "pgbackrest-log", "pgbackrest-lock"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    cluster.own(&root).unwrap();
    let conf_arg = format!("--config={}", conf.display());
    let pgbackrest = |args: &[&str]| {
        let mut all = vec![conf_arg.as_str(), "--stanza=lakehouse"];
        all.extend_from_slice(args);
        cluster.run_as_owner("pgbackrest", &all).unwrap()
    };

    // WAL archived into this repository (archive_mode takes a restart).
    let mut conn = own.owner.connect().await.unwrap();
    sqlx::raw_sql(&format!(
        "ALTER SYSTEM SET archive_command = 'pgbackrest {conf_arg} --stanza=lakehouse archive-push %p'"
    ))
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    cluster.stop().unwrap();
    cluster.restart().unwrap();
    pgbackrest(&["stanza-create"]);
    pgbackrest(&["check"]);
    pgbackrest(&["--type=full", "backup"]);

    // Payments, the point, and payments after it.
    let loan = own.disbursed_loan("PITR01", "910910910").await;
    let loan_id = loan["loan_id"].as_str().unwrap().to_owned();
    let mut before = Vec::new();
    for n in 0..3 {
        before.push(repay(&own, &loan_id, n).await);
    }
    before.sort();
    let mut conn = own.owner.connect().await.unwrap();
    sqlx::query("SELECT pg_create_restore_point('before_the_mistake')")
        .execute(&mut conn)
        .await
        .unwrap();
    for n in 3..5 {
        repay(&own, &loan_id, n).await;
    }
    assert_eq!(repayments(&mut conn, &loan_id).await.len(), 5);
    sqlx::query("SELECT pg_switch_wal()")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    // check switches WAL again and waits until the segment is in the repository.
    pgbackrest(&["check"]);

    // Restore to the point into a new data directory, and start it beside the original.
    let restored = root.join("restored");
    std::fs::create_dir_all(&restored).unwrap();
    cluster.own(&restored).unwrap();
    let restored_path = format!("--pg1-path={}", restored.display());
    pgbackrest(&[
        &restored_path,
        "--type=name",
        "--target=before_the_mistake",
        "--target-action=promote",
        "restore",
    ]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300 -c archive_mode=off",
        root.display()
    );
    let log = root.join("restored.log").display().to_string();
    let data = restored.display().to_string();
    if let Err(e) = cluster.run_as_owner(
        "pg_ctl",
        &[
            "-D", &data, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
        ],
    ) {
        panic!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    let stop = || {
        let _ = cluster.run_as_owner("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    };
    let mut conn = own.owner.clone().port(port).connect().await.unwrap();
    let started = Instant::now();
    while sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
        .fetch_one(&mut conn)
        .await
        .unwrap()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "recovery never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found = repayments(&mut conn, &loan_id).await;
    conn.close().await.unwrap();
    stop();
    assert_eq!(
        found, before,
        "exactly the payments made before the restore point"
    );
}
