//! The lake export (crates/exporter, `lakehouse-export`) against the books.
//!
//! A seeded database is exported while a run is killed (SIGKILL) at its worst moment: every file
//! written, nothing committed. The next run, and one after a reversal made through the API, are
//! read back by DuckDB through `iceberg_scan` and by pyiceberg's SqlCatalog (tests/lake/check.py):
//! the lake's running balances equal `GET /v1/ledger/trial-balance?as_of=` for every business
//! date, its row counts equal PostgreSQL's with no duplicate key, and it holds nothing personal.
//!
//! Needs the exporter's binary and DuckDB (`scripts/lake-tools`); skipped where they are missing,
//! unless LAKEHOUSE_REQUIRE_DUCKDB is set (CI sets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::helpers::TestApp;

const TOKEN_KEY: &str = "bGFrZSB0b2tlbiBrZXkgZm9yIHRoZSB0ZXN0cywgMzIgYnl0ZXMgb3IgbW9yZQ==";

struct LakeTools {
    exporter: PathBuf,
    python: PathBuf,
    /// Settings for an S3-compatible store, passed to the exporter and to check.py.
    s3: Vec<(&'static str, String)>,
}

fn lake_tools() -> Option<LakeTools> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    // The test binary is target/<profile>/deps/api-…; the exporter is target/<profile>/.
    let exporter = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("lakehouse-export")));
    let python = root.join("target/lake-venv/bin/python");
    let ready = exporter.as_ref().is_some_and(|e| e.is_file())
        && Command::new(&python)
            .args(["-c", "import duckdb, pyiceberg"])
            .status()
            .is_ok_and(|s| s.success());
    match exporter {
        Some(exporter) if ready => Some(LakeTools {
            exporter,
            python,
            s3: Vec::new(),
        }),
        _ if std::env::var_os("LAKEHOUSE_REQUIRE_DUCKDB").is_some() => {
            panic!("the lake's tools are required: run scripts/lake-tools")
        }
        _ => {
            eprintln!("lake test skipped: no exporter binary or DuckDB (run scripts/lake-tools)");
            None
        }
    }
}

impl LakeTools {
    fn command(&self, app: &TestApp, warehouse: &str) -> Command {
        let mut command = Command::new(&self.exporter);
        command
            .env_clear()
            .env("DATABASE_URL", &app.owner_url)
            .env("LAKE_WAREHOUSE", warehouse)
            .env("LAKE_TOKEN_KEY", TOKEN_KEY)
            .envs(self.s3.iter().map(|(k, v)| (*k, v)))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    fn export(&self, app: &TestApp, warehouse: &str) -> Value {
        let output = self
            .command(app, warehouse)
            .output()
            .expect("run lakehouse-export");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("the run's report")
    }

    fn read(&self, app: &TestApp, forbidden: &[String]) -> Value {
        let mut child = Command::new(&self.python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/lake/check.py"))
            .args([&app.owner_url, "lakehouse"])
            .envs(self.s3.iter().map(|(k, v)| (*k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start check.py");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(forbidden.join("\n").as_bytes()).unwrap();
        }
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("check.py's report")
    }
}

/// Every value the lake must not hold: customers' ids, codes, names, phones and e-mails, and the
/// logins that wrote the rows.
async fn personal_values(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT v FROM (
             SELECT unnest(ARRAY[customer_id::text, customer_code, full_name, phone_number, email,
                                 address::text, date_of_birth::text]) v
             FROM core.customers
             UNION ALL SELECT posted_by FROM core.journal_entries
             UNION ALL SELECT unnest(ARRAY[created_by, approved_by, disbursed_by]) FROM core.loans
             UNION ALL SELECT unnest(ARRAY[created_by, status_changed_by]) FROM core.payments) s
         WHERE v IS NOT NULL",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
}

/// The columns the catalog marks personal, and every JSON column, of the exported tables.
async fn personal_columns(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT DISTINCT a.attname::text FROM pg_attribute a
         LEFT JOIN pg_description d ON d.objoid = a.attrelid AND d.objsubid = a.attnum
         WHERE a.attrelid IN ('core.customers'::regclass, 'core.loans'::regclass,
                              'core.payments'::regclass, 'core.journal_entries'::regclass)
           AND a.attnum > 0 AND NOT a.attisdropped
           AND (d.description LIKE 'Personal data:%' OR a.atttypid IN ('json'::regtype, 'jsonb'::regtype)
                OR a.attname LIKE '%\\_by' OR a.attname IN ('customer_id', 'customer_code'))",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
}

/// The next transaction id: every transaction that wrote before now is below it.
async fn next_transaction(app: &TestApp) -> i64 {
    app.count("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
        .await
}

/// The id of the transaction open on `conn`.
async fn transaction_of(conn: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT pg_current_xact_id()::text::bigint")
        .fetch_one(conn)
        .await
        .unwrap()
}

/// Waits until every transaction below `mark` has ended, in any database of the cluster. A run's
/// horizon is the oldest transaction still open anywhere (its snapshot's xmin), so a test that
/// expects a run to reach its own writes waits for the other tests' transactions begun before
/// them; the lake lags behind an open transaction, and is whole once it ends.
async fn settled(app: &TestApp, mark: i64) {
    let started = Instant::now();
    loop {
        let horizon = app
            .count("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
            .await;
        if horizon >= mark {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "a transaction older than {mark} is still open (horizon {horizon})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lake's tables against PostgreSQL, and its balances against the trial-balance route.
async fn assert_lake_is_the_books(app: &TestApp, lake: &Value, forbidden_columns: &[String]) {
    let tables = &lake["tables"];
    let counts = [
        (
            "journal_entries",
            "SELECT count(*) FROM core.journal_entries",
        ),
        ("journal_lines", "SELECT count(*) FROM core.journal_lines"),
        ("loans", "SELECT count(*) FROM core.loans"),
        (
            "installments",
            "SELECT count(*) FROM core.loan_installments",
        ),
        ("payments", "SELECT count(*) FROM core.payments"),
    ];
    for (table, sql) in counts {
        let t = &tables[table];
        let postgres = app.count(sql).await;
        // The journal is append-only: one lake row per row. The others keep every exported
        // version: one entity per row, each version once.
        let lake_count = if t["entities"].is_null() {
            &t["rows"]
        } else {
            &t["entities"]
        };
        assert_eq!(lake_count.as_i64(), Some(postgres), "{table}: {t}");
        assert_eq!(t["distinct_keys"], t["rows"], "{table} has a duplicate key");
        assert_eq!(
            t["pyiceberg_rows"], t["rows"],
            "{table}: pyiceberg and DuckDB disagree"
        );
        assert_eq!(t["leaks"], json!([]), "{table} holds personal values");
        for column in t["columns"].as_array().unwrap() {
            let column = column.as_str().unwrap();
            assert!(
                !forbidden_columns.iter().any(|c| c == column),
                "{table}.{column}"
            );
        }
    }

    let balances = lake["balances"].as_object().unwrap();
    assert!(balances.len() > 100, "{} business dates", balances.len());
    for (date, accounts) in balances {
        let trial = app
            .get(
                &format!("/v1/ledger/trial-balance?as_of={date}"),
                &app.token("admin", None),
            )
            .await;
        assert_eq!(trial.status, StatusCode::OK, "{}", trial.text());
        let books: BTreeMap<String, String> = trial.json()["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["account"].as_str().unwrap().to_owned(),
                    a["balance"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        let held: BTreeMap<String, String> = accounts
            .as_object()
            .unwrap()
            .iter()
            .filter(|(account, balance)| {
                balance.as_str() != Some("0.00") || books.contains_key(*account)
            })
            .map(|(a, b)| (a.clone(), b.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(held, books, "as of {date}");
    }

    let current = &lake["current"];
    for (table, figure) in [
        ("core.loans", "loans_by_status"),
        ("core.payments", "payments_by_status"),
    ] {
        let by_status: BTreeMap<String, i64> = sqlx::query_as(&format!(
            "SELECT status, count(*) FROM {table} GROUP BY status"
        ))
        .fetch_all(&app.owner)
        .await
        .unwrap()
        .into_iter()
        .collect();
        assert_eq!(current[figure], json!(by_status), "{table}");
    }
    let principal_paid: String =
        sqlx::query_scalar("SELECT sum(principal_paid)::text FROM core.loan_installments")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(
        current["installments_principal_paid"],
        json!(principal_paid)
    );
}

/// Runs the exporter while the lake's position is locked, so that it writes every file and
/// then waits to commit; kills it there.
async fn kill_before_commit(app: &TestApp, tools: &LakeTools, warehouse: &str) {
    let mut blocker = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query("LOCK TABLE metadata.lake_exports IN EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    let mut child = tools
        .command(app, warehouse)
        .spawn()
        .expect("start lakehouse-export");
    let started = Instant::now();
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%metadata.lake_exports%'",
        )
        .fetch_one(&app.owner)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        if child.try_wait().unwrap().is_some() {
            let output = child.wait_with_output().unwrap();
            panic!(
                "the exporter ended before its commit: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the exporter never reached its commit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
}

fn parquet_files(warehouse: &str) -> usize {
    fn walk(dir: &std::path::Path, found: &mut usize) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *found += 1;
            }
        }
    }
    let mut found = 0;
    walk(std::path::Path::new(warehouse), &mut found);
    found
}

#[tokio::test]
async fn the_lake_equals_the_books_after_a_killed_run_and_a_reversal() {
    let Some(tools) = lake_tools() else { return };
    let app = TestApp::spawn().await;
    app.seed(&[
        "--customers",
        "120",
        "--loans-per-customer",
        "2",
        "--payments-per-loan",
        "4",
    ])
    .await;
    let warehouse = std::env::temp_dir().join(format!("lake-{}", Uuid::now_v7().simple()));
    let warehouse = warehouse.to_str().unwrap().to_owned();
    let forbidden_columns = personal_columns(&app).await;
    assert!(
        forbidden_columns.iter().any(|c| c == "collateral_info"),
        "{forbidden_columns:?}"
    );

    // A payment method is whatever a client typed: a customer's name must not reach the lake.
    sqlx::query(
        "UPDATE core.payments SET payment_method = (SELECT full_name FROM core.customers LIMIT 1)
         WHERE payment_id = (SELECT payment_id FROM core.payments ORDER BY payment_id LIMIT 1)",
    )
    .execute(&app.owner)
    .await
    .unwrap();

    // Killed with every file written and nothing committed: the files are there, nothing
    // points to them, and the position has not moved.
    kill_before_commit(&app, &tools, &warehouse).await;
    assert!(parquet_files(&warehouse) >= 5);
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.iceberg_tables")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.lake_exports")
            .await,
        0
    );

    // A second run of the same lake while one holds it is refused at once.
    let mut holder = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(hashtextextended('lake_export:lakehouse', 0))")
        .execute(&mut holder)
        .await
        .unwrap();
    let refused = tools.command(&app, &warehouse).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("is running"));
    holder.close().await.unwrap();

    // A transaction that is still open during a run commits after it: its version is not in
    // that run, and is in the next (the horizon, not the clock, decides).
    let late_loan: Uuid = sqlx::query_scalar(
        "SELECT loan_id FROM core.loans WHERE status = 'DISBURSED' ORDER BY loan_id LIMIT 1",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    let mut late = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut late).await.unwrap();
    sqlx::query("UPDATE core.loans SET updated_at = now() WHERE loan_id = $1")
        .bind(late_loan)
        .execute(&mut late)
        .await
        .unwrap();

    settled(&app, transaction_of(&mut late).await).await;
    let first = tools.export(&app, &warehouse);
    sqlx::query("COMMIT").execute(&mut late).await.unwrap();
    let loans = app.count("SELECT count(*) FROM core.loans").await;
    let lake = tools.read(&app, &personal_values(&app).await);
    assert_lake_is_the_books(&app, &lake, &forbidden_columns).await;
    assert_eq!(lake["current"]["reversals"], json!(0));
    assert_eq!(
        lake["tables"]["loans"]["rows"].as_i64(),
        Some(loans),
        "one version a loan"
    );
    assert_eq!(
        first["rows"]["journal_lines"].as_i64(),
        Some(app.count("SELECT count(*) FROM core.journal_lines").await)
    );

    // The killed run is on record as failed; the good one with its rows, and lineage per table.
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.job_execution WHERE job_name = 'lake_export' AND status = 'FAILED'").await,
        1
    );
    let job_id = first["job_id"].as_str().unwrap();
    let lineage = app
        .count(&format!(
            "SELECT count(*) FROM metadata.data_lineage WHERE job_id = '{job_id}' AND target_system = 'iceberg'"
        ))
        .await;
    assert_eq!(lineage, 5);

    // A reversal made after the export reaches the lake on the next run, and the totals hold,
    // though a run killed before its commit came between (with the tables there this time).
    let payment_id: Uuid = sqlx::query_scalar(
        "SELECT payment_id FROM core.payments WHERE status = 'COMPLETED' AND payment_type = 'REPAYMENT'
           AND loan_id <> $1
         ORDER BY payment_date DESC LIMIT 1",
    )
    .bind(late_loan)
    .fetch_one(&app.owner)
    .await
    .unwrap();
    let reversed = app
        .json(
            Method::POST,
            &format!("/v1/payments/{payment_id}/reverse"),
            &app.staff(),
            &json!({"reason": "cheque bounced"}),
        )
        .await;
    assert_eq!(reversed.status, StatusCode::OK, "{}", reversed.text());
    let pointers = "SELECT string_agg(metadata_location, ',' ORDER BY table_name) FROM metadata.iceberg_tables";
    let committed: String = sqlx::query_scalar(pointers)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    kill_before_commit(&app, &tools, &warehouse).await;
    let after_kill: String = sqlx::query_scalar(pointers)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(after_kill, committed, "a killed run moves no pointer");

    settled(&app, next_transaction(&app).await).await;
    let second = tools.export(&app, &warehouse);
    assert!(
        second["rows"]["journal_entries"].as_i64().unwrap() >= 1,
        "{second}"
    );
    let lake = tools.read(&app, &personal_values(&app).await);
    assert_lake_is_the_books(&app, &lake, &forbidden_columns).await;
    assert_eq!(lake["current"]["reversals"], json!(1));
    // The late transaction's version, and the reversed repayment's loan's.
    assert_eq!(lake["tables"]["loans"]["rows"].as_i64(), Some(loans + 2));

    // A run with nothing new adds nothing, and moves no pointer.
    let committed: String = sqlx::query_scalar(pointers)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    let third = tools.export(&app, &warehouse);
    for (table, rows) in third["rows"].as_object().unwrap() {
        assert_eq!(rows, &json!(0), "{table}: {third}");
    }
    let unchanged: String = sqlx::query_scalar(pointers)
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(unchanged, committed);

    // A lake that lost a commit (its journal lines' pointer set back by one) no longer equals
    // the books: the run says so, and commits nothing.
    sqlx::query(
        "UPDATE metadata.iceberg_tables SET metadata_location = previous_metadata_location
         WHERE table_name = 'journal_lines'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let position = app
        .count("SELECT position::text::bigint FROM metadata.lake_exports")
        .await;
    let failed = tools.command(&app, &warehouse).output().unwrap();
    assert!(!failed.status.success());
    let message = String::from_utf8_lossy(&failed.stderr);
    assert!(
        message.contains("control totals differ: the lake holds"),
        "{message}"
    );
    assert!(message.contains("journal lines, the books"), "{message}");
    assert_eq!(
        app.count("SELECT position::text::bigint FROM metadata.lake_exports")
            .await,
        position
    );
    let recorded = app
        .count(
            "SELECT count(*) FROM metadata.job_execution WHERE job_name = 'lake_export' \
             AND status = 'FAILED' AND error_message LIKE 'control totals differ: %'",
        )
        .await;
    assert_eq!(recorded, 1, "the failed run is on record with its reason");
    std::fs::remove_dir_all(&warehouse).ok();
}

/// moto's S3 server (from PyPI, beside DuckDB in the lake's venv), stopped when dropped.
struct Moto(std::process::Child);

impl Drop for Moto {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[tokio::test]
async fn the_lake_goes_to_an_s3_compatible_store() {
    let Some(mut tools) = lake_tools() else {
        return;
    };
    let moto_server = tools.python.with_file_name("moto_server");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = Moto(
        Command::new(&moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server (scripts/lake-tools installs it)"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let started = Instant::now();
    // The bucket, once the server answers (moto takes any credentials).
    loop {
        match client.put(format!("{endpoint}/lake")).send().await {
            Ok(response) if response.status().is_success() => break,
            _ if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            other => panic!("moto never made the bucket: {other:?}"),
        }
    }
    tools.s3 = vec![
        ("LAKE_S3_ENDPOINT", endpoint),
        ("AWS_ACCESS_KEY_ID", "lake-test".into()),
        ("AWS_SECRET_ACCESS_KEY", "lake-test-secret".into()),
    ];

    let app = TestApp::spawn().await;
    app.seed(&[
        "--customers",
        "40",
        "--loans-per-customer",
        "1",
        "--payments-per-loan",
        "3",
    ])
    .await;
    settled(&app, next_transaction(&app).await).await;
    let report = tools.export(&app, "s3://lake/warehouse");
    assert!(
        report["rows"]["journal_lines"].as_i64().unwrap() > 0,
        "{report}"
    );
    let outside: i64 = app
        .count(
            "SELECT count(*) FROM metadata.iceberg_tables \
             WHERE metadata_location NOT LIKE 's3://lake/warehouse/lakehouse/%'",
        )
        .await;
    assert_eq!(outside, 0);
    let lake = tools.read(&app, &personal_values(&app).await);
    assert_lake_is_the_books(&app, &lake, &personal_columns(&app).await).await;
}

async fn ask_for_export(app: &TestApp, token: &str) -> crate::helpers::TestResponse {
    app.send(
        app.request(Method::POST, "/v1/admin/lake-exports", Some(token))
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
}

async fn lake_export_request(app: &TestApp, id: &Value) -> Value {
    let path = format!("/v1/admin/lake-exports/{}", id.as_str().unwrap());
    let response = app.get(&path, &app.token("admin", None)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

/// A run of the lake recorded as the exporter records one.
async fn record_run(app: &TestApp, status: &str, error: Option<&str>) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO metadata.job_execution (job_name, status, parameters, finished_at, error_message)
         VALUES ('lake_export', $1, '{\"catalog\": \"lakehouse\"}',
                 CASE WHEN $1 <> 'RUNNING' THEN now() END, $2)
         RETURNING job_id",
    )
    .bind(status)
    .bind(error)
    .fetch_one(&app.owner)
    .await
    .unwrap()
}

/// Requests wait one at a time for the exporter; only administrators ask and read them; a
/// waiting request shows the lake's latest attempt, an answered one its answer; the scheduler
/// asks once a day is closed, folding the close into a request that waits. (The exporter
/// answering them is tested below.)
#[tokio::test]
async fn administrators_ask_for_an_export_and_one_request_waits_at_a_time() {
    use lakehouse_api::domain::jobs::lake_export::ask_after_close;
    let app = TestApp::spawn().await;
    let admin = app.token("admin", None);
    // No close yet: the scheduler does not ask.
    assert_eq!(
        ask_after_close(&app.scheduler_session(), "lakehouse")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.lake_export_requests")
            .await,
        0
    );
    for role in ["staff", "analyst", "etl"] {
        ask_for_export(&app, &app.token(role, None))
            .await
            .problem(StatusCode::FORBIDDEN);
        app.get("/v1/admin/lake-exports", &app.token(role, None))
            .await
            .problem(StatusCode::FORBIDDEN);
    }

    let asked = ask_for_export(&app, &admin).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.text());
    let request = asked.json();
    let id = request["request_id"].clone();
    assert_eq!(
        asked.header("location"),
        Some(format!("/v1/admin/lake-exports/{}", id.as_str().unwrap()).as_str())
    );
    assert_eq!(request["status"], "PENDING");
    assert_eq!(request["catalog"], "lakehouse");
    assert_eq!(request["run"], Value::Null);
    assert_eq!(request["closed_day"], Value::Null);
    // Asking again while it waits returns the same request.
    let again = ask_for_export(&app, &admin).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(again.json()["request_id"], id);

    // A run since then is its latest attempt: running, then failed; it still waits.
    let running = record_run(&app, "RUNNING", None).await;
    let shown = lake_export_request(&app, &id).await;
    assert_eq!(shown["status"], "RUNNING");
    assert_eq!(shown["run"]["job_id"], json!(running));
    sqlx::query("UPDATE metadata.job_execution SET status = 'FAILED', finished_at = now(), error_message = 'control totals differ: …' WHERE job_id = $1")
        .bind(running)
        .execute(&app.owner)
        .await
        .unwrap();
    let shown = lake_export_request(&app, &id).await;
    assert_eq!(shown["status"], "FAILED");
    assert_eq!(shown["run"]["error_message"], "control totals differ: …");
    assert_eq!(ask_for_export(&app, &admin).await.json()["request_id"], id);

    // The day closes: the waiting request serves the close too, once.
    sqlx::query(
        "INSERT INTO metadata.job_execution (job_name, status, finished_at, parameters)
         VALUES ('loan_servicing', 'SUCCEEDED', now(),
                 jsonb_build_object('to', core.business_date(now())))",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    let marked = ask_after_close(&app.scheduler_session(), "lakehouse")
        .await
        .unwrap();
    assert_eq!(marked.map(|m| json!(m)), Some(id.clone()));
    assert_eq!(
        ask_after_close(&app.scheduler_session(), "lakehouse")
            .await
            .unwrap(),
        None
    );
    let shown = lake_export_request(&app, &id).await;
    assert_eq!(shown["closed_day"], json!(app.today().await));

    // A run answers it, as the exporter does; then the close is not asked for again, and a
    // new request can be made.
    let answer = record_run(&app, "SUCCEEDED", None).await;
    sqlx::query("UPDATE metadata.lake_export_requests SET job_id = $1, taken_at = now() WHERE job_id IS NULL")
        .bind(answer)
        .execute(&app.owner)
        .await
        .unwrap();
    let shown = lake_export_request(&app, &id).await;
    assert_eq!(shown["status"], "SUCCEEDED");
    assert_eq!(shown["run"]["job_id"], json!(answer));
    assert_eq!(
        ask_after_close(&app.scheduler_session(), "lakehouse")
            .await
            .unwrap(),
        None
    );
    let next = ask_for_export(&app, &admin).await;
    assert_eq!(next.status, StatusCode::ACCEPTED);
    let next_id = next.json()["request_id"].clone();
    assert_ne!(next_id, id);
    assert_eq!(
        lake_export_request(&app, &next_id).await["run"],
        Value::Null
    );

    // Newest first, in pages.
    let page = app
        .get("/v1/admin/lake-exports?limit=1", &admin)
        .await
        .json();
    assert_eq!(page["data"][0]["request_id"], next_id);
    let cursor = page["next_cursor"].as_str().unwrap();
    let rest = app
        .get(
            &format!("/v1/admin/lake-exports?limit=1&cursor={cursor}"),
            &admin,
        )
        .await
        .json();
    assert_eq!(rest["data"][0]["request_id"], id);
    assert_eq!(rest["next_cursor"], Value::Null);

    app.get(
        &format!("/v1/admin/lake-exports/{}", Uuid::now_v7()),
        &admin,
    )
    .await
    .problem(StatusCode::NOT_FOUND);
    app.get("/v1/admin/lake-exports/not-a-uuid", &admin)
        .await
        .problem(StatusCode::BAD_REQUEST);
}

/// `lakehouse-export` answers what the service asked for: a run answers a request only when it
/// holds everything committed before it; a killed run shows as the request's failed attempt
/// once the scheduler finds its runner gone; `--follow` runs as soon as an administrator asks.
#[tokio::test]
async fn the_exporter_answers_what_the_service_asked_for() {
    let Some(tools) = lake_tools() else { return };
    let app = TestApp::spawn().await;
    app.seed(&[]).await;
    let warehouse = std::env::temp_dir().join(format!("lake-{}", Uuid::now_v7().simple()));
    let warehouse = warehouse.to_str().unwrap().to_owned();
    let admin = app.token("admin", None);

    // A change commits while an older writer is still open, then the request is made: a run
    // during that writer holds neither (its horizon stops at the writer), so it does not
    // answer the request.
    let loans: Vec<Uuid> = sqlx::query_scalar("SELECT loan_id FROM core.loans ORDER BY loan_id")
        .fetch_all(&app.owner)
        .await
        .unwrap();
    let touch = "UPDATE core.loans SET updated_at = now() WHERE loan_id = $1";
    let mut late = PgConnection::connect(&app.owner_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut late).await.unwrap();
    sqlx::query(touch)
        .bind(loans[0])
        .execute(&mut late)
        .await
        .unwrap();
    sqlx::query(touch)
        .bind(loans[1])
        .execute(&app.owner)
        .await
        .unwrap();
    let id = ask_for_export(&app, &admin).await.json()["request_id"].clone();
    settled(&app, transaction_of(&mut late).await).await;
    let first = tools.export(&app, &warehouse);
    let waiting = lake_export_request(&app, &id).await;
    assert_eq!(waiting["status"], "PENDING", "{waiting}");
    assert_eq!(waiting["run"]["job_id"], first["job_id"]);
    sqlx::query("COMMIT").execute(&mut late).await.unwrap();

    // Killed before its commit: the scheduler finds its runner gone, and the request shows the
    // failed attempt.
    kill_before_commit(&app, &tools, &warehouse).await;
    // Its server process ends (and lets its lock go) once it finds the client gone.
    let started = Instant::now();
    while lakehouse_api::domain::jobs::fail_abandoned(&app.owner)
        .await
        .unwrap()
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the killed run was never found abandoned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed = lake_export_request(&app, &id).await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert!(
        failed["run"]["error_message"]
            .as_str()
            .unwrap()
            .contains("abandoned"),
        "{failed}"
    );

    // The next run answers it: the late commit is in.
    settled(&app, next_transaction(&app).await).await;
    let second = tools.export(&app, &warehouse);
    let done = lake_export_request(&app, &id).await;
    assert_eq!(done["status"], "SUCCEEDED", "{done}");
    assert_eq!(done["run"]["job_id"], second["job_id"]);
    let written: i64 = second["rows"]
        .as_object()
        .unwrap()
        .values()
        .map(|r| r.as_i64().unwrap())
        .sum();
    assert_eq!(
        second["rows"]["loans"],
        json!(2),
        "both loans' new versions: {second}"
    );
    assert_eq!(done["run"]["records_written"], json!(written));

    let mut follower = tools
        .command(&app, &warehouse)
        .args(["--follow", "--poll-seconds", "1", "--min-gap-seconds", "0"])
        .spawn()
        .expect("start lakehouse-export --follow");
    // Nothing asked: the follower waits and runs nothing.
    let runs = "SELECT count(*) FROM metadata.job_execution WHERE job_name = 'lake_export'";
    let before = app.count(runs).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(app.count(runs).await, before);
    let asked = ask_for_export(&app, &admin).await;
    assert_eq!(asked.status, StatusCode::ACCEPTED);
    let id = asked.json()["request_id"].clone();
    let started = Instant::now();
    let followed = loop {
        let request = lake_export_request(&app, &id).await;
        if request["status"] == "SUCCEEDED" {
            break request;
        }
        // As long as `settled` allows: a transaction another test holds open anywhere in the
        // cluster keeps the runs' horizon below the request until it ends.
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the follower never answered: {request}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(followed["run"]["job_name"], "lake_export");
    assert_ne!(followed["run"]["job_id"], second["job_id"]);
    // Nothing changed since: the follower's run wrote no row.
    assert_eq!(followed["run"]["records_written"], json!(0));
}
