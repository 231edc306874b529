//! What `ARCHITECTURE.md` names must exist: every path in backticks, and every
//! `function()` it cites as a step somewhere in the workspace's code.

use std::collections::HashSet;
use std::path::Path;

use anyhow::Result;

/// The problems found, one line each.
pub(super) fn check(root: &Path, map: &str) -> Result<Vec<String>> {
    let defined = defined_functions(root)?;
    let mut problems = Vec::new();
    for span in backticked(map) {
        if looks_like_path(span) {
            let path = span.trim_end_matches('/');
            if !root.join(path).exists() {
                problems.push(format!(
                    "ARCHITECTURE.md names `{span}`, which does not exist"
                ));
            }
        } else if let Some(name) = cited_function(span)
            && !defined.contains(name)
        {
            problems.push(format!(
                "ARCHITECTURE.md cites `{span}`, but no `fn {name}` exists in the workspace"
            ));
        }
    }
    Ok(problems)
}

/// The text between backtick pairs (inline code spans; fenced blocks are skipped).
fn backticked(map: &str) -> Vec<&str> {
    let mut spans = Vec::new();
    let mut fenced = false;
    for line in map.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            spans.extend(line.split('`').skip(1).step_by(2));
        }
    }
    spans
}

fn looks_like_path(span: &str) -> bool {
    let roots = ["crates/", "xtask/", "examples/", "src/", "tests/", ".ci/"];
    roots.iter().any(|r| span.starts_with(r)) && !span.contains(' ') && !span.contains('*')
}

/// `name()` or `Type::name()` -> `name`.
fn cited_function(span: &str) -> Option<&str> {
    let name = span.strip_suffix("()")?;
    let name = name.rsplit("::").next().unwrap_or(name);
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    ok.then_some(name)
}

/// Every `fn NAME` in the crates and xtask.
fn defined_functions(root: &Path) -> Result<HashSet<String>> {
    let mut names = HashSet::new();
    for dir in ["crates", "xtask", "src"] {
        for file in super::rust_files(&root.join(dir))? {
            let text = std::fs::read_to_string(&file)?;
            for piece in text.split("fn ").skip(1) {
                let name: String = piece
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    names.insert(name);
                }
            }
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_paths_and_functions_are_told_apart() {
        let map = "Open `crates/afterimage-engine/src/dialog.rs`, read `run_dialog()` and `Endpoint::build()`.\n```\n`not/a/span.rs`\n```\n";
        let spans = backticked(map);
        assert_eq!(
            spans,
            [
                "crates/afterimage-engine/src/dialog.rs",
                "run_dialog()",
                "Endpoint::build()"
            ]
        );
        assert!(looks_like_path(spans[0]));
        assert_eq!(cited_function(spans[1]), Some("run_dialog"));
        assert_eq!(cited_function(spans[2]), Some("build"));
        assert_eq!(cited_function("max_concurrency"), None);
    }
}
