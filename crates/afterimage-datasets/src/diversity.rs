//! Diversity as the literature measures it: distinct-n, Self-BLEU, compression ratio,
//! near-duplicate pairs (the generator's own MinHash), looping dialogs and, with an
//! embedder, the mean cosine of first questions.
//!
//! Every figure but distinct-n is computed on a sample drawn with a fixed seed
//! ([`SAMPLE_SEED`]) of at most [`DIVERSITY_SAMPLE`] texts (or rows, for loops), so a
//! report on 100,000 rows takes about as long as one on 1,000, and the same dataset
//! always gives the same figures. Each sampled figure says what it saw
//! ([`Sampled`]: `sampled` of `of`).

use std::collections::HashMap;
use std::io::Write;

use afterimage_core::{ConversationRow, Embedder, MinHash, Role};
use flate2::{Compression, write::GzEncoder};
use serde::Serialize;

use crate::DatasetError;
use crate::export::shuffle;
use crate::stats::{TextDiversity, text_diversity, words};

/// The seed of every sample the diversity figures draw.
pub const SAMPLE_SEED: u64 = 42;

/// The most texts (or rows) a sampled figure looks at. Self-BLEU and compression are
/// linear in it, near-duplicate pairs quadratic (half a million pairs at 1,000).
pub const DIVERSITY_SAMPLE: usize = 1000;

/// The most first questions embedded for the mean cosine (each one is paid for).
pub const EMBEDDING_SAMPLE: usize = 200;

/// The MinHash similarity at or above which two texts are near duplicates: the
/// generator's own threshold.
pub const NEAR_DUPLICATE_THRESHOLD: f64 = 0.8;

/// Self-BLEU's smoothing: a modified precision with no match counts as this many
/// matches (Chen and Cherry's method 1, as NLTK's `method1` and Texygen's Self-BLEU).
const BLEU_EPSILON: f64 = 0.1;

/// A figure computed on a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sampled {
    /// The figure.
    pub value: f64,
    /// Items (texts or rows) it was computed on.
    pub sampled: u64,
    /// Items there were.
    pub of: u64,
}

/// The figures of one kind of text (first questions, user turns or assistant turns).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScopeDiversity {
    /// Non-empty texts of this kind.
    pub texts: u64,
    /// Distinct words over words, on every text.
    pub distinct_1: f64,
    /// Distinct bigrams over bigrams, on every text.
    pub distinct_2: f64,
    /// Distinct trigrams over trigrams, on every text.
    pub distinct_3: f64,
    /// Mean BLEU-4 of each sampled text against all the other sampled texts (lower
    /// is more diverse); `None` with fewer than two texts.
    pub self_bleu: Option<Sampled>,
    /// gzip size over raw size of the sampled texts, one per line (higher is more
    /// diverse); `None` without text.
    pub compression_ratio: Option<Sampled>,
    /// Share of pairs of sampled texts that are near duplicates (lower is more
    /// diverse); `None` with fewer than two texts.
    pub near_duplicate_pairs: Option<Sampled>,
}

/// Dialogs that go round in circles.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Loops {
    /// Share of sampled rows with a user turn repeating an earlier user turn or an
    /// assistant turn repeating the previous assistant turn.
    pub looping_rows: Sampled,
    /// Sampled rows with a repeated user turn.
    pub user_loops: u64,
    /// Sampled rows with an assistant turn repeating the previous one.
    pub assistant_loops: u64,
}

/// How alike first questions are in meaning.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmbeddingSimilarity {
    /// The embedding model.
    pub model: String,
    /// Mean cosine similarity over all pairs of sampled first questions (lower is
    /// more diverse).
    pub mean_cosine: Sampled,
}

/// One figure of a kind of text, as the report and the comparison show it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScopeMetric {
    /// The JSON key.
    pub(crate) key: &'static str,
    /// Its name on the page.
    pub(crate) label: &'static str,
    /// The one line that explains it.
    pub(crate) about: &'static str,
    /// Whether a higher value is the more diverse.
    pub(crate) higher_is_better: bool,
    /// The value, and the sample it came from.
    pub(crate) get: fn(&ScopeDiversity) -> (Option<f64>, Option<Sampled>),
}

/// The figures of each kind of text, in page order.
pub(crate) const SCOPE_METRICS: [ScopeMetric; 6] = [
    ScopeMetric {
        key: "distinct_1",
        label: "distinct-1",
        about: "distinct words over words, on every text (Li et al., 2016); higher is more varied wording, and it falls as a dataset grows",
        higher_is_better: true,
        get: |s| (some(s.texts, s.distinct_1), None),
    },
    ScopeMetric {
        key: "distinct_2",
        label: "distinct-2",
        about: "distinct word pairs over word pairs, on every text; higher is more varied",
        higher_is_better: true,
        get: |s| (some(s.texts, s.distinct_2), None),
    },
    ScopeMetric {
        key: "distinct_3",
        label: "distinct-3",
        about: "distinct word triples over word triples, on every text; higher is more varied",
        higher_is_better: true,
        get: |s| (some(s.texts, s.distinct_3), None),
    },
    ScopeMetric {
        key: "self_bleu",
        label: "Self-BLEU",
        about: "mean BLEU-4 of each sampled text against all the others as references (Zhu et al., 2018; smoothing method 1, closest-length brevity penalty); lower is more diverse",
        higher_is_better: false,
        get: |s| (s.self_bleu.map(|x| x.value), s.self_bleu),
    },
    ScopeMetric {
        key: "compression_ratio",
        label: "compression ratio",
        about: "gzip size over raw size of the sampled texts, one per line (Shaib et al., arXiv 2403.00553, print the inverse); repetitive text compresses well, so higher is more diverse",
        higher_is_better: true,
        get: |s| (s.compression_ratio.map(|x| x.value), s.compression_ratio),
    },
    ScopeMetric {
        key: "near_duplicate_pairs",
        label: "near-duplicate pairs",
        about: "share of pairs of sampled texts at or above 0.8 MinHash similarity of word 3-grams, the generator's own duplicate filter; lower is better",
        higher_is_better: false,
        get: |s| {
            (
                s.near_duplicate_pairs.map(|x| x.value),
                s.near_duplicate_pairs,
            )
        },
    },
];

/// The explanation of looping rows.
pub(crate) const LOOPS_ABOUT: &str = "share of sampled rows where a user turn repeats an earlier user turn, or an assistant turn repeats the previous answer (the same MinHash notion); lower is better";

/// The explanation of the embedding figure.
pub(crate) const EMBEDDING_ABOUT: &str = "mean cosine similarity of the embeddings of sampled first questions, over all pairs; lower means the questions differ in meaning, not only in wording";

/// A distinct-n value, when there was text to count.
fn some(texts: u64, value: f64) -> Option<f64> {
    (texts > 0).then_some(value)
}

/// The sampled figures of the three kinds of text, and loops.
#[derive(Debug, Clone)]
pub(crate) struct Measured {
    /// Distinct-n and word counts of user and assistant messages.
    pub(crate) user_words: TextDiversity,
    pub(crate) assistant_words: TextDiversity,
    pub(crate) first_questions: ScopeDiversity,
    pub(crate) user_turns: ScopeDiversity,
    pub(crate) assistant_turns: ScopeDiversity,
    pub(crate) loops: Option<Loops>,
}

/// Measures every kind of text in `rows`.
pub(crate) fn measure(rows: &[ConversationRow]) -> Measured {
    let first: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.conversations.iter().find(|m| m.role == Role::User))
        .map(|m| m.content.as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    let (user_texts, assistant_texts) =
        (texts_of(rows, Role::User), texts_of(rows, Role::Assistant));
    let (user_words, assistant_words) = (
        text_diversity(user_texts.iter().copied()),
        text_diversity(assistant_texts.iter().copied()),
    );
    Measured {
        first_questions: scope(&first, &text_diversity(first.iter().copied())),
        user_turns: scope(&user_texts, &user_words),
        assistant_turns: scope(&assistant_texts, &assistant_words),
        user_words,
        assistant_words,
        loops: loops(rows),
    }
}

/// Every non-empty text of `role` (a message that only calls a tool has none).
fn texts_of(rows: &[ConversationRow], role: Role) -> Vec<&str> {
    rows.iter()
        .flat_map(|r| &r.conversations)
        .filter(|m| m.role == role && !m.content.trim().is_empty())
        .map(|m| m.content.as_str())
        .collect()
}

/// The figures of one kind of text, whose distinct-n are already counted.
pub(crate) fn scope(texts: &[&str], distinct: &TextDiversity) -> ScopeDiversity {
    let sample = sample(texts, DIVERSITY_SAMPLE, SAMPLE_SEED);
    let sampled = |value: f64| Sampled {
        value,
        sampled: sample.len() as u64,
        of: texts.len() as u64,
    };
    ScopeDiversity {
        texts: texts.len() as u64,
        distinct_1: distinct.distinct_1,
        distinct_2: distinct.distinct_2,
        distinct_3: distinct.distinct_3,
        self_bleu: self_bleu(&sample).map(sampled),
        compression_ratio: compression_ratio(&sample).map(sampled),
        near_duplicate_pairs: near_duplicate_pairs(&sample).map(sampled),
    }
}

/// At most `n` of `items`, drawn with `seed` and kept in their order.
pub(crate) fn sample<T: Copy>(items: &[T], n: usize, seed: u64) -> Vec<T> {
    if items.len() <= n {
        return items.to_vec();
    }
    let mut indices: Vec<usize> = (0..items.len()).collect();
    shuffle(&mut indices, seed);
    indices.truncate(n);
    indices.sort_unstable();
    indices.into_iter().map(|i| items[i]).collect()
}

/// N-grams of one order as fixed-size keys (unused slots are `u32::MAX`).
type Gram = [u32; 4];

/// Counts of each n-gram of order `n` in `ids`.
fn grams(ids: &[u32], n: usize) -> HashMap<Gram, u32> {
    let mut counts = HashMap::new();
    for window in ids.windows(n) {
        let mut key = [u32::MAX; 4];
        key[..n].copy_from_slice(window);
        *counts.entry(key).or_default() += 1;
    }
    counts
}

/// The two highest counts of one n-gram over texts, and which text holds the highest,
/// so "the most any *other* text has" is one lookup.
#[derive(Debug, Clone, Copy, Default)]
struct Top2 {
    best: u32,
    holder: usize,
    second: u32,
}

impl Top2 {
    fn add(&mut self, count: u32, text: usize) {
        if count > self.best {
            self.second = self.best;
            self.best = count;
            self.holder = text;
        } else if count > self.second {
            self.second = count;
        }
    }

    fn other_than(&self, text: usize) -> u32 {
        if self.holder == text {
            self.second
        } else {
            self.best
        }
    }
}

/// Self-BLEU (Zhu et al., Texygen, 2018): the mean over texts of BLEU-4 (uniform
/// weights) with the text as hypothesis and every other text as references.
/// Clipping uses the most times any reference holds an n-gram; the brevity penalty
/// uses the reference length closest to the hypothesis (the shorter on a tie),
/// `exp(1 - r/c)` when the hypothesis is not longer; a precision with no match is
/// smoothed to `0.1 / max(n-grams, 1)` (method 1), and no matching word at all scores
/// 0. Linear in the words: the highest two counts of each n-gram are kept once.
pub(crate) fn self_bleu(texts: &[&str]) -> Option<f64> {
    let mut vocabulary: HashMap<String, u32> = HashMap::new();
    let ids: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            words(t)
                .map(|w| {
                    let next = vocabulary.len() as u32;
                    *vocabulary.entry(w).or_insert(next)
                })
                .collect()
        })
        .filter(|ws: &Vec<u32>| !ws.is_empty())
        .collect();
    if ids.len() < 2 {
        return None;
    }
    let counts: Vec<[HashMap<Gram, u32>; 4]> = ids
        .iter()
        .map(|ws| [1, 2, 3, 4].map(|n| grams(ws, n)))
        .collect();
    let mut tops: [HashMap<Gram, Top2>; 4] = Default::default();
    for (text, orders) in counts.iter().enumerate() {
        for (order, grams) in orders.iter().enumerate() {
            for (gram, &count) in grams {
                tops[order].entry(*gram).or_default().add(count, text);
            }
        }
    }
    let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
    let total: f64 = (0..ids.len())
        .map(|i| bleu(i, &counts[i], &tops, &lengths))
        .sum();
    Some(total / ids.len() as f64)
}

/// BLEU-4 of text `i` against all the others (see [`self_bleu`]).
fn bleu(
    i: usize,
    orders: &[HashMap<Gram, u32>; 4],
    tops: &[HashMap<Gram, Top2>; 4],
    lengths: &[usize],
) -> f64 {
    let c = lengths[i];
    let mut log_sum = 0.0;
    for (order, grams) in orders.iter().enumerate() {
        let total = c.saturating_sub(order) as f64;
        let matched: u32 = grams
            .iter()
            .map(|(gram, &count)| {
                let most = tops[order].get(gram).map_or(0, |t| t.other_than(i));
                count.min(most)
            })
            .sum();
        if matched == 0 && order == 0 {
            return 0.0;
        }
        let precision = if matched == 0 {
            BLEU_EPSILON / total.max(1.0)
        } else {
            f64::from(matched) / total
        };
        log_sum += 0.25 * precision.ln();
    }
    let r = lengths
        .iter()
        .enumerate()
        .filter(|&(j, _)| j != i)
        .map(|(_, &len)| len)
        .min_by_key(|&len| (len.abs_diff(c), len))
        .unwrap_or(c);
    let penalty = if c > r {
        1.0
    } else {
        (1.0 - r as f64 / c as f64).exp()
    };
    penalty * log_sum.exp()
}

/// gzip size (default level, header included) over raw size of the texts written one
/// per line (Shaib et al., arXiv 2403.00553, report the inverse, raw over
/// compressed, where higher means more repetitive; here higher means more diverse).
pub(crate) fn compression_ratio(texts: &[&str]) -> Option<f64> {
    if texts.is_empty() {
        return None;
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    let mut raw = 0usize;
    for text in texts {
        raw += text.len() + 1;
        encoder.write_all(text.as_bytes()).ok()?;
        encoder.write_all(b"\n").ok()?;
    }
    let compressed = encoder.finish().ok()?.len();
    Some(compressed as f64 / raw as f64)
}

/// The share of pairs whose MinHash similarity is at least the generator's threshold.
pub(crate) fn near_duplicate_pairs(texts: &[&str]) -> Option<f64> {
    if texts.len() < 2 {
        return None;
    }
    let signatures: Vec<MinHash> = texts.iter().map(|t| MinHash::of(t)).collect();
    let mut near = 0u64;
    for (i, a) in signatures.iter().enumerate() {
        near += signatures[i + 1..]
            .iter()
            .filter(|b| a.similarity(b) >= NEAR_DUPLICATE_THRESHOLD)
            .count() as u64;
    }
    let n = texts.len() as u64;
    Some(near as f64 / (n * (n - 1) / 2) as f64)
}

/// Which kinds of loop one row has: (a user turn near-duplicates an earlier user
/// turn, an assistant turn near-duplicates the previous assistant turn).
pub(crate) fn row_loops(row: &ConversationRow) -> (bool, bool) {
    let signatures = |role: Role| -> Vec<MinHash> {
        row.conversations
            .iter()
            .filter(|m| m.role == role && !m.content.trim().is_empty())
            .map(|m| MinHash::of(&m.content))
            .collect()
    };
    let near = |a: &MinHash, b: &MinHash| a.similarity(b) >= NEAR_DUPLICATE_THRESHOLD;
    let users = signatures(Role::User);
    let user = users
        .iter()
        .enumerate()
        .any(|(i, later)| users[..i].iter().any(|earlier| near(earlier, later)));
    let answers = signatures(Role::Assistant);
    let assistant = answers.windows(2).any(|w| near(&w[0], &w[1]));
    (user, assistant)
}

fn loops(rows: &[ConversationRow]) -> Option<Loops> {
    if rows.is_empty() {
        return None;
    }
    let all: Vec<&ConversationRow> = rows.iter().collect();
    let sample = sample(&all, DIVERSITY_SAMPLE, SAMPLE_SEED);
    let (mut looping, mut user_loops, mut assistant_loops) = (0u64, 0u64, 0u64);
    for row in &sample {
        let (user, assistant) = row_loops(row);
        looping += u64::from(user || assistant);
        user_loops += u64::from(user);
        assistant_loops += u64::from(assistant);
    }
    Some(Loops {
        looping_rows: Sampled {
            value: looping as f64 / sample.len() as f64,
            sampled: sample.len() as u64,
            of: rows.len() as u64,
        },
        user_loops,
        assistant_loops,
    })
}

/// The mean pairwise cosine of a sample of at most [`EMBEDDING_SAMPLE`] first
/// questions, embedded by `embedder` (named `model` in the report) `batch` texts per
/// request. `None` with fewer than two first questions.
pub async fn embedding_similarity(
    rows: &[ConversationRow],
    embedder: &dyn Embedder,
    model: &str,
    batch: usize,
) -> Result<Option<EmbeddingSimilarity>, DatasetError> {
    let first: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.conversations.iter().find(|m| m.role == Role::User))
        .map(|m| m.content.as_str())
        .filter(|t| !t.trim().is_empty())
        .collect();
    let texts: Vec<String> = sample(&first, EMBEDDING_SAMPLE, SAMPLE_SEED)
        .into_iter()
        .map(str::to_owned)
        .collect();
    if texts.len() < 2 {
        return Ok(None);
    }
    let mut vectors = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(batch.max(1)) {
        let embedded = embedder
            .embed(chunk)
            .await
            .map_err(|source| DatasetError::Embedding {
                model: model.to_owned(),
                source,
            })?;
        vectors.extend(embedded);
    }
    Ok(Some(EmbeddingSimilarity {
        model: model.to_owned(),
        mean_cosine: Sampled {
            value: mean_pairwise_cosine(&vectors),
            sampled: texts.len() as u64,
            of: first.len() as u64,
        },
    }))
}

/// The mean cosine over all pairs; a zero vector is similar to nothing (0).
pub(crate) fn mean_pairwise_cosine(vectors: &[Vec<f32>]) -> f64 {
    let norms: Vec<f64> = vectors
        .iter()
        .map(|v| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt())
        .collect();
    let (mut sum, mut pairs) = (0.0, 0u64);
    for i in 0..vectors.len() {
        for j in i + 1..vectors.len() {
            pairs += 1;
            if norms[i] == 0.0 || norms[j] == 0.0 {
                continue;
            }
            let dot: f64 = vectors[i]
                .iter()
                .zip(&vectors[j])
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            sum += dot / (norms[i] * norms[j]);
        }
    }
    if pairs == 0 { 0.0 } else { sum / pairs as f64 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::Message;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// A = "the cat sat on the mat", B = "the cat sat on a mat", C = "a dog ran".
    ///
    /// {A, B}: each against the other clips "the" to 1, so unigrams 5/6; bigrams 3/5
    /// (the cat, cat sat, sat on); trigrams 2/4; 4-grams 1/3; equal lengths, no
    /// penalty. BLEU = (5/6 · 3/5 · 1/2 · 1/3)^(1/4) = (1/12)^(1/4) = 0.537285 for both.
    ///
    /// {A, B, C}: A is unchanged (C adds no match; closest length 6): 0.537285.
    /// B now matches "a" through C: 6/6, 3/5, 2/4, 1/3 → (1/10)^(1/4) = 0.562341.
    /// C (3 words) matches only "a": 1/3; bigrams 0 of 2 → 0.1/2; trigrams 0 of 1 →
    /// 0.1; no 4-gram → 0.1/1; closest reference 6 words, penalty exp(1 - 6/3) =
    /// e^-1: 0.367879 · (1/3 · 0.05 · 0.1 · 0.1)^(1/4) = 0.041799.
    /// Mean: (0.537285 + 0.562341 + 0.041799) / 3 = 0.380475.
    #[test]
    fn self_bleu_matches_the_hand_computed_values() {
        let (a, b, c) = (
            "The cat sat on the mat.",
            "the cat sat on a mat",
            "A dog ran",
        );
        assert!(
            close(self_bleu(&[a, b]).unwrap(), 0.537_285),
            "{:?}",
            self_bleu(&[a, b])
        );
        let three = self_bleu(&[a, b, c]).unwrap();
        assert!(close(three, 0.380_475), "{three}");
        assert!(close(self_bleu(&[a, a]).unwrap(), 1.0));
        assert_eq!(self_bleu(&[a]), None);
        assert_eq!(
            self_bleu(&[a, "   "]),
            None,
            "a text without words is no text"
        );
    }

    /// "abc" 1000 times and a newline is 3001 bytes; gzip cannot be smaller than its
    /// 18 bytes of header and trailer, and a run this regular needs only a few more.
    #[test]
    fn compression_ratio_of_known_strings() {
        let text = "abc".repeat(1000);
        let ratio = compression_ratio(&[&text]).unwrap();
        assert!(ratio > 18.0 / 3001.0 && ratio < 0.02, "{ratio}");
        assert_eq!(compression_ratio(&[]), None);
        let same: Vec<&str> = vec!["How do I reset my password on the app?"; 50];
        let varied: Vec<String> = (0..50)
            .map(|i| {
                format!(
                    "Question {i}: what does error {} mean for plan {}?",
                    i * 37,
                    i * 11
                )
            })
            .collect();
        let varied: Vec<&str> = varied.iter().map(String::as_str).collect();
        assert!(compression_ratio(&same).unwrap() < compression_ratio(&varied).unwrap());
    }

    /// One pair of three is a rewording: 1 near-duplicate pair of 3 pairs.
    #[test]
    fn near_duplicate_pairs_counts_rewordings() {
        let texts = [
            "How do I reset my password on the mobile app?",
            "how do I reset my password on the mobile app",
            "What does error 503 mean when I open the dashboard?",
        ];
        assert!(close(near_duplicate_pairs(&texts).unwrap(), 1.0 / 3.0));
        assert_eq!(near_duplicate_pairs(&texts[..1]), None);
    }

    /// "the cat sat", "the cat ran": 6 words of 4 kinds (4/6), bigrams the-cat twice,
    /// cat-sat, cat-ran (3/4), trigrams both distinct (2/2).
    #[test]
    fn distinct_n_on_a_scope() {
        let texts = ["the cat sat", "The cat ran!"];
        let s = scope(&texts, &text_diversity(texts.into_iter()));
        assert_eq!(s.texts, 2);
        assert!(close(s.distinct_1, 4.0 / 6.0));
        assert!(close(s.distinct_2, 3.0 / 4.0));
        assert!(close(s.distinct_3, 1.0));
        let sampled = s.self_bleu.unwrap();
        assert_eq!((sampled.sampled, sampled.of), (2, 2));
    }

    fn row(messages: &[(&str, &str)]) -> ConversationRow {
        let conversations = messages
            .iter()
            .map(|(role, text)| match *role {
                "user" => Message::user(*text),
                _ => Message::assistant(*text),
            })
            .collect::<Vec<_>>();
        serde_json::from_value(serde_json::json!({ "conversations": conversations })).unwrap()
    }

    /// Three rows: one asks its first question again, one answers twice alike, one
    /// moves on (its second answer repeats the first answer's words only in part).
    #[test]
    fn loops_are_repeated_user_turns_or_repeated_answers() {
        let rows = [
            row(&[
                ("user", "How do I pair the thermostat with my phone?"),
                ("assistant", "Open the app and press Add device."),
                ("user", "how do I pair the thermostat with my phone"),
                ("assistant", "As I said, open the app."),
            ]),
            row(&[
                ("user", "Why is the display blank?"),
                (
                    "assistant",
                    "The batteries are probably empty; replace them.",
                ),
                ("user", "I replaced them and it is still blank."),
                (
                    "assistant",
                    "The batteries are probably empty; replace them!",
                ),
            ]),
            row(&[
                ("user", "What does E4 mean?"),
                ("assistant", "E4 means the sensor is disconnected."),
                ("user", "Where is the sensor?"),
                ("assistant", "Behind the front cover, on the left."),
            ]),
        ];
        assert_eq!(row_loops(&rows[0]), (true, false));
        assert_eq!(row_loops(&rows[1]), (false, true));
        assert_eq!(row_loops(&rows[2]), (false, false));
        let loops = loops(&rows).unwrap();
        assert!(close(loops.looping_rows.value, 2.0 / 3.0));
        assert_eq!((loops.user_loops, loops.assistant_loops), (1, 1));
    }

    #[test]
    fn cosine_of_known_vectors() {
        // Pairs: (x, x) 1, (x, y) 0, (x, y) 0 → 1/3; the zero vector is similar to nothing.
        let x = vec![1.0, 0.0];
        let y = vec![0.0, 2.0];
        assert!(close(
            mean_pairwise_cosine(&[x.clone(), x.clone(), y]),
            1.0 / 3.0
        ));
        assert!(close(mean_pairwise_cosine(&[x, vec![0.0, 0.0]]), 0.0));
    }

    /// 100,000 texts and rows are measured on samples of [`DIVERSITY_SAMPLE`], drawn
    /// the same way every time; distinct-n still counts every text.
    #[test]
    fn large_datasets_are_sampled() {
        let texts: Vec<String> = (0..100_000)
            .map(|i| format!("What happens to order {i} if it is late?"))
            .collect();
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let measured = scope(&texts, &text_diversity(texts.iter().copied()));
        for figure in [
            measured.self_bleu,
            measured.compression_ratio,
            measured.near_duplicate_pairs,
        ] {
            let figure = figure.unwrap();
            assert_eq!(
                (figure.sampled, figure.of),
                (DIVERSITY_SAMPLE as u64, 100_000)
            );
        }
        assert_eq!(measured.texts, 100_000);
        assert_eq!(
            sample(&texts, 5, SAMPLE_SEED),
            sample(&texts, 5, SAMPLE_SEED)
        );
        assert_ne!(sample(&texts, 5, SAMPLE_SEED), texts[..5].to_vec());

        let rows: Vec<ConversationRow> = (0..100_000)
            .map(|i| {
                row(&[
                    ("user", "Where is my order?"),
                    ("assistant", &format!("Order {i} ships today.")),
                ])
            })
            .collect();
        let loops = loops(&rows).unwrap().looping_rows;
        assert_eq!(
            (loops.sampled, loops.of),
            (DIVERSITY_SAMPLE as u64, 100_000)
        );
    }
}
