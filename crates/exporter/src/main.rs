//! `lakehouse-export`: one run of the lake export (docs/lake.md).

use std::process::ExitCode;

use base64::Engine;
use clap::Parser;
use lakehouse_exporter::tokens::Tokens;
use lakehouse_exporter::{Export, Failure};

/// Exports the journal, loans, installments and payments written since the last run to the
/// lake's Apache Iceberg tables, checks them against the trial balance, and commits.
#[derive(Parser)]
#[command(name = "lakehouse-export")]
struct Args {
    /// The core's database (the owner login, as migrations use).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Where the tables' files go: a local directory.
    #[arg(long, env = "LAKE_WAREHOUSE")]
    warehouse: String,
    /// The lake's name in the Iceberg SQL catalog (metadata.iceberg_tables).
    #[arg(long, env = "LAKE_CATALOG", default_value = "lakehouse")]
    catalog: String,
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
    let warehouse = local_warehouse(&args.warehouse)?;
    let export = Export {
        catalog: args.catalog,
        warehouse,
        tokens: Tokens::new(&key)?,
    };
    let report = export.run(&args.database_url).await?;
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
    Ok(())
}

/// An absolute `file://` location: the catalog's entries must mean the same to every reader.
fn local_warehouse(warehouse: &str) -> Result<String, Failure> {
    let path = warehouse.strip_prefix("file://").unwrap_or(warehouse);
    if path.contains("://") {
        return Err(Failure::Config(format!(
            "unsupported warehouse {warehouse}: a local directory"
        )));
    }
    std::fs::create_dir_all(path).map_err(|e| Failure::Config(format!("warehouse {path}: {e}")))?;
    let absolute = std::fs::canonicalize(path)
        .map_err(|e| Failure::Config(format!("warehouse {path}: {e}")))?;
    Ok(format!("file://{}", absolute.display()))
}
