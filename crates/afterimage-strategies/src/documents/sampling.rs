//! Balanced, weighted, seeded document sampling shared by the instruction generators.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use afterimage_core::{Document, DocumentSource, InstructionRequest, StrategyError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::sync::OnceCell;

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

/// Loaded documents and how often each was used; spreads uses evenly, or in proportion
/// to per-document weights.
///
/// Picks follow stride scheduling: the next pick is among the documents with the
/// smallest `(uses + 1) / weight`, ties broken by the seeded RNG. With equal weights no
/// document is used an (n+1)-th time while another is still at fewer than n uses; a
/// document of weight 3 is due three times as often as one of weight 1.
///
/// Weights come from [`weights`](Self::weights) (by document id, missing ids weigh 1),
/// else from each document's `metadata["weight"]` when it is a positive number, else 1.
/// A weight that is zero, negative or not finite means the document is never picked.
/// With [`target_visits`](Self::target_visits), a document is no longer picked once
/// its visits reach the target, and once all do, [`take`](Self::take) returns nothing.
/// A visit is a dialog: each pick expects some (one by default, see
/// [`take_expecting`](Self::take_expecting)), counted as pending until
/// [`finish`](Self::finish) says whether the dialog was stored; a dialog that was not
/// stored frees its visit for another pick.
///
/// Counts are kept per document id (documents sharing an id share a count). The lock
/// is never held across an await.
#[derive(Debug)]
pub struct DocumentSampler {
    documents: Vec<Document>,
    weights: Vec<f64>,
    target: Option<u64>,
    counts: Mutex<Counts>,
}

/// What the sampler knows about each document's use, by id.
#[derive(Debug, Default)]
struct Counts {
    /// Picks, for balancing.
    uses: HashMap<String, u64>,
    /// Dialogs expected from picks and not finished yet.
    pending: HashMap<String, u64>,
    /// Dialogs stored.
    stored: HashMap<String, u64>,
}

impl Counts {
    fn uses(&self, id: &str) -> u64 {
        self.uses.get(id).copied().unwrap_or(0)
    }

    /// Visits stored or on their way: what the target is checked against.
    fn visits(&self, id: &str) -> u64 {
        self.pending.get(id).copied().unwrap_or(0) + self.stored.get(id).copied().unwrap_or(0)
    }
}

impl DocumentSampler {
    /// A sampler over `documents`, none used yet, weighted by their
    /// `metadata["weight"]` where that is a positive number.
    pub fn new(documents: Vec<Document>) -> Self {
        let weights = documents
            .iter()
            .map(
                |doc| match doc.metadata.get("weight").and_then(Value::as_f64) {
                    Some(weight) if weight.is_finite() && weight > 0.0 => weight,
                    _ => 1.0,
                },
            )
            .collect();
        DocumentSampler {
            documents,
            weights,
            target: None,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Weights by document id, replacing those from metadata; ids not in the map weigh
    /// 1, and a weight that is not a positive finite number excludes the document.
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.weights = self
            .documents
            .iter()
            .map(|doc| {
                let weight = weights.get(&doc.id).copied().unwrap_or(1.0);
                if weight.is_finite() && weight > 0.0 {
                    weight
                } else {
                    0.0
                }
            })
            .collect();
        self
    }

    /// Stops picking a document once its visits (dialogs stored or pending) reach
    /// `target` (default: no limit).
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.target = target;
        self
    }

    /// The target set by [`target_visits`](Self::target_visits).
    pub fn target(&self) -> Option<u64> {
        self.target
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

    /// How often the document `id` was picked.
    pub fn uses(&self, id: &str) -> u64 {
        self.counts().uses(id)
    }

    /// How many documents have at least `target` visits, stored or pending.
    pub fn covered(&self, target: u64) -> usize {
        let counts = self.counts();
        self.documents
            .iter()
            .filter(|doc| counts.visits(&doc.id) >= target)
            .count()
    }

    /// Whether any picked dialog has not finished yet (so visits may still be freed).
    pub fn has_pending(&self) -> bool {
        self.counts().pending.values().any(|n| *n > 0)
    }

    /// Whether no document can be picked any more: each reached the target visits or
    /// has no positive weight.
    pub fn exhausted(&self) -> bool {
        let counts = self.counts();
        (0..self.documents.len()).all(|index| !self.available(&counts, index))
    }

    /// Picks up to `k` distinct documents, the most overdue first (see the type's
    /// docs); the same seed and the same use counts give the same picks.
    pub fn sample(&self, k: usize, seed: u64) -> Vec<Document> {
        let counts = self.counts();
        self.pick(&counts, k, seed)
    }

    /// Counts one pick (and one pending visit) of each document in `ids`.
    pub fn record_use<I, S>(&self, ids: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut counts = self.counts();
        for id in ids {
            *counts.uses.entry(id.as_ref().to_owned()).or_insert(0) += 1;
            *counts.pending.entry(id.as_ref().to_owned()).or_insert(0) += 1;
        }
    }

    /// [`sample`](Self::sample) and [`record_use`](Self::record_use) in one step, so
    /// that concurrent callers see each other's picks and spread out. Empty when every
    /// document reached its target visits.
    pub fn take(&self, k: usize, seed: u64) -> Vec<Document> {
        self.take_expecting(k, seed, 1)
    }

    /// [`take`](Self::take) for picks that each start `dialogs` dialogs (a batch of
    /// questions): each counts that many pending visits.
    pub fn take_expecting(&self, k: usize, seed: u64, dialogs: u64) -> Vec<Document> {
        let mut counts = self.counts();
        let picked = self.pick(&counts, k, seed);
        for doc in &picked {
            *counts.uses.entry(doc.id.clone()).or_insert(0) += 1;
            *counts.pending.entry(doc.id.clone()).or_insert(0) += dialogs;
        }
        picked
    }

    /// Counts dialogs stored before this sampler existed (a resumed run), by
    /// document id.
    pub fn record_stored(&self, visits: &HashMap<String, u64>) {
        let mut counts = self.counts();
        for (id, n) in visits {
            *counts.stored.entry(id.clone()).or_insert(0) += n;
            // They were picks too, so balancing goes on from where the run stopped.
            *counts.uses.entry(id.clone()).or_insert(0) += n;
        }
    }

    /// Corrects the pending visits of a pick that expected `expected` dialogs but
    /// got `actual` (a batch with fewer questions than asked for).
    pub fn settle(&self, ids: &[String], expected: u64, actual: u64) {
        let mut counts = self.counts();
        for id in ids {
            let pending = counts.pending.entry(id.clone()).or_insert(0);
            *pending = (*pending + actual).saturating_sub(expected);
        }
    }

    /// Ends one pending visit of each document in `ids`: a stored dialog counts
    /// towards the target; one that was not stored frees the visit.
    pub fn finish(&self, ids: &[String], stored: bool) {
        let mut counts = self.counts();
        for id in ids {
            let pending = counts.pending.entry(id.clone()).or_insert(0);
            *pending = pending.saturating_sub(1);
            if stored {
                *counts.stored.entry(id.clone()).or_insert(0) += 1;
            }
        }
    }

    /// The counts; a poisoned lock still holds valid integers, so it is used as is.
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the document at `index` may be picked.
    fn available(&self, counts: &Counts, index: usize) -> bool {
        let visits = counts.visits(&self.documents[index].id);
        self.weights[index] > 0.0 && self.target.is_none_or(|target| visits < target)
    }

    /// Stride scheduling without replacement: repeatedly the available document with
    /// the smallest `(uses + 1) / weight`, ties drawn with the seeded RNG.
    fn pick(&self, counts: &Counts, k: usize, seed: u64) -> Vec<Document> {
        let mut pool: Vec<(usize, f64)> = (0..self.documents.len())
            .filter(|&index| self.available(counts, index))
            .map(|index| {
                let uses = counts.uses(&self.documents[index].id);
                (index, (uses as f64 + 1.0) / self.weights[index])
            })
            .collect();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut picked = Vec::with_capacity(k.min(pool.len()));
        let mut tied = Vec::new();
        while picked.len() < k && !pool.is_empty() {
            let least = pool
                .iter()
                .map(|(_, due)| *due)
                .fold(f64::INFINITY, f64::min);
            // A relative tolerance, so that 3 × (1/3) ties with 1.
            let limit = least + least.abs() * 1e-9;
            tied.clear();
            tied.extend(
                pool.iter()
                    .enumerate()
                    .filter(|(_, (_, due))| *due <= limit)
                    .map(|(slot, _)| slot),
            );
            let slot = tied[rng.random_range(0..tied.len())];
            let (index, _) = pool.swap_remove(slot);
            picked.push(self.documents[index].clone());
        }
        picked
    }
}

/// A document source loaded once, on first use, into a [`DocumentSampler`] with the
/// run's sampling settings: what every generator that draws documents holds.
pub struct DocumentPool {
    source: Arc<dyn DocumentSource>,
    sampler: OnceCell<DocumentSampler>,
    target_visits: Option<u64>,
    weights: Option<HashMap<String, f64>>,
    /// Visits stored before the documents were loaded (a resumed run), applied when
    /// they are.
    stored_before: Mutex<HashMap<String, u64>>,
}

impl DocumentPool {
    /// A pool over `source`, nothing loaded yet.
    pub fn new(source: Arc<dyn DocumentSource>) -> Self {
        DocumentPool {
            source,
            sampler: OnceCell::new(),
            target_visits: None,
            weights: None,
            stored_before: Mutex::new(HashMap::new()),
        }
    }

    /// See [`DocumentSampler::target_visits`].
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.target_visits = target;
        self
    }

    /// See [`DocumentSampler::weights`].
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.weights = Some(weights);
        self
    }

    /// The sampler over the loaded documents, loading them if this is the first use.
    pub async fn sampler(&self) -> Result<&DocumentSampler, StrategyError> {
        self.sampler
            .get_or_try_init(|| async {
                let documents = self.source.load().await?;
                if documents.is_empty() {
                    // The trait asks sources for an error instead, but a custom source
                    // may not comply; sampling nothing would silently drop the context.
                    return Err(StrategyError::NoDocuments {
                        message: "the document source returned an empty list".to_owned(),
                    });
                }
                let mut sampler = DocumentSampler::new(documents).target_visits(self.target_visits);
                if let Some(weights) = &self.weights {
                    sampler = sampler.weights(weights.clone());
                }
                let stored = std::mem::take(
                    &mut *self
                        .stored_before
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner),
                );
                sampler.record_stored(&stored);
                Ok(sampler)
            })
            .await
    }

    /// Picks up to `k` documents for a batch of `dialogs` questions
    /// ([`DocumentSampler::take_expecting`]).
    ///
    /// An empty pick is [`StrategyError::Waiting`] when every document reached its
    /// target only because of dialogs still in flight and the caller reports how
    /// dialogs end (`request.reports_outcomes`): a failed dialog frees its visit, so
    /// the caller waits for one to end and asks again. Otherwise it is
    /// [`StrategyError::Exhausted`] (which ends a run cleanly), or a configuration
    /// error when no document has a positive weight.
    ///
    /// The pick holds its pending visits until [`Reservation::confirm`] says how many
    /// questions the batch really has; dropped unconfirmed (the model call failed), it
    /// frees them.
    pub async fn take(
        &self,
        k: usize,
        request: &InstructionRequest,
        dialogs: u64,
    ) -> Result<Reservation<'_>, StrategyError> {
        let sampler = self.sampler().await?;
        let documents = sampler.take_expecting(k, request.seed, dialogs);
        if !documents.is_empty() {
            return Ok(Reservation {
                pool: self,
                documents,
                expected: dialogs,
                confirmed: false,
            });
        }
        if request.reports_outcomes && sampler.has_pending() {
            return Err(StrategyError::Waiting {
                message: "every document's remaining visits belong to dialogs in flight".to_owned(),
            });
        }
        Err(nothing_to_pick(sampler))
    }

    /// Corrects a pick's pending visits once its batch is known
    /// ([`DocumentSampler::settle`]).
    fn settle(&self, documents: &[Document], expected: u64, actual: u64) {
        if let Some(sampler) = self.sampler.get() {
            sampler.settle(&ids(documents), expected, actual);
        }
    }

    /// Counts dialogs an earlier part of the run stored ([`DocumentSampler::record_stored`]),
    /// now or when the documents are loaded.
    pub fn record_stored(&self, visits: &HashMap<String, u64>) {
        match self.sampler.get() {
            Some(sampler) => sampler.record_stored(visits),
            None => {
                let mut before = self
                    .stored_before
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                for (id, n) in visits {
                    *before.entry(id.clone()).or_insert(0) += n;
                }
            }
        }
    }

    /// Records how a dialog drawn from these documents ended
    /// ([`DocumentSampler::finish`]).
    pub fn finish(&self, document_ids: &[String], stored: bool) {
        if let Some(sampler) = self.sampler.get() {
            sampler.finish(document_ids, stored);
        }
    }

    /// How many documents were loaded (`None` before the first use).
    pub fn loaded(&self) -> Option<usize> {
        self.sampler.get().map(DocumentSampler::len)
    }
}

impl std::fmt::Debug for DocumentPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the documents can be large, and a `Debug` line should stay short.
        f.debug_struct("DocumentPool")
            .field("source", &self.source)
            .field("documents", &self.loaded())
            .field("target_visits", &self.target_visits)
            .finish_non_exhaustive()
    }
}

/// Documents picked for a batch, holding their pending visits until the batch is
/// known.
#[derive(Debug)]
pub struct Reservation<'a> {
    pool: &'a DocumentPool,
    documents: Vec<Document>,
    expected: u64,
    confirmed: bool,
}

impl Reservation<'_> {
    /// The picked documents.
    pub fn documents(&self) -> &[Document] {
        &self.documents
    }

    /// The batch has `questions` questions: that many dialogs will start from these
    /// documents.
    pub fn confirm(mut self, questions: usize) -> Vec<Document> {
        self.confirmed = true;
        self.pool
            .settle(&self.documents, self.expected, questions as u64);
        std::mem::take(&mut self.documents)
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.confirmed {
            self.pool.settle(&self.documents, self.expected, 0);
        }
    }
}

fn ids(documents: &[Document]) -> Vec<String> {
    documents.iter().map(|d| d.id.clone()).collect()
}

/// Why a sampler picked nothing: every document reached its target visits, or none
/// has a positive weight.
fn nothing_to_pick(sampler: &DocumentSampler) -> StrategyError {
    let total = sampler.len();
    match sampler.target() {
        Some(target) if sampler.covered(target) > 0 => {
            let covered = sampler.covered(target);
            let message = if covered == total {
                format!("every document reached target_visits = {target} ({total} document(s))")
            } else {
                format!(
                    "every document with a positive weight reached target_visits = {target} \
                     ({covered} of {total} document(s))"
                )
            };
            StrategyError::Exhausted { message }
        }
        _ => StrategyError::Config(format!(
            "none of the {total} document(s) has a positive sampling weight"
        )),
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
        for _ in 0..1000 {
            s.record_use(["d0", "d1"]);
        }
        assert_eq!(s.uses("d0"), 1000);
        assert_eq!(s.uses("d2"), 0);
        for seed in 0..200 {
            assert_eq!(ids(&s.sample(1, seed)), ["d2"]);
        }
    }

    #[test]
    fn ties_are_broken_by_the_seed() {
        let s = sampler(4);
        let mut firsts: Vec<String> = (0..100)
            .map(|seed| s.sample(1, seed)[0].id.clone())
            .collect();
        firsts.sort();
        firsts.dedup();
        assert_eq!(firsts, ["d0", "d1", "d2", "d3"]);
    }

    #[test]
    fn take_records_what_it_picks() {
        let s = sampler(2);
        let first = s.take(1, 9);
        assert_eq!(s.uses(&first[0].id), 1);
        for seed in 0..999 {
            s.take(1, seed);
        }
        assert_eq!((s.uses("d0"), s.uses("d1")), (500, 500));
    }

    #[test]
    fn metadata_weights_count_unless_replaced() {
        let mut heavy = Document::with_id("heavy", "h");
        heavy.metadata.insert("weight".to_owned(), 2.0.into());
        let mut odd = Document::with_id("odd", "o");
        odd.metadata.insert("weight".to_owned(), "much".into());
        let docs = vec![heavy, odd, Document::with_id("plain", "p")];
        let s = DocumentSampler::new(docs.clone());
        for seed in 0..400 {
            s.take(1, seed);
        }
        assert_eq!(
            (s.uses("heavy"), s.uses("odd"), s.uses("plain")),
            (200, 100, 100)
        );

        let s = DocumentSampler::new(docs).weights(HashMap::from([
            ("odd".to_owned(), 0.0),
            ("plain".to_owned(), f64::NAN),
        ]));
        assert_eq!(ids(&s.sample(3, 1)), ["heavy"]);
        assert!(!s.exhausted());
    }

    #[test]
    fn zero_weights_everywhere_is_exhausted() {
        let s = sampler(2).weights(HashMap::from([
            ("d0".to_owned(), 0.0),
            ("d1".to_owned(), -1.0),
        ]));
        assert!(s.exhausted());
        assert!(s.take(1, 1).is_empty());
    }
}
