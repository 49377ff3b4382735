//! Analytics jobs, customer imports and lineage.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, StatusCode};
use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestResponse};

fn analyst(app: &TestApp) -> String {
    app.token("analyst", None)
}

async fn refresh_metrics(app: &TestApp, date: NaiveDate) -> TestResponse {
    app.json(
        Method::POST,
        "/v1/analytics/customer-metrics/refresh",
        &analyst(app),
        &json!({"date": date}),
    )
    .await
}

fn dec(v: &Value) -> Decimal {
    match v {
        Value::String(s) => s.parse().unwrap(),
        Value::Null => Decimal::ZERO,
        other => panic!("{other} is not a decimal"),
    }
}

/// A small deterministic generator.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// customer, status, amount, disbursed, principal, interest, fees, next due, collateral
type LoanRow = (
    Uuid,
    String,
    Decimal,
    Option<chrono::DateTime<Utc>>,
    Option<Decimal>,
    Option<Decimal>,
    Decimal,
    Option<NaiveDate>,
    Option<Value>,
);

#[tokio::test]
async fn metrics_equal_a_recomputation_from_the_raw_rows() {
    let app = TestApp::spawn().await;
    app.ensure_products().await;
    let mut rng = Lcg(42);
    let mut customers = Vec::new();
    for i in 0..8 {
        let id = app
            .approved_customer(&format!("CUSTM{i:02}"), &format!("77700{i:04}"))
            .await;
        sqlx::query("UPDATE core.customers SET credit_score = $2 WHERE customer_id = $1")
            .bind(id)
            .bind(if i == 7 {
                None
            } else {
                Some(450 + rng.next(400) as i32)
            })
            .execute(&app.owner)
            .await
            .unwrap();
        customers.push(id);
    }
    for &customer in &customers {
        for _ in 0..rng.next(4) {
            let amount = 6_000_000 + rng.next(20) * 1_000_000;
            let mut body = json!({"customer_id": customer, "product_code": "PERSONAL_STD", "amount": amount.to_string(), "term_months": 12});
            if rng.next(2) == 0 {
                body["collateral_info"] = json!({"type": "CAR", "value": (amount / 2 + rng.next(3) * amount).to_string()});
            }
            let loan = app.apply(&app.staff(), body).await.json();
            match rng.next(4) {
                0 => {}
                1 => {
                    app.act(&app.staff(), &loan, "reject").await;
                }
                _ => {
                    app.act(&app.staff(), &loan, "approve").await;
                    app.act(&app.staff(), &loan, "disburse").await;
                    for _ in 0..rng.next(3) {
                        let pay = json!({"loan_id": loan["loan_id"], "payment_type": "REPAYMENT", "amount": (100_000 + rng.next(900_000)).to_string()});
                        app.pay(&app.staff(), &Uuid::now_v7().to_string(), &pay)
                            .await;
                    }
                    if rng.next(3) == 0 {
                        // Overdue: the first installment fell due some days ago.
                        sqlx::query("UPDATE core.loans SET next_due_date = current_date - $2::int WHERE loan_id = $1")
                            .bind(loan["loan_id"].as_str().unwrap().parse::<Uuid>().unwrap())
                            .bind(1 + rng.next(120) as i32)
                            .execute(&app.owner)
                            .await
                            .unwrap();
                    }
                }
            }
        }
    }

    let today = Utc::now().date_naive();
    let run = refresh_metrics(&app, today).await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text());
    assert_eq!(run.json()["status"], "SUCCEEDED");
    assert_eq!(run.json()["records_written"], 8);

    // The recomputation: raw rows, summed in Rust.
    let loans: Vec<LoanRow> =
        sqlx::query_as(
            "SELECT customer_id, status, loan_amount, disbursement_date, principal_outstanding, \
                    interest_outstanding, fees_outstanding, next_due_date, collateral_info FROM core.loans",
        )
        .fetch_all(&app.owner)
        .await
        .unwrap();
    let payments: Vec<(Uuid, String, String, Decimal)> =
        sqlx::query_as("SELECT customer_id, payment_type, status, amount FROM core.payments")
            .fetch_all(&app.owner)
            .await
            .unwrap();
    let scores: HashMap<Uuid, Option<i32>> = sqlx::query_as::<_, (Uuid, Option<i32>)>(
        "SELECT customer_id, credit_score FROM core.customers",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap()
    .into_iter()
    .collect();

    let page = app
        .get(
            &format!("/v1/analytics/customer-metrics?date={today}&limit=200"),
            &analyst(&app),
        )
        .await
        .json();
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        let customer: Uuid = row["customer_id"].as_str().unwrap().parse().unwrap();
        let mine: Vec<_> = loans.iter().filter(|l| l.0 == customer).collect();
        let active: Vec<_> = mine.iter().filter(|l| l.1 == "DISBURSED").collect();
        let total_borrowed: Decimal = mine.iter().filter(|l| l.3.is_some()).map(|l| l.2).sum();
        let outstanding: Decimal = active
            .iter()
            .map(|l| l.4.unwrap_or_default() + l.5.unwrap_or_default() + l.6)
            .sum();
        let dpd = active
            .iter()
            .filter_map(|l| l.7)
            .map(|d| (today - d).num_days().max(0))
            .max()
            .unwrap_or(0);
        let repaid: Decimal = payments
            .iter()
            .filter(|p| p.0 == customer && p.1 == "REPAYMENT" && p.2 == "COMPLETED")
            .map(|p| p.3)
            .sum();
        let secured: Vec<_> = active
            .iter()
            .filter_map(|l| {
                l.8.as_ref()
                    .and_then(|c| c["value"].as_str())
                    .map(|v| (l.2, v.parse::<Decimal>().unwrap()))
            })
            .collect();
        let ltv = (!secured.is_empty()).then(|| {
            let (amount, value) = secured
                .iter()
                .fold((Decimal::ZERO, Decimal::ZERO), |(a, v), s| {
                    (a + s.0, v + s.1)
                });
            (amount / value).round_dp(4)
        });
        let score = scores[&customer].unwrap_or(575);
        let risk = ((Decimal::from(850 - score) / Decimal::new(55, 1))
            + Decimal::from(dpd.min(90)) / Decimal::from(3))
        .min(Decimal::from(100))
        .round_dp(2);

        assert_eq!(row["total_loans"], mine.len(), "{row}");
        assert_eq!(row["active_loans"], active.len(), "{row}");
        assert_eq!(dec(&row["total_borrowed"]), total_borrowed, "{row}");
        assert_eq!(dec(&row["total_repaid"]), repaid, "{row}");
        assert_eq!(dec(&row["current_outstanding"]), outstanding, "{row}");
        assert_eq!(row["days_past_due"], dpd, "{row}");
        assert_eq!(dec(&row["risk_score"]), risk, "{row}");
        assert_eq!(
            row["ltv_ratio"]
                .as_str()
                .map(|s| s.parse::<Decimal>().unwrap()),
            ltv,
            "{row}"
        );
    }

    // Re-running the day replaces it rather than adding rows.
    assert_eq!(refresh_metrics(&app, today).await.status, StatusCode::OK);
    assert_eq!(
        app.count("SELECT count(*) FROM analytics.customer_metrics")
            .await,
        8
    );
}

#[tokio::test]
async fn risk_indicators_carry_thresholds_alert_levels_and_expiry() {
    let app = TestApp::spawn().await;
    let customer = app.approved_customer("CUSTR01", "888800001").await;
    let loan = app
        .disbursed_loan(customer, "PERSONAL_STD", "12000000.00", 12)
        .await;
    sqlx::query("UPDATE core.loans SET next_due_date = current_date - 45, collateral_info = '{\"type\": \"CAR\", \"value\": \"8000000\"}' WHERE loan_id = $1::uuid")
        .bind(loan.id)
        .execute(&app.owner)
        .await
        .unwrap();
    let run = app
        .json(
            Method::POST,
            "/v1/analytics/risk-indicators/refresh",
            &analyst(&app),
            &json!({}),
        )
        .await;
    assert_eq!(run.status, StatusCode::OK, "{}", run.text());

    let loans = app
        .get(
            "/v1/analytics/risk-indicators?entity_type=LOAN",
            &analyst(&app),
        )
        .await
        .json();
    let by_type: HashMap<&str, &Value> = loans["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["indicator_type"].as_str().unwrap(), i))
        .collect();
    assert_eq!(by_type["DAYS_PAST_DUE"]["indicator_value"], "45.0000");
    assert_eq!(by_type["DAYS_PAST_DUE"]["alert_level"], "HIGH");
    assert_eq!(by_type["DAYS_PAST_DUE"]["threshold_value"], "30.0000");
    assert_eq!(by_type["LOAN_TO_VALUE"]["indicator_value"], "1.5000");
    assert_eq!(by_type["LOAN_TO_VALUE"]["alert_level"], "CRITICAL");
    assert!(
        by_type["LOAN_TO_VALUE"]["expires_at"].as_str().unwrap()
            > by_type["LOAN_TO_VALUE"]["calculated_at"].as_str().unwrap()
    );

    let portfolio = app
        .get(
            "/v1/analytics/risk-indicators?entity_type=PORTFOLIO&alert_level=CRITICAL",
            &analyst(&app),
        )
        .await
        .json();
    assert_eq!(
        portfolio["data"][0]["indicator_type"],
        "PRODUCT_CONCENTRATION"
    );
    assert_eq!(
        portfolio["data"][0]["metadata"]["product_type"],
        "PERSONAL_LOAN"
    );
    let customers = app
        .get(
            "/v1/analytics/risk-indicators?entity_type=CUSTOMER",
            &analyst(&app),
        )
        .await
        .json();
    assert_eq!(customers["data"].as_array().unwrap().len(), 2);

    // A second run replaces the first.
    app.json(
        Method::POST,
        "/v1/analytics/risk-indicators/refresh",
        &analyst(&app),
        &json!({}),
    )
    .await;
    assert_eq!(
        app.count("SELECT count(*) FROM analytics.risk_indicators")
            .await,
        5
    );
    app.get(
        "/v1/analytics/risk-indicators?alert_level=SEVERE",
        &analyst(&app),
    )
    .await
    .problem(StatusCode::BAD_REQUEST);

    // History by business date: that set stands as two days ago's; the loan falls further
    // behind, and today's refresh adds today's set beside it.
    sqlx::raw_sql(
        "UPDATE analytics.risk_indicators SET as_of = as_of - 2, \
             calculated_at = calculated_at - interval '2 days', \
             expires_at = expires_at - interval '2 days'",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    sqlx::query("UPDATE core.loans SET next_due_date = current_date - 95 WHERE loan_id = $1::uuid")
        .bind(loan.id)
        .execute(&app.owner)
        .await
        .unwrap();
    let again = app
        .json(
            Method::POST,
            "/v1/analytics/risk-indicators/refresh",
            &analyst(&app),
            &json!({}),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
    assert_eq!(
        app.count("SELECT count(*) FROM analytics.risk_indicators")
            .await,
        10
    );
    let days_past_due = |page: Value| -> Vec<String> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["indicator_type"] == "DAYS_PAST_DUE")
            .map(|i| i["indicator_value"].as_str().unwrap().to_owned())
            .collect()
    };
    let today = app.today().await;
    let then = today - chrono::Days::new(2);
    let latest = app
        .get(
            "/v1/analytics/risk-indicators?entity_type=LOAN",
            &analyst(&app),
        )
        .await
        .json();
    assert_eq!(days_past_due(latest), ["95.0000"]);
    let before = app
        .get(
            &format!("/v1/analytics/risk-indicators?entity_type=LOAN&date={then}"),
            &analyst(&app),
        )
        .await
        .json();
    assert_eq!(before["data"][0]["as_of"], json!(then.to_string()));
    assert_eq!(days_past_due(before), ["45.0000"]);

    // Retention takes the days past RISK_INDICATORS_RETENTION_DAYS, and only them.
    let retention = lakehouse_api::platform::config::RetentionConfig {
        risk_indicators: std::time::Duration::from_secs(86_400),
        ..Default::default()
    };
    lakehouse_api::domain::jobs::retention::run(
        &lakehouse_api::domain::jobs::Session::Owner(app.owner.clone()),
        &retention,
        2,
    )
    .await
    .unwrap();
    let days: Vec<chrono::NaiveDate> =
        sqlx::query_scalar("SELECT DISTINCT as_of FROM analytics.risk_indicators ORDER BY as_of")
            .fetch_all(&app.owner)
            .await
            .unwrap();
    assert_eq!(days, [today]);
}

/// The catalog lists every table of the lakehouse's schemas from the database's own catalog,
/// says which hold personal data, and the read-only login reads the analytics tables and it.
#[tokio::test]
async fn the_catalog_describes_every_table_and_the_read_only_login_reads_analytics() {
    let app = TestApp::spawn().await;
    let missing: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname IN ('core', 'analytics', 'metadata', 'staging', 'audit') \
           AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND NOT EXISTS (SELECT 1 FROM metadata.catalog_info i \
                           WHERE (i.schema_name, i.table_name) = (n.nspname, c.relname) \
                             AND i.description IS NOT NULL) \
         ORDER BY 1",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert!(missing.is_empty(), "not in the catalog: {missing:?}");
    assert!(
        app.count("SELECT count(*) FROM metadata.catalog_info")
            .await
            >= 30
    );
    let personal: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name || '.' || table_name FROM metadata.catalog_info \
         WHERE contains_pii ORDER BY 1",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    for table in [
        "core.customers",
        "staging.customer_imports",
        "core.staff_members",
    ] {
        assert!(personal.contains(&table.to_owned()), "{personal:?}");
    }
    for table in [
        "core.journal_lines",
        "core.loans",
        "analytics.loan_analytics",
    ] {
        assert!(!personal.contains(&table.to_owned()), "{personal:?}");
    }
    // A table that appears is described at the next refresh (migrate runs one), and one that
    // goes leaves.
    sqlx::raw_sql(
        "CREATE TABLE analytics.scratch (n int); COMMENT ON TABLE analytics.scratch IS 'scratch'; \
         SELECT metadata.refresh_catalog();",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.catalog_info WHERE table_name = 'scratch'")
            .await,
        1
    );
    sqlx::raw_sql("DROP TABLE analytics.scratch; SELECT metadata.refresh_catalog();")
        .execute(&app.owner)
        .await
        .unwrap();
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.catalog_info WHERE table_name = 'scratch'")
            .await,
        0
    );

    let mut tx = app.owner.begin().await.unwrap();
    sqlx::raw_sql("SET LOCAL ROLE lakehouse_read_only")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in [
        "analytics.customer_metrics",
        "analytics.risk_indicators",
        "analytics.loan_analytics",
        "metadata.catalog_info",
        "core.loans",
        "core.journal_lines",
    ] {
        sqlx::raw_sql(&format!("SELECT count(*) FROM {table}"))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|e| panic!("the read-only login cannot read {table}: {e}"));
    }
    tx.rollback().await.unwrap();
}

/// An NDJSON body of `rows` customers, generated as it is sent; every hundredth row is bad in
/// one of five ways. Returns the body and the set of bad line numbers.
fn ndjson(prefix: &str, rows: usize, first: usize) -> (Body, Vec<usize>) {
    let bad: Vec<usize> = (first..first + rows).filter(|n| n % 100 == 99).collect();
    let prefix = prefix.to_owned();
    let lines = (first..first + rows).map(move |n| {
        let mut record = json!({
            "customer_code": format!("{prefix}{n:07}"), "full_name": format!("Imported {n}"),
            "id_number": format!("{:012}", 500_000_000_000u64 + n as u64), "date_of_birth": "1990-05-06",
            "address": {"city": "Hue"}, "credit_score": 600 + (n % 200) as i32
        });
        if n % 100 == 99 {
            match (n / 100) % 5 {
                0 => { record.as_object_mut().unwrap().remove("full_name"); }
                1 => record["date_of_birth"] = json!("1990-13-45"),
                2 => record["customer_code"] = json!(format!("{prefix}{:07}", n - 1)),
                3 => record["id_number"] = json!(format!("{:012}", 500_000_000_000u64 + n as u64 - 2)),
                _ => return Bytes::from(format!("{{\"customer_code\": \"{prefix}{n:07}\",\n")),
            }
        }
        Bytes::from(format!("{record}\n"))
    });
    let chunks = futures_util::stream::iter(lines.map(Ok::<_, std::io::Error>));
    (Body::from_stream(chunks), bad)
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse()
                    .unwrap_or(0)
            })
        })
        .unwrap_or(0)
}

async fn import(app: &TestApp, batch: &str, body: Body) -> TestResponse {
    let request = app
        .request(
            Method::POST,
            &format!("/v1/imports/customers?batch_id={batch}&source_system=crm"),
            Some(&app.token("etl", None)),
        )
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(body)
        .unwrap();
    app.send(request).await
}

#[tokio::test]
async fn a_large_ndjson_import_lands_every_good_row_once_and_reports_every_bad_one() {
    let app = TestApp::spawn().await;
    let rows: usize = std::env::var("IMPORT_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let (body, bad) = ndjson("IMP", rows, 0);
    let rss_before = peak_rss_kib();
    let started = Instant::now();
    let response = import(&app, "big-1", body).await;
    let elapsed = started.elapsed();
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let report = response.json();
    assert_eq!(report["total_rows"], rows);
    assert_eq!(report["imported"], rows - bad.len());
    assert_eq!(report["failed"], bad.len());
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), bad.len().min(1000));
    let lines: Vec<usize> = errors
        .iter()
        .map(|e| e["line_number"].as_u64().unwrap() as usize - 1)
        .collect();
    assert_eq!(lines, bad[..bad.len().min(1000)]);
    let kinds: Vec<&str> = errors
        .iter()
        .take(5)
        .map(|e| e["error"].as_str().unwrap())
        .collect();
    assert!(kinds[0].contains("missing field full_name"), "{kinds:?}");
    assert!(kinds[1].contains("date_of_birth"), "{kinds:?}");
    assert!(kinds[2].contains("duplicate customer_code"), "{kinds:?}");
    assert!(kinds[3].contains("duplicate id_number"), "{kinds:?}");
    assert!(kinds[4].contains("not valid JSON"), "{kinds:?}");
    assert_eq!(
        app.count("SELECT count(*) FROM core.customers").await,
        (rows - bad.len()) as i64
    );

    // No ID number in clear anywhere, staging included.
    let clear = app
        .count(
            "SELECT count(*) FROM staging.customer_imports WHERE raw_data::text LIKE '%500000000%'",
        )
        .await;
    assert_eq!(clear, 0);
    let growth_mib = peak_rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!(
        "IMPORT {rows} NDJSON rows ({} bad) in {elapsed:.1?}: {:.0} rows/s; peak RSS grew by {growth_mib} MiB",
        bad.len(),
        rows as f64 / elapsed.as_secs_f64()
    );
    assert!(growth_mib < 200, "memory grew by {growth_mib} MiB");

    let report = app
        .get("/v1/imports/big-1", &app.token("etl", None))
        .await
        .json();
    assert_eq!(report["imported"], rows - bad.len());
}

#[tokio::test]
async fn reposting_a_batch_changes_nothing_and_concurrent_overlapping_imports_make_no_duplicates() {
    let app = TestApp::spawn().await;
    let (body, bad) = ndjson("REP", 300, 0);
    let first = import(&app, "batch-a", body).await.json();
    assert_eq!(first["imported"], 300 - bad.len());
    let (again, _) = ndjson("REP", 300, 0);
    let second = import(&app, "batch-a", again).await.json();
    for field in ["total_rows", "imported", "failed", "errors"] {
        assert_eq!(first[field], second[field], "{field}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM core.customers").await,
        (300 - bad.len()) as i64
    );

    // Two batches at once, overlapping on rows 200..300 of this second set.
    let (one, _) = ndjson("OVL", 300, 0);
    let (two, _) = ndjson("OVL", 300, 200);
    let (a, b) = tokio::join!(import(&app, "batch-b", one), import(&app, "batch-c", two));
    assert_eq!(
        (a.status, b.status),
        (StatusCode::OK, StatusCode::OK),
        "{} {}",
        a.text(),
        b.text()
    );
    let distinct = app.count("SELECT count(DISTINCT customer_code) FROM core.customers WHERE customer_code LIKE 'OVL%'").await;
    let total = app
        .count("SELECT count(*) FROM core.customers WHERE customer_code LIKE 'OVL%'")
        .await;
    assert_eq!(distinct, total);
    let imported = a.json()["imported"].as_i64().unwrap() + b.json()["imported"].as_i64().unwrap();
    assert_eq!(imported, total);
}

#[tokio::test]
async fn every_job_run_leaves_matching_execution_and_lineage_rows_failures_included() {
    let app = TestApp::spawn().await;
    let (body, _) = ndjson("JOB", 20, 0);
    let imported = import(&app, "jobs-1", body).await.json();
    let import_job = imported["job_id"].as_str().unwrap().to_owned();
    let metrics = refresh_metrics(&app, Utc::now().date_naive()).await.json();
    let risk = app
        .json(
            Method::POST,
            "/v1/analytics/risk-indicators/refresh",
            &analyst(&app),
            &json!({}),
        )
        .await
        .json();

    sqlx::raw_sql("REVOKE INSERT ON analytics.customer_metrics FROM lakehouse_analyst")
        .execute(&app.owner)
        .await
        .unwrap();
    let failed = refresh_metrics(&app, Utc::now().date_naive()).await;
    failed.problem(StatusCode::FORBIDDEN);
    sqlx::raw_sql("GRANT INSERT ON analytics.customer_metrics TO lakehouse_analyst")
        .execute(&app.owner)
        .await
        .unwrap();

    let jobs = app.get("/v1/metadata/jobs", &analyst(&app)).await.json();
    let jobs = jobs["data"].as_array().unwrap();
    assert_eq!(jobs.len(), 4);
    let statuses: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j["job_name"].as_str().unwrap(),
                j["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [
            ("customer_metrics", "FAILED"),
            ("risk_indicators", "SUCCEEDED"),
            ("customer_metrics", "SUCCEEDED"),
            ("customer_import", "SUCCEEDED")
        ]
    );
    assert!(jobs[0]["error_message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(jobs.iter().all(|j| j["finished_at"].is_string()));
    assert_eq!(jobs[3]["job_id"], import_job.as_str());
    assert_eq!(jobs[2]["job_id"], metrics["job_id"]);
    assert_eq!(jobs[1]["job_id"], risk["job_id"]);
    // The status filter takes a job status, and only one.
    let failed = app
        .get("/v1/metadata/jobs?status=FAILED", &analyst(&app))
        .await
        .json();
    assert_eq!(failed["data"].as_array().unwrap().len(), 1, "{failed}");
    assert_eq!(failed["data"][0]["job_id"], jobs[0]["job_id"]);
    app.get("/v1/metadata/jobs?status=BOGUS", &analyst(&app))
        .await
        .problem(StatusCode::BAD_REQUEST);

    for job in jobs {
        let lineage = app
            .get(
                &format!(
                    "/v1/metadata/lineage?job_id={}",
                    job["job_id"].as_str().unwrap()
                ),
                &analyst(&app),
            )
            .await
            .json();
        let lineage = lineage["data"].as_array().unwrap();
        assert_eq!(lineage.len(), 1, "{job}");
        assert_eq!(
            lineage[0]["success_flag"],
            job["status"] == "SUCCEEDED",
            "{job}"
        );
        assert_eq!(lineage[0]["record_count"], job["records_written"], "{job}");
    }
}

#[tokio::test]
async fn customers_and_branch_staff_cannot_reach_analytics_jobs_or_imports() {
    let app = TestApp::spawn().await;
    let customer = app.customer(Uuid::now_v7());
    for token in [customer.as_str(), &app.staff()] {
        for path in [
            "/v1/analytics/customer-metrics",
            "/v1/analytics/risk-indicators",
            "/v1/metadata/jobs",
            "/v1/metadata/lineage",
            "/v1/imports/some-batch",
        ] {
            app.get(path, token).await.problem(StatusCode::FORBIDDEN);
        }
        for path in [
            "/v1/analytics/customer-metrics/refresh",
            "/v1/analytics/risk-indicators/refresh",
        ] {
            app.json(Method::POST, path, token, &json!({}))
                .await
                .problem(StatusCode::FORBIDDEN);
        }
        let (body, _) = ndjson("NOPE", 3, 0);
        let request = app
            .request(Method::POST, "/v1/imports/customers", Some(token))
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .unwrap();
        app.send(request).await.problem(StatusCode::FORBIDDEN);
    }
    assert_eq!(
        app.count("SELECT count(*) FROM staging.customer_imports")
            .await,
        0
    );
    // Analysts read customers, masked.
    let id = app.customer_id("CUSTX01", "123123123").await;
    let seen = app
        .get(&format!("/v1/customers/{id}"), &analyst(&app))
        .await
        .json();
    assert_eq!(seen["id_number"], "*****3123");
}

#[tokio::test]
async fn a_record_with_a_nul_character_gets_its_error_and_the_rest_import() {
    let app = TestApp::spawn().await;
    let body = "{\"customer_code\":\"NUL0001\",\"full_name\":\"A\",\"id_number\":\"600600601\",\"address\":{\"city\":\"x\\u0000y\"}}\n\
                {\"customer_code\":\"NUL0002\",\"full_name\":\"B\",\"id_number\":\"600600602\"}\n";
    let report = import(&app, "nul-1", Body::from(body)).await;
    assert_eq!(report.status, StatusCode::OK, "{}", report.text());
    let report = report.json();
    assert_eq!(
        (report["imported"].as_i64(), report["failed"].as_i64()),
        (Some(1), Some(1))
    );
    assert!(report["errors"][0]["error"]
        .as_str()
        .unwrap()
        .contains("NUL"));
}

/// A body fed line by line from the test, as a slow client sends it.
fn fed_body() -> (
    tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    Body,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    let lines = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|line| (line, receiver))
    });
    (sender, Body::from_stream(lines))
}

fn good_line(prefix: &str, n: usize) -> Bytes {
    let record = json!({
        "customer_code": format!("{prefix}{n:07}"), "full_name": format!("Fed {n}"),
        "id_number": format!("{:012}", 600_000_000_000u64 + n as u64),
    });
    Bytes::from(format!("{record}\n"))
}

/// While the client is still sending, the lines received so far are staged and committed a
/// chunk at a time, and no transaction holds a transaction id (which would hold the events'
/// horizon back). A second upload of the same batch meanwhile is refused with a 409.
#[tokio::test]
async fn an_upload_commits_its_chunks_as_they_arrive_and_holds_no_transaction_open_meanwhile() {
    let app = TestApp::spawn().await;
    let (sender, body) = fed_body();
    let feeding = async {
        for n in 0..1500 {
            sender.send(Ok(good_line("FED", n))).await.unwrap();
        }
        let mut staged = 0;
        for _ in 0..100 {
            staged = app
                .count("SELECT count(*) FROM staging.customer_imports WHERE batch_id = 'fed-1'")
                .await;
            if staged >= 1000 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(
            staged, 1000,
            "the first chunk is committed while the rest is on its way"
        );
        assert_eq!(
            app.count(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND backend_xid IS NOT NULL"
            )
            .await,
            0,
            "no transaction holds an id while the client sends"
        );
        let (_, again) = fed_body();
        import(&app, "fed-1", again)
            .await
            .problem(StatusCode::CONFLICT);
        for n in 1500..2500 {
            sender.send(Ok(good_line("FED", n))).await.unwrap();
        }
        drop(sender);
    };
    let (response, ()) = tokio::join!(import(&app, "fed-1", body), feeding);
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let report = response.json();
    assert_eq!(
        (report["imported"].as_i64(), report["failed"].as_i64()),
        (Some(2500), Some(0))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM core.customers WHERE customer_code LIKE 'FED%'")
            .await,
        2500
    );
}

/// An upload cut off after several chunks were staged leaves no line behind and imports nothing;
/// the same batch sent again imports every line. Lines a dead upload left staged are replaced.
#[tokio::test]
async fn a_failed_upload_leaves_no_line_staged_and_its_batch_can_be_sent_again() {
    let app = TestApp::spawn().await;
    let (sender, body) = fed_body();
    let feeding = async {
        for n in 0..2500 {
            sender.send(Ok(good_line("CUT", n))).await.unwrap();
        }
        sender
            .send(Err(std::io::Error::other("connection reset")))
            .await
            .unwrap();
    };
    let (response, ()) = tokio::join!(import(&app, "cut-1", body), feeding);
    assert!(response.problem(StatusCode::BAD_REQUEST)["detail"]
        .as_str()
        .unwrap()
        .contains("interrupted"));
    let left = |sql: &'static str| app.count(sql);
    assert_eq!(
        left("SELECT count(*) FROM staging.customer_imports WHERE batch_id = 'cut-1'").await,
        0
    );
    assert_eq!(left("SELECT count(*) FROM core.customers").await, 0);
    assert_eq!(
        left("SELECT count(*) FROM metadata.job_execution WHERE status = 'FAILED'").await,
        1
    );

    // An upload that died (its run never finished) left three lines staged, one of them judged.
    let dead = Uuid::now_v7();
    sqlx::raw_sql(&format!(
        "INSERT INTO metadata.job_execution (job_id, job_name, status) \
         VALUES ('{dead}', 'customer_import', 'RUNNING'); \
         INSERT INTO staging.customer_imports (batch_id, line_number, raw_data, job_id, error_message, \
                                               created_by) \
         SELECT 'cut-1', n, '{{}}', '{dead}', 'stale', 'local|test-etl|etl' FROM generate_series(1, 3) n"
    ))
    .execute(&app.owner)
    .await
    .unwrap();
    let lines =
        futures_util::stream::iter((0..2500).map(|n| Ok::<_, std::io::Error>(good_line("CUT", n))));
    let response = import(&app, "cut-1", Body::from_stream(lines)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let report = response.json();
    assert_eq!(
        (report["imported"].as_i64(), report["failed"].as_i64()),
        (Some(2500), Some(0))
    );
    assert_eq!(left("SELECT count(*) FROM core.customers").await, 2500);
    assert_eq!(
        left("SELECT count(*) FROM staging.customer_imports WHERE error_message = 'stale'").await,
        0
    );
}

/// A batch belongs to the ETL principal that sent it: another gets 404 on its report and 409 if
/// it sends lines under the same batch id, which adds nothing to the batch.
#[tokio::test]
async fn an_etl_principal_neither_reads_nor_extends_another_s_batch() {
    let app = TestApp::spawn().await;
    let send = |token: String| {
        let (body, _) = ndjson("OWN", 3, 0);
        let request = app
            .request(
                Method::POST,
                "/v1/imports/customers?batch_id=owned-1&source_system=crm",
                Some(&token),
            )
            .header(header::CONTENT_TYPE, "application/x-ndjson")
            .body(body)
            .unwrap();
        app.send(request)
    };
    let first = app.token_for("etl-first", "etl", None);
    let second = app.token_for("etl-second", "etl", None);
    let sent = send(first.clone()).await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.text());
    assert_eq!(
        app.get("/v1/imports/owned-1", &first).await.status,
        StatusCode::OK
    );
    app.get("/v1/imports/owned-1", &second)
        .await
        .problem(StatusCode::NOT_FOUND);
    let refused = send(second.clone()).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text());
    assert_eq!(refused.json()["errors"][0]["field"], "batch_id");
    let lines = app
        .count("SELECT count(*) FROM staging.customer_imports WHERE batch_id = 'owned-1'")
        .await;
    assert_eq!(lines, 3);
    // The sender may send it again.
    let again = send(first).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text());
}

/// Refreshes cannot hurt the API or each other: twenty asked for at once run at most
/// `MAX_CONCURRENT_JOBS` (2) at a time on their own pool (the rest 429), one risk refresh at a
/// time on every instance (409), and staff reads meanwhile all answer 200. The indicators are one
/// set, as many as a refresh alone makes.
#[tokio::test]
async fn concurrent_refreshes_leave_one_set_and_staff_reads_keep_answering() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    for (code, id) in [("RFR01", "880880880"), ("RFR02", "880880881")] {
        let customer = app.approved_customer(code, id).await;
        app.loan_for(customer, "20000000").await;
    }
    let refreshes: Vec<_> = (0..20)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                app.json(
                    Method::POST,
                    "/v1/analytics/risk-indicators/refresh",
                    &analyst(&app),
                    &json!({}),
                )
                .await
                .status
            })
        })
        .collect();
    let mut reads = Vec::new();
    for _ in 0..20 {
        reads.push(app.get("/v1/customers", &app.staff()).await.status);
    }
    let mut statuses = Vec::new();
    for refresh in refreshes {
        statuses.push(refresh.await.unwrap());
    }
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "{reads:?}");
    assert!(
        statuses.iter().all(|s| [
            StatusCode::OK,
            StatusCode::CONFLICT,
            StatusCode::TOO_MANY_REQUESTS
        ]
        .contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&StatusCode::OK), "{statuses:?}");
    assert!(
        statuses.iter().any(|s| *s != StatusCode::OK),
        "twenty at once do not all run: {statuses:?}"
    );
    let after_concurrent = app
        .count("SELECT count(*) FROM analytics.risk_indicators")
        .await;
    let alone = app
        .json(
            Method::POST,
            "/v1/analytics/risk-indicators/refresh",
            &analyst(&app),
            &json!({}),
        )
        .await;
    assert_eq!(alone.status, StatusCode::OK, "{}", alone.text());
    assert_eq!(
        app.count("SELECT count(*) FROM analytics.risk_indicators")
            .await,
        after_concurrent,
        "one set"
    );
}
