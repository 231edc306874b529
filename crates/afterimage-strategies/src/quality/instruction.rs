//! Cheap checks of a generated first question, before a whole dialog is paid for it.
//!
//! Small models asked for a JSON list of questions often answer with something that
//! is no request at all: the example from the prompt's answer shape (`first
//! message`), a MIME type or a URL from their training data, the document's title.
//! Each of those would cost a whole dialog (and a judge call) and teach nothing.

use super::checks::words;
use crate::instructions::{
    FALLBACK_PERSONA, INSTRUCTIONS_CORRECTION, INSTRUCTIONS_DESCRIPTION, NO_CORRESPONDENT_PROMPT,
};

/// What a generated question is checked against besides itself: the prompts its
/// generator was given (an instruction that repeats a piece of them is an echo) and
/// the documents it is about (a copy of a document's first line is no question).
///
/// ```
/// use afterimage_strategies::{InstructionContext, check_instruction};
///
/// let context = InstructionContext::new()
///     .prompt("You are a customer whose router keeps dropping the connection.")
///     .document("Router manual\nHold the reset button for ten seconds.");
/// assert!(check_instruction("How do I reset it?", &context).is_ok());
/// let junk = check_instruction("Router manual", &context).unwrap_err();
/// assert_eq!(junk.cause, "document_copy");
/// ```
#[derive(Debug, Clone, Default)]
pub struct InstructionContext<'a> {
    prompts: Vec<&'a str>,
    documents: Vec<&'a str>,
}

impl<'a> InstructionContext<'a> {
    /// No prompts and no documents: only the checks of the text itself (and of the
    /// built-in prompt pieces every generator of this crate sends).
    pub fn new() -> Self {
        InstructionContext::default()
    }

    /// A prompt the generator saw (its system prompt template, the correspondent
    /// prompt).
    pub fn prompt(mut self, prompt: &'a str) -> Self {
        self.prompts.push(prompt);
        self
    }

    /// A document the question is about.
    pub fn document(mut self, text: &'a str) -> Self {
        self.documents.push(text);
        self
    }
}

/// Why a generated question was discarded before any dialog was spent on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstructionRejection {
    /// A short stable cause for reports: `empty`, `placeholder`, `mime_type`, `url`,
    /// `echo`, `document_copy` or `too_short`.
    pub cause: &'static str,
    /// What was found, in words.
    pub detail: String,
}

impl std::fmt::Display for InstructionRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.detail, self.cause)
    }
}

/// Checks a generated first question without a model. It is rejected when it is:
///
/// - `empty`: blank;
/// - `placeholder`: a stand-in rather than a request (`first message`, `question 1`,
///   `<instruction>`, `...`, `TODO`, `lorem ipsum`);
/// - `mime_type` or `url`: a MIME type (`text/plain;charset=UTF-8`) or a URL alone;
/// - `echo`: equal to, or a piece of, a prompt in `context` or the built-in prompt
///   pieces the generators of this crate send;
/// - `document_copy`: the first line of one of the documents, copied;
/// - `too_short`: fewer than 3 words or 12 characters, where each CJK character
///   counts as a word of 3 characters (so `怎么重置？` passes and `你好` does not).
///
/// Like the dialog checks, the rules are conservative: an ordinary short question
/// ("How do I reset it?") passes.
pub fn check_instruction(
    text: &str,
    context: &InstructionContext<'_>,
) -> Result<(), InstructionRejection> {
    let reject = |cause, detail: String| Err(InstructionRejection { cause, detail });
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return reject("empty", "the question is empty".into());
    }
    let bare = strip_wrapping(trimmed);
    if is_mime_type(bare) {
        return reject("mime_type", "a MIME type, not a request".into());
    }
    if is_url(bare) {
        return reject("url", "a URL alone, not a request".into());
    }
    if let Some(why) = placeholder(trimmed) {
        return reject("placeholder", why.into());
    }
    let said = words(trimmed);
    if let Some(which) = echoed_prompt(&said, context) {
        return reject("echo", format!("it repeats a piece of {which}"));
    }
    if context
        .documents
        .iter()
        .any(|doc| first_line(doc).is_some_and(|line| words(line) == said))
    {
        return reject(
            "document_copy",
            "a copy of the document's first line".into(),
        );
    }
    let (count, chars) = size(trimmed);
    if count < MIN_WORDS || chars < MIN_CHARS {
        return reject(
            "too_short",
            format!("{count} words, {chars} characters: too short to be a request"),
        );
    }
    Ok(())
}

/// The fewest words a request has.
const MIN_WORDS: usize = 3;
/// The fewest characters a request has (a CJK character counts as 3).
const MIN_CHARS: usize = 12;

/// Words and characters, each CJK character (Han, kana, Hangul) counting as a word
/// of 3 characters: those scripts say in one character what others say in a word.
fn size(text: &str) -> (usize, usize) {
    let mut count = 0;
    let mut chars = 0;
    let mut in_word = false;
    for c in text.chars() {
        if is_cjk(c) {
            count += 1;
            chars += 3;
            in_word = false;
            continue;
        }
        chars += 1;
        if c.is_alphanumeric() {
            if !in_word {
                count += 1;
            }
            in_word = true;
        } else if c.is_whitespace() {
            in_word = false;
        }
    }
    (count, chars)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32, 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF | 0xF900..=0xFAFF)
}

/// Words that make up placeholders, besides numbers.
const PLACEHOLDER_FILLERS: &[&str] = &[
    "a", "an", "another", "first", "second", "third", "fourth", "fifth", "next", "last", "new",
    "opening", "initial", "user", "your", "my", "the", "here", "goes", "insert", "put", "number",
    "no", "sample", "example", "of", "one", "two", "three",
];

/// The words that make a run of fillers a placeholder.
const PLACEHOLDER_NOUNS: &[&str] = &[
    "message",
    "messages",
    "question",
    "questions",
    "instruction",
    "instructions",
    "request",
    "query",
    "prompt",
    "text",
    "string",
    "placeholder",
    "todo",
    "tbd",
    "fixme",
    "example",
    "sample",
    "null",
    "none",
    "undefined",
    "nan",
    "lorem",
    "ipsum",
    "xxx",
    "foo",
    "bar",
];

/// Why `text` is a placeholder, if it is one.
fn placeholder(text: &str) -> Option<&'static str> {
    if !text.chars().any(char::is_alphanumeric) {
        return Some("only punctuation, no words");
    }
    let inner = [('<', '>'), ('{', '}'), ('[', ']')]
        .iter()
        .find_map(|(open, close)| text.strip_prefix(*open)?.strip_suffix(*close));
    if inner.is_some_and(|inner| inner.split_whitespace().count() <= 6) {
        return Some("a template slot, not a request");
    }
    let all = words(text);
    if all.first().is_some_and(|w| w == "lorem") {
        return Some("filler text, not a request");
    }
    // `2`, `q2`, `2nd`: a number, maybe with a letter before or an ordinal after.
    let is_number = |w: &str| {
        let digits = w
            .strip_prefix(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(w);
        let digits = digits.trim_end_matches(['s', 't', 'n', 'd', 'r', 'h']);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    };
    let named = all.iter().any(|w| PLACEHOLDER_NOUNS.contains(&w.as_str()));
    let only_fillers = all.iter().all(|w| {
        is_number(w)
            || PLACEHOLDER_NOUNS.contains(&w.as_str())
            || PLACEHOLDER_FILLERS.contains(&w.as_str())
    });
    (only_fillers && (named || all.iter().all(|w| is_number(w))))
        .then_some("a placeholder, not a request")
}

/// `text` without surrounding quotes, backticks or angle brackets.
fn strip_wrapping(text: &str) -> &str {
    text.trim_matches(|c: char| matches!(c, '"' | '\'' | '`' | '<' | '>' | '“' | '”'))
        .trim()
}

/// Top-level MIME types (RFC 6838 and the common unregistered ones).
const MIME_TYPES: &[&str] = &[
    "application",
    "audio",
    "font",
    "image",
    "message",
    "model",
    "multipart",
    "text",
    "video",
];

/// `type/subtype` with optional `; key=value` parameters, and nothing else.
fn is_mime_type(text: &str) -> bool {
    let mut parts = text.split(';');
    let Some((kind, subtype)) = parts.next().and_then(|p| p.trim().split_once('/')) else {
        return false;
    };
    let token = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-' | '_'))
    };
    MIME_TYPES.contains(&kind.to_ascii_lowercase().as_str())
        && token(subtype)
        && parts.all(|p| {
            let p = p.trim();
            p.is_empty()
                || p.split_once('=').is_some_and(|(k, v)| {
                    token(k.trim()) && !v.trim().is_empty() && !v.contains(char::is_whitespace)
                })
        })
}

/// A URL and nothing else (trailing sentence punctuation allowed).
fn is_url(text: &str) -> bool {
    let text = text.trim_end_matches(['.', ',', ';', ':', '!', ')']);
    if text.is_empty() || text.contains(char::is_whitespace) {
        return false;
    }
    let lower = text.to_ascii_lowercase();
    if lower.starts_with("www.") {
        return true;
    }
    lower.split_once("://").is_some_and(|(scheme, rest)| {
        !rest.is_empty()
            && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'))
    })
}

/// Which prompt `said` (the question's words) equals or sits inside, if any.
fn echoed_prompt(said: &[String], context: &InstructionContext<'_>) -> Option<&'static str> {
    if said.is_empty() {
        return None;
    }
    let inside = |prompt: &str| {
        let prompt = words(prompt);
        prompt.len() >= said.len() && prompt.windows(said.len()).any(|w| w == said)
    };
    if context.prompts.iter().any(|p| inside(p)) {
        return Some("the generator's prompts");
    }
    BUILT_IN_PROMPTS
        .iter()
        .any(|p| inside(p))
        .then_some("the built-in instruction prompt")
}

/// Prompt pieces the generators of this crate send whatever their template: the
/// correction asking for the answer's shape again, the schema's description of its
/// list (which prompt-mode servers see in the prompt), the user message's headings.
const BUILT_IN_PROMPTS: &[&str] = &[
    INSTRUCTIONS_CORRECTION,
    INSTRUCTIONS_DESCRIPTION,
    NO_CORRESPONDENT_PROMPT,
    FALLBACK_PERSONA,
    "# Who is writing # Context",
];

/// The first line with words in it, without a Markdown heading or list marker.
fn first_line(document: &str) -> Option<&str> {
    document
        .lines()
        .map(|l| l.trim().trim_start_matches(['#', '-', '*', '>']).trim())
        .find(|l| l.chars().any(char::is_alphanumeric))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cause(text: &str) -> Option<&'static str> {
        check_instruction(text, &InstructionContext::new())
            .err()
            .map(|r| r.cause)
    }

    #[test]
    fn ordinary_questions_pass() {
        for text in [
            "How do I reset it?",
            "What does error 503 mean?",
            "My order from last week never arrived. What can I do?",
            "怎么重置密码？",
            "パスワードを忘れました",
            "비밀번호를 어떻게 바꾸나요?",
            "Wie setze ich mein Passwort zurück?",
            "Can I send a text message from the web app?",
            "I have a question about my bill",
            "Which MIME type should I use for JSON, application/json or text/json?",
            "Is https://example.com/status the right page to check outages?",
        ] {
            assert_eq!(cause(text), None, "{text}");
        }
    }

    #[test]
    fn empty_and_placeholders() {
        assert_eq!(cause("   "), Some("empty"));
        for text in [
            "first message",
            "Second message",
            "question 1",
            "Question #2?",
            "Q1",
            "<instruction>",
            "{question}",
            "[your question here]",
            "...",
            "…",
            "TODO",
            "Lorem ipsum dolor sit amet, consectetur adipiscing elit.",
            "Example question here",
            "instruction 3",
        ] {
            assert_eq!(cause(text), Some("placeholder"), "{text}");
        }
    }

    #[test]
    fn mime_types_and_urls() {
        for text in [
            "text/plain;charset=UTF-8",
            "application/json",
            "`image/svg+xml`",
            "multipart/form-data; boundary=something",
        ] {
            assert_eq!(cause(text), Some("mime_type"), "{text}");
        }
        for text in [
            "https://example.com/docs/reset?x=1",
            "<http://foo.org>",
            "www.example.com.",
        ] {
            assert_eq!(cause(text), Some("url"), "{text}");
        }
    }

    #[test]
    fn echoes_of_the_prompts() {
        let template = "Write the first question a curious reader of the context would ask.";
        let persona = "You are a retired teacher planning a trip to Lisbon.";
        let context = InstructionContext::new().prompt(template).prompt(persona);
        let check = |t| check_instruction(t, &context).err().map(|r| r.cause);
        assert_eq!(check("a curious reader of the context"), Some("echo"));
        assert_eq!(
            check("You are a retired teacher planning a trip to Lisbon."),
            Some("echo")
        );
        assert_eq!(check("What should I pack for Lisbon in March?"), None);
        // The built-in pieces are echoes whatever the template.
        assert_eq!(cause("Who is writing"), Some("echo"));
        assert_eq!(cause("Reply again with JSON only"), Some("echo"));
        // The schema's description of the list, which a small model handed back.
        assert_eq!(cause("The first messages, one string each."), Some("echo"));
    }

    #[test]
    fn a_copied_first_line() {
        let doc = "# Resetting the Model X router\n\nHold the reset button for ten seconds.";
        let context = InstructionContext::new().document(doc);
        let check = |t| check_instruction(t, &context).err().map(|r| r.cause);
        assert_eq!(check("Resetting the Model X router"), Some("document_copy"));
        assert_eq!(check("How do I reset the Model X router?"), None);
    }

    #[test]
    fn too_short_counts_cjk_sensibly() {
        assert_eq!(cause("Why?"), Some("too_short"));
        assert_eq!(cause("Refund policy?"), Some("too_short"));
        assert_eq!(cause("Is it ok"), Some("too_short"));
        assert_eq!(cause("你好"), Some("too_short"));
        assert_eq!(cause("你好吗"), Some("too_short"));
        assert_eq!(cause("怎么退款？"), None);
        assert_eq!(size("How do I reset it?"), (5, 18));
    }

    #[test]
    fn the_rejection_reads_as_a_sentence() {
        let rejection =
            check_instruction("application/json", &InstructionContext::new()).unwrap_err();
        assert_eq!(
            rejection.to_string(),
            "a MIME type, not a request (mime_type)"
        );
    }
}
