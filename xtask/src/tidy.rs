//! `cargo xtask tidy`: the layering rules of DESIGN.md, checked.
//!
//! Every crate may depend only on the crates below it; every crate's `lib.rs`, and
//! every module file under its `src/` at any depth, opens with a `//!` doc. Read from
//! the Cargo manifests and sources directly, so the check costs no dependency and no
//! `cargo metadata` run.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Which workspace crates each crate may depend on (normal dependencies only; tests
/// may use anything below the CLI).
const ALLOWED: &[(&str, &[&str])] = &[
    ("afterimage-core", &[]),
    ("afterimage-providers", &["afterimage-core"]),
    ("afterimage-strategies", &["afterimage-core"]),
    ("afterimage-storage", &["afterimage-core"]),
    (
        "afterimage-datasets",
        &["afterimage-core", "afterimage-storage"],
    ),
    (
        "afterimage-engine",
        &[
            "afterimage-core",
            "afterimage-providers",
            "afterimage-strategies",
            "afterimage-storage",
        ],
    ),
    (
        "afterimage-cli",
        &[
            "afterimage-core",
            "afterimage-providers",
            "afterimage-strategies",
            "afterimage-storage",
            "afterimage-engine",
            "afterimage-datasets",
        ],
    ),
    ("afterimage-mock", &[]),
];

/// Runs every check and lists all violations at once.
pub(crate) fn tidy(root: &Path) -> Result<()> {
    let mut problems = Vec::new();
    for (krate, allowed) in ALLOWED {
        let dir = root.join("crates").join(krate);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))
            .with_context(|| format!("reading {krate}/Cargo.toml"))?;
        for dep in workspace_deps(&manifest, "dependencies") {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!(
                    "{krate} depends on {dep}, which is not below it (DESIGN.md: dependencies point down)"
                ));
            }
        }
        let lib = std::fs::read_to_string(dir.join("src/lib.rs"))
            .with_context(|| format!("reading {krate}/src/lib.rs"))?;
        if !lib.trim_start().starts_with("//!") {
            problems.push(format!(
                "{krate}/src/lib.rs does not start with a `//!` crate doc"
            ));
        }
    }
    let crates = root.join("crates");
    for file in rust_files(&crates)? {
        let text = std::fs::read_to_string(&file)?;
        let is_module = file.strip_prefix(&crates).is_ok_and(is_module);
        if is_module && !text.trim_start().starts_with("//!") {
            problems.push(format!("{} has no `//!` module doc", file.display()));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        bail!(
            "tidy found {} problem(s):\n  {}",
            problems.len(),
            problems.join("\n  ")
        )
    }
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

/// Whether `path` (relative to `crates/`) is a module file: anything under a crate's
/// `src/`, at any depth (a seam folder's `mod.rs` and its files too), except the crate
/// roots `src/lib.rs`, `src/main.rs` and `src/bin/*.rs`.
fn is_module(path: &Path) -> bool {
    let parts: Vec<_> = path.iter().filter_map(|part| part.to_str()).collect();
    match parts.as_slice() {
        [_, "src", "lib.rs" | "main.rs"] | [_, "src", "bin", _] => false,
        [_, "src", _, ..] => true,
        _ => false,
    }
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files.extend(rust_files(&path)?);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        tidy(root).unwrap();
    }

    #[test]
    fn modules_are_found_at_any_depth_under_src() {
        for module in [
            "afterimage-core/src/chat.rs",
            "afterimage-strategies/src/tools/mod.rs",
            "afterimage-strategies/src/tools/specs.rs",
            "afterimage-strategies/src/personas/deeper/layer.rs",
        ] {
            assert!(is_module(Path::new(module)), "{module}");
        }
        for other in [
            "afterimage-core/src/lib.rs",
            "afterimage-cli/src/main.rs",
            "afterimage-cli/src/bin/extra.rs",
            "afterimage-strategies/tests/strategies/main.rs",
            "afterimage-strategies/tests/strategies/tools.rs",
            "afterimage-strategies/benches/bm25.rs",
        ] {
            assert!(!is_module(Path::new(other)), "{other}");
        }
    }

    #[test]
    fn upward_dependencies_are_found() {
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
}
