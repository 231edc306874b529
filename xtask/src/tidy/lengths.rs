//! Functions fit on a screen: no product function (tests aside) is longer than
//! [`MAX_FN_LINES`]. Counted on rustfmt's layout: from the `fn` line to the closing
//! brace at the same indentation.

use std::path::Path;

use anyhow::Result;

/// The longest a product function may be, signature and closing brace included.
pub(crate) const MAX_FN_LINES: usize = 80;

/// The problems found, one line each.
pub(super) fn check(root: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for dir in ["crates", "xtask/src", "src"] {
        for file in super::rust_files(&root.join(dir))? {
            if is_test_or_bench(&file) {
                continue;
            }
            let text = std::fs::read_to_string(&file)?;
            for (name, lines) in long_functions(&text) {
                problems.push(format!(
                    "{}: `{name}` is {lines} lines (at most {MAX_FN_LINES}); split it into named steps",
                    super::shown(root, &file)
                ));
            }
        }
    }
    Ok(problems)
}

fn is_test_or_bench(file: &Path) -> bool {
    file.components()
        .any(|c| matches!(c.as_os_str().to_str(), Some("tests" | "benches" | "fuzz")))
}

/// `(name, lines)` of each function over the limit, before the file's test module.
fn long_functions(text: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        if let Some((indent, name)) = fn_start(line) {
            let close = format!("{indent}}}");
            let end = (i..lines.len())
                .find(|&j| {
                    lines[j].starts_with(&close) || (j == i && line.trim_end().ends_with(';'))
                })
                .unwrap_or(lines.len() - 1);
            if end + 1 - i > MAX_FN_LINES {
                long.push((name, end + 1 - i));
            }
            i = end;
        }
        i += 1;
    }
    long
}

/// The indentation and name of a line that starts a function.
fn fn_start(line: &str) -> Option<(&str, String)> {
    let body = line.trim_start();
    let indent = &line[..line.len() - body.len()];
    let mut rest = body;
    for prefix in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "async ",
        "unsafe ",
    ] {
        rest = rest.strip_prefix(prefix).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty()).then_some((indent, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_functions_are_measured_to_their_closing_brace() {
        let body = "    let x = 1;\n".repeat(MAX_FN_LINES);
        let text = format!(
            "fn short() {{\n}}\n\npub(crate) async fn long() {{\n{body}}}\n\n#[cfg(test)]\nfn in_tests() {{\n{body}}}\n"
        );
        assert_eq!(
            long_functions(&text),
            [("long".to_owned(), MAX_FN_LINES + 2)]
        );
    }
}
