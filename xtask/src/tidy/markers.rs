//! No merge conflict markers left behind: a merge that commits `<<<<<<<` lines in the
//! map or the code is caught here (the compiler catches them in Rust, nothing in
//! Markdown, YAML or the CI script).

use std::path::Path;

use anyhow::Result;

/// The files outside `src/` that a merge can leave markers in.
const TEXT_FILES: &[&str] = &["ARCHITECTURE.md", "README.md", "BENCHMARKS.md", ".ci/run"];

/// Every line of the map, the README, the CI script and the Rust sources that opens or
/// closes a conflict.
pub(super) fn check(root: &Path) -> Result<Vec<String>> {
    let mut files: Vec<_> = TEXT_FILES.iter().map(|f| root.join(f)).collect();
    files.extend(super::rust_files(root)?);
    let mut problems = Vec::new();
    for path in files.iter().filter(|p| p.is_file()) {
        let text = std::fs::read_to_string(path)?;
        problems.extend(markers(&text).into_iter().map(|line| {
            format!(
                "{}:{line}: a merge conflict marker is left in the file",
                super::shown(root, path)
            )
        }));
    }
    Ok(problems)
}

/// The 1-based numbers of the lines that open or close a conflict.
fn markers(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.starts_with("<<<<<<< ") || line.starts_with(">>>>>>> "))
        .map(|(i, _)| i + 1)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::markers;

    #[test]
    fn conflict_lines_are_found_and_plain_text_is_not() {
        let text = "# Title\n<<<<<<< HEAD\nours\n=======\ntheirs\n>>>>>>> branch\nend\n";
        assert_eq!(markers(text), vec![2, 6]);
        assert!(markers("a <<<<<<< b\n=======\n").is_empty());
    }
}
