//! `lakehouse-export`: one run of the lake export, or with `--follow` a run whenever the service
//! asks for one (docs/lake.md).

use std::process::ExitCode;

use base64::Engine;
use clap::Parser;
use lakehouse_exporter::tokens::Tokens;
use lakehouse_exporter::{follow, storage};
use lakehouse_exporter::{Export, Failure, Report};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};

/// Exports the journal, loans, installments and payments written since the last run to the
/// lake's Apache Iceberg tables, checks them against the trial balance, and commits.
#[derive(Parser)]
#[command(name = "lakehouse-export")]
struct Args {
    /// The core's database (the owner login, as migrations use).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Where the tables' files go: a local directory, or s3://bucket/prefix.
    #[arg(long, env = "LAKE_WAREHOUSE")]
    warehouse: String,
    /// The lake's name in the Iceberg SQL catalog (metadata.iceberg_tables).
    #[arg(long, env = "LAKE_CATALOG", default_value = "lakehouse")]
    catalog: String,
    /// An S3-compatible store's URL (MinIO, Ceph…), for an s3:// warehouse off AWS.
    #[arg(long, env = "LAKE_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// The S3 region.
    #[arg(long, env = "LAKE_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Keep running, and export whenever the service has asked for it (POST
    /// /v1/admin/lake-exports, or its scheduler after the daily close).
    #[arg(long)]
    follow: bool,
    /// One run, then exit (the default without --follow; for a container whose command is
    /// --follow).
    #[arg(long, conflicts_with = "follow")]
    once: bool,
    /// With --follow: how often to look for a request, in seconds.
    #[arg(long, env = "LAKE_FOLLOW_POLL_SECS", default_value_t = 10)]
    poll_seconds: u64,
    /// With --follow: the least time from one run's start to the next's, in seconds; after
    /// failed runs it doubles with each, up to an hour.
    #[arg(long, env = "LAKE_FOLLOW_MIN_GAP_SECS", default_value_t = 60)]
    min_gap_seconds: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("lakehouse-export: {failure}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Failure> {
    // The token key is a secret: from the environment only, never an argument a process list shows.
    let key = std::env::var("LAKE_TOKEN_KEY")
        .map_err(|_| Failure::Config("LAKE_TOKEN_KEY is not set".into()))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|e| Failure::Config(format!("LAKE_TOKEN_KEY is not base64: {e}")))?;
    let s3 = storage::S3 {
        endpoint: args.s3_endpoint,
        region: args.s3_region,
        access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok(),
        secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok(),
    };
    let (warehouse, file_io) = storage::open(&args.warehouse, &s3)?;
    let export = Export {
        catalog: args.catalog,
        warehouse,
        file_io,
        tokens: Tokens::new(&key)?,
    };
    if !args.follow {
        return export
            .run(&args.database_url)
            .await
            .map(|report| print(&report));
    }
    if args.poll_seconds == 0 {
        return Err(Failure::Config("--poll-seconds must be at least 1".into()));
    }
    // A run killed at any moment commits nothing, and the requests it was to answer wait for
    // the next: no shutdown handling is needed.
    let poll = Duration::from_secs(args.poll_seconds);
    let min_gap = Duration::from_secs(args.min_gap_seconds);
    let mut failures = 0u32;
    let mut next_run = Instant::now();
    loop {
        if Instant::now() >= next_run {
            match asked(&args.database_url, &export.catalog).await {
                Ok(true) => {
                    let started = Instant::now();
                    match export.run(&args.database_url).await {
                        Ok(report) => {
                            failures = 0;
                            print(&report);
                        }
                        Err(failure) => {
                            failures = failures.saturating_add(1);
                            eprintln!("lakehouse-export: {failure}");
                        }
                    }
                    next_run = started + follow::gap(min_gap, failures);
                }
                Ok(false) => {}
                Err(error) => eprintln!("lakehouse-export: looking for requests: {error}"),
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// Whether a request for an export of `catalog` waits.
async fn asked(database_url: &str, catalog: &str) -> Result<bool, sqlx::Error> {
    let mut conn = PgConnection::connect(database_url).await?;
    let waiting = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM metadata.lake_export_requests
                        WHERE catalog_name = $1 AND job_id IS NULL)",
    )
    .bind(catalog)
    .fetch_one(&mut conn)
    .await?;
    conn.close().await?;
    Ok(waiting)
}

/// The run's one line of JSON.
fn print(report: &Report) {
    let rows: serde_json::Map<String, serde_json::Value> = report
        .rows
        .iter()
        .map(|(name, rows)| ((*name).to_owned(), (*rows).into()))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "job_id": report.job_id,
            "position": report.position,
            "rows": rows,
            "dates_checked": report.dates_checked,
        })
    );
}
