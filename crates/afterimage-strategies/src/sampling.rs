//! Usage-aware document sampling shared by the instruction generators.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use afterimage_core::Document;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The separator between merged documents: a newline, 80 dashes and a blank line, as
/// Python afterimage writes it, so `instruction_context` reads the same in both.
pub const CONTEXT_SEPARATOR: &str =
    "\n--------------------------------------------------------------------------------\n\n";

/// The texts of `documents` joined by [`CONTEXT_SEPARATOR`]: the merged context a
/// batch of questions is drawn from.
pub fn merge_contexts(documents: &[Document]) -> String {
    let texts: Vec<&str> = documents.iter().map(|d| d.text.as_str()).collect();
    texts.join(CONTEXT_SEPARATOR)
}

/// Loaded documents and how often each was used; picks rarely used documents first.
///
/// A document's weight is `1 / (uses + 1)`, so over a run every document gets asked
/// about, not only the lucky ones. Counts are kept per document id (documents sharing
/// an id share a count). The lock is never held across an await.
#[derive(Debug)]
pub struct DocumentSampler {
    documents: Vec<Document>,
    uses: Mutex<HashMap<String, u64>>,
}

impl DocumentSampler {
    /// A sampler over `documents`, none used yet.
    pub fn new(documents: Vec<Document>) -> Self {
        DocumentSampler {
            documents,
            uses: Mutex::new(HashMap::new()),
        }
    }

    /// The documents, in load order.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.documents.len()
    }

    /// Whether there are no documents.
    pub fn is_empty(&self) -> bool {
        self.documents.is_empty()
    }

    /// How often the document `id` was used.
    pub fn uses(&self, id: &str) -> u64 {
        self.counts().get(id).copied().unwrap_or(0)
    }

    /// Picks `k` distinct documents (all of them when there are fewer), weighted by
    /// `1 / (uses + 1)`; the same seed and the same use counts give the same picks.
    pub fn sample(&self, k: usize, seed: u64) -> Vec<Document> {
        let counts = self.counts();
        self.pick(&counts, k, seed)
    }

    /// Counts one use of each document in `ids`.
    pub fn record_use<I, S>(&self, ids: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut counts = self.counts();
        for id in ids {
            *counts.entry(id.as_ref().to_owned()).or_insert(0) += 1;
        }
    }

    /// [`sample`](Self::sample) and [`record_use`](Self::record_use) in one step, so
    /// that concurrent callers see each other's picks and spread out.
    pub fn take(&self, k: usize, seed: u64) -> Vec<Document> {
        let mut counts = self.counts();
        let picked = self.pick(&counts, k, seed);
        for doc in &picked {
            *counts.entry(doc.id.clone()).or_insert(0) += 1;
        }
        picked
    }

    /// The counts; a poisoned lock still holds valid integers, so it is used as is.
    fn counts(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.uses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Weighted sampling without replacement: one weighted draw at a time, each drawn
    /// document leaving the pool.
    fn pick(&self, counts: &HashMap<String, u64>, k: usize, seed: u64) -> Vec<Document> {
        let mut pool: Vec<(usize, f64)> = self
            .documents
            .iter()
            .enumerate()
            .map(|(index, doc)| {
                let uses = counts.get(&doc.id).copied().unwrap_or(0);
                let weight = 1.0 / (uses as f64 + 1.0);
                (index, weight)
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picked = Vec::with_capacity(k.min(pool.len()));
        while picked.len() < k && !pool.is_empty() {
            let total: f64 = pool.iter().map(|(_, w)| w).sum();
            let mut target = rng.random::<f64>() * total;
            // Rounding can leave `target` just past the last weight; the last one wins then.
            let mut chosen = pool.len() - 1;
            for (slot, (_, weight)) in pool.iter().enumerate() {
                if target < *weight {
                    chosen = slot;
                    break;
                }
                target -= weight;
            }
            let (index, _) = pool.remove(chosen);
            picked.push(self.documents[index].clone());
        }
        picked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sampler(n: usize) -> DocumentSampler {
        DocumentSampler::new(
            (0..n)
                .map(|i| Document::with_id(format!("d{i}"), format!("text {i}")))
                .collect(),
        )
    }

    fn ids(docs: &[Document]) -> Vec<String> {
        docs.iter().map(|d| d.id.clone()).collect()
    }

    #[test]
    fn separator_is_a_newline_80_dashes_and_a_blank_line() {
        assert_eq!(CONTEXT_SEPARATOR, format!("\n{}\n\n", "-".repeat(80)));
        let docs = [
            Document::new("one"),
            Document::new("two"),
            Document::new("three"),
        ];
        assert_eq!(
            merge_contexts(&docs),
            format!("one\n{d}\n\ntwo\n{d}\n\nthree", d = "-".repeat(80))
        );
        assert_eq!(merge_contexts(&docs[..1]), "one");
        assert_eq!(merge_contexts(&[]), "");
    }

    #[test]
    fn picks_are_distinct_and_capped_by_the_pool() {
        let s = sampler(5);
        for seed in 0..50 {
            let mut picked = ids(&s.sample(3, seed));
            assert_eq!(picked.len(), 3);
            picked.sort();
            picked.dedup();
            assert_eq!(picked.len(), 3, "seed {seed}");
        }
        let mut all = ids(&s.sample(9, 1));
        all.sort();
        assert_eq!(all, ["d0", "d1", "d2", "d3", "d4"]);
        assert!(s.sample(0, 1).is_empty());
        assert!(DocumentSampler::new(Vec::new()).sample(2, 1).is_empty());
    }

    #[test]
    fn same_seed_and_state_same_picks() {
        let a = sampler(20);
        let b = sampler(20);
        a.record_use(["d3", "d7"]);
        b.record_use(["d3", "d7"]);
        for seed in 0..20 {
            assert_eq!(ids(&a.sample(4, seed)), ids(&b.sample(4, seed)));
        }
        // Different seeds do not all agree.
        let first = ids(&a.sample(4, 0));
        assert!((1..20).any(|seed| ids(&a.sample(4, seed)) != first));
    }

    #[test]
    fn rarely_used_documents_come_first() {
        let s = sampler(3);
        for _ in 0..100_000 {
            s.record_use(["d0", "d1"]);
        }
        assert_eq!(s.uses("d0"), 100_000);
        assert_eq!(s.uses("d2"), 0);
        let unused = (0..200)
            .filter(|seed| ids(&s.sample(1, *seed)) == ["d2"])
            .count();
        assert_eq!(unused, 200);
    }

    #[test]
    fn picks_follow_the_weights() {
        // Weights 1, 1/2, 1/4: shares 4/7, 2/7, 1/7.
        let s = sampler(3);
        s.record_use(["d1", "d2", "d2", "d2"]);
        let mut hits = [0u32; 3];
        for seed in 0..7000 {
            let picked = s.sample(1, seed);
            let index: usize = picked[0].id[1..].parse().unwrap();
            hits[index] += 1;
        }
        for (got, want) in hits.iter().zip([4000.0, 2000.0, 1000.0]) {
            assert!((f64::from(*got) - want).abs() < want * 0.1, "{hits:?}");
        }
    }

    #[test]
    fn take_records_what_it_picks() {
        let s = sampler(2);
        let first = s.take(1, 9);
        assert_eq!(s.uses(&first[0].id), 1);
        // Two documents, one used once: over many takes both end up used equally often.
        for seed in 0..999 {
            s.take(1, seed);
        }
        let (a, b) = (s.uses("d0"), s.uses("d1"));
        assert_eq!(a + b, 1000);
        assert!(a.abs_diff(b) <= 50, "{a} vs {b}");
    }
}
