//! The binaries as a user runs them: the service's (`lakehouse-api`) and the development
//! tooling's (`lakehouse-dev`, crates/devtools), with a clean environment.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{TestApp, TEST_PII_ENCRYPTION_KEY, TEST_PII_HASH_KEY};

pub const BIN: &str = env!("CARGO_BIN_EXE_lakehouse-api");

/// The development binary, which `cargo test` builds beside the service's.
pub fn dev_bin() -> PathBuf {
    let bin =
        Path::new(BIN).with_file_name(format!("lakehouse-dev{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test` from the workspace root, which builds it",
        bin.display()
    );
    bin
}

pub fn command() -> Command {
    with_clean_env(Command::new(BIN))
}

pub fn dev_command() -> Command {
    with_clean_env(Command::new(dev_bin()))
}

fn with_clean_env(mut command: Command) -> Command {
    command.env_clear();
    for key in ["PATH", "HOME", "TMPDIR", "PG_BIN_DIR"] {
        if let Some(value) = std::env::var_os(key) {
            command.env(key, value);
        }
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs a command to its end: (success, stdout, stderr).
pub fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

impl TestApp {
    /// `lakehouse-dev seed` with `args` into this app's database, under its keys: the lab data,
    /// and the volume the arguments ask for.
    /// It runs as a child the test's runtime awaits, so the app's own tasks go on meanwhile.
    pub async fn seed(&self, args: &[&str]) {
        let mut seed = dev_command();
        seed.arg("seed")
            .args(args)
            .env("DATABASE_URL", &self.owner_url)
            .env(
                "PII_ENCRYPTION_KEY",
                STANDARD.encode(TEST_PII_ENCRYPTION_KEY),
            )
            .env("PII_HASH_KEY", STANDARD.encode(TEST_PII_HASH_KEY));
        let output = tokio::process::Command::from(seed).output().await.unwrap();
        assert!(
            output.status.success(),
            "seed {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
