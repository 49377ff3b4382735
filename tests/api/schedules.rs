//! The scheduler's jobs (servicing, metrics, risk, partitions, retention), run once across
//! instances and recorded; abandoned runs marked failed; retention in bounded batches.

use lakehouse_api::domain::jobs::{self, scheduler, Counts, JobSpec, JobStatus, Session};
use lakehouse_api::platform::config::RetentionConfig;

use crate::helpers::TestApp;

/// The scheduler as `.env.example` runs it: the lake's export asked for after the close.
fn schedule() -> scheduler::Schedule {
    scheduler::Schedule {
        period: std::time::Duration::from_secs(600),
        retention: RetentionConfig::default(),
        servicing_workers: 1,
        lake_after_close: Some("lakehouse".into()),
    }
}

#[tokio::test]
async fn every_job_runs_once_across_instances_and_is_recorded() {
    let app = TestApp::spawn().await;
    // Four instances, each with a pool of its own, as four processes would have.
    let instances: Vec<_> = (0..4)
        .map(|_| {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(4)
                .connect_lazy_with((*app.pool.connect_options()).clone());
            let session = Session::Caller {
                pool: pool.clone(),
                caller: lakehouse_api::platform::auth::Caller::system("scheduler"),
                statement_timeout_ms: 60_000,
            };
            tokio::spawn(async move { scheduler::run_due(&pool, &session, &schedule()).await })
        })
        .collect();
    let mut ran: Vec<String> = Vec::new();
    for instance in instances {
        ran.extend(instance.await.unwrap().into_iter().map(|run| run.job_name));
    }
    ran.sort();
    assert_eq!(
        ran,
        [
            "customer_metrics",
            "loan_analytics",
            "loan_servicing",
            "partition_upkeep",
            "retention",
            "risk_indicators"
        ],
        "each job once, whichever instance got it"
    );
    let recorded: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT job_name, status, triggered_by FROM metadata.job_execution ORDER BY job_name",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(recorded.len(), 6);
    assert!(
        recorded
            .iter()
            .all(|(_, status, by)| status == "SUCCEEDED" && by == "system|scheduler|admin"),
        "{recorded:?}"
    );
    // Servicing closed today, so one instance asked for the lake's export, once.
    let asked: Vec<(chrono::NaiveDate, String, bool)> = sqlx::query_as(
        "SELECT closed_day, requested_by, closed_day = core.business_date(now())
         FROM metadata.lake_export_requests WHERE catalog_name = 'lakehouse' AND job_id IS NULL",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].1, "system|scheduler|admin");
    assert!(asked[0].2, "the request names today's close: {asked:?}");
    // Nothing is due again a moment later, and the close is not asked for twice.
    let session = app.scheduler_session();
    assert!(
        scheduler::run_due(&app.state.db.pool, &session, &schedule())
            .await
            .is_empty()
    );
    let requests: i64 = sqlx::query_scalar("SELECT count(*) FROM metadata.lake_export_requests")
        .fetch_one(&app.owner)
        .await
        .unwrap();
    assert_eq!(requests, 1);
}

/// A run that outlasts the server's idle-in-transaction timeout (scaled down here from
/// deploy/postgresql.conf's 60 s) keeps its runner lock all along, and reports the outcome its
/// work had: the transaction that holds its lock switches that timeout off for itself.
#[tokio::test]
async fn a_run_longer_than_the_idle_timeout_keeps_its_lock_and_reports_its_outcome() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {} SET idle_in_transaction_session_timeout = '300ms'",
        app.database
    ))
    .execute(&app.owner)
    .await
    .unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect(&app.owner_url)
        .await
        .unwrap();
    const SPEC: JobSpec = JobSpec {
        name: "long_run",
        source_system: "test",
        source_table: "none",
        target_system: "test",
        target_table: "none",
        transformation_type: "TEST",
        transformation_logic: "sleeps past the idle timeout",
    };
    let checker = pool.clone();
    let run = jobs::run(
        &Session::Owner(pool.clone()),
        &SPEC,
        serde_json::json!({}),
        |_, mut tx| async move {
            // Busy for three idle timeouts (a transaction that waited idle would end too).
            sqlx::query("SELECT pg_sleep(1)").execute(&mut *tx).await?;
            // Meanwhile the run is alive: nothing takes it for abandoned.
            assert_eq!(jobs::fail_abandoned(&checker).await?, 0);
            Ok((tx, Counts::default()))
        },
    )
    .await
    .expect("the run reports its real outcome");
    assert_eq!(run.status, JobStatus::Succeeded);
    assert_eq!(
        app.count("SELECT count(*) FROM metadata.job_execution WHERE status = 'SUCCEEDED'")
            .await,
        1
    );

    // A run of short batches with pauses between them, each longer than the idle timeout: no
    // transaction of the run waits idle through them, so it too reports its real outcome.
    let batches = Session::Owner(pool.clone());
    let run = jobs::run_in_batches(
        &Session::Owner(pool.clone()),
        &SPEC,
        serde_json::json!({}),
        None,
        |_| async move {
            for _ in 0..3 {
                let mut tx = batches.begin().await?;
                sqlx::query("SELECT 1").execute(&mut *tx).await?;
                tx.commit().await?;
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Ok(Counts {
                read: 3,
                written: 3,
                failed: 0,
            })
        },
    )
    .await
    .expect("the batched run reports its real outcome");
    assert_eq!(
        (run.status, run.records_written),
        (JobStatus::Succeeded, Some(3))
    );
}

#[tokio::test]
async fn a_run_whose_runner_is_gone_is_marked_failed_and_a_live_one_is_not() {
    let app = TestApp::spawn().await;
    // A live runner: its lock held by an open transaction, as jobs::run holds it.
    let mut live = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(4242)")
        .execute(&mut *live)
        .await
        .unwrap();
    // A runner that is about to die: it took its lock and recorded its run.
    let mut gone = app.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock(4343)")
        .execute(&mut *gone)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO metadata.job_execution (job_name, status, runner_lock, started_at) VALUES \
         ('customer_metrics', 'RUNNING', 4242, now()), ('risk_indicators', 'RUNNING', 4343, now()), \
         ('retention', 'RUNNING', NULL, now() - interval '2 days')",
    )
    .execute(&app.owner)
    .await
    .unwrap();
    assert_eq!(
        lakehouse_api::domain::jobs::fail_abandoned(&app.pool)
            .await
            .unwrap(),
        1,
        "only the legacy row so far"
    );
    drop(gone); // it dies: its transaction rolls back and the lock goes
                // The rollback of a dropped transaction travels with the connection's next use: poll.
    let mut failed = 0;
    for _ in 0..50 {
        failed += lakehouse_api::domain::jobs::fail_abandoned(&app.pool)
            .await
            .unwrap();
        if failed == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1);
    let statuses: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT job_name, status, error_message FROM metadata.job_execution ORDER BY job_name",
    )
    .fetch_all(&app.owner)
    .await
    .unwrap();
    assert_eq!(statuses[0].0, "customer_metrics");
    assert_eq!(statuses[0].1, "RUNNING", "its runner still holds the lock");
    assert_eq!(statuses[1].1, "FAILED");
    assert_eq!(statuses[2].0, "risk_indicators");
    assert_eq!(statuses[2].1, "FAILED");
    assert!(
        statuses[2].2.as_deref().unwrap().starts_with("abandoned"),
        "{statuses:?}"
    );
    live.rollback().await.unwrap();
}

#[tokio::test]
async fn retention_deletes_only_what_is_past_its_time_in_bounded_batches() {
    let app = TestApp::spawn().await;
    sqlx::raw_sql(
        "INSERT INTO core.idempotency_keys (db_role, actor, idempotency_key, request_hash, created_at) \
         SELECT 'lakehouse_staff', 'a', 'old-' || n, '\\x00', now() - interval '25 hours' FROM generate_series(1, 5) n; \
         INSERT INTO core.idempotency_keys (db_role, actor, idempotency_key, request_hash, created_at) \
         VALUES ('lakehouse_staff', 'a', 'recent', '\\x00', now() - interval '23 hours'); \
         INSERT INTO metadata.outbox_events (topic, aggregate_id, payload, created_at) \
         SELECT 'loan_status_changed', gen_random_uuid(), '{}', now() - n * interval '20 days' FROM generate_series(1, 3) n; \
         INSERT INTO staging.customer_imports (batch_id, line_number, raw_data, processed, error_message, imported_at) \
         SELECT b, n, '{}', NOT (b = 'open' AND n = 2), 'x', now() - interval '40 days' \
         FROM unnest(ARRAY['done', 'open']) b, generate_series(1, 3) n; \
         INSERT INTO staging.customer_imports (batch_id, line_number, raw_data, processed, error_message, imported_at) \
         VALUES ('recent', 1, '{}', true, 'x', now() - interval '2 days'); \
         INSERT INTO metadata.job_execution (job_name, status, started_at, finished_at) \
         SELECT 'customer_metrics', 'SUCCEEDED', now() - d * interval '1 day', now() - d * interval '1 day' \
         FROM unnest(ARRAY[100, 120, 5]) d; \
         INSERT INTO metadata.data_lineage (source_system, source_table, target_system, target_table, job_id) \
         SELECT 'x', 'x', 'x', 'x', job_id FROM metadata.job_execution;",
    )
    .execute(&app.owner)
    .await
    .unwrap();

    // One statement deletes at most its batch.
    let first: i64 =
        sqlx::query_scalar("SELECT metadata.purge_batch('idempotency_keys', interval '1 hour', 2)")
            .fetch_one(&app.owner)
            .await
            .unwrap();
    assert_eq!(
        first, 2,
        "at most the batch, and never keys younger than 24 hours"
    );

    let session = app.scheduler_session();
    let run = lakehouse_api::domain::jobs::retention::run(&session, &RetentionConfig::default(), 2)
        .await
        .unwrap();
    // 3 keys left of 5 old, 2 outbox events past 30 days, the done batch's 3 rows, 2 runs
    // past 90 days.
    assert_eq!(run.records_written, Some(3 + 2 + 3 + 2));
    let left = |sql: &'static str| app.count(sql);
    assert_eq!(left("SELECT count(*) FROM core.idempotency_keys").await, 1);
    assert_eq!(left("SELECT count(*) FROM metadata.outbox_events").await, 1);
    assert_eq!(
        left("SELECT count(*) FROM staging.customer_imports WHERE batch_id IN ('open', 'recent')")
            .await,
        4,
        "a batch with a row unprocessed stays, and so does a recent one"
    );
    assert_eq!(
        left("SELECT count(*) FROM staging.customer_imports WHERE batch_id = 'done'").await,
        0
    );
    // The old runs and their lineage went; the recent one and this run stay.
    assert_eq!(
        left("SELECT count(*) FROM metadata.job_execution WHERE job_name = 'customer_metrics'")
            .await,
        1
    );
    assert_eq!(
        left(
            "SELECT count(*) FROM metadata.data_lineage d WHERE NOT EXISTS \
              (SELECT 1 FROM metadata.job_execution j WHERE j.job_id = d.job_id)"
        )
        .await,
        0
    );
}
