//! The crate's shape, checked: which module may use which (the drawing in the README), no two
//! source files importing each other, and every actor message in `src/messages/`.
//!
//! It reads the source as text: `crate::x` paths name the layer they reach, and `use` paths
//! (with `crate::`, `super::` and `self::`) name the file they reach.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Layer → the layers it may use (itself always).
const MAY_USE: &[(&str, &[&str])] = &[
    ("check", &[]),
    ("messages", &[]),
    ("trace", &[]),
    ("metrics", &[]),
    ("storage", &["messages"]),
    ("actors", &["messages", "storage", "trace", "metrics"]),
    (
        "deploy",
        &["actors", "messages", "storage", "check", "trace", "metrics"],
    ),
    (
        "testkit",
        &["actors", "messages", "storage", "check", "trace", "metrics"],
    ),
];

fn source_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            source_files(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module path of a file under `src/` (`src/actors/raft/mod.rs` → `actors::raft`).
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let relative = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without its `#[cfg(test)]` tail.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path a file imports with `use`, braces expanded one level.
fn use_paths(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    for statement in code.split(';') {
        let Some(start) = statement.find("use ") else {
            continue;
        };
        let body: String = statement[start + 4..].split_whitespace().collect();
        match body.split_once("::{") {
            Some((base, rest)) => {
                let inner = rest.trim_end_matches('}');
                let mut depth = 0;
                let mut item = String::new();
                for c in inner.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            paths.push(format!("{base}::{item}"));
                            item.clear();
                            continue;
                        }
                        _ => {}
                    }
                    item.push(c);
                }
                if !item.is_empty() {
                    paths.push(format!("{base}::{item}"));
                }
            }
            None => paths.push(body),
        }
    }
    paths
}

#[test]
fn layers_use_only_what_the_drawing_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let rules: BTreeMap<&str, &[&str]> = MAY_USE.iter().copied().collect();
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(layer) = module.first().map(String::as_str) else {
            continue; // lib.rs
        };
        let Some(allowed) = rules.get(layer) else {
            continue; // bin/
        };
        let text = code(&fs::read_to_string(file).expect("readable"));
        for (at, _) in text.match_indices("crate::") {
            let used: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if used != layer && !allowed.contains(&used.as_str()) {
                wrong.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "layer rules broken:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_two_files_import_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let modules: BTreeMap<Vec<String>, &PathBuf> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("bin")))
        .map(|f| (module_of(&src, f), f))
        .collect();
    // The longest module that is a file, for a path.
    let resolve = |path: &[String]| {
        (0..=path.len())
            .rev()
            .map(|k| path[..k].to_vec())
            .find(|prefix| modules.contains_key(prefix))
    };
    let mut imports: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (module, file) in &modules {
        let is_dir_module = file.ends_with("mod.rs") || file.ends_with("lib.rs");
        let text = code(&fs::read_to_string(file).expect("readable"));
        for path in use_paths(&text) {
            let segments: Vec<String> = path
                .split("::")
                .filter(|s| !s.is_empty() && *s != "*")
                .map(str::to_string)
                .collect();
            let target = match segments.first().map(String::as_str) {
                Some("crate") => segments[1..].to_vec(),
                Some("self") => [module.clone(), segments[1..].to_vec()].concat(),
                Some("super") => {
                    let ups = segments.iter().take_while(|s| *s == "super").count();
                    let parent_depth = module.len() + usize::from(is_dir_module) - 1;
                    let base = module[..parent_depth.saturating_sub(ups - 1)].to_vec();
                    [base, segments[ups..].to_vec()].concat()
                }
                _ => continue,
            };
            if let Some(target) = resolve(&target).filter(|t| t != module) {
                imports.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    let mut cycles = Vec::new();
    for (a, targets) in &imports {
        for b in targets {
            if a < b && imports.get(b).is_some_and(|t| t.contains(a)) {
                cycles.push(format!("{} <-> {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "files importing each other:\n{}",
        cycles.join("\n")
    );
}

#[test]
fn actor_messages_live_in_messages() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let stray: Vec<String> = files
        .iter()
        .filter(|f| !f.starts_with(src.join("messages")))
        .filter(|f| {
            // Test modules included: no message is defined outside src/messages/ at all.
            let text = fs::read_to_string(f).expect("readable");
            let derives_message = text.lines().any(|line| {
                line.contains("#[derive(")
                    && line
                        .split(|c: char| !c.is_alphanumeric())
                        .any(|word| word == "Message")
            });
            derives_message || text.contains("#[rtype") || text.contains("impl Message for")
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        stray.is_empty(),
        "messages outside src/messages/: {stray:?}"
    );
}
