//! Near-duplicate detection for first questions (MinHash with banded LSH).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use afterimage_core::{MINHASH_HASHES, MinHash};

/// Hash functions per signature: 16 bands of 6 rows. A pair at 0.8 Jaccard shares a
/// band with probability 0.99, a pair at 0.3 (questions that only share an opening
/// like "how do I") with 0.012, so the candidates checked stay a small share of what
/// was seen. (16 bands of 4 rows made that 12%, and a check 1 ms at 100k questions.)
/// The exact threshold is then checked on the signatures.
const HASHES: usize = MINHASH_HASHES;
const ROWS: usize = 6;

/// Remembers every question it accepts and rejects new ones that are near
/// duplicates (estimated Jaccard similarity of word 3-grams at or above a threshold).
///
/// The signatures are core's [`MinHash`], stable across builds, so the same texts are
/// always judged the same way (and the report's near-duplicate figures agree).
#[derive(Debug)]
pub struct NearDuplicates {
    threshold: f64,
    index: Mutex<Index>,
}

#[derive(Debug, Default)]
struct Index {
    signatures: Vec<MinHash>,
    buckets: HashMap<(usize, u64), Vec<usize>>,
}

impl NearDuplicates {
    /// A filter rejecting texts at or above `threshold` similarity (0.8 is a good
    /// start: rewordings are caught, questions about other details are not).
    pub fn new(threshold: f64) -> Self {
        NearDuplicates {
            threshold: threshold.clamp(0.0, 1.0),
            index: Mutex::new(Index::default()),
        }
    }

    /// Whether `text` is new; a new text is remembered.
    pub fn insert(&self, text: &str) -> bool {
        let signature = MinHash::of(text);
        let Ok(mut index) = self.index.lock() else {
            return true;
        };
        let mut seen = HashSet::new();
        for band in 0..HASHES / ROWS {
            let key = (band, signature.band_hash(band, ROWS));
            for &candidate in index.buckets.get(&key).into_iter().flatten() {
                if seen.insert(candidate)
                    && index.signatures[candidate].similarity(&signature) >= self.threshold
                {
                    return false;
                }
            }
        }
        let id = index.signatures.len();
        index.signatures.push(signature);
        for band in 0..HASHES / ROWS {
            let key = (band, signature.band_hash(band, ROWS));
            index.buckets.entry(key).or_default().push(id);
        }
        true
    }

    /// How many texts were accepted.
    pub fn len(&self) -> usize {
        self.index.lock().map(|i| i.signatures.len()).unwrap_or(0)
    }

    /// Whether nothing was accepted yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewordings_are_caught_and_new_questions_pass() {
        let filter = NearDuplicates::new(0.8);
        assert!(filter.insert("How do I reset my password on the mobile app?"));
        assert!(!filter.insert("how do I reset my password on the mobile app"));
        assert!(!filter.insert("How do I reset my password on the mobile app? "));
        assert!(filter.insert("What does error 503 mean when I open the dashboard?"));
        assert!(filter.insert("How do I reset my password on the desktop website instead?"));
        assert!(filter.insert("Why?"));
        assert!(!filter.insert("why"));
        assert_eq!(filter.len(), 4);
    }

    #[test]
    fn many_distinct_questions_are_all_kept() {
        let filter = NearDuplicates::new(0.8);
        let kept = (0..2000)
            .filter(|i| {
                filter.insert(&format!(
                    "What happens to order {i} if shipment {} is late?",
                    i * 7
                ))
            })
            .count();
        assert_eq!(kept, 2000);
    }
}
