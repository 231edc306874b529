//! Reading personas out of a model's answer: structured JSON first, `Persona N:`
//! lines second; each description cleaned, capped in length and checked for personal
//! data.

use afterimage_core::{JsonSchema, parse_lenient};

use crate::instructions::{KeyedList, ListKey, list_schema};

/// Personas asked for in one call.
pub(crate) const PERSONAS_PER_CALL: usize = 5;

/// The most words a persona description keeps.
pub(crate) const MAX_PERSONA_WORDS: usize = 40;

/// The structured-output schema: `{"personas": [string]}`.
pub(crate) fn personas_schema() -> JsonSchema {
    list_schema("personas", "Five persona descriptions, one string each.")
}

/// The key of persona lists.
#[derive(Debug)]
struct Personas;

impl ListKey for Personas {
    const KEY: &'static str = "personas";
}

/// The text after `Persona N:` on each line that has it.
fn persona_lines(answer: &str) -> Vec<String> {
    answer
        .lines()
        .filter_map(|line| {
            let line = line.trim().trim_start_matches(['-', '*', '#', ' ']);
            let line = line.trim_start_matches("**");
            let rest = line
                .strip_prefix("Persona")
                .or_else(|| line.strip_prefix("persona"))?;
            let rest = rest.trim_start();
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return None;
            }
            let rest = rest[digits..].trim_start_matches("**").trim_start();
            let rest = rest.strip_prefix(':')?.trim_start_matches("**");
            Some(rest.trim().to_owned())
        })
        .collect()
}

/// Whitespace collapsed, wrapping quotes dropped, cut to [`MAX_PERSONA_WORDS`] words.
pub(crate) fn tidy(description: &str) -> String {
    let words: Vec<&str> = description.split_whitespace().collect();
    let kept = &words[..words.len().min(MAX_PERSONA_WORDS)];
    let text = kept.join(" ");
    let text = text.trim_matches(|c: char| c == '"' || c == '\u{201c}' || c == '\u{201d}');
    let mut text = text.trim().to_owned();
    if words.len() > MAX_PERSONA_WORDS {
        // Cut mid-sentence: end on a word, not on a comma or a dangling dash.
        let end = text.trim_end_matches([',', ';', ':', '-', ' ']).len();
        text.truncate(end);
    }
    text
}

/// The form two descriptions are compared in: lower case, letters and digits only,
/// single spaces.
pub(crate) fn normalise(description: &str) -> String {
    description
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `text` holds something shaped like an email address.
pub(crate) fn has_email(text: &str) -> bool {
    text.split_whitespace().any(|word| {
        let word = word.trim_matches(|c: char| !c.is_alphanumeric());
        match word.split_once('@') {
            Some((user, domain)) => {
                !user.is_empty()
                    && domain
                        .split_once('.')
                        .is_some_and(|(host, tld)| !host.is_empty() && !tld.is_empty())
            }
            None => false,
        }
    })
}

/// Whether `text` holds something shaped like a phone number: a run of digits and
/// phone punctuation with at least 9 digits, or at least 7 when it starts with `+`
/// or `(`. (A year range such as `2019-2024` has 8 and passes.)
pub(crate) fn has_phone_number(text: &str) -> bool {
    let mut digits = 0;
    let mut international = false;
    let mut in_run = false;
    for c in text.chars().chain(std::iter::once('x')) {
        let part = c.is_ascii_digit() || matches!(c, '+' | '(' | ')' | '-' | '.' | ' ');
        if part && (in_run || c.is_ascii_digit() || c == '+' || c == '(') {
            if !in_run {
                in_run = true;
                international = c == '+' || c == '(';
            }
            if c.is_ascii_digit() {
                digits += 1;
            }
            continue;
        }
        if in_run && (digits >= 9 || (international && digits >= 7)) {
            return true;
        }
        in_run = false;
        digits = 0;
    }
    false
}

/// The usable personas in `answer` (at most [`PERSONAS_PER_CALL`]), or why there are
/// none. Descriptions with personal data are dropped; repeats within the answer too.
pub(crate) fn read_personas(answer: &str) -> Result<Vec<String>, String> {
    let items = match parse_lenient::<KeyedList<Personas>>(answer) {
        Ok(KeyedList(items, _)) => items,
        Err(_) => persona_lines(answer),
    };
    if items.is_empty() {
        return Err("it holds neither a JSON list of personas nor `Persona N:` lines".into());
    }
    let mut out: Vec<String> = Vec::new();
    let mut rejected = 0;
    for item in items {
        let item = tidy(&item);
        if item.is_empty() {
            continue;
        }
        if has_email(&item) || has_phone_number(&item) {
            rejected += 1;
            continue;
        }
        if !out.iter().any(|seen| normalise(seen) == normalise(&item)) {
            out.push(item);
        }
    }
    out.truncate(PERSONAS_PER_CALL);
    if out.is_empty() {
        return Err(if rejected > 0 {
            "every persona in it contained personal data (an email or a phone number)".into()
        } else {
            "its list of personas is empty".into()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_persona_lines() {
        assert_eq!(
            read_personas(r#"{"personas": ["A nurse.", "A porter."]}"#).unwrap(),
            ["A nurse.", "A porter."]
        );
        assert_eq!(
            read_personas("```json\n[\"A nurse.\"]\n```").unwrap(),
            ["A nurse."]
        );
        let lines = "Here you go:\nPersona 1: A night-shift nurse.\n**Persona 2:** A  hospital\tporter.\n- Persona 3: A nurse who works nights\nnot a persona";
        assert_eq!(
            read_personas(lines).unwrap(),
            [
                "A night-shift nurse.",
                "A hospital porter.",
                "A nurse who works nights"
            ]
        );
        assert!(read_personas("no personas here").is_err());
        assert!(read_personas(r#"{"personas": []}"#).is_err());
    }

    #[test]
    fn at_most_five_no_repeats_and_forty_words() {
        let many = r#"{"personas": ["a", "b", "A.", "c", "d", "e", "f"]}"#;
        assert_eq!(read_personas(many).unwrap(), ["a", "b", "c", "d", "e"]);
        let long = format!("{} word, more", "word ".repeat(39));
        let kept = tidy(&long);
        assert_eq!(kept.split_whitespace().count(), 40);
        assert!(kept.ends_with("word"), "{kept}");
        assert_eq!(tidy("  \"A  nurse\"  "), "A nurse");
    }

    #[test]
    fn personal_data_is_rejected() {
        assert!(has_email("write to jane.doe@example.com today"));
        assert!(!has_email("a nurse @ the hospital"));
        assert!(has_phone_number("call 555-123-4567"));
        assert!(has_phone_number("call +44 20 7946 0"));
        assert!(has_phone_number("(555) 123-4567"));
        assert!(!has_phone_number("worked there 2019-2024, aged 45"));
        assert!(!has_phone_number("a team of 12 in 3 shifts"));
        let answer = r#"{"personas": ["Jane, jane@mail.org", "A porter. Tel 0044 20 7946 0958", "A nurse."]}"#;
        assert_eq!(read_personas(answer).unwrap(), ["A nurse."]);
        assert_eq!(
            read_personas(r#"{"personas": ["x@y.io"]}"#).unwrap_err(),
            "every persona in it contained personal data (an email or a phone number)"
        );
    }

    #[test]
    fn normalised_forms_compare_text_only() {
        assert_eq!(normalise(" A Night-shift  nurse. "), "a night shift nurse");
        assert_eq!(normalise("a night shift nurse"), "a night shift nurse");
    }
}
