//! The journal folded into what a resume needs, and the summary `status` and
//! `cancel` read.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{JournalRecord, StoredOutcome};

/// What a journal says about one run, read without changing it (for
/// `afterimage batch status|cancel`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JournalSummary {
    /// The run the journal belongs to.
    pub run_id: String,
    /// Batches created and not yet applied: still running, or ended and unread.
    pub open: Vec<JournalBatch>,
    /// Batches whose create was intended but never confirmed: they may or may not
    /// exist at the provider (a resume looks for them).
    pub unsubmitted: Vec<JournalIntent>,
    /// `request` records (one per id submitted or sent synchronously).
    pub requests: usize,
    /// `response` records.
    pub responses: usize,
}

/// A batch the journal saw created and not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalBatch {
    /// The provider's batch id.
    pub batch_id: String,
    /// The local key it was created with.
    pub local_key: String,
    /// The fingerprint of the key that created it (only that key can read or cancel it).
    pub backend: String,
    /// Requests in it.
    pub requests: usize,
}

/// A batch whose create was intended and never confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalIntent {
    /// The local key it would carry.
    pub local_key: String,
    /// The fingerprint of the key meant to create it.
    pub backend: String,
    /// Requests in it.
    pub requests: usize,
}

/// An intent as the journal keeps it.
#[derive(Debug, Clone)]
pub(crate) struct Intent {
    pub(crate) backend: String,
    pub(crate) custom_ids: Vec<String>,
}

/// A batch created and not applied.
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    pub(crate) local_key: String,
    pub(crate) batch_id: String,
    pub(crate) backend: String,
    pub(crate) custom_ids: Vec<String>,
    /// The raw results' path, once ended.
    pub(crate) results: Option<String>,
}

/// The journal folded into what a resume needs.
#[derive(Debug, Default)]
pub(crate) struct JournalState {
    pub(crate) run_id: String,
    /// Request id → its hash.
    pub(crate) requests: HashMap<String, String>,
    /// Request key → the highest attempt journalled.
    pub(crate) highest: HashMap<String, u32>,
    /// Request id → its answer.
    pub(crate) responses: HashMap<String, (String, StoredOutcome)>,
    /// Intents never confirmed, by local key.
    pub(crate) unsubmitted: BTreeMap<String, Intent>,
    /// Batches created and not applied, by batch id.
    pub(crate) open: BTreeMap<String, Submitted>,
    /// Every batch id ever journalled as created.
    pub(crate) known: HashSet<String>,
    /// The highest round any intent names.
    pub(crate) last_round: u64,
}

impl JournalState {
    pub(crate) fn from_records(records: Vec<JournalRecord>) -> Self {
        let mut state = JournalState::default();
        let mut intents: HashMap<String, Intent> = HashMap::new();
        let mut applied: HashSet<String> = HashSet::new();
        for record in records {
            state.fold(record, &mut intents, &mut applied);
        }
        state.open.retain(|id, _| !applied.contains(id));
        state.unsubmitted = intents.into_iter().collect();
        state
    }

    fn fold(
        &mut self,
        record: JournalRecord,
        intents: &mut HashMap<String, Intent>,
        applied: &mut HashSet<String>,
    ) {
        match record {
            JournalRecord::Run { run_id, .. } => self.run_id = run_id,
            JournalRecord::Request {
                custom_id,
                key,
                attempt,
                hash,
            } => {
                self.note_attempt(&key, attempt);
                self.requests.insert(custom_id, hash);
            }
            JournalRecord::Intent {
                local_key,
                backend,
                custom_ids,
                round,
                ..
            } => {
                self.last_round = self.last_round.max(round);
                // An id in a batch counts as used even without its `request` record.
                for id in &custom_ids {
                    if let Some((key, attempt)) = split_id(id) {
                        self.note_attempt(key, attempt);
                    }
                }
                intents.insert(
                    local_key,
                    Intent {
                        backend,
                        custom_ids,
                    },
                );
            }
            JournalRecord::Submitted {
                local_key,
                batch_id,
                backend,
            } => {
                let custom_ids = intents
                    .remove(&local_key)
                    .map_or_else(Vec::new, |i| i.custom_ids);
                let submitted = Submitted {
                    local_key,
                    batch_id: batch_id.clone(),
                    backend,
                    custom_ids,
                    results: None,
                };
                self.known.insert(batch_id.clone());
                self.open.insert(batch_id, submitted);
            }
            JournalRecord::Terminal {
                batch_id, results, ..
            } => {
                if let Some(open) = self.open.get_mut(&batch_id) {
                    open.results = Some(results);
                }
            }
            JournalRecord::Response {
                custom_id,
                hash,
                outcome,
            } => {
                self.responses.insert(custom_id, (hash, outcome));
            }
            JournalRecord::Abandoned { local_key, .. } => {
                intents.remove(&local_key);
            }
            JournalRecord::Applied { batch_id } => {
                applied.insert(batch_id);
            }
        }
    }

    fn note_attempt(&mut self, key: &str, attempt: u32) {
        let highest = self.highest.entry(key.to_owned()).or_default();
        *highest = (*highest).max(attempt);
    }

    pub(crate) fn summary(&self) -> JournalSummary {
        let open = self
            .open
            .values()
            .map(|s| JournalBatch {
                batch_id: s.batch_id.clone(),
                local_key: s.local_key.clone(),
                backend: s.backend.clone(),
                requests: s.custom_ids.len(),
            })
            .collect();
        let unsubmitted = self
            .unsubmitted
            .iter()
            .map(|(local_key, i)| JournalIntent {
                local_key: local_key.clone(),
                backend: i.backend.clone(),
                requests: i.custom_ids.len(),
            })
            .collect();
        JournalSummary {
            run_id: self.run_id.clone(),
            open,
            unsubmitted,
            requests: self.requests.len(),
            responses: self.responses.len(),
        }
    }
}

/// `{key}-{attempt}` split into its key and attempt.
fn split_id(id: &str) -> Option<(&str, u32)> {
    let (key, attempt) = id.rsplit_once('-')?;
    Some((key, attempt.parse().ok()?))
}
