//! The crate's layers, checked from its source: every top-level module of `src/` imports only
//! from the layers below its own, resources never import each other, `error` imports nothing of
//! the crate, and no two modules import each other, directly or round a cycle. The README's
//! layout section is the map; this keeps it true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module and its layer (0 = foundation, 1 = domain, 2 = resources, 3 = top).
const LAYERS: &[(&str, u8)] = &[
    ("config", 0),
    ("error", 0),
    ("telemetry", 0),
    ("db", 0),
    ("auth", 0),
    ("pii", 0),
    ("money", 0),
    ("pagination", 0),
    ("extract", 0),
    ("conditional", 0),
    ("retry", 0),
    ("edge", 0),
    ("server", 0),
    ("state", 0),
    ("devtools", 1),
    ("ledger", 1),
    ("idempotency", 1),
    ("jobs", 1),
    ("risk", 1),
    ("product_terms", 1),
    ("customer_record", 1),
    ("customers", 2),
    ("products", 2),
    ("identities", 2),
    ("dues", 2),
    ("loans", 2),
    ("books", 2),
    ("payments", 2),
    ("analytics", 2),
    ("imports", 2),
    ("events", 2),
    ("metadata", 2),
    ("ops", 2),
    ("app", 3),
    ("openapi", 3),
];

const RESOURCES: u8 = 2;

/// The source of each top-level module (`src/x.rs`, or every file under `src/x/`), comments
/// removed.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "main" || name == "lib" {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            let mut pending = vec![path];
            while let Some(dir) = pending.pop() {
                for entry in std::fs::read_dir(dir).unwrap().flatten() {
                    let path = entry.path();
                    if path.is_dir() {
                        pending.push(path);
                    } else if path.extension().is_some_and(|e| e == "rs") {
                        files.push(path);
                    }
                }
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
        let text: &mut String = modules.entry(name).or_default();
        for file in files {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                text.push_str(line.split("//").next().unwrap_or(""));
                text.push('\n');
            }
        }
    }
    modules
}

/// The top-level modules `text` names through `crate::x` or `use crate::{x, y::…}`.
fn imports(text: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 1 => start = true,
                    c if start && depth == 1 && !c.is_whitespace() => {
                        found.insert(ident(&group[i..]));
                        start = false;
                    }
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found
}

#[test]
fn modules_import_only_from_the_layers_below_and_never_round_a_cycle() {
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let modules = modules();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (module, text) in &modules {
        let Some(&own) = layer.get(module.as_str()) else {
            problems.push(format!("{module} has no layer in tests/api/structure.rs"));
            continue;
        };
        let targets: BTreeSet<String> = imports(text)
            .into_iter()
            .filter(|t| t != module && modules.contains_key(t))
            .collect();
        for target in &targets {
            let theirs = layer.get(target.as_str()).copied().unwrap_or(u8::MAX);
            if module == "error" {
                problems.push(format!(
                    "error imports {target}; it imports nothing of the crate"
                ));
            } else if theirs > own || (theirs == own && own == RESOURCES) {
                problems.push(format!(
                    "{module} (layer {own}) imports {target} (layer {theirs})"
                ));
            }
        }
        edges.insert(module.as_str(), targets);
    }
    // A cycle anywhere (within a layer too): depth-first search for a back edge.
    fn visit<'a>(
        at: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        problems: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|m| *m == at) {
            problems.push(format!("import cycle: {} -> {at}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(at) {
            return;
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            visit(next, edges, path, done, problems);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, &edges, &mut Vec::new(), &mut done, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_import_reader_sees_paths_and_groups() {
    let text = "use crate::auth::{Caller, Role};\nuse crate::{db, error::ApiError,\n money};\nlet x = crate::state::AppState::new();";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(found, ["auth", "db", "error", "money", "state"]);
}
