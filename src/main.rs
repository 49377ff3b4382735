//! The command line: parse, load configuration, call into the library.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use uuid::Uuid;

use lakehouse_api::auth::{Claims, JwtKeys, Role};
use lakehouse_api::config::{self, Environment, HttpConfig, OwnerDb, ServeConfig, Source};
use lakehouse_api::{app, db, openapi, telemetry, CliResult};

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
    /// Insert the seed guide's lab data, or generate volume for load tests.
    #[cfg(feature = "devtools")]
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
    /// Everything for a first look: a throwaway PostgreSQL (unless DATABASE_URL is set),
    /// migrations, lab data, a token per role, and the server with Swagger UI.
    #[cfg(feature = "devtools")]
    Dev,
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
    /// (default today): interest falling due, late fees, default and cure.
    Servicing {
        #[arg(long)]
        date: Option<chrono::NaiveDate>,
        #[arg(long)]
        from: Option<chrono::NaiveDate>,
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
    lakehouse_api::db::install_crypto_provider();
    let cli = Cli::parse();
    let log_format = match HttpConfig::from_source(&Environment) {
        Ok(http) => http.log_format,
        Err(e) => return fail(&e),
    };
    telemetry::init(log_format);
    let result = match cli.command {
        Command::Serve => serve(&Environment).await,
        Command::Migrate => migrate(&Environment).await,
        #[cfg(feature = "devtools")]
        Command::Seed {
            customers,
            loans_per_customer,
            payments_per_loan,
        } => {
            let volume = customers
                .map(|customers| {
                    lakehouse_api::devtools::seed::Volume::new(
                        customers,
                        loans_per_customer,
                        payments_per_loan,
                    )
                })
                .transpose();
            match volume {
                Ok(volume) => devtools_commands::seed_data(&Environment, volume)
                    .await
                    .map(|_| ()),
                Err(error) => Err(error),
            }
        }
        Command::Token {
            role,
            customer_id,
            ttl,
            sub,
        } => token(&role, customer_id, &ttl, sub).map(|t| println!("{t}")),
        Command::Jobs { job } => run_job(&Environment, job).await,
        Command::Openapi { output } => write_openapi(&output),
        #[cfg(feature = "devtools")]
        Command::Dev => devtools_commands::dev().await,
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

async fn migrate(src: &dyn Source) -> CliResult {
    let owner = OwnerDb::from_source(src)?;
    let login = config::AppDbLogin::from_source(src)?;
    let trino = src
        .get("TRINO_DB_PASSWORD")
        .map(|p| config::Secret::new(p.into_bytes()));
    db::migrate_with_logins(&owner.connect, Some(&login.password), trino.as_ref()).await?;
    if let Some(zone) = src.get("BUSINESS_TIMEZONE") {
        db::set_business_timezone(&owner.connect, &zone).await?;
    }
    if let Some(code) = src.get("PHONE_COUNTRY_CODE") {
        db::set_phone_country_code(&owner.connect, &code).await?;
    }
    eprintln!("migrations applied");
    Ok(())
}

async fn run_job(src: &dyn Source, job: Job) -> CliResult {
    let owner = OwnerDb::from_source(src)?;
    // A run holds its runner lock on one connection while it works on another (jobs::run).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(3)
        .connect_with(owner.connect)
        .await?;
    let session = lakehouse_api::jobs::Session::Owner(pool.clone());
    let run = match job {
        Job::Metrics { date } => {
            let day = date.unwrap_or_else(|| chrono::Utc::now().date_naive());
            lakehouse_api::jobs::metrics::refresh(&session, day).await
        }
        Job::Risk => lakehouse_api::jobs::risk::refresh(&session).await,
        Job::Servicing { date, from } => {
            let mut conn = pool.acquire().await?;
            let today = lakehouse_api::ledger::servicing::today(&mut conn).await?;
            drop(conn);
            let to = date.unwrap_or(today);
            lakehouse_api::jobs::servicing::run(&session, from.unwrap_or(to), to).await
        }
        Job::ReencryptPii { batch } => {
            let cipher = lakehouse_api::pii::PiiCipher::new(&config::PiiKeys::from_source(src)?);
            let mut conn = pool.acquire().await?;
            lakehouse_api::pii::verify_keys(&mut conn, &cipher).await?;
            drop(conn);
            lakehouse_api::jobs::reencrypt::run(&session, &cipher, batch.clamp(1, 10_000)).await
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
) -> CliResult<String> {
    let keys = JwtKeys::new(config::jwt_secret(&Environment)?);
    mint(&keys, role, customer_id, ttl, sub)
}

fn mint(
    keys: &JwtKeys,
    role: &str,
    customer_id: Option<Uuid>,
    ttl: &str,
    sub: Option<String>,
) -> CliResult<String> {
    let role = Role::parse(role).ok_or_else(|| {
        format!("--role must be one of customer, staff, analyst, etl, admin (got {role:?})")
    })?;
    if role == Role::Customer && customer_id.is_none() {
        return Err("--role customer needs --customer-id".into());
    }
    let ttl = parse_ttl(ttl)?;
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: sub.unwrap_or_else(|| default_subject(role, customer_id)),
        role: role.as_str().into(),
        customer_id: customer_id.filter(|_| role == Role::Customer),
        exp: now + i64::try_from(ttl.as_secs())?,
        iat: Some(now),
    };
    Ok(keys.sign(&claims))
}

/// Every customer gets a subject of their own: a shared one would make them one actor.
fn default_subject(role: Role, customer_id: Option<Uuid>) -> String {
    match (role, customer_id) {
        (Role::Customer, Some(id)) => format!("customer-{id}"),
        _ => format!("local-{}", role.as_str()),
    }
}

fn parse_ttl(text: &str) -> CliResult<Duration> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("--ttl {text:?}: expected a number and a unit, like 30m or 1h"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" | "" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("--ttl {text:?}: unit must be s, m, h or d").into()),
    };
    Ok(Duration::from_secs(seconds))
}

fn write_openapi(output: &str) -> CliResult {
    std::fs::write(output, openapi::to_json(&app::openapi_document())?)?;
    eprintln!("wrote {output}");
    Ok(())
}

/// `seed` and `dev`: development tooling, built with the `devtools` feature only.
#[cfg(feature = "devtools")]
mod devtools_commands {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::Arc;
    use std::time::Duration;

    use aes_gcm::aead::rand_core::RngCore;
    use aes_gcm::aead::OsRng;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use log::LevelFilter;
    use sqlx::{ConnectOptions, Connection, PgConnection};
    use uuid::Uuid;

    use lakehouse_api::auth::{JwtKeys, Role};
    use lakehouse_api::config::{Environment, OwnerDb, PiiKeys, ServeConfig, Source};
    use lakehouse_api::devtools::{seed, TempCluster};
    use lakehouse_api::pii::PiiCipher;
    use lakehouse_api::{app, CliResult};

    use super::{migrate, mint};

    /// Lab data always; generated volume when asked. Returns the lab customer CUST001's id.
    pub async fn seed_data(
        src: &dyn Source,
        volume: Option<seed::Volume>,
    ) -> CliResult<Option<Uuid>> {
        let owner = OwnerDb::from_source(src)?;
        let cipher = PiiCipher::new(&PiiKeys::from_source(src)?);
        // Bulk statements are slow by design; the seed reports its own timings.
        let connect = owner
            .connect
            .clone()
            .log_statements(LevelFilter::Off)
            .log_slow_statements(LevelFilter::Off, Duration::ZERO);
        let mut conn = PgConnection::connect_with(&connect).await?;
        lakehouse_api::pii::verify_keys(&mut conn, &cipher).await?;
        if seed::lab(&mut conn, &cipher).await? {
            eprintln!("lab data inserted");
        }
        if let Some(volume) = volume {
            seed::generate(&mut conn, &connect, &cipher, volume).await?;
        }
        let id = seed::customer_id(&mut conn, "CUST001").await?;
        conn.close().await?;
        Ok(id)
    }

    /// Environment first, then values `dev` made up.
    struct Overlay(HashMap<&'static str, String>);

    impl Source for Overlay {
        fn get(&self, key: &str) -> Option<String> {
            Environment.get(key).or_else(|| self.0.get(key).cloned())
        }
    }

    fn random_base64(len: usize) -> String {
        let mut bytes = vec![0u8; len];
        OsRng.fill_bytes(&mut bytes);
        STANDARD.encode(bytes)
    }

    pub async fn dev() -> CliResult {
        let mut made_up = HashMap::new();
        let cluster = if Environment.get("DATABASE_URL").is_none() {
            eprintln!("DATABASE_URL is unset: starting a throwaway PostgreSQL cluster…");
            let cluster = TempCluster::start()?;
            cluster.remove_when_process_exits(std::process::id())?;
            made_up.insert("DATABASE_URL", cluster.url("postgres"));
            Some(cluster)
        } else {
            None
        };
        // Local tokens beside a provider's, if one is configured: a development machine.
        made_up.insert("DEV_MODE", "true".to_owned());
        // The metrics listener on any free port, so that two dev instances can run side by side.
        if Environment.get("METRICS_LISTEN_ADDR").is_none() {
            made_up.insert("METRICS_LISTEN_ADDR", "127.0.0.1:0".to_owned());
        }
        for (key, value) in [
            ("APP_DB_PASSWORD", random_base64(24)),
            ("JWT_SECRET", random_base64(48)),
            ("PII_ENCRYPTION_KEY", random_base64(32)),
            ("PII_HASH_KEY", random_base64(32)),
        ] {
            if Environment.get(key).is_none() {
                eprintln!("{key} is unset: using a random value for this run only");
                made_up.insert(key, value);
            }
        }
        let src = Overlay(made_up);
        migrate(&src).await?;
        let cust001 = seed_data(&src, None).await?;

        let config = ServeConfig::from_source(&src)?;
        let secret = config
            .tokens
            .local_secret
            .clone()
            .ok_or("dev needs JWT_SECRET")?;
        let keys = Arc::new(JwtKeys::new(secret));
        // Printed with write! rather than println!, which would panic if stdout were closed.
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\nTokens (valid 12 hours):");
        for role in Role::ALL {
            let customer = if role == Role::Customer {
                cust001
            } else {
                None
            };
            let token = mint(&keys, role.as_str(), customer, "12h", None)?;
            let note = if role == Role::Customer {
                " (CUST001)"
            } else {
                ""
            };
            let _ = writeln!(out, "  {:<8}{note} {token}", role.as_str());
        }
        let _ = writeln!(
            out,
            "\nSwagger UI: http://{0}/docs   health: http://{0}/health/ready   Ctrl-C stops{1}\n",
            config.http.listen_addr,
            if cluster.is_some() {
                " and removes the database"
            } else {
                ""
            }
        );
        let _ = out.flush();
        drop(out);
        let served = app::serve(config).await;
        drop(cluster);
        served
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_api::config::ConfigError;

    #[test]
    fn ttls_take_a_unit() {
        assert_eq!(parse_ttl("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("7d").unwrap(), Duration::from_secs(604_800));
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("5y").is_err());
    }

    #[test]
    fn config_errors_are_one_line() {
        let e = ConfigError("JWT_SECRET is not set".into());
        assert!(!e.to_string().contains('\n'));
    }
}
