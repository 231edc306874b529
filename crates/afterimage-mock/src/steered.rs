//! Steered instruction requests: the mock as a question writer with a finite stock of
//! questions per document.
//!
//! afterimage's instruction generators add a `# Kind of message` section (the question
//! type asked for, `(type: NAME)`) and an `# Already asked` list to a request once they
//! steer. A request carrying either is answered from a pool: one template family per
//! question type (an unknown or missing type gets the general family) crossed with the
//! context's keywords. Questions listed as already asked are left out, so steering
//! visibly widens what the mock writes, while a small document still runs out: once
//! its pool is used up, the mock can only repeat itself, as a real model would.

use serde_json::json;

use crate::text::{Rng, capitalize, collect_keywords};

/// Heading of the question type in a steered request.
const KIND_HEADING: &str = "# Kind of message";
/// Heading of the questions already asked.
const AVOID_HEADING: &str = "# Already asked";

/// Keywords of a context used for the pool: a bounded stock, so a small document's
/// questions run out.
const POOL_KEYWORDS: usize = 12;

/// Template families by question type; `{a}` is a keyword of the context, `{A}` the
/// same capitalised.
const FAMILIES: &[(&str, &[&str])] = &[
    (
        "how_to",
        &[
            "How do I set up {a} step by step?",
            "What are the steps to configure {a} on my own?",
            "How can I change {a} without calling support?",
            "What is the right way to use {a} every day?",
            "How do I get started with {a} from scratch?",
        ],
    ),
    (
        "troubleshooting",
        &[
            "{A} stopped working after an update. What should I check?",
            "I keep running into problems with {a}. How do I fix them?",
            "Why is {a} failing on my side, and what can I do about it?",
            "What should I try first when {a} does not respond at all?",
            "{A} has behaved strangely since yesterday. Any idea what is wrong?",
        ],
    ),
    (
        "why",
        &[
            "Why does {a} work the way it does?",
            "Why is {a} needed at all in my case?",
            "What is the reason behind the rules for {a}?",
            "Why would {a} matter for someone like me?",
            "Why does {a} sometimes take so long to finish?",
        ],
    ),
    (
        "comparison",
        &[
            "Is {a} better than the alternatives I have?",
            "How does {a} compare with the other options out there?",
            "What are the pros and cons of relying on {a}?",
            "When should I pick {a} over something else entirely?",
            "What changes if I use {a} instead of the default setting?",
        ],
    ),
    (
        "edge_case",
        &[
            "What happens to {a} if the power goes out halfway?",
            "Are there hard limits on {a} that I could run into?",
            "What if {a} is used in an unusual setup like mine?",
            "Does {a} still work when the network is down for hours?",
            "What is the worst thing that can go wrong with {a}?",
        ],
    ),
    (
        "opinion",
        &[
            "Would you recommend {a} for a small household like ours?",
            "Is {a} worth the effort in my situation, honestly?",
            "What would you do about {a} if you were in my place?",
            "Should I even bother with {a} at this point?",
            "Do you think {a} is a good idea for a complete beginner?",
        ],
    ),
    (
        "detail",
        &[
            "What exactly does {a} refer to in the manual?",
            "How many minutes does {a} take, precisely?",
            "Which single setting controls {a} exactly?",
            "Is there a specific number I should know about {a}?",
            "What is the precise condition that triggers {a}?",
        ],
    ),
];

/// Asked when a request names no known type.
const GENERAL: &[&str] = &[
    "How does {a} work in practice?",
    "Can you explain {a} in simple terms?",
    "What are common mistakes people make with {a}?",
    "Could you give me an example involving {a}?",
    "What should I know before I rely on {a}?",
];

/// A steered instruction request, read from its user message.
#[derive(Debug)]
pub(crate) struct Steered<'a> {
    /// The question type's name, when one was asked for.
    kind: Option<&'a str>,
    /// Questions listed as already asked.
    avoid: Vec<&'a str>,
    /// The text the questions are about: the context, else the whole message.
    context: &'a str,
}

impl<'a> Steered<'a> {
    /// The steering of `user_message`, or `None` when it carries none.
    pub(crate) fn read(user_message: &'a str) -> Option<Self> {
        let kind_at = user_message.find(KIND_HEADING);
        let avoid_at = user_message.find(AVOID_HEADING);
        if kind_at.is_none() && avoid_at.is_none() {
            return None;
        }
        let kind = kind_at.and_then(|at| {
            let rest = &user_message[at..];
            let start = rest.find("(type: ")? + "(type: ".len();
            let end = rest[start..].find(')')?;
            Some(rest[start..start + end].trim())
        });
        let avoid = avoid_at.map_or_else(Vec::new, |at| {
            user_message[at..]
                .lines()
                .skip(1)
                .take_while(|line| !line.starts_with('#'))
                .filter_map(|line| line.strip_prefix("- "))
                .map(str::trim)
                .collect()
        });
        let context = match (
            user_message.find("<context>"),
            user_message.find("</context>"),
        ) {
            (Some(open), Some(close)) if open < close => &user_message[open + 9..close],
            _ => user_message,
        };
        Some(Steered {
            kind,
            avoid,
            context,
        })
    }

    /// Every question this request could be answered with.
    fn pool(&self) -> Vec<String> {
        let templates = self
            .kind
            .and_then(|kind| FAMILIES.iter().find(|(name, _)| *name == kind))
            .map_or(GENERAL, |(_, templates)| *templates);
        let mut keywords = Vec::new();
        collect_keywords(self.context, &mut keywords);
        keywords.truncate(POOL_KEYWORDS);
        templates
            .iter()
            .flat_map(|template| {
                keywords.iter().map(move |word| {
                    template
                        .replace("{A}", &capitalize(word))
                        .replace("{a}", word)
                })
            })
            .collect()
    }

    /// `{"instructions": [...]}` with `n` questions from the pool, none of them listed
    /// as asked while others are left; a used-up pool repeats itself.
    pub(crate) fn reply(&self, n: usize, rng: &mut Rng) -> String {
        let pool = self.pool();
        let mut fresh: Vec<&String> = pool
            .iter()
            .filter(|q| !self.avoid.iter().any(|a| a.eq_ignore_ascii_case(q)))
            .collect();
        if fresh.is_empty() {
            fresh = pool.iter().collect();
        }
        let mut out: Vec<&str> = Vec::with_capacity(n);
        while out.len() < n && !fresh.is_empty() {
            out.push(fresh.swap_remove(rng.below(fresh.len())));
        }
        json!({ "instructions": out }).to_string()
    }
}

/// The number of questions a system prompt asks for (`exactly N`), else 3.
pub(crate) fn asked_count<'a>(system_texts: impl IntoIterator<Item = &'a str>) -> usize {
    system_texts
        .into_iter()
        .find_map(|text| {
            let at = text.find("exactly ")? + "exactly ".len();
            let digits: String = text[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .unwrap_or(3)
        .clamp(1, 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MESSAGE: &str = "# Who is writing\nA user.\n\n# Context\n<context>\nThe thermostat schedule resets after a firmware update.\n</context>";

    fn questions(message: &str, seed: u64) -> Vec<String> {
        let steered = Steered::read(message).unwrap();
        let reply: serde_json::Value =
            serde_json::from_str(&steered.reply(3, &mut Rng::for_request(seed, 1))).unwrap();
        reply["instructions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn unsteered_requests_are_left_alone() {
        assert!(Steered::read(MESSAGE).is_none());
    }

    #[test]
    fn the_type_picks_the_family_and_the_avoid_list_is_skipped() {
        let why =
            format!("{MESSAGE}\n\n{KIND_HEADING}\nEvery message is a why question (type: why).");
        let asked = questions(&why, 1);
        assert_eq!(asked.len(), 3);
        assert!(
            asked
                .iter()
                .all(|q| q.starts_with("Why") || q.starts_with("What is the reason")),
            "{asked:?}"
        );
        // Listing all but one question of the family leaves only that one fresh.
        let pool = Steered::read(&why).unwrap().pool();
        let keep = pool[0].clone();
        let avoid: Vec<String> = pool[1..].iter().map(|q| format!("- {q}")).collect();
        let message = format!(
            "{why}\n\n{AVOID_HEADING}\nAsked already:\n{}",
            avoid.join("\n")
        );
        assert_eq!(questions(&message, 2), [keep]);
    }

    #[test]
    fn a_used_up_pool_repeats_itself() {
        let base = format!("{MESSAGE}\n\n{KIND_HEADING}\nA detail (type: detail).");
        let pool = Steered::read(&base).unwrap().pool();
        let avoid: Vec<String> = pool.iter().map(|q| format!("- {q}")).collect();
        let message = format!(
            "{base}\n\n{AVOID_HEADING}\nAsked already:\n{}",
            avoid.join("\n")
        );
        let asked = questions(&message, 3);
        assert!(asked.iter().all(|q| pool.contains(q)));
    }

    #[test]
    fn the_count_comes_from_the_system_prompt() {
        assert_eq!(
            asked_count(["Write exactly 2 different opening messages"]),
            2
        );
        assert_eq!(asked_count(["no count here"]), 3);
    }
}
