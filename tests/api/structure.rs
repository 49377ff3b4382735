//! The crate's layers are its folders, and this checks their rules from the source, one level
//! inside each layer (a check of `src/`'s top level alone would see three folders and pass
//! whatever they hold):
//!
//! - `src/` holds only the layers `platform/`, `domain/` and `api/`, and the top (`main.rs`,
//!   `lib.rs`, `app.rs`, `openapi.rs`);
//! - `platform` imports neither `domain` nor `api` nor the top; `domain` imports neither `api` nor
//!   the top; `api` does not import the top;
//! - no resource `api::X` imports another resource `api::Y`;
//! - the modules of each layer form no cycle (and no two import each other).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 3] = ["platform", "domain", "api"];
const TOP: [&str; 4] = ["main.rs", "lib.rs", "app.rs", "openapi.rs"];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
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
    files
}

/// The source of `path` (a file, or every file of a folder), comments removed.
fn source(path: &Path) -> String {
    let files = if path.is_dir() {
        rust_files(path)
    } else {
        vec![path.to_path_buf()]
    };
    let mut text = String::new();
    for file in files {
        for line in std::fs::read_to_string(file).unwrap().lines() {
            text.push_str(line.split("//").next().unwrap_or(""));
            text.push('\n');
        }
    }
    text
}

/// The modules of one layer, by name: `src/<layer>/<name>.rs` or `src/<layer>/<name>/`. The
/// layer's own `mod.rs` is not a module of it.
fn modules_of(layer: &str) -> BTreeMap<String, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src")
        .join(layer);
    let mut modules = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "mod" {
            continue;
        }
        modules.insert(name, source(&path));
    }
    modules
}

/// Every path `text` names after `crate::`, with its `{…}` groups spread out:
/// `crate::a::{b, c::{d}}` gives `a::b` and `a::c::d`.
fn imports(text: &str) -> BTreeSet<String> {
    fn spread(tree: &str, prefix: &str, out: &mut BTreeSet<String>) {
        let mut depth = 0;
        let mut start = 0;
        let mut items = Vec::new();
        for (i, c) in tree.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&tree[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&tree[start..]);
        for item in items {
            let item = item.trim();
            if let Some(group) = item.strip_prefix('{') {
                spread(group.strip_suffix('}').unwrap_or(group), prefix, out);
            } else if let Some((head, group)) = item.split_once("::{") {
                let group = group.strip_suffix('}').unwrap_or(group);
                spread(group, &format!("{prefix}{head}::"), out);
            } else if !item.is_empty() {
                out.insert(format!("{prefix}{item}"));
            }
        }
    }
    let mut found = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let end = if rest.starts_with('{') {
            let mut depth = 0;
            rest.char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(rest.len(), |(i, _)| i + 1)
        } else {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '{'))
                .unwrap_or(rest.len())
        };
        let tree: String = rest[..end].split_whitespace().collect();
        spread(&tree, "", &mut found);
    }
    found
        .into_iter()
        .map(|path| {
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            segments.into_iter().take(2).collect::<Vec<_>>().join("::")
        })
        .collect()
}

fn layer_rank(name: &str) -> Option<usize> {
    LAYERS.iter().position(|l| *l == name)
}

#[test]
fn the_source_folder_holds_the_three_layers_and_the_top_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut strays = Vec::new();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !LAYERS.contains(&name.as_str()) && !TOP.contains(&name.as_str()) {
            strays.push(name);
        }
    }
    assert!(strays.is_empty(), "outside the layers: {strays:?}");
}

#[test]
fn layers_import_only_downwards_and_resources_never_import_each_other() {
    let mut problems = Vec::new();
    for (rank, layer) in LAYERS.iter().enumerate() {
        for (module, text) in modules_of(layer) {
            for target in imports(&text) {
                let mut parts = target.split("::");
                let (head, next) = (parts.next().unwrap_or(""), parts.next());
                let at = format!("{layer}::{module}");
                match layer_rank(head) {
                    Some(theirs) if theirs > rank => {
                        problems.push(format!("{at} imports {target}, a layer above"));
                    }
                    Some(_) if *layer == "api" && head == "api" && next != Some(&module) => {
                        problems.push(format!("{at} imports another resource, {target}"));
                    }
                    None if head == "app" || head == "openapi" => {
                        problems.push(format!("{at} imports the top, {target}"));
                    }
                    _ => {}
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_modules_of_each_layer_form_no_cycle() {
    let mut problems = Vec::new();
    for layer in LAYERS {
        let modules = modules_of(layer);
        let edges: BTreeMap<String, BTreeSet<String>> = modules
            .iter()
            .map(|(module, text)| {
                let targets = imports(text)
                    .into_iter()
                    .filter_map(|t| t.strip_prefix(&format!("{layer}::")).map(str::to_owned))
                    .filter(|t| t != module && modules.contains_key(t))
                    .collect();
                (module.clone(), targets)
            })
            .collect();
        problems.extend(cycles(layer, &edges));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Each back edge of a depth-first search over `edges`, as the cycle it closes.
fn cycles(layer: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn visit<'a>(
        at: &'a str,
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        found: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|m| *m == at) {
            found.push(format!("{} -> {at}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(at) {
            return;
        }
        path.push(at);
        for next in edges.get(at).into_iter().flatten() {
            visit(next, edges, path, done, found);
        }
        path.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for module in edges.keys() {
        visit(module, edges, &mut Vec::new(), &mut done, &mut found);
    }
    found
        .into_iter()
        .map(|cycle| format!("import cycle in {layer}: {cycle}"))
        .collect()
}

#[test]
fn the_import_reader_sees_paths_and_nested_groups() {
    let text = "use crate::platform::auth::{Caller, Role};\n\
                use crate::{api, domain::{ledger::repo, money}, platform::db};\n\
                let x = crate::platform::state::AppState::new();";
    let found: Vec<String> = imports(text).into_iter().collect();
    assert_eq!(
        found,
        [
            "api",
            "domain::ledger",
            "domain::money",
            "platform::auth",
            "platform::db",
            "platform::state"
        ]
    );
}

#[test]
fn the_cycle_finder_reports_a_loop_between_two_modules() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("ledger".to_owned(), BTreeSet::from(["jobs".to_owned()])),
        ("jobs".to_owned(), BTreeSet::from(["ledger".to_owned()])),
    ]
    .into_iter()
    .collect();
    assert_eq!(cycles("domain", &edges).len(), 1);
}
