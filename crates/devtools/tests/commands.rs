//! The development binary offers `dev` and `seed`. Building this test also builds
//! `lakehouse-dev`, which the service's own tests (`tests/api/cli.rs`) run.

use std::process::Command;

#[test]
fn the_development_binary_offers_dev_and_seed() {
    let output = Command::new(env!("CARGO_BIN_EXE_lakehouse-dev"))
        .arg("--help")
        .output()
        .expect("lakehouse-dev runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{help}");
    for command in ["dev", "seed"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "{help}"
        );
    }
}
