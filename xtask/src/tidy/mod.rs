//! `cargo xtask tidy`: the rules `ARCHITECTURE.md` states, checked against the code.
//!
//! The map of the code lives in `ARCHITECTURE.md`; tidy keeps it true. The crate table
//! there is the source of the layering rule (normal and dev-dependencies), every path
//! and every `function()` it names must exist, every crate shows its public face in a
//! documented `lib.rs`, every module opens with a `//!` doc, no product function grows
//! past [`lengths::MAX_FN_LINES`], no merge conflict marker is left behind, and the API docs build with warnings denied.
//! Everything is read from the files directly, so the check costs no dependency.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

mod architecture;
mod layering;
mod lengths;
mod markers;
mod sources;

/// Runs every check and lists all violations at once; `docs` also builds the API docs
/// with warnings denied (slow, so the unit test leaves it to CI).
pub(crate) fn tidy(root: &Path, docs: bool) -> Result<()> {
    let map = std::fs::read_to_string(root.join("ARCHITECTURE.md"))
        .context("reading ARCHITECTURE.md (the map tidy checks the code against)")?;
    let mut problems = Vec::new();
    problems.extend(layering::check(root, &map)?);
    problems.extend(architecture::check(root, &map)?);
    problems.extend(sources::check(root)?);
    problems.extend(lengths::check(root)?);
    problems.extend(markers::check(root)?);
    if docs && problems.is_empty() {
        problems.extend(docs_build(root)?);
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "tidy found {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    )
}

/// `cargo doc --workspace --no-deps` with rustdoc warnings denied: a broken intra-doc
/// link is an error here, which a plain `cargo doc` would only warn about.
fn docs_build(root: &Path) -> Result<Vec<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = std::process::Command::new(cargo)
        .current_dir(root)
        .args(["doc", "--workspace", "--no-deps", "--quiet"])
        .env("RUSTDOCFLAGS", "-D warnings")
        .status()
        .context("running cargo doc")?;
    Ok(if status.success() {
        Vec::new()
    } else {
        vec!["the API docs do not build with warnings denied (RUSTDOCFLAGS=\"-D warnings\" cargo doc --workspace --no-deps)".to_owned()]
    })
}

/// Every `.rs` file under `dir`, skipping build output.
fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "target") {
                files.extend(rust_files(&path)?);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// `path` relative to `root`, for messages.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_workspace_is_tidy() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        tidy(root, false).unwrap();
    }
}
