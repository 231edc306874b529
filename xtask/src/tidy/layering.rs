//! The crate table of `ARCHITECTURE.md` against the manifests: dependencies point
//! down, and tests (dev-dependencies) too, with the mock server as the one extra.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// What a crate's tests may use beyond its own allowed dependencies.
const TEST_EXTRAS: &[&str] = &["afterimage-mock"];

/// The problems found, one line each.
pub(super) fn check(root: &Path, map: &str) -> Result<Vec<String>> {
    let table = crate_table(map);
    let mut problems = Vec::new();
    if table.is_empty() {
        problems.push(
            "ARCHITECTURE.md has no crate table (rows `| `afterimage-x` | job | may depend on |` under `## Crate map`)"
                .to_owned(),
        );
    }
    let on_disk = crate_dirs(root)?;
    for name in &on_disk {
        if !table.contains_key(name) {
            problems.push(format!(
                "crates/{name} is missing from ARCHITECTURE.md's crate table"
            ));
        }
    }
    for (krate, allowed) in &table {
        if !on_disk.contains(krate) {
            problems.push(format!(
                "ARCHITECTURE.md's crate table names {krate}, which is not in crates/"
            ));
            continue;
        }
        let manifest = std::fs::read_to_string(root.join("crates").join(krate).join("Cargo.toml"))
            .with_context(|| format!("reading crates/{krate}/Cargo.toml"))?;
        for dep in workspace_deps(&manifest, "dependencies") {
            if !allowed.contains(&dep) {
                problems.push(format!(
                    "{krate} depends on {dep}; ARCHITECTURE.md lets it use only {}",
                    listed(allowed)
                ));
            }
        }
        for dep in workspace_deps(&manifest, "dev-dependencies") {
            if dep != *krate && !allowed.contains(&dep) && !TEST_EXTRAS.contains(&dep.as_str()) {
                problems.push(format!(
                    "{krate}'s tests depend on {dep}; tests may use only {} and the mock (move the test to a crate above both, or to the workspace's tests/)",
                    listed(allowed)
                ));
            }
        }
    }
    Ok(problems)
}

fn listed(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "no workspace crate".to_owned()
    } else {
        allowed.join(", ")
    }
}

/// `crate -> may depend on`, from the table rows whose first cell is a crate name.
fn crate_table(map: &str) -> BTreeMap<String, Vec<String>> {
    let mut table = BTreeMap::new();
    for line in map.lines().map(str::trim) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [first, .., last] = cells.as_slice() else {
            continue;
        };
        if !line.starts_with('|') || cells.len() < 3 {
            continue;
        }
        let Some(name) = first
            .strip_prefix("`afterimage-")
            .and_then(|n| n.strip_suffix('`'))
        else {
            continue;
        };
        table.insert(format!("afterimage-{name}"), backticked_crates(last));
    }
    table
}

fn backticked_crates(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .filter(|name| name.starts_with("afterimage-"))
        .map(str::to_owned)
        .collect()
}

fn crate_dirs(root: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).context("reading crates/")? {
        let path = entry?.path();
        if path.join("Cargo.toml").is_file()
            && let Some(name) = path.file_name()
        {
            names.push(name.to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The `afterimage-*` names in a manifest's `[section]`.
fn workspace_deps(manifest: &str, section: &str) -> Vec<String> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut deps = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
            continue;
        }
        if inside && line.starts_with("afterimage-") {
            let name: String = line
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            deps.push(name);
        }
    }
    deps
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn workspace_deps_are_read_per_section() {
        let manifest = "[dependencies]\nafterimage-engine.workspace = true\nserde = \"1\"\n\n[dev-dependencies]\nafterimage-mock.workspace = true\n";
        assert_eq!(
            workspace_deps(manifest, "dependencies"),
            ["afterimage-engine"]
        );
        assert_eq!(
            workspace_deps(manifest, "dev-dependencies"),
            ["afterimage-mock"]
        );
    }

    #[test]
    fn the_crate_table_is_read_from_markdown() {
        let map = "## Crate map\n\n| crate | job | may depend on |\n|---|---|---|\n| `afterimage-core` | types | nothing |\n| `afterimage-storage` | rows | `afterimage-core` |\n";
        let table = crate_table(map);
        assert_eq!(table["afterimage-core"], Vec::<String>::new());
        assert_eq!(table["afterimage-storage"], ["afterimage-core"]);
        assert_eq!(table.len(), 2);
    }
}
