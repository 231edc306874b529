//! BM25 retrieval over in-memory chunks: no server, no model, an inverted index.

use std::collections::HashMap;

use afterimage_core::{Document, Retrieved, Retriever, StrategyError};
use async_trait::async_trait;

/// English words too common to say anything about relevance (sorted, for binary search).
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "does", "for", "from", "had",
    "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "no", "not",
    "of", "on", "or", "our", "so", "such", "than", "that", "the", "their", "then", "there",
    "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who",
    "why", "will", "with", "you", "your",
];

/// Ranks chunks against a query with Okapi BM25.
///
/// The index maps each term to its postings (chunk index, term frequency), so a query
/// touches only the postings of its own terms. Scores use the Lucene IDF
/// `ln(1 + (N - n + 0.5) / (n + 0.5))`, which is positive for every term; each distinct
/// query term counts once. Equal scores keep the chunks' order.
#[derive(Clone)]
pub struct Bm25Retriever {
    chunks: Vec<Document>,
    /// Term -> its index in `postings`.
    terms: HashMap<String, u32>,
    /// Per term: (chunk index, term frequency), by chunk index.
    postings: Vec<Vec<(u32, u32)>>,
    lengths: Vec<u32>,
    average_length: f64,
    k1: f64,
    b: f64,
}

impl std::fmt::Debug for Bm25Retriever {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bm25Retriever")
            .field("chunks", &self.chunks.len())
            .field("terms", &self.terms.len())
            .field("k1", &self.k1)
            .field("b", &self.b)
            .finish()
    }
}

impl Bm25Retriever {
    /// Indexes `chunks` (an empty list is an error: nothing could ever be found).
    pub fn new(chunks: Vec<Document>) -> Result<Self, StrategyError> {
        if chunks.is_empty() {
            return Err(StrategyError::NoDocuments {
                message: "the BM25 retriever was given no chunks to index".to_owned(),
            });
        }
        let too_many = || StrategyError::Config("too many chunks for one BM25 index".to_owned());
        let mut terms: HashMap<String, u32> = HashMap::new();
        let mut postings: Vec<Vec<(u32, u32)>> = Vec::new();
        let mut lengths = Vec::with_capacity(chunks.len());
        let mut seen: Vec<u32> = Vec::new();
        for (index, chunk) in chunks.iter().enumerate() {
            let index = u32::try_from(index).map_err(|_| too_many())?;
            seen.clear();
            let mut length = 0u32;
            for_each_token(&chunk.text, |token| {
                let term = match terms.get(token) {
                    Some(&term) => term,
                    None => {
                        let term = postings.len() as u32;
                        terms.insert(token.to_owned(), term);
                        postings.push(Vec::new());
                        term
                    }
                };
                seen.push(term);
                length = length.saturating_add(1);
            });
            lengths.push(length);
            seen.sort_unstable();
            for run in seen.chunk_by(|a, b| a == b) {
                if let Some(list) = postings.get_mut(run[0] as usize) {
                    list.push((index, run.len() as u32));
                }
            }
        }
        let total: f64 = lengths.iter().map(|&l| f64::from(l)).sum();
        let average_length = (total / lengths.len() as f64).max(1.0);
        Ok(Bm25Retriever {
            chunks,
            terms,
            postings,
            lengths,
            average_length,
            k1: 1.2,
            b: 0.75,
        })
    }

    /// Term-frequency saturation (default 1.2; 0 ignores how often a term occurs).
    pub fn k1(mut self, k1: f64) -> Self {
        self.k1 = k1.max(0.0);
        self
    }

    /// Length normalisation in `0..=1` (default 0.75; 0 ignores chunk length; NaN is
    /// ignored).
    pub fn b(mut self, b: f64) -> Self {
        if !b.is_nan() {
            self.b = b.clamp(0.0, 1.0);
        }
        self
    }

    /// How many chunks are indexed.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk is indexed (never, since [`new`](Self::new) refuses that).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Up to `limit` chunks with a positive score for `query`, best first (the
    /// synchronous core of [`Retriever::retrieve`]).
    pub fn search(&self, query: &str, limit: usize) -> Vec<Retrieved> {
        if limit == 0 {
            return Vec::new();
        }
        let mut terms: Vec<u32> = Vec::new();
        for_each_token(query, |token| {
            if let Some(&term) = self.terms.get(token) {
                terms.push(term);
            }
        });
        terms.sort_unstable();
        terms.dedup();
        let n = self.chunks.len() as f64;
        let mut scores: HashMap<u32, f64> = HashMap::new();
        for &term in &terms {
            let Some(list) = self.postings.get(term as usize) else {
                continue;
            };
            let df = list.len() as f64;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(index, tf) in list {
                let tf = f64::from(tf);
                let length = self.lengths.get(index as usize).copied().unwrap_or(0);
                let norm = 1.0 - self.b + self.b * f64::from(length) / self.average_length;
                let score = idf * tf * (self.k1 + 1.0) / (tf + self.k1 * norm);
                *scores.entry(index).or_insert(0.0) += score;
            }
        }
        let mut ranked: Vec<(u32, f64)> = scores.into_iter().filter(|&(_, s)| s > 0.0).collect();
        let order = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit - 1, order);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(order);
        ranked
            .into_iter()
            .filter_map(|(index, score)| {
                let chunk = self.chunks.get(index as usize)?;
                Some(Retrieved {
                    id: chunk.id.clone(),
                    text: chunk.text.clone(),
                    score,
                })
            })
            .collect()
    }
}

#[async_trait]
impl Retriever for Bm25Retriever {
    async fn retrieve(&self, query: &str, limit: usize) -> Result<Vec<Retrieved>, StrategyError> {
        Ok(self.search(query, limit))
    }

    fn name(&self) -> &str {
        "bm25"
    }
}

/// Whether `c` is written without spaces between words (Chinese, Japanese), so that
/// each character is its own token.
fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3040..=0x30FF      // Hiragana, Katakana
        | 0x31F0..=0x31FF    // Katakana phonetic extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // Half-width Katakana
        | 0x20000..=0x2FA1F  // CJK extensions B and later
    )
}

/// Harman's "S" stemmer, so that "refund" finds "refunds": `-ies` becomes `-y` (not
/// after `a` or `e`); otherwise a final `-s` goes, except in `-us` and `-ss`. (Harman's
/// `-es` rule drops one letter too, so it needs no branch of its own.) Words of three
/// letters or fewer are kept.
fn strip_plural(word: &mut String) {
    if word.len() <= 3 || !word.ends_with('s') {
        return;
    }
    if word.ends_with("ies") && !word.ends_with("eies") && !word.ends_with("aies") {
        word.truncate(word.len() - 3);
        word.push('y');
    } else if !word.ends_with("us") && !word.ends_with("ss") {
        word.truncate(word.len() - 1);
    }
}

/// Calls `emit` with each token of `text`: lowercased words split on everything that
/// is not a letter or digit, without English stop words, plurals stripped; every CJK
/// character is a token of its own.
fn for_each_token(text: &str, mut emit: impl FnMut(&str)) {
    let mut word = String::new();
    let flush = |word: &mut String, emit: &mut dyn FnMut(&str)| {
        if !word.is_empty() && STOP_WORDS.binary_search(&word.as_str()).is_err() {
            strip_plural(word);
            emit(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if is_cjk(c) {
            flush(&mut word, &mut emit);
            word.push(c);
            emit(&word);
            word.clear();
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else {
            flush(&mut word, &mut emit);
        }
    }
    flush(&mut word, &mut emit);
}

/// The tokens of `text`, as [`Bm25Retriever`] indexes and queries them.
#[cfg(test)]
fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for_each_token(text, |t| tokens.push(t.to_owned()));
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_are_stripped() {
        let stems: Vec<String> = [
            "refunds", "policies", "boxes", "takes", "status", "class", "bus", "goes",
        ]
        .iter()
        .flat_map(|w| tokenize(w))
        .collect();
        assert_eq!(
            stems,
            [
                "refund", "policy", "boxe", "take", "status", "class", "bus", "goe"
            ]
        );
    }

    #[test]
    fn stop_words_are_sorted() {
        assert!(STOP_WORDS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn tokens_are_lowercase_words_without_stop_words() {
        assert_eq!(
            tokenize("The Error-503 is NOT a bug; Ünïcode's fine."),
            ["error", "503", "bug", "ünïcode", "s", "fine"]
        );
        assert_eq!(
            tokenize("返金はabc可能"),
            ["返", "金", "は", "abc", "可", "能"]
        );
        assert!(tokenize(" ,;- ").is_empty());
    }
}
