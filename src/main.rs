//! The command line: parse, load configuration, call into the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use lakehouse_api::platform::auth::{mint, JwtKeys};
use lakehouse_api::platform::config::{
    self, Environment, HttpConfig, OwnerDb, ServeConfig, Source,
};
use lakehouse_api::{app, openapi, platform::telemetry, CliResult};

#[derive(Parser)]
#[command(name = "lakehouse-api", version, about = "The lending core's REST API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API (the database must be migrated).
    Serve,
    /// Apply migrations as the owner (DATABASE_URL) and set the service login's password.
    Migrate,
    /// Print a signed token for local use.
    Token {
        #[arg(long)]
        role: String,
        /// Required for --role customer.
        #[arg(long)]
        customer_id: Option<Uuid>,
        /// Lifetime: 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// The token's subject; defaults to "customer-<customer id>" for a customer (one subject
        /// per customer) and "local-<role>" otherwise.
        #[arg(long)]
        sub: Option<String>,
        /// A staff token's office code; defaults to HO, the head office, which sees every
        /// branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Run a batch job as the owner: `metrics [--date D]`, `risk`,
    /// `servicing [--from D] [--date D]` or `reencrypt-pii [--batch N]`.
    Jobs {
        #[command(subcommand)]
        job: Job,
    },
    /// Write the OpenAPI document (default: openapi/openapi.json).
    Openapi {
        #[arg(long, default_value = "openapi/openapi.json")]
        output: String,
    },
}

#[derive(Subcommand)]
enum Job {
    /// Refresh analytics.customer_metrics for a day (default today, UTC).
    Metrics {
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
    },
    /// Recompute analytics.risk_indicators.
    Risk,
    /// Service every active loan for each business day from --from (default --date) to --date
    /// (default today): interest falling due, late fees, default and cure. A --date after the
    /// business day is refused.
    Servicing {
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
        /// Run past the business day anyway, on a copy of the database or in a test: what it
        /// posts cannot be reversed. The run's parameters record it.
        #[arg(long)]
        rehearse: bool,
    },
    /// Seal every stored ID number still under an older key with the current one
    /// (PII_ENCRYPTION_KEY_ID), in batches that commit on their own; run again to resume.
    ReencryptPii {
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

// glibc's malloc was a tenth of the service's CPU under load (bench/run, perf); mimalloc's
// thread-local free lists cost a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    lakehouse_api::platform::db::install_crypto_provider();
    let cli = Cli::parse();
    let log_format = match HttpConfig::from_source(&Environment) {
        Ok(http) => http.log_format,
        Err(e) => return fail(&e),
    };
    telemetry::init(log_format);
    let result = match cli.command {
        Command::Serve => serve(&Environment).await,
        Command::Migrate => app::migrate(&Environment).await,
        Command::Token {
            role,
            customer_id,
            ttl,
            sub,
            branch,
        } => token(&role, customer_id, &ttl, sub, branch).map(|t| println!("{t}")),
        Command::Jobs { job } => run_job(&Environment, job).await,
        Command::Openapi { output } => write_openapi(&output),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&*e),
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {error}");
    ExitCode::FAILURE
}

async fn serve(src: &dyn Source) -> CliResult {
    let config = ServeConfig::from_source(src)?;
    app::serve(config).await
}

async fn run_job(src: &dyn Source, job: Job) -> CliResult {
    let owner = OwnerDb::from_source(src)?;
    let servicing_workers = config::servicing_workers(src)?;
    // A run holds its runner lock on one connection while it works on others (jobs::run), one
    // for each servicing worker.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2 + u32::try_from(servicing_workers).unwrap_or(u32::MAX).min(64))
        .connect_with(owner.connect)
        .await?;
    let session = lakehouse_api::domain::jobs::Session::Owner(pool.clone());
    let run = match job {
        Job::Metrics { date } => {
            let day = date.unwrap_or_else(|| chrono::Utc::now().date_naive());
            lakehouse_api::domain::jobs::customer_metrics::refresh(&session, day).await
        }
        Job::Risk => lakehouse_api::domain::jobs::risk_indicators::refresh(&session).await,
        Job::Servicing {
            date,
            from,
            rehearse,
        } => {
            use lakehouse_api::domain::jobs::servicing::{self, Days};
            let mut conn = pool.acquire().await?;
            let today = lakehouse_api::domain::ledger::servicing::today(&mut conn).await?;
            drop(conn);
            let field = if date.is_some() { "--date" } else { "--from" };
            let days = Days::new(from, date, today, rehearse, field).map_err(|e| {
                let flag = if e.field == "from" { "--from" } else { e.field };
                format!("{flag}: {}", e.reason)
            })?;
            if days.to > today {
                eprintln!(
                    "rehearsal: servicing {} to {}, {} days past the business day {today}",
                    days.from,
                    days.to,
                    (days.to - today).num_days()
                );
            }
            servicing::run(&session, days, servicing_workers).await
        }
        Job::ReencryptPii { batch } => {
            let cipher =
                lakehouse_api::platform::pii::PiiCipher::new(&config::PiiKeys::from_source(src)?);
            let mut conn = pool.acquire().await?;
            lakehouse_api::platform::pii::verify_keys(&mut conn, &cipher).await?;
            drop(conn);
            lakehouse_api::domain::jobs::reencrypt::run(&session, &cipher, batch.clamp(1, 10_000))
                .await
        }
    };
    pool.close().await;
    let run = run.map_err(|e| format!("job failed: {e:?}"))?;
    println!("{}", serde_json::to_string_pretty(&run)?);
    Ok(())
}

fn token(
    role: &str,
    customer_id: Option<Uuid>,
    ttl: &str,
    sub: Option<String>,
    branch: Option<String>,
) -> CliResult<String> {
    let keys = JwtKeys::new(config::jwt_secret(&Environment)?);
    mint(&keys, role, customer_id, ttl, sub, branch)
}

fn write_openapi(output: &str) -> CliResult {
    std::fs::write(output, openapi::to_json(&app::openapi_document())?)?;
    eprintln!("wrote {output}");
    Ok(())
}
