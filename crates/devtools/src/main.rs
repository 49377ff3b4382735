//! `lakehouse-dev`: the development commands (`cargo dev`, `cargo seed`).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lakehouse_api::platform::config::{Environment, HttpConfig};
use lakehouse_api::platform::{db, telemetry};
use lakehouse_devtools::{commands, seed};

#[derive(Parser)]
#[command(
    name = "lakehouse-dev",
    version,
    about = "lakehouse-api's development tooling"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Everything for a first look: a throwaway PostgreSQL (unless DATABASE_URL is set),
    /// migrations, lab data, a token per role, and the server with Swagger UI.
    Dev,
    /// Insert the seed guide's lab data, or generate volume for load tests (as the owner,
    /// DATABASE_URL).
    Seed {
        /// Generate this many extra customers, with loans and payments.
        #[arg(long)]
        customers: Option<u32>,
        #[arg(long, default_value_t = 2)]
        loans_per_customer: u32,
        /// The most repayments a generated loan makes (a payoff may add one).
        #[arg(long, default_value_t = 3)]
        payments_per_loan: u32,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    db::install_crypto_provider();
    let cli = Cli::parse();
    match HttpConfig::from_source(&Environment) {
        Ok(http) => telemetry::init(http.log_format),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Dev => commands::dev().await,
        Command::Seed {
            customers,
            loans_per_customer,
            payments_per_loan,
        } => match customers
            .map(|customers| seed::Volume::new(customers, loans_per_customer, payments_per_loan))
            .transpose()
        {
            Ok(volume) => commands::seed_data(&Environment, volume).await.map(|_| ()),
            Err(error) => Err(error),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
