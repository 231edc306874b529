//! The template filler every seam's prompts share.

/// Replaces each `{name}` in `template` that has a value, in one pass.
///
/// One pass matters: a value that itself contains `{context}` or JSON braces is copied
/// as is, never substituted again, and unknown `{...}` (JSON examples) stay literal.
pub(crate) fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let known = after.find('}').and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (end, *value))
        });
        match known {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT, DEFAULT_RESPONDENT_CONTEXT_TEMPLATE};

    #[test]
    fn fill_replaces_known_names_once_and_keeps_other_braces() {
        let out = fill(
            "{prompt}|{context}|{\"a\": [1]}|{unknown}|{",
            &[("prompt", "P {context}"), ("context", "C {prompt}")],
        );
        assert_eq!(out, "P {context}|C {prompt}|{\"a\": [1]}|{unknown}|{");
    }

    #[test]
    fn default_templates_fill_their_placeholders() {
        let out = fill(
            DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT,
            &[("n_instructions", "4")],
        );
        assert!(!out.contains("{n_instructions}"));
        assert_eq!(out.matches("exactly 4").count(), 2);
        assert!(out.ends_with(
            "a list of exactly 4 strings, each string one whole message in the person's words."
        ));
        let out = fill(
            DEFAULT_RESPONDENT_CONTEXT_TEMPLATE,
            &[("prompt", "P"), ("context", "C")],
        );
        assert!(
            out.starts_with("P\n\n## Knowledge for this conversation\n<context>\nC\n</context>\n")
        );
    }
}
