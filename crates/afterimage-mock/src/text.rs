//! Plausible, varied text: questions, follow-ups, answers, names and reasons.
//!
//! Everything is made from fixed templates plus a few words lifted from the request, so
//! replies look grounded in the prompt without any model. Variety comes from the request
//! counter and a per-request random stream, never from shared mutable state.

/// A small, fast, per-request random stream (SplitMix64).
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A stream for request number `n` of a server seeded with `seed`.
    pub(crate) fn for_request(seed: u64, n: u64) -> Self {
        // Mixing both through one round decorrelates neighbouring request numbers.
        let mut rng = Rng(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// Approximate token count of whitespace-separated `words`: `words * 4 / 3`.
pub(crate) fn approx_tokens(words: usize) -> u64 {
    (words as u64) * 4 / 3
}

/// Whitespace-separated words in `text`.
pub(crate) fn word_count(text: &str) -> usize {
    text.split_whitespace().count()
}

/// `text` cut after every `words` words, for streaming it in pieces.
pub(crate) fn pieces(text: &str, words: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut count) = (0, 0);
    for (i, _) in text.match_indices(' ') {
        count += 1;
        if count == words.max(1) {
            out.extend(text.get(start..=i));
            start = i + 1;
            count = 0;
        }
    }
    if start < text.len() || out.is_empty() {
        out.extend(text.get(start..));
    }
    out
}

/// ASCII-case-insensitive substring test without allocating.
pub(crate) fn contains_ci(haystack: &str, needle: &str) -> bool {
    let (h, n) = (haystack.as_bytes(), needle.as_bytes());
    n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n))
}

/// Phrases in a system prompt that mean the model is asked to play the user.
const PLAYS_USER_PHRASES: &[&str] = &[
    "you are the user",
    "you are a user",
    "simulated user",
    "simulate a user",
    "simulate the user",
    "play the role of a user",
    "play the role of the user",
    "act as a user",
    "act as the user",
];

/// True when the system prompt casts the model as the user (see [`PLAYS_USER_PHRASES`]).
pub(crate) fn plays_user<'a>(system_texts: impl IntoIterator<Item = &'a str>) -> bool {
    system_texts
        .into_iter()
        .any(|t| PLAYS_USER_PHRASES.iter().any(|p| contains_ci(t, p)))
}

/// Phrases in a system prompt that ask the model to write a system prompt (for a
/// simulated user, in afterimage's pipeline).
const WRITES_PROMPT_PHRASES: &[&str] = &["write the system prompt", "write a system prompt"];

/// True when the system prompt asks for a system prompt (see [`WRITES_PROMPT_PHRASES`]).
pub(crate) fn writes_prompt<'a>(system_texts: impl IntoIterator<Item = &'a str>) -> bool {
    system_texts
        .into_iter()
        .any(|t| WRITES_PROMPT_PHRASES.iter().any(|p| contains_ci(t, p)))
}

/// The tag name in "... between <name> and </name>", when the prompt asks for one.
pub(crate) fn requested_tag(text: &str) -> Option<&str> {
    const MARKER: &[u8] = b"between <";
    let start = text
        .as_bytes()
        .windows(MARKER.len())
        .position(|w| w.eq_ignore_ascii_case(MARKER))?
        + MARKER.len();
    let rest = text.get(start..)?;
    let name = rest.get(..rest.find('>')?)?;
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (valid && rest.contains(&format!("</{name}>"))).then_some(name)
}

/// Words never worth quoting back: function words and the vocabulary of prompts
/// themselves (so "generate five questions about the document" yields nothing).
/// Sorted, lowercase ASCII, for binary search.
const STOPWORDS: &[&str] = &[
    "about",
    "above",
    "after",
    "again",
    "against",
    "also",
    "always",
    "among",
    "another",
    "answer",
    "answered",
    "answers",
    "anything",
    "apply",
    "array",
    "asked",
    "asking",
    "asks",
    "assistant",
    "assistant's",
    "assistant-style",
    "based",
    "because",
    "been",
    "before",
    "being",
    "below",
    "best",
    "better",
    "between",
    "both",
    "can't",
    "cannot",
    "context",
    "conversation",
    "conversations",
    "could",
    "create",
    "daily",
    "describe",
    "describes",
    "detail",
    "details",
    "dialog",
    "dialogs",
    "dialogue",
    "different",
    "document",
    "documents",
    "does",
    "doesn't",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "either",
    "enough",
    "ensure",
    "evaluate",
    "evaluation",
    "even",
    "every",
    "example",
    "first",
    "follow",
    "follow-up",
    "following",
    "format",
    "from",
    "further",
    "generate",
    "gets",
    "given",
    "good",
    "grade",
    "grading",
    "great",
    "have",
    "having",
    "help",
    "here",
    "himself",
    "human",
    "include",
    "includes",
    "including",
    "instruction",
    "instructions",
    "into",
    "isn't",
    "it's",
    "itself",
    "json",
    "just",
    "keep",
    "keeps",
    "know",
    "last",
    "like",
    "long",
    "make",
    "many",
    "maybe",
    "message",
    "messages",
    "might",
    "model",
    "models",
    "more",
    "most",
    "much",
    "must",
    "need",
    "never",
    "next",
    "offers",
    "often",
    "only",
    "other",
    "otherwise",
    "output",
    "over",
    "people",
    "perhaps",
    "person",
    "persona",
    "please",
    "prompt",
    "provide",
    "question",
    "questions",
    "rather",
    "realistic",
    "really",
    "replies",
    "reply",
    "respond",
    "response",
    "return",
    "role",
    "same",
    "schema",
    "score",
    "scores",
    "short",
    "should",
    "simple",
    "since",
    "some",
    "someone",
    "something",
    "sometimes",
    "specific",
    "such",
    "sure",
    "system",
    "take",
    "tell",
    "terms",
    "text",
    "than",
    "that",
    "that's",
    "their",
    "them",
    "themselves",
    "then",
    "there",
    "there's",
    "these",
    "they",
    "they're",
    "thing",
    "things",
    "this",
    "those",
    "through",
    "today",
    "topic",
    "topics",
    "turn",
    "turns",
    "under",
    "until",
    "upon",
    "used",
    "user",
    "users",
    "uses",
    "using",
    "usually",
    "very",
    "want",
    "well",
    "were",
    "what",
    "what's",
    "when",
    "where",
    "whether",
    "which",
    "while",
    "whom",
    "whose",
    "will",
    "with",
    "within",
    "without",
    "won't",
    "would",
    "write",
    "writes",
    "written",
    "you're",
    "your",
    "yours",
    "yourself",
];

fn is_stopword(word: &str) -> bool {
    let bytes = word.as_bytes();
    let mut buf = [0u8; 24];
    let Some(dst) = buf.get_mut(..bytes.len()) else {
        return false;
    };
    for (d, s) in dst.iter_mut().zip(bytes) {
        *d = s.to_ascii_lowercase();
    }
    // Only ASCII lowercasing happened, so the bytes are still valid UTF-8.
    std::str::from_utf8(dst).is_ok_and(|lower| STOPWORDS.binary_search(&lower).is_ok())
}

/// Most keywords kept per request: enough variety, bounded work.
const MAX_KEYWORDS: usize = 48;

/// Adds the distinct content words of `text` to `out` (up to [`MAX_KEYWORDS`]).
pub(crate) fn collect_keywords<'a>(text: &'a str, out: &mut Vec<&'a str>) {
    let is_word_char = |c: char| c.is_alphanumeric() || c == '-' || c == '\'';
    for raw in text.split(|c: char| !is_word_char(c)) {
        if out.len() >= MAX_KEYWORDS {
            return;
        }
        let word = raw.trim_matches(|c: char| c == '-' || c == '\'');
        let len = word.len();
        if !(4..=24).contains(&len)
            || !word.chars().any(char::is_alphabetic)
            || word.starts_with("http")
            || is_stopword(word)
            || out.iter().any(|w| w.eq_ignore_ascii_case(word))
        {
            continue;
        }
        out.push(word);
    }
}

/// Topics used when the request offers no words of its own.
const FALLBACK_TOPICS: &[&str] = &[
    "the setup",
    "pricing",
    "the migration",
    "data export",
    "user permissions",
    "the billing cycle",
    "error handling",
    "the onboarding flow",
    "backups",
    "the API limits",
];

const QUESTION_TEMPLATES: &[&str] = &[
    "How does {a} work in practice?",
    "What is the difference between {a} and {b}?",
    "Can you explain {a} in simple terms?",
    "Why does {a} matter when dealing with {b}?",
    "What are common mistakes people make with {a}?",
    "How should I get started with {a}?",
    "Is there a recommended way to combine {a} with {b}?",
    "What happens to {b} if {a} changes?",
    "Could you give me an example involving {a}?",
    "What should I check first when {a} goes wrong?",
    "How long does it usually take to set up {a}?",
    "Which is better for a beginner, {a} or {b}?",
    "Are there any limits on {a} I should know about?",
    "How do {a} and {b} affect each other?",
];

const FOLLOW_UP_TEMPLATES: &[&str] = &[
    "Thanks, that helps. But what about {a}?",
    "I'm not sure I follow the part about {a}. Could you explain it again?",
    "Okay. And how does that affect {a}?",
    "Is {a} always required, or only in some cases?",
    "Got it. What would you do next if {a} didn't work?",
    "Can you give me a concrete example with {a} and {b}?",
    "Does the same apply to {b}, or is {a} a special case?",
    "What is the quickest way to check {a} on my side?",
];

const ANSWER_OPENERS: &[&str] = &[
    "You asked: \"{q}\".",
    "Regarding \"{q}\":",
    "Good question about \"{q}\".",
    "Happy to help with \"{q}\".",
    "Let's look at \"{q}\".",
];

const ANSWER_SENTENCES: &[&str] = &[
    "In short, {a} depends mostly on how {b} is configured.",
    "The usual approach is to start with {a} and then adjust {b} step by step.",
    "Keep in mind that {a} can behave differently under heavy load.",
    "If you run into problems, check {a} first; most issues come from there.",
    "Many teams document {a} alongside {b} so the process stays repeatable.",
    "A good rule of thumb is to keep {a} simple until you really need more.",
    "You can verify {a} quickly by comparing it with {b}.",
    "The main trade-off is between {a} and {b}, so decide which matters more to you.",
];

const ANSWER_CLOSERS: &[&str] = &[
    "Let me know if you want more detail on {a}.",
    "I hope this clarifies {a}.",
    "Feel free to ask if anything about {b} is still unclear.",
    "If you share more about your setup, I can be more specific about {a}.",
];

const REASON_TEMPLATES: &[&str] = &[
    "The response addresses {a} accurately and stays on topic, though it could say more about {b}.",
    "Clear and well grounded in the context about {a}; the point on {b} is slightly brief.",
    "It answers the question about {a} directly and matches the provided context on {b}.",
    "Helpful and coherent; the explanation of {a} is correct and easy to follow.",
];

const SENTENCE_TEMPLATES: &[&str] = &[
    "A short note about {a} and {b}.",
    "Details on {a}, with a focus on {b}.",
    "An overview of {a}.",
    "How {a} relates to {b}.",
];

const FIRST_NAMES: &[&str] = &[
    "Alex", "Maria", "Kenji", "Priya", "Jonas", "Amara", "Lucas", "Sofia", "Omar", "Mei",
];
const LAST_NAMES: &[&str] = &[
    "Morgan", "Silva", "Tanaka", "Sharma", "Berg", "Okafor", "Moreau", "Rossi", "Haddad", "Chen",
];
const OCCUPATIONS: &[&str] = &[
    "small business owner",
    "software engineer",
    "nurse",
    "graduate student",
    "operations manager",
    "freelance designer",
    "retired teacher",
    "data analyst",
];

/// Text generator for one request: its keywords, its random stream and its number.
#[derive(Debug)]
pub(crate) struct TextGen<'a> {
    keywords: Vec<&'a str>,
    /// The request's random stream.
    pub(crate) rng: Rng,
    counter: u64,
    /// Numbers (judges' scores) land low in their range instead of high.
    pub(crate) low_scores: bool,
}

impl<'a> TextGen<'a> {
    /// A generator drawing words from `keywords`, varied by request number `counter`.
    pub(crate) fn new(keywords: Vec<&'a str>, rng: Rng, counter: u64) -> Self {
        TextGen {
            keywords,
            rng,
            counter,
            low_scores: false,
        }
    }

    /// The `i`-th keyword of this request, rotated by the request number.
    fn keyword(&self, i: usize) -> &'a str {
        let rotate = self.counter as usize;
        if self.keywords.len() >= 2 {
            self.keywords[(rotate.wrapping_mul(5).wrapping_add(i)) % self.keywords.len()]
        } else if let (Some(only), true) = (self.keywords.first(), i.is_multiple_of(2)) {
            only
        } else {
            FALLBACK_TOPICS[(rotate.wrapping_add(i)) % FALLBACK_TOPICS.len()]
        }
    }

    /// Two different keywords for variant `i`.
    fn pair(&self, i: usize) -> (&'a str, &'a str) {
        let a = self.keyword(i * 2);
        let mut b = self.keyword(i * 2 + 1);
        if b.eq_ignore_ascii_case(a) {
            b = self.keyword(i * 2 + 3);
        }
        (a, b)
    }

    fn fill(&self, template: &str, i: usize) -> String {
        let (a, b) = self.pair(i);
        template.replace("{a}", a).replace("{b}", b)
    }

    fn pick<'t>(&self, templates: &[&'t str], i: usize, stride: usize) -> &'t str {
        let idx = (self.counter as usize).wrapping_mul(stride).wrapping_add(i) % templates.len();
        templates[idx]
    }

    /// A user question ending in "?"; distinct `i` within one request give distinct
    /// questions (the template rotates with `i`).
    pub(crate) fn question(&self, i: usize) -> String {
        let template = self.pick(QUESTION_TEMPLATES, i, 7);
        let mut q = self.fill(template, i);
        if i >= QUESTION_TEMPLATES.len() {
            // Past one full rotation the templates repeat; a qualifier keeps it distinct.
            let n = i / QUESTION_TEMPLATES.len();
            q.pop();
            q.push_str(&format!(" (case {n})?"));
        }
        q
    }

    /// A user's follow-up question ending in "?".
    pub(crate) fn follow_up(&self) -> String {
        self.fill(self.pick(FOLLOW_UP_TEMPLATES, 0, 3), 0)
    }

    /// An assistant answer quoting the start of `last_user` when there is one.
    pub(crate) fn answer(&self, last_user: Option<&str>) -> String {
        let mut out = String::with_capacity(256);
        if let Some(q) = last_user.map(quote).filter(|q| !q.is_empty()) {
            out.push_str(&self.pick(ANSWER_OPENERS, 0, 1).replace("{q}", &q));
            out.push(' ');
        }
        out.push_str(&self.fill(self.pick(ANSWER_SENTENCES, 0, 3), 0));
        out.push(' ');
        out.push_str(&self.fill(self.pick(ANSWER_SENTENCES, 1, 3), 1));
        out.push(' ');
        out.push_str(&self.fill(self.pick(ANSWER_CLOSERS, 0, 1), 2));
        out
    }

    /// A role-play system prompt for a simulated user, about this request's keywords.
    pub(crate) fn user_system_prompt(&self) -> String {
        let (a, b) = self.pair(0);
        let who = OCCUPATIONS[(self.counter as usize) % OCCUPATIONS.len()];
        format!(
            "You are a {who}. You are the user in this chat: ask the assistant about {a} and \
             {b}, one short message at a time, the way you would text a knowledgeable friend, \
             and follow up on its answers."
        )
    }

    /// The reasoning a thinking model shows before its answer.
    pub(crate) fn reasoning(&self) -> String {
        let (a, b) = self.pair(0);
        format!(
            "The user is asking about {a}. I should explain it briefly, relate it to {b}, \
             and suggest a practical next step."
        )
    }

    /// A judge-style reason or feedback sentence.
    pub(crate) fn reason(&self, i: usize) -> String {
        self.fill(self.pick(REASON_TEMPLATES, i, 1), i)
    }

    /// A short neutral sentence.
    pub(crate) fn sentence(&self, i: usize) -> String {
        self.fill(self.pick(SENTENCE_TEMPLATES, i, 1), i)
    }

    /// A title-like phrase.
    pub(crate) fn title(&self, i: usize) -> String {
        let (a, b) = self.pair(i);
        format!("{} and {b}", capitalize(a))
    }

    /// One keyword on its own (for tags and keyword lists).
    pub(crate) fn single_keyword(&self, i: usize) -> String {
        self.keyword(i).to_string()
    }

    /// A person's name.
    pub(crate) fn name(&self, i: usize) -> String {
        let n = (self.counter as usize).wrapping_add(i);
        format!(
            "{} {}",
            FIRST_NAMES[n % FIRST_NAMES.len()],
            LAST_NAMES[n.wrapping_mul(3) % LAST_NAMES.len()]
        )
    }

    /// A one-sentence persona description.
    pub(crate) fn persona(&self, i: usize) -> String {
        let n = (self.counter as usize).wrapping_add(i);
        let (a, b) = self.pair(i);
        format!(
            "A {} who wants to understand {a} better and cares about {b}.",
            OCCUPATIONS[n % OCCUPATIONS.len()]
        )
    }

    /// A random hex UUID (version 4 layout).
    pub(crate) fn uuid(&mut self) -> String {
        let (hi, lo) = (self.rng.next_u64(), self.rng.next_u64());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0x0fff,
            ((lo >> 48) & 0x3fff) | 0x8000,
            lo & 0xffff_ffff_ffff
        )
    }
}

/// The first few words of `text`, for quoting back.
fn quote(text: &str) -> String {
    const WORDS: usize = 8;
    let mut out = String::new();
    let mut words = text.split_whitespace();
    for word in words.by_ref().take(WORDS) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    if words.next().is_some() {
        out.push_str("...");
    }
    out.replace('"', "'")
}

/// `word` with its first letter in upper case.
pub(crate) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stopwords_are_sorted_for_binary_search() {
        assert!(STOPWORDS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_stopword("Generate"));
        assert!(!is_stopword("kubernetes"));
    }

    #[test]
    fn keywords_skip_prompt_vocabulary_and_duplicates() {
        let mut out = Vec::new();
        collect_keywords(
            "Generate questions about the document: Kubernetes pods, kubernetes nodes.",
            &mut out,
        );
        assert_eq!(out, vec!["Kubernetes", "pods", "nodes"]);
    }

    #[test]
    fn questions_within_a_request_are_distinct_and_end_with_a_question_mark() {
        let tg = TextGen::new(vec!["invoices", "refunds", "payouts"], Rng(1), 4);
        let qs: Vec<String> = (0..30).map(|i| tg.question(i)).collect();
        for (i, q) in qs.iter().enumerate() {
            assert!(q.ends_with('?'), "{q}");
            assert!(!qs[..i].contains(q), "duplicate {q}");
        }
    }

    #[test]
    fn pieces_reassemble_to_the_text() {
        let text = "one two three four five six seven";
        let p = pieces(text, 3);
        assert_eq!(p, vec!["one two three ", "four five six ", "seven"]);
        assert_eq!(p.concat(), text);
        assert_eq!(pieces("", 3), vec![""]);
    }

    #[test]
    fn requested_tags_need_both_ends() {
        let prompt =
            "Reply with the prompt only, between <user_system_prompt> and </user_system_prompt>.";
        assert_eq!(requested_tag(prompt), Some("user_system_prompt"));
        assert_eq!(requested_tag("between <a> and the end"), None);
        assert_eq!(requested_tag("Between <x y> and </x y>"), None);
    }

    #[test]
    fn plays_user_is_case_insensitive() {
        assert!(plays_user(["Now You Are The User asking for help."]));
        assert!(!plays_user(["You are a helpful assistant."]));
    }

    #[test]
    fn answer_quotes_the_user() {
        let tg = TextGen::new(vec![], Rng(1), 0);
        let a = tg.answer(Some("How do I reset my password on the mobile app today?"));
        assert!(a.contains("How do I reset my password on the..."), "{a}");
    }
}
