//! Cheap checks: reject a broken dialog before any judge tokens are spent on it.

use afterimage_core::{Message, Role};

/// Why a dialog failed the cheap checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// A short stable cause for reports (`truncated_reply`, `refusal`, ...).
    pub cause: &'static str,
    /// What was found, for logs.
    pub detail: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.cause, self.detail)
    }
}

/// Checks a finished dialog (user first, alternating) without a model: empty or
/// truncated replies (`truncated`: a reply ended on the token limit), the simulated
/// user speaking as the assistant or as an AI, the user switching language, an
/// assistant refusal, a user turn repeating an earlier one, and an assistant reply
/// repeating the one before it (a dialog going round in a loop).
///
/// The rules are deliberately conservative: a false reject costs a regeneration, a
/// false accept only what the judge would have caught anyway.
pub fn check_dialog(messages: &[Message], truncated: bool) -> Result<(), Rejection> {
    let reject = |cause, detail: String| Err(Rejection { cause, detail });
    if let Some((i, _)) = messages
        .iter()
        .enumerate()
        .find(|(_, m)| m.content.trim().is_empty() && m.tool_calls.is_empty())
    {
        return reject("empty_reply", format!("message {} is empty", i + 1));
    }
    if truncated {
        return reject(
            "truncated_reply",
            "a reply stopped at the token limit".into(),
        );
    }
    let users: Vec<&str> = by_role(messages, Role::User);
    for (i, text) in users.iter().enumerate() {
        let lower = text.to_lowercase();
        if let Some(phrase) = AI_SELF_REFERENCES.iter().find(|p| lower.contains(*p)) {
            return reject(
                "user_as_ai",
                format!("user turn {} says \"{phrase}\"", i + 1),
            );
        }
        // The first user message is the generated question; follow-ups are the
        // simulated user's own words, where an assistant voice gives it away.
        if i > 0
            && let Some(phrase) = ASSISTANT_VOICE.iter().find(|p| lower.contains(*p))
        {
            return reject(
                "user_as_assistant",
                format!("user turn {} says \"{phrase}\"", i + 1),
            );
        }
    }
    if let Some(first) = users.first() {
        let language = language_of(first);
        for (i, text) in users.iter().enumerate().skip(1) {
            if let (Some(a), Some(b)) = (language, language_of(text))
                && a != b
            {
                return reject(
                    "language_switch",
                    format!("user turn {} is in {b}, the first in {a}", i + 1),
                );
            }
        }
    }
    for (i, text) in by_role(messages, Role::Assistant).iter().enumerate() {
        let opening: String = text.chars().take(160).collect::<String>().to_lowercase();
        if let Some(phrase) = REFUSALS.iter().find(|p| opening.contains(*p)) {
            return reject(
                "refusal",
                format!("assistant reply {} opens with \"{phrase}\"", i + 1),
            );
        }
    }
    for (i, text) in users.iter().enumerate().skip(1) {
        if let Some(j) = users[..i].iter().position(|earlier| repeats(earlier, text)) {
            return reject(
                "repeated_user_turn",
                format!("user turn {} repeats turn {}", i + 1, j + 1),
            );
        }
    }
    repeated_answer(messages)
}

/// An assistant reply saying again what the reply before it said: the dialog loops
/// (the same answer to a reworded question, or to "and then?").
fn repeated_answer(messages: &[Message]) -> Result<(), Rejection> {
    let answers: Vec<&str> = by_role(messages, Role::Assistant)
        .into_iter()
        .filter(|text| !text.trim().is_empty())
        .collect();
    for (i, pair) in answers.windows(2).enumerate() {
        if repeats(pair[0], pair[1]) {
            return Err(Rejection {
                cause: "repeated_assistant_turn",
                detail: format!("assistant reply {} repeats reply {}", i + 2, i + 1),
            });
        }
    }
    Ok(())
}

fn by_role(messages: &[Message], role: Role) -> Vec<&str> {
    messages
        .iter()
        .filter(|m| m.role == role)
        .map(|m| m.content.as_str())
        .collect()
}

/// A user who calls itself an AI has stepped out of its role.
const AI_SELF_REFERENCES: &[&str] = &[
    "as an ai",
    "as a language model",
    "i am an ai",
    "i'm an ai",
    "i am a language model",
    "i'm a language model",
    "as an assistant",
    "i am an assistant",
    "i'm an assistant",
];

/// Phrases an assistant says and a user asking for help does not.
const ASSISTANT_VOICE: &[&str] = &[
    "how can i help you",
    "how can i assist you",
    "how may i help you",
    "how may i assist you",
    "anything else i can help",
    "i'd be happy to help you",
    "i hope this helps",
    "great question",
    "i hope that helps",
];

/// Openings of a refusal; the questions are drawn from the user's own documents, so
/// refusing them is a defect of the dialog, not caution.
const REFUSALS: &[&str] = &[
    "i can't help with",
    "i cannot help with",
    "i can't assist with",
    "i cannot assist with",
    "i'm sorry, but i can't",
    "i'm sorry, but i cannot",
    "i am sorry, but i cannot",
    "i'm unable to help",
    "i am unable to help",
    "i can't provide",
    "i cannot provide",
    "i won't be able to help",
];

/// Lowercase alphanumeric words.
pub(crate) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// Whether `b` says what `a` said: the same words, or nearly the same set of them.
fn repeats(a: &str, b: &str) -> bool {
    let (wa, wb) = (words(a), words(b));
    if wa.is_empty() || wb.is_empty() {
        return false;
    }
    if wa == wb {
        return true;
    }
    if wa.len() < 4 || wb.len() < 4 {
        return false;
    }
    let sa: std::collections::HashSet<&String> = wa.iter().collect();
    let sb: std::collections::HashSet<&String> = wb.iter().collect();
    let shared = sa.intersection(&sb).count() as f64;
    shared / sa.union(&sb).count() as f64 >= 0.9
}

/// A coarse language label: the writing system, and for Latin script one of a few
/// common languages when its function words make it clear. `None` when unsure.
fn language_of(text: &str) -> Option<&'static str> {
    let mut counts = [0usize; 8];
    let mut letters = 0usize;
    for c in text.chars().filter(|c| c.is_alphabetic()) {
        letters += 1;
        let script = match c as u32 {
            0x0000..=0x024F | 0x1E00..=0x1EFF => 0, // Latin
            0x0370..=0x03FF => 1,                   // Greek
            0x0400..=0x052F => 2,                   // Cyrillic
            0x0590..=0x05FF => 3,                   // Hebrew
            0x0600..=0x06FF | 0x0750..=0x077F => 4, // Arabic
            0x0900..=0x097F => 5,                   // Devanagari
            0x3040..=0x30FF | 0x3400..=0x9FFF | 0xAC00..=0xD7AF => 6, // CJK and Hangul
            _ => 7,
        };
        counts[script] += 1;
    }
    if letters < 12 {
        return None;
    }
    let (script, count) = counts
        .iter()
        .enumerate()
        .max_by_key(|(_, n)| **n)
        .map(|(i, n)| (i, *n))?;
    if count * 10 < letters * 7 {
        return None;
    }
    match script {
        0 => latin_language(text),
        1 => Some("Greek"),
        2 => Some("Cyrillic"),
        3 => Some("Hebrew"),
        4 => Some("Arabic"),
        5 => Some("Devanagari"),
        6 => Some("CJK"),
        _ => None,
    }
}

/// The Latin-script language whose function words clearly dominate, if any.
fn latin_language(text: &str) -> Option<&'static str> {
    const LANGUAGES: &[(&str, &[&str])] = &[
        (
            "English",
            &[
                "the", "and", "is", "are", "what", "how", "do", "does", "i", "my", "you", "to",
                "of", "it", "can", "with", "for", "this",
            ],
        ),
        (
            "Spanish",
            &[
                "el", "la", "los", "las", "y", "es", "qué", "cómo", "que", "por", "para", "con",
                "mi", "una", "un", "puedo", "del",
            ],
        ),
        (
            "French",
            &[
                "le", "la", "les", "et", "est", "que", "comment", "je", "mon", "vous", "pour",
                "avec", "une", "un", "des", "du", "ce",
            ],
        ),
        (
            "German",
            &[
                "der", "die", "das", "und", "ist", "wie", "was", "ich", "mein", "sie", "für",
                "mit", "ein", "eine", "nicht", "den", "kann",
            ],
        ),
        (
            "Portuguese",
            &[
                "o", "os", "as", "e", "é", "como", "que", "eu", "meu", "você", "para", "com",
                "uma", "um", "não", "do", "da",
            ],
        ),
        (
            "Italian",
            &[
                "il", "lo", "gli", "e", "è", "come", "che", "io", "mio", "per", "con", "una", "un",
                "non", "del", "della", "posso",
            ],
        ),
    ];
    let words = words(text);
    if words.len() < 6 {
        return None;
    }
    let mut scores: Vec<(&'static str, usize)> = LANGUAGES
        .iter()
        .map(|(name, list)| {
            (
                *name,
                words.iter().filter(|w| list.contains(&w.as_str())).count(),
            )
        })
        .collect();
    scores.sort_by_key(|s| std::cmp::Reverse(s.1));
    let (best, runner_up) = (scores[0], scores[1]);
    (best.1 >= 3 && best.1 >= 2 * runner_up.1.max(1)).then_some(best.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialog(turns: &[&str]) -> Vec<Message> {
        turns
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i % 2 == 0 {
                    Message::user(*t)
                } else {
                    Message::assistant(*t)
                }
            })
            .collect()
    }

    fn cause(turns: &[&str]) -> Option<&'static str> {
        check_dialog(&dialog(turns), false).err().map(|r| r.cause)
    }

    #[test]
    fn a_good_dialog_passes() {
        assert_eq!(
            cause(&[
                "How do I reset my password on the mobile app?",
                "Open the login screen and tap Forgot Password, then follow the email link.",
                "The email never arrives. What should I check first?",
                "Check the spam folder and that the address on the account is current.",
            ]),
            None
        );
    }

    #[test]
    fn each_defect_has_its_cause() {
        assert_eq!(cause(&["Why?", "  "]), Some("empty_reply"));
        assert_eq!(
            check_dialog(&dialog(&["Why?", "Because"]), true).map_err(|r| r.cause),
            Err("truncated_reply")
        );
        assert_eq!(
            cause(&[
                "How do refunds work?",
                "Within 30 days.",
                "As an AI, I find that interesting. Why 30?",
                "Policy."
            ]),
            Some("user_as_ai")
        );
        assert_eq!(
            cause(&[
                "How do refunds work?",
                "Within 30 days.",
                "Great question! Refunds take 30 days. How can I help you further?",
                "..."
            ]),
            Some("user_as_assistant")
        );
        assert_eq!(
            cause(&[
                "How do I reset my password on the mobile app?",
                "Tap Forgot Password.",
                "¿Y qué hago si el correo no llega a mi bandeja de entrada?",
                "Revisa la carpeta de spam.",
            ]),
            Some("language_switch")
        );
        assert_eq!(
            cause(&[
                "How do I reset my password on the mobile app?",
                "Tap Forgot Password.",
                "А если письмо не приходит на почту?",
                "..."
            ]),
            Some("language_switch")
        );
        assert_eq!(
            cause(&[
                "How do refunds work?",
                "I'm sorry, but I can't help with that request."
            ]),
            Some("refusal")
        );
        assert_eq!(
            cause(&[
                "How long do refunds take to arrive?",
                "About five days.",
                "How long do refunds take to arrive?",
                "Five days.",
            ]),
            Some("repeated_user_turn")
        );
    }

    #[test]
    fn an_assistant_repeating_its_previous_answer_loops() {
        let answer = "Open Settings, choose Network, then press Reset and wait for the light.";
        assert_eq!(
            cause(&["How do I reset it?", answer, "And if that fails?", answer]),
            Some("repeated_assistant_turn")
        );
        // Nearly the same words in a different order are the same answer.
        assert_eq!(
            cause(&[
                "How do I reset it?",
                answer,
                "And if that fails?",
                "Choose Network, open Settings, then press Reset and wait for the light.",
            ]),
            Some("repeated_assistant_turn")
        );
        // Only the previous answer counts, and a different answer passes.
        assert_eq!(
            cause(&[
                "How do I reset it?",
                answer,
                "And if that fails?",
                "Unplug it for ten seconds, then call support with the serial number.",
            ]),
            None
        );
        // Short replies sharing words by chance are not a loop.
        assert_eq!(
            cause(&["Is it on?", "Yes.", "Still on?", "Yes, it is."]),
            None
        );
    }

    #[test]
    fn language_needs_evidence() {
        assert_eq!(language_of("OK"), None);
        assert_eq!(
            language_of("What is the refund policy for my order and how do I apply?"),
            Some("English")
        );
        assert_eq!(
            language_of("Wie kann ich mein Passwort ändern, wenn ich die E-Mail nicht habe?"),
            Some("German")
        );
    }
}
