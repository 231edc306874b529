//! MinHash signatures of word 3-grams: the one near-duplicate notion shared by the
//! generator's filter (strategies) and the diversity figures of the report (datasets).

use crate::fnv1a;

/// Hash functions per signature. The generator's filter bands them (16 bands of 6
/// rows); the similarity of two signatures estimates the Jaccard similarity of the two
/// texts' word 3-grams to within about ±0.05.
pub const MINHASH_HASHES: usize = 96;

/// A MinHash signature of a text's word 3-grams (the whole text as one shingle when
/// it has fewer than three words). Words are the lower-cased alphanumeric runs, so
/// case and punctuation do not count.
///
/// Hashes are FNV-1a mixed with splitmix64, stable across builds and platforms, so
/// the same texts are always judged the same way.
///
/// ```
/// use afterimage_core::MinHash;
///
/// let a = MinHash::of("How do I reset my password on the mobile app?");
/// let b = MinHash::of("how do I reset my password on the mobile app");
/// assert_eq!(a.similarity(&b), 1.0);
/// assert!(a.similarity(&MinHash::of("What does error 503 mean?")) < 0.2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinHash([u64; MINHASH_HASHES]);

impl MinHash {
    /// The signature of `text`.
    pub fn of(text: &str) -> MinHash {
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let shingles: Vec<u64> = if words.len() < 3 {
            vec![fnv1a(words.join(" ").as_bytes())]
        } else {
            words
                .windows(3)
                .map(|w| fnv1a(w.join(" ").as_bytes()))
                .collect()
        };
        let mut signature = [u64::MAX; MINHASH_HASHES];
        for shingle in shingles {
            for (i, slot) in signature.iter_mut().enumerate() {
                let h = splitmix(shingle ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                *slot = (*slot).min(h);
            }
        }
        MinHash(signature)
    }

    /// The estimated Jaccard similarity of the two texts' 3-grams: the share of hash
    /// functions whose minimum agrees (0 to 1).
    pub fn similarity(&self, other: &MinHash) -> f64 {
        self.0.iter().zip(&other.0).filter(|(x, y)| x == y).count() as f64 / MINHASH_HASHES as f64
    }

    /// One hash of the `rows` values of band `band` (values `band * rows` up to the
    /// next band), for locality-sensitive hashing: two signatures sharing a band hash
    /// are candidates for a similarity check. A band past the end hashes what is left.
    pub fn band_hash(&self, band: usize, rows: usize) -> u64 {
        let start = (band * rows).min(MINHASH_HASHES);
        let end = (start + rows).min(MINHASH_HASHES);
        self.0[start..end]
            .iter()
            .fold(0xcbf2_9ce4_8422_2325, |acc, v| splitmix(acc ^ v))
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The signature is part of resumed runs' behaviour (the same questions must be
    /// judged duplicates across builds), so its values are pinned.
    /// The values the generator's filter had before this module moved here.
    #[test]
    fn signatures_are_stable() {
        let s = MinHash::of("How do I reset my password?");
        assert_eq!(s.0[0], 3_295_884_282_217_408_583);
        assert_eq!(s.band_hash(0, 6), 13_563_862_425_001_072_427);
        let mut acc = 0u64;
        for text in [
            "How do I reset my password?",
            "Why?",
            "",
            "a b",
            "What does error 503 mean when I open the dashboard?",
        ] {
            let s = MinHash::of(text);
            for v in s.0 {
                acc = acc.wrapping_mul(31).wrapping_add(v);
            }
            acc = acc.wrapping_add(s.band_hash(3, 6));
        }
        assert_eq!(acc, 7_228_772_142_354_132_728);
    }

    #[test]
    fn short_texts_are_one_shingle_and_order_matters() {
        assert_eq!(MinHash::of("Why?").similarity(&MinHash::of("why")), 1.0);
        assert!(MinHash::of("a b c d").similarity(&MinHash::of("d c b a")) < 0.1);
    }
}
