//! The binary as a user runs it: `dev` (the README's first command), `serve`'s configuration
//! checks, `token`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lakehouse_api::platform::auth::JwtKeys;
use lakehouse_api::platform::config::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use uuid::Uuid;

use crate::helpers::{command, dev_command, run, TestApp};

const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// Sends raw HTTP/1.1 bytes and returns (status, body text).
async fn http(addr: &str, request: &[u8]) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

async fn get(addr: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    http(addr, request.as_bytes())
        .await
        .unwrap_or((0, String::new()))
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

fn terminate(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[tokio::test]
async fn dev_serves_sample_data_and_swagger_then_shuts_down_gracefully_and_cleans_up() {
    // With DATABASE_URL set, `dev` uses that server; give it a database of its own there.
    let external = std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty());
    let _db = match external {
        Some(_) => Some(TestApp::spawn().await),
        None => None,
    };
    let mut attempt = 0;
    let (addr, mut child, tokens) = loop {
        attempt += 1;
        let addr = free_addr();
        let mut command = dev_command();
        command.arg("dev").env("LISTEN_ADDR", &addr);
        if let (Some(app), Some(url)) = (&_db, &external) {
            // The same server and credentials, the test's own database.
            let (base, query) = url.split_once('?').unwrap_or((url, ""));
            let server = &base[..base.rfind('/').unwrap_or(base.len())];
            let sep = if query.is_empty() { "" } else { "?" };
            command.env(
                "DATABASE_URL",
                format!("{server}/{}{sep}{query}", app.database),
            );
        }
        let stderr_path =
            std::env::temp_dir().join(format!("lakehouse-dev-test-{}.err", uuid::Uuid::now_v7()));
        let stderr_file = std::fs::File::create(&stderr_path).unwrap();
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(stderr_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Read the printed tokens, and keep draining stdout so the server never writes to a
        // closed pipe.
        let (sender, tokens) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let mut words = line.split_whitespace();
                if let (Some(role), Some(token)) = (words.next(), words.last()) {
                    if token.matches('.').count() == 2 {
                        let _ = sender.send((role.to_owned(), token.to_owned()));
                    }
                }
            }
        });
        let started = Instant::now();
        let mut exited = None;
        while get(&addr, "/health/ready", None).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(90),
                "dev never became ready"
            );
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let Some(status) = exited else {
            break (addr, child, tokens);
        };
        let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        // Another test may take the probed port before dev binds it; try another one.
        if attempt < 3 && stderr.contains("in use") {
            continue;
        }
        panic!("dev exited early: {status}\n{stderr}");
    };
    let tokens: Vec<(String, String)> = tokens.try_iter().collect();
    let roles: Vec<&str> = tokens.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["customer", "staff", "analyst", "etl", "admin"]);
    let staff = &tokens[1].1;

    let (status, page) = get(&addr, "/docs/", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("swagger-ui"));
    let (status, customers) = get(&addr, "/v1/customers", Some(staff)).await;
    assert_eq!(status, 200);
    for code in ["CUST001", "CUST002", "CUST003"] {
        assert!(
            customers.contains(code),
            "lab customer {code} missing: {customers}"
        );
    }
    let (status, me) = get(&addr, "/v1/me", Some(&tokens[0].1)).await;
    assert_eq!(status, 200);
    assert!(me.contains("CUST001"));

    // A request in flight when SIGTERM arrives still gets its answer.
    let body = r#"{"customer_code":"CUST777","full_name":"Late Arrival","id_number":"777777777"}"#;
    let head = format!(
        "POST /v1/customers HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {staff}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    terminate(&child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let response = String::from_utf8_lossy(&raw);
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "dev did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}");
    let prefix = format!("lakehouse-pg-{}-", child.id());
    let leftovers = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .count();
    assert_eq!(leftovers, 0, "the throwaway cluster was removed");
}

#[test]
fn the_service_binary_carries_no_development_command_nor_the_devtools_crate() {
    let (ok, stdout, _) = run(command().arg("--help"));
    assert!(ok, "{stdout}");
    let commands: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        commands,
        ["serve", "migrate", "token", "jobs", "openapi", "help"]
    );
    // The development tooling is a dev-dependency only: no [dependencies] line names it.
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("\n[dependencies]\n")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap();
    for tooling in ["lakehouse-devtools", "lakehouse-cluster"] {
        assert!(!dependencies.contains(tooling), "{dependencies}");
    }
}

#[test]
fn serve_refuses_a_missing_or_malformed_setting_with_one_clear_line() {
    let (ok, _, stderr) = run(command().arg("serve"));
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: configuration error: APP_DB_PASSWORD"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(command()
        .arg("serve")
        .env("DATABASE_URL", "postgres://owner@localhost/db")
        .env("APP_DB_PASSWORD", "a-long-enough-password")
        .env("JWT_SECRET", "0123456789abcdef0123456789abcdef")
        .env("PII_ENCRYPTION_KEY", "dG9vIHNob3J0")
        .env("PII_HASH_KEY", KEY));
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("PII_ENCRYPTION_KEY must decode to 32 bytes"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(command().arg("serve").env("LOG_FORMAT", "xml"));
    assert!(!ok);
    assert!(stderr.contains("LOG_FORMAT"), "{stderr}");
}

#[test]
fn token_prints_a_token_the_service_accepts() {
    let secret = "a-secret-for-the-token-command-0123456789";
    let customer = Uuid::now_v7();
    let (ok, stdout, stderr) = run(command()
        .args([
            "token",
            "--role",
            "customer",
            "--customer-id",
            &customer.to_string(),
            "--ttl",
            "5m",
        ])
        .env("JWT_SECRET", secret));
    assert!(ok, "{stderr}");
    let keys = JwtKeys::new(Secret::new(secret.as_bytes().to_vec()));
    let now = chrono::Utc::now().timestamp();
    let claims = keys.verify(stdout.trim()).expect("the token verifies");
    assert_eq!(claims.role, "customer");
    assert_eq!(claims.customer_id, Some(customer));
    assert!((claims.exp - now - 300).abs() <= 2);

    for args in [
        &["token", "--role", "customer"][..],
        &["token", "--role", "root"][..],
    ] {
        let (ok, stdout, _) = run(command().args(args).env("JWT_SECRET", secret));
        assert!(!ok && stdout.is_empty(), "{args:?}");
    }
}

#[tokio::test]
async fn seed_refuses_more_volume_than_it_can_hold_before_writing_anything() {
    let app = TestApp::spawn().await;
    let customers = app.count("SELECT count(*) FROM core.customers").await;
    let (ok, _, stderr) = run(dev_command()
        .args([
            "seed",
            "--customers",
            "4000000",
            "--loans-per-customer",
            "10",
        ])
        .env("DATABASE_URL", &app.owner_url)
        .env("PII_ENCRYPTION_KEY", KEY)
        .env("PII_HASH_KEY", KEY));
    assert!(!ok);
    assert!(
        stderr.contains("the seed generates at most 30000000 at once"),
        "{stderr}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.customers").await,
        customers,
        "not even the lab data"
    );
}

#[tokio::test]
async fn seed_loads_the_lab_data_once_and_generates_volume_without_events() {
    let app = TestApp::spawn().await;
    let seed = |extra: &[&str]| {
        let mut c = dev_command();
        c.arg("seed")
            .args(extra)
            .env("DATABASE_URL", &app.owner_url)
            .env("PII_ENCRYPTION_KEY", KEY)
            .env("PII_HASH_KEY", KEY);
        run(&mut c)
    };
    // The bulk load drops and rebuilds indexes and foreign keys; all must come back valid.
    const STRUCTURE: &str = "SELECT (SELECT count(*) FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid \
         WHERE t.relnamespace = 'core'::regnamespace AND NOT t.relispartition AND i.indisvalid) * 1000 \
         + (SELECT count(*) FROM pg_constraint WHERE connamespace = 'core'::regnamespace \
            AND contype = 'f' AND conparentid = 0 AND convalidated)";
    let structure = app.count(STRUCTURE).await;
    let (ok, _, stderr) = seed(&[]);
    assert!(ok, "{stderr}");
    // The lab loans are paid out and repaid through the ledger, as the service does it: each has
    // its schedule and open balances, and TXN2024001's 2,500,000 is allocated to LN2024001.
    assert_eq!(
        app.count("SELECT count(*) FROM core.loan_installments")
            .await,
        24 + 36
    );
    let allocated: rust_decimal::Decimal = sqlx::query_scalar(
        "SELECT sum(a.amount) FROM core.payment_allocations a \
         JOIN core.payment_directory d USING (payment_id) WHERE d.transaction_id = 'TXN2024001'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(allocated, rust_decimal::Decimal::new(2_500_000, 0));
    let (principal, total_paid): (rust_decimal::Decimal, rust_decimal::Decimal) = sqlx::query_as(
        "SELECT principal_outstanding, total_paid FROM core.loans WHERE loan_number = 'LN2024001'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    assert_eq!(total_paid, rust_decimal::Decimal::new(2_500_000, 0));
    assert!(
        principal < rust_decimal::Decimal::new(50_000_000, 0),
        "{principal}"
    );
    // Serviced through today: LN2024001 matured in 2026 with most of it unpaid, so its interest
    // is receivable, it has late fees, it is past due and has defaulted; and the books of every
    // lab loan reconcile with their journals.
    let lab = app.get_loan_by_number("LN2024001").await;
    assert_eq!(lab["status"], "DEFAULTED", "{lab}");
    assert!(lab["days_past_due"].as_i64().unwrap() > 90, "{lab}");
    assert_ne!(lab["interest_outstanding"], "0.00");
    assert_ne!(lab["penalties_outstanding"], "0.00");
    let problems = crate::books::disagreements(&app.owner).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // TXN2024001 was applied, so it can be reversed.
    let txn: uuid::Uuid = sqlx::query_scalar(
        "SELECT payment_id FROM core.payment_directory WHERE transaction_id = 'TXN2024001'",
    )
    .fetch_one(&app.owner)
    .await
    .unwrap();
    let reversed = app
        .json(
            axum::http::Method::POST,
            &format!("/v1/payments/{txn}/reverse"),
            &app.staff(),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(
        reversed.status,
        axum::http::StatusCode::OK,
        "{}",
        reversed.text()
    );
    let problems = crate::books::disagreements(&app.owner).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    let (ok, _, stderr) = seed(&[
        "--customers",
        "40",
        "--loans-per-customer",
        "2",
        "--payments-per-loan",
        "3",
    ]);
    assert!(ok, "{stderr}");
    assert_eq!(app.count("SELECT count(*) FROM core.customers").await, 43);
    assert_eq!(app.count("SELECT count(*) FROM core.loans").await, 82);
    // Generated loans have real histories, played through the ledger: each has its 24
    // installments; most are current, some in arrears, some closed, a few defaulted; each pays in
    // at most three repayments (a payoff may add one); and the books of every loan reconcile
    // with its journal.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM core.loans l WHERE l.loan_number LIKE 'LT%' AND              (SELECT count(*) FROM core.loan_installments i WHERE i.loan_id = l.loan_id) <> 24"
        )
        .await,
        0
    );
    let statuses = app
        .count("SELECT count(DISTINCT status) FROM core.loans WHERE loan_number LIKE 'LT%'")
        .await;
    assert!(statuses >= 2, "{statuses} statuses among generated loans");
    assert!(
        app.count(
            "SELECT count(*) FROM core.journal_entries e JOIN core.loan_directory d USING (loan_id) \
             WHERE d.loan_number LIKE 'LT%' AND e.kind IN ('INTEREST_DUE', 'LATE_FEE')"
        )
        .await
            > 0,
        "the seed's servicing posted interest and late fees"
    );
    let generated_payments = app
        .count(
            "SELECT count(*) FROM core.payments p JOIN core.loan_directory d USING (loan_id)              WHERE d.loan_number LIKE 'LT%'",
        )
        .await;
    assert!(
        (80..=320).contains(&generated_payments),
        "{generated_payments}"
    );
    let problems = crate::books::disagreements(&app.owner).await;
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // The bulk load announces nothing; the seed's servicing run announces its fees and defaults
    // as every run does.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM metadata.outbox_events e \
             JOIN core.loan_directory d ON d.loan_id = e.aggregate_id WHERE d.loan_number LIKE 'LT%' \
               AND e.topic NOT IN ('loan_fee_charged', 'loan_status_changed')"
        )
        .await,
        0,
        "the bulk load itself announces nothing"
    );
    // One definition of servicing: the seed left interest, late fees and defaults to the
    // service's servicing run (recorded like any), and servicing today again changes nothing.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM metadata.job_execution WHERE job_name = 'loan_servicing' \
             AND status = 'SUCCEEDED'"
        )
        .await,
        1
    );
    let serviced = "SELECT (SELECT count(*) FROM core.journal_entries) * 1000000 \
                    + (SELECT sum(version) FROM core.loans) * 1000 \
                    + (SELECT count(*) FROM core.loans WHERE status = 'DEFAULTED')";
    let seeded = app.count(serviced).await;
    let (ok, stdout, stderr) = run(command()
        .args(["jobs", "servicing"])
        .env("DATABASE_URL", &app.owner_url));
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(app.count(serviced).await, seeded, "{stdout}");
    assert!(
        app.count("SELECT count(*) FROM metadata.outbox_events")
            .await
            >= 2
    );
    assert_eq!(
        app.count(STRUCTURE).await,
        structure,
        "indexes and keys rebuilt"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM pg_index WHERE NOT indisvalid")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.loan_directory").await,
        82
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.payment_directory")
            .await,
        app.count("SELECT count(*) FROM core.payments").await
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM core.payments p JOIN core.loans l USING (loan_id) \
             WHERE p.payment_type = 'REPAYMENT' \
               AND NOT p.payment_date BETWEEN l.disbursement_date AND now()"
        )
        .await,
        0,
        "repayments fall between disbursement and now"
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM core.loans \
             WHERE substr(loan_id::text, 15, 1) <> '7' \
                OR substr(loan_id::text, 20, 1) NOT IN ('8', '9', 'a', 'b') \
                OR (loan_number LIKE 'LT%' AND ('x' || left(replace(loan_id::text, '-', ''), 12))::bit(48)::bigint \
                    <> floor(extract(epoch FROM application_date) * 1000)::bigint)"
        )
        .await,
        0,
        "generated ids are UUIDv7 of the application date"
    );
    // 80 loans over 2,900 days: every one of the eight years before this one gets some.
    let loan_years = app
        .count("SELECT count(DISTINCT tableoid) FROM core.loans WHERE loan_number LIKE 'LT%'")
        .await;
    assert!(
        loan_years >= 8,
        "generated loans in {loan_years} yearly partitions"
    );
    let payment_months = app
        .count(
            "SELECT count(DISTINCT p.tableoid) FROM core.payments p JOIN core.loans l USING (loan_id) \
             WHERE l.loan_number LIKE 'LT%'",
        )
        .await;
    assert!(
        payment_months >= 20,
        "generated payments in {payment_months} monthly partitions"
    );
    let lab_loans = app
        .count("SELECT count(*) FROM core.loans WHERE loan_number IN ('LN2024001', 'LN2024002') AND status IN ('DISBURSED', 'DEFAULTED')")
        .await;
    assert_eq!(lab_loans, 2);
    let partitions = app
        .count("SELECT count(*) FROM pg_inherits WHERE inhparent = 'core.loans'::regclass")
        .await;
    assert!(partitions >= 9, "{partitions}");
    assert_eq!(
        app.count(
            "SELECT count(DISTINCT tablename) FROM pg_stats WHERE schemaname = 'core' \
             AND tablename IN ('customers', 'loans', 'payments', 'loan_directory', 'payment_directory')"
        )
        .await,
        5,
        "the seed leaves statistics on every table it loads"
    );
}

#[tokio::test]
async fn jobs_run_from_the_command_line_as_the_owner() {
    let app = TestApp::spawn().await;
    app.customer_id("CUST990", "990990990").await;
    for job in [
        &["jobs", "metrics", "--date", "2026-01-15"][..],
        &["jobs", "risk"][..],
    ] {
        let (ok, stdout, stderr) = run(command().args(job).env("DATABASE_URL", &app.owner_url));
        assert!(ok, "{stderr}");
        let run: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(run["status"], "SUCCEEDED", "{run}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.job_execution WHERE status = 'SUCCEEDED'")
            .await,
        2
    );
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.data_lineage")
            .await,
        2
    );
}

/// `jobs servicing` never runs past the business day by mistake: a future `--date` is one line
/// and no run; `--rehearse` runs it, says so, and the run's parameters record it.
#[tokio::test]
async fn servicing_refuses_a_future_date_unless_rehearsed() {
    let app = TestApp::spawn().await;
    let today: chrono::NaiveDate = sqlx::query_scalar("SELECT core.business_date(now())")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    let typo = (today + chrono::Days::new(365)).to_string();
    let (ok, _, stderr) = run(command()
        .args(["jobs", "servicing", "--date", &typo])
        .env("DATABASE_URL", &app.owner_url));
    assert!(!ok);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--date") && stderr.contains(&typo),
        "{stderr}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.job_execution")
            .await,
        0
    );

    let tomorrow = (today + chrono::Days::new(1)).to_string();
    let (ok, stdout, stderr) = run(command()
        .args(["jobs", "servicing", "--date", &tomorrow, "--rehearse"])
        .env("DATABASE_URL", &app.owner_url));
    assert!(ok, "{stderr}");
    assert!(stderr.contains("rehearsal"), "{stderr}");
    let job: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(job["status"], "SUCCEEDED", "{job}");
    assert_eq!(job["parameters"]["rehearsal"], true, "{job}");
    assert_eq!(job["parameters"]["to"], tomorrow, "{job}");

    // Today needs no flag, and its run records none.
    let (ok, stdout, stderr) = run(command()
        .args(["jobs", "servicing"])
        .env("DATABASE_URL", &app.owner_url));
    assert!(ok, "{stderr}");
    let job: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(job["parameters"].get("rehearsal").is_none(), "{job}");
}

/// `serve` with an event stream open stops on SIGTERM long before its shutdown deadline, with
/// and without a LISTEN connection of its own; metrics are on their own listener only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_stops_with_event_streams_open_in_both_listen_configurations() {
    let app = TestApp::spawn().await;
    let secret = "serve-test-jwt-secret-serve-test-jwt-secret";
    let staff = JwtKeys::new(Secret::new(secret.as_bytes().to_vec())).sign(
        &lakehouse_api::platform::auth::Claims {
            sub: "serve-test".into(),
            role: "staff".into(),
            customer_id: None,
            exp: chrono::Utc::now().timestamp() + 600,
            iat: None,
            branch: None,
        },
    );
    for listen_url in [None, Some(app.owner_url.clone())] {
        let (addr, metrics_addr) = (free_addr(), free_addr());
        let mut command = command();
        command
            .arg("serve")
            .env("DATABASE_URL", &app.owner_url)
            .env("APP_DB_PASSWORD", app.app_password())
            .env("JWT_SECRET", secret)
            .env("PII_ENCRYPTION_KEY", KEY)
            .env("PII_HASH_KEY", KEY)
            .env("LISTEN_ADDR", &addr)
            .env("METRICS_LISTEN_ADDR", &metrics_addr);
        if let Some(url) = &listen_url {
            command.env("LISTEN_DATABASE_URL", url);
        }
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        while get(&addr, "/health/ready", None).await.0 != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "serve never became ready"
            );
            assert!(child.try_wait().unwrap().is_none(), "serve exited early");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(get(&addr, "/metrics", None).await.0, 404);
        let (status, text) = get(&metrics_addr, "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(text.contains("http_requests_total"), "{text}");

        let mut stream = TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET /v1/events/loans HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {staff}\r\n\
             Accept: text/event-stream\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.unwrap();
        assert_eq!(&head[9..12], b"200", "the stream opened");
        tokio::time::sleep(Duration::from_millis(300)).await;

        terminate(&child);
        let stopping = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            // The shutdown deadline is 30 s: stopping well within it means the stream ended.
            assert!(
                stopping.elapsed() < Duration::from_secs(10),
                "serve (LISTEN_DATABASE_URL {}) hung on SIGTERM with a stream open",
                if listen_url.is_some() { "set" } else { "unset" }
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "{status}");
    }
}

/// `serve` with an ID-number key that is not the one the database's rows were sealed with stops
/// at once with one line naming the variable, instead of answering 500 to every read.
#[tokio::test]
async fn serve_refuses_a_wrong_pii_key_at_start_up() {
    let app = TestApp::spawn().await;
    app.customer_id("WRONG-KEY-1", "660101123456").await;
    let (addr, metrics_addr) = (free_addr(), free_addr());
    let output = tokio::task::spawn_blocking(move || {
        command()
            .arg("serve")
            .env("DATABASE_URL", &app.owner_url)
            .env("APP_DB_PASSWORD", app.app_password())
            .env("JWT_SECRET", "serve-test-jwt-secret-serve-test-jwt-secret")
            .env("PII_ENCRYPTION_KEY", KEY)
            .env("PII_HASH_KEY", KEY)
            .env("LISTEN_ADDR", &addr)
            .env("METRICS_LISTEN_ADDR", &metrics_addr)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "error")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(
            "error: PII_ENCRYPTION_KEY is not the key this database knows as key id 1"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_token_command_gives_each_customer_a_subject_of_their_own() {
    let app = TestApp::spawn().await;
    let token = |customer: Uuid| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_lakehouse-api"))
            .args(["token", "--role", "customer", "--customer-id"])
            .arg(customer.to_string())
            .env("JWT_SECRET", crate::helpers::JWT_SECRET)
            .output()
            .unwrap();
        assert!(output.status.success());
        let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
        app.keys.verify(&token).unwrap().sub
    };
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    assert_eq!(token(a), format!("customer-{a}"));
    assert_ne!(token(a), token(b));
}
