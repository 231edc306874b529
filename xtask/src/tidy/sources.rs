//! Each crate's public face: `lib.rs` opens with a crate doc holding an example, its
//! modules are private (the public API is the `pub use` block), and every module file
//! opens with a `//!` doc saying what it holds.

use std::path::Path;

use anyhow::{Context, Result};

/// `pub mod`s that are true namespaces: the core's test doubles behind the `testing`
/// feature, and the facade's prelude.
const PUBLIC_MODULES: &[&str] = &["testing", "prelude"];

/// The problems found, one line each.
pub(super) fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let mut libs = vec![root.join("src/lib.rs")];
    for entry in std::fs::read_dir(root.join("crates")).context("reading crates/")? {
        libs.push(entry?.path().join("src/lib.rs"));
    }
    for lib in libs.iter().filter(|l| l.is_file()) {
        let text = std::fs::read_to_string(lib)?;
        problems.extend(lib_problems(&super::shown(root, lib), &text));
    }
    for file in super::rust_files(&root.join("crates"))? {
        let in_src = file.components().any(|c| c.as_os_str() == "src");
        // Crate roots carry a crate doc instead (checked above, for libraries).
        let is_root = file
            .file_name()
            .is_some_and(|f| f == "main.rs" || f == "lib.rs")
            || file
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|d| d == "bin");
        let text = std::fs::read_to_string(&file)?;
        if in_src && !is_root && !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{} has no `//!` module doc",
                super::shown(root, &file)
            ));
        }
    }
    Ok(problems)
}

fn lib_problems(name: &str, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let crate_doc: Vec<&str> = text.lines().take_while(|l| l.starts_with("//!")).collect();
    if crate_doc.is_empty() {
        problems.push(format!("{name} does not start with a `//!` crate doc"));
    } else if !crate_doc
        .iter()
        .any(|l| l.trim_start_matches("//!").trim_start().starts_with("```"))
    {
        problems.push(format!("{name}: the crate doc has no example"));
    }
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("pub mod ") else {
            continue;
        };
        let module: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !PUBLIC_MODULES.contains(&module.as_str()) {
            problems.push(format!(
                "{name}: `pub mod {module}` makes a module part of the API; keep it private and re-export its items in the `pub use` block"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lib_without_example_or_with_a_public_module_is_reported() {
        let good =
            "//! Crate.\n//!\n//! ```\n//! let x = 1;\n//! ```\npub use crate::a::A;\nmod a;\n";
        assert!(lib_problems("lib.rs", good).is_empty());
        let bad = "//! Crate.\npub mod a;\n";
        assert_eq!(lib_problems("lib.rs", bad).len(), 2);
        assert_eq!(lib_problems("lib.rs", "mod a;\n").len(), 1);
    }
}
