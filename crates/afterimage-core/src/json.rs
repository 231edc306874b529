//! Reading JSON out of model answers that wrap it in prose or code fences.

use serde::de::DeserializeOwned;

use crate::StrategyError;

/// Parses the first JSON value of type `T` found in `text`.
///
/// Models asked for JSON often answer with a code fence, a sentence before it, or
/// trailing remarks. This tries the whole text, then each fenced block, then every
/// `{` or `[` from which a complete value parses.
pub fn parse_lenient<T: DeserializeOwned>(text: &str) -> Result<T, StrategyError> {
    let trimmed = text.trim();
    if let Ok(value) = serde_json::from_str::<T>(trimmed) {
        return Ok(value);
    }
    for block in fenced_blocks(trimmed) {
        if let Ok(value) = serde_json::from_str::<T>(block.trim()) {
            return Ok(value);
        }
    }
    for (start, _) in trimmed.match_indices(['{', '[']) {
        let mut values = serde_json::Deserializer::from_str(&trimmed[start..]).into_iter::<T>();
        if let Some(Ok(value)) = values.next() {
            return Ok(value);
        }
    }
    Err(StrategyError::MalformedOutput {
        message: format!("expected JSON, got: {}", snippet(trimmed, 160)),
    })
}

fn fenced_blocks(text: &str) -> impl Iterator<Item = &str> {
    text.split("```").skip(1).step_by(2).map(|block| {
        // Drop a language tag such as `json` on the opening fence line.
        match block.split_once('\n') {
            Some((tag, rest)) if !tag.trim_start().starts_with(['{', '[']) => rest,
            _ => block,
        }
    })
}

/// The first `max` characters of `text`, with an ellipsis when cut.
pub fn snippet(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct List {
        instructions: Vec<String>,
    }

    #[test]
    fn plain_fenced_and_embedded_json() {
        let want = List {
            instructions: vec!["a".into()],
        };
        assert_eq!(
            parse_lenient::<List>(r#"{"instructions":["a"]}"#).unwrap(),
            want
        );
        assert_eq!(
            parse_lenient::<List>("Sure!\n```json\n{\"instructions\": [\"a\"]}\n```\nEnjoy.")
                .unwrap(),
            want
        );
        assert_eq!(
            parse_lenient::<List>("Here you go: {\"instructions\": [\"a\"]} hope it helps {")
                .unwrap(),
            want
        );
    }

    #[test]
    fn prose_is_an_error_that_quotes_the_answer() {
        let err = parse_lenient::<List>("I cannot do that.").unwrap_err();
        assert!(err.to_string().contains("I cannot do that."), "{err}");
    }

    #[test]
    fn prompt_mode_answers_with_broken_json_are_malformed_output_not_a_crash() {
        // What models asked for JSON in the prompt alone (no JSON mode) send back.
        for answer in [
            "{\"instructions\": [\"a\",],}",
            "```json\n{\"instructions\": [\"a\"],}\n```",
            "Sure: {\"instructions\": [\"a\"",
            "",
        ] {
            let err = parse_lenient::<List>(answer).unwrap_err();
            assert!(
                matches!(err, StrategyError::MalformedOutput { .. }),
                "{answer}: {err}"
            );
        }
        assert_eq!(
            parse_lenient::<List>(
                "Here is the JSON you asked for:\n\n```\n{\"instructions\": [\"a\"]}\n```"
            )
            .unwrap()
            .instructions,
            vec!["a"]
        );
    }

    #[test]
    fn snippet_cuts_on_char_boundaries() {
        assert_eq!(snippet("héllo", 2), "hé...");
        assert_eq!(snippet("hi", 5), "hi");
    }
}
