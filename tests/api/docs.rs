//! The documentation keeps up with the code.

use std::collections::{BTreeMap, BTreeSet};

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// Quoted UPPER_CASE names in `text`: the environment variables a source file reads.
fn env_names(text: &str) -> BTreeSet<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.len() > 3
                && s.contains('_')
                && s.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn env_example_documents_every_variable_the_code_reads() {
    let example = read(".env.example");
    let documented: BTreeSet<String> = example
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.starts_with('#'))
        .collect();
    let mut read_by_code = BTreeSet::new();
    for file in [
        "src/platform/config/mod.rs",
        "src/platform/config/oidc.rs",
        "src/app.rs",
        "src/main.rs",
        "crates/cluster/src/lib.rs",
        "crates/devtools/src/commands.rs",
        "crates/exporter/src/main.rs",
    ] {
        read_by_code.extend(env_names(&read(file)));
    }
    read_by_code.insert("RUST_LOG".into());
    let missing: Vec<_> = read_by_code.difference(&documented).collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

#[test]
fn the_readme_has_the_two_setup_commands_and_ci_runs_the_test_one() {
    let readme = read("README.md");
    assert!(readme.contains("```sh\ncargo dev\n```"));
    assert!(readme.contains("```sh\ncargo test\n```"));
    let ci = read(".ci/run");
    // Bare, or through the script's step timer: `step "cargo test" cargo test`.
    let runs_tests = |line: &str| {
        let line = line.trim();
        line == "cargo test"
            || line
                .strip_prefix("step \"")
                .and_then(|rest| rest.split_once("\" "))
                .is_some_and(|(_, command)| command == "cargo test")
    };
    assert!(ci.lines().any(runs_tests), "{ci}");
}

/// The Keycloak realm in `deploy/` parses and gives what the documented variables expect: one
/// realm role per service role under `.env.example`'s `OIDC_ROLE_PREFIX`, the README's
/// `OIDC_AUDIENCE` in the access tokens' `aud`, each service account exactly one role and none
/// of them staff, and the branch tools a sign-in of each teller's own (PKCE).
#[test]
fn the_keycloak_realm_example_matches_the_documented_variables() {
    let realm: serde_json::Value =
        serde_json::from_str(&read("deploy/keycloak-realm.json")).unwrap();
    let example = read(".env.example");
    let prefix = example
        .lines()
        .find_map(|l| l.strip_prefix("OIDC_ROLE_PREFIX="))
        .unwrap();
    let roles: BTreeSet<&str> = realm["roles"]["realm"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for role in ["customer", "staff", "analyst", "etl", "admin"] {
        assert!(roles.contains(format!("{prefix}{role}").as_str()), "{role}");
    }
    let readme = read("README.md");
    let audience = readme
        .lines()
        .find_map(|l| l.strip_prefix("OIDC_AUDIENCE="))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap();
    let mapped: Vec<&str> = realm["clientScopes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["protocolMappers"].as_array().unwrap())
        .filter_map(|m| m["config"]["included.custom.audience"].as_str())
        .collect();
    assert_eq!(mapped, [audience]);
    // Machines (service accounts) have exactly one role, never staff or admin: people use the
    // branch tools under logins of their own, which take their role from a group.
    for user in realm["users"].as_array().unwrap() {
        if user.get("serviceAccountClientId").is_some() {
            let roles = user["realmRoles"].as_array().unwrap();
            assert_eq!(roles.len(), 1, "{user}");
            let role = roles[0].as_str().unwrap();
            assert!(role.starts_with(prefix), "{user}");
            assert!(
                !role.ends_with("staff") && !role.ends_with("admin"),
                "{user}"
            );
        } else {
            assert!(!user["groups"].as_array().unwrap().is_empty(), "{user}");
        }
    }
    let branch_tool = realm["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["clientId"] == "branch-tool")
        .unwrap();
    assert_eq!(branch_tool["serviceAccountsEnabled"], false);
    assert_eq!(
        branch_tool["attributes"]["pkce.code.challenge.method"],
        "S256"
    );
}

/// The README's route table names, for every path of the spec, the folder whose handler
/// declares it: a newcomer goes from a URL to its code in one step.
#[test]
fn the_readme_route_table_names_the_folder_of_every_route() {
    let readme = read("README.md");
    let table: BTreeMap<String, String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| route | folder |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|row| {
            let cells: Vec<&str> = row.split('|').map(|c| c.trim().trim_matches('`')).collect();
            Some((cells.get(1)?.to_string(), cells.get(2)?.to_string()))
        })
        .collect();
    let spec: serde_json::Value = serde_json::from_str(&read("openapi/openapi.json")).unwrap();
    let mut problems = Vec::new();
    for path in spec["paths"].as_object().unwrap().keys() {
        let Some(folder) = table.get(path) else {
            problems.push(format!("{path} is not in the route table"));
            continue;
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
        let declared = sources_under(&dir)
            .iter()
            .any(|text| text.contains(&format!("path = \"{path}\"")));
        if !declared {
            problems.push(format!("{path}: no handler in {folder} declares it"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The text of every file under `dir`, its subfolders included.
fn sources_under(dir: &std::path::Path) -> Vec<String> {
    let mut texts = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(text) = std::fs::read_to_string(&path) {
                texts.push(text);
            }
        }
    }
    texts
}
