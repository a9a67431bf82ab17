//! The layering rule, checked on the source: arrows point down only. The queue engine
//! is a crate of its own (`crates/queue`), so the compiler refuses any import of the
//! application from it; this test keeps the application's own layers in order, so a
//! module never names one above it (`use crate::…` in any form, groups included).

use std::{collections::BTreeMap, path::Path};

/// Each top-level module of `src/` and its floor; a module may name only modules on
/// lower floors (and itself).
const FLOORS: &[(&str, u8)] = &[
    ("domain", 1),
    ("config", 1),
    ("keys", 1),
    ("links", 1),
    ("retry_after", 1),
    ("telemetry", 2),
    ("fetch", 2),
    ("mail", 2),
    ("db", 2),
    ("store", 3),
    ("llm", 4),
    ("publish", 4),
    ("report", 4),
    ("files", 4),
    ("jobs", 5),
    ("pipeline", 6),
    ("http", 7),
    ("app", 8),
    ("demo", 9),
    ("cli", 10),
];

/// The top-level modules a file names through `crate::`, with the line they are on.
fn named_modules(text: &str) -> Vec<(String, usize)> {
    let mut found = Vec::new();
    for (start, _) in text.match_indices("crate::") {
        let line = text[..start].matches('\n').count() + 1;
        let rest = &text[start + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::{c}, d}`: the names at the group's top level.
            let (mut depth, mut name, mut at_top_name) = (0usize, String::new(), true);
            for ch in group.chars() {
                match ch {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            found.push((std::mem::take(&mut name), line));
                        }
                        at_top_name = true;
                        continue;
                    }
                    _ => {}
                }
                if depth == 0 && at_top_name {
                    if ch.is_alphanumeric() || ch == '_' {
                        name.push(ch);
                    } else if !name.is_empty() {
                        at_top_name = false;
                    }
                }
            }
            if !name.is_empty() {
                found.push((name, line));
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.push((name, line));
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_names_a_module_above_it() {
    let floors: BTreeMap<&str, u8> = FLOORS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let own = *floors
            .get(top.as_str())
            .unwrap_or_else(|| panic!("src/{top} has no floor in tests/layers.rs: add it"));
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line) in named_modules(&text) {
            if name == top || name == "queue" {
                continue;
            }
            match floors.get(name.as_str()) {
                Some(floor) if *floor < own => {}
                Some(floor) => wrong.push(format!(
                    "{}:{line}: {top} (floor {own}) names {name} (floor {floor})",
                    rel.display()
                )),
                None => wrong.push(format!(
                    "{}:{line}: names crate::{name}, which has no floor",
                    rel.display()
                )),
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that point up or sideways:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_engine_names_no_part_of_the_application() {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/queue");
    let manifest = std::fs::read_to_string(engine.join("Cargo.toml")).unwrap();
    assert!(
        !manifest
            .lines()
            .any(|l| l.trim_start().starts_with("copydesk ")
                || l.trim_start().starts_with("copydesk=")),
        "the engine depends on the application:\n{manifest}"
    );
    let mut files = Vec::new();
    rust_files(&engine.join("src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("copydesk::"),
            "{} names the application",
            file.display()
        );
    }
}

#[test]
fn the_scanner_reads_groups_and_paths() {
    let text = "use crate::{\n    config::Settings,\n    jobs::{App, Services},\n    store,\n};\nfn f() { crate::pipeline::start(); }\n";
    let names: Vec<String> = named_modules(text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["config", "jobs", "store", "pipeline"]);
}

/// Behind a pooler in transaction mode, a statement must be unnamed and inside a
/// transaction: statements are built with `crate::db::query*` (which know the mode) and
/// run on `Db` or in a transaction, never on a bare acquired connection.
#[test]
fn statements_are_built_to_survive_a_pooler() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("crates/queue/src"), &mut files);
    let banned = [
        "sqlx::query(",
        "sqlx::query_as(",
        "sqlx::query_as::<",
        "sqlx::query_scalar(",
        "sqlx::query_scalar::<",
        ".acquire()",
    ];
    let mut wrong = Vec::new();
    for file in files
        .iter()
        .filter(|f| !f.ends_with("crates/queue/src/db.rs"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if let Some(b) = banned.iter().find(|b| line.contains(*b)) {
                wrong.push(format!(
                    "{}:{}: {b}",
                    file.strip_prefix(root).unwrap().display(),
                    n + 1
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "statements a pooler in transaction mode would break (use crate::db::query*, and \
         a transaction for several statements):\n{}",
        wrong.join("\n")
    );
}
