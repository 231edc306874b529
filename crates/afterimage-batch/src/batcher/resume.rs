//! Resume: at start, the journal of an earlier process of the run is read back. Its
//! answers become a cache that answers replayed requests without an API call; its
//! unconfirmed creates are looked for and its open batches re-attached with the key
//! that created them, in the background, requests in them held until they apply.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use afterimage_core::ProviderError;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Ctx;
use super::batch::{self, Run};
use super::gather::Admitted;
use super::round::{Task, replayed, spent};
use crate::batching_model::Parked;
use crate::journal::{Intent, Journal, JournalRecord, StoredOutcome, Submitted, request_hash};
use crate::{BatchItem, ItemOutcome, RemoteBatch};

/// A re-attached batch (or the look for unconfirmed creates), done: the ids it held
/// and the answers now journalled for them.
pub(crate) struct Reattached {
    pub(super) ids: Vec<String>,
    pub(super) answers: Vec<(String, (String, StoredOutcome))>,
}

impl Task {
    /// Reads the journal back, if there is one with content: the answers become the
    /// cache, and each open batch (and the look for unconfirmed creates) goes on in
    /// the background while rounds go on. A journal that cannot be read stops every
    /// request (sending them could repeat ids).
    pub(super) fn resume(&mut self) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        let state = match journal.state() {
            Ok(state) => state,
            Err(e) => {
                self.broken = Some(format!(
                    "the batch journal cannot be read back, so requests are not sent (they could repeat ids): {e}"
                ));
                return;
            }
        };
        self.round_offset = state.last_round;
        self.ctx.state().round = state.last_round;
        self.highest = state.highest;
        self.cache = state.responses;
        for submitted in state.open.into_values() {
            self.in_flight.extend(submitted.custom_ids.iter().cloned());
            let (ctx, journal) = (Arc::clone(&self.ctx), journal.clone());
            self.reattaching.spawn(reattach(ctx, journal, submitted));
        }
        if !state.unsubmitted.is_empty() {
            let ids = state.unsubmitted.values().flat_map(|i| i.custom_ids.iter());
            self.in_flight.extend(ids.cloned());
            let ctx = Arc::clone(&self.ctx);
            let look = adopt_all(ctx, journal, state.known, state.unsubmitted);
            self.reattaching.spawn(look);
        }
    }

    /// What to do with a request as it arrives: answer it from the journal, hold it
    /// for the re-attached batch its latest attempt is in, or let it go in a round.
    pub(super) fn admit(&mut self, mut parked: Parked) -> Admitted {
        if let Some(message) = &self.broken {
            let _ = parked.reply.send(Err(ProviderError::Other {
                message: message.clone(),
                retryable: false,
            }));
            return Admitted::Answered;
        }
        let Some(&latest) = self.highest.get(&parked.key) else {
            return Admitted::Go(Box::new(parked));
        };
        let id = format!("{}-{latest}", parked.key);
        if self.in_flight.contains(&id) {
            self.held.push(parked);
            return Admitted::Held;
        }
        let Some((hash, outcome)) = self.cache.get(&id) else {
            return Admitted::Go(Box::new(parked));
        };
        match outcome {
            StoredOutcome::Ok { response } => {
                if *hash == request_hash(&self.ctx.model_of(&parked), &parked.request) {
                    self.ctx.state().report.replayed += 1;
                    let _ = parked.reply.send(Ok(replayed(response.clone())));
                    return Admitted::Answered;
                }
                tracing::warn!(request = %id, "the request differs from the one journalled (the config changed?); asking again");
            }
            StoredOutcome::Retryable { message } | StoredOutcome::Permanent { message } => {
                // The earlier answer counts as a try: a request that keeps failing
                // across resumes ends within the attempt budget.
                parked.tries = 1;
                parked.last_cause = Some(message.clone());
                if parked.tries >= self.ctx.settings.max_request_attempts {
                    self.ctx.state().report.permanent_failures += 1;
                    let error = spent(&parked, message);
                    let _ = parked.reply.send(Err(error));
                    return Admitted::Answered;
                }
            }
        }
        Admitted::Go(Box::new(parked))
    }
}

/// Looks for the batches unconfirmed creates may have made, one intent after the
/// other (so two never adopt the same batch), then re-attaches those found.
async fn adopt_all(
    ctx: Arc<Ctx>,
    journal: Journal,
    mut known: HashSet<String>,
    intents: BTreeMap<String, Intent>,
) -> Reattached {
    let mut ids = Vec::new();
    let mut running = JoinSet::new();
    for (local_key, intent) in intents {
        ids.extend(intent.custom_ids.iter().cloned());
        if let Some(found) = adopt(&ctx, &journal, &known, local_key, intent).await {
            known.insert(found.batch_id.clone());
            running.spawn(reattach(Arc::clone(&ctx), journal.clone(), found));
        }
    }
    let mut answers = Vec::new();
    while let Some(done) = running.join_next().await {
        if let Ok(done) = done {
            answers.extend(done.answers);
        }
    }
    Reattached { ids, answers }
}

/// Looks for the batch an unconfirmed create may have made: exactly one → adopted
/// (journalled `submitted`); none → never created; several → adopt none, warn.
async fn adopt(
    ctx: &Ctx,
    journal: &Journal,
    known: &HashSet<String>,
    local_key: String,
    intent: Intent,
) -> Option<Submitted> {
    let found = look_for(ctx, known, &local_key, &intent).await?;
    let record = verdict(&local_key, &intent.backend, &found);
    if let Err(e) = journal.append(std::slice::from_ref(&record)) {
        tracing::warn!(batch = %local_key, error = %e, "could not journal what the look found");
        return None;
    }
    let JournalRecord::Submitted { batch_id, .. } = record else {
        return None;
    };
    Some(Submitted {
        local_key,
        batch_id,
        backend: intent.backend,
        custom_ids: intent.custom_ids,
        results: None,
    })
}

/// The provider's batches that may be the intent's, batches the journal knows left
/// out; `None` when the provider cannot be asked (its key is gone, the list failed),
/// so a later resume looks again.
async fn look_for(
    ctx: &Ctx,
    known: &HashSet<String>,
    local_key: &str,
    intent: &Intent,
) -> Option<Vec<RemoteBatch>> {
    let Some(backend) = ctx.pinned(&intent.backend) else {
        tracing::warn!(batch = %local_key, key = %intent.backend, "cannot look for an unconfirmed batch: its key is not configured; its requests go again under new ids");
        return None;
    };
    match backend.find(local_key, intent.custom_ids.len()).await {
        Ok(found) => Some(
            found
                .into_iter()
                .filter(|b| !known.contains(&b.id))
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(batch = %local_key, error = %e, "cannot look for an unconfirmed batch; its requests go again under new ids");
            None
        }
    }
}

/// The record closing an intent after the look: `submitted` for a single match,
/// `abandoned` otherwise (several: a warning names them).
fn verdict(local_key: &str, backend: &str, found: &[RemoteBatch]) -> JournalRecord {
    match found {
        [one] => JournalRecord::Submitted {
            local_key: local_key.to_owned(),
            batch_id: one.id.clone(),
            backend: backend.to_owned(),
        },
        [] => JournalRecord::Abandoned {
            local_key: local_key.to_owned(),
            reason: "no batch was found for it: its create never happened".into(),
        },
        several => {
            let ids: Vec<&str> = several.iter().map(|b| b.id.as_str()).collect();
            let ids = ids.join(", ");
            tracing::warn!(batch = %local_key, "possible duplicate batch: {ids} could each be the one created for it; none is adopted, its requests go again under new ids (cancel the extra batches by hand)");
            JournalRecord::Abandoned {
                local_key: local_key.to_owned(),
                reason: format!("possible duplicate batch: {ids}"),
            }
        }
    }
}

/// Polls one batch an earlier process created, with the key that created it, to
/// its end and journals its answers; a batch whose key is gone, or whose requests
/// cannot be read back, has its requests failed as retryable.
async fn reattach(ctx: Arc<Ctx>, journal: Journal, submitted: Submitted) -> Reattached {
    ctx.state().report.adopted += 1;
    let remote = RemoteBatch {
        id: submitted.batch_id.clone(),
        local_key: Some(submitted.local_key.clone()),
        requests: Some(submitted.custom_ids.len() as u64),
    };
    let items = match journal.read_requests(&submitted.local_key) {
        Ok(items) => items,
        Err(e) => return give_up(&journal, &remote, &submitted, &e.to_string()),
    };
    let Some(backend) = ctx.pinned(&submitted.backend) else {
        let message = format!(
            "batch {} was created with the key {}, which is not configured now; add that key back to collect its results (its requests go again under new ids meanwhile)",
            remote.id, submitted.backend
        );
        tracing::warn!("{message}");
        return give_up(&journal, &remote, &submitted, &message);
    };
    let (local_key, fingerprint) = (&submitted.local_key, &submitted.backend);
    batch::track(&ctx, &remote, local_key, fingerprint, items.len());
    // Long after its create, a 404 means the batch is lost.
    let visible_by = Instant::now();
    let run = batch::finish(
        &ctx,
        &*backend,
        remote,
        &items,
        submitted.results,
        visible_by,
    );
    Reattached {
        ids: submitted.custom_ids,
        answers: answers(&items, run.await),
    }
}

/// The cache entries of a re-attached batch's outcomes (none for a batch refused
/// for the enqueued-token limit: its requests go again).
fn answers(items: &[BatchItem], run: Run) -> Vec<(String, (String, StoredOutcome))> {
    let Run::Done(outcomes) = run else {
        return Vec::new();
    };
    let hashes: HashMap<&str, String> = items
        .iter()
        .map(|i| (i.custom_id.as_str(), request_hash(&i.model, &i.request)))
        .collect();
    outcomes
        .iter()
        .filter_map(|(id, outcome)| {
            let hash = hashes.get(id.as_str())?.clone();
            Some((id.clone(), (hash, StoredOutcome::from(outcome))))
        })
        .collect()
}

/// Journals a retryable answer for every request of the batch, then `applied`.
fn give_up(
    journal: &Journal,
    remote: &RemoteBatch,
    submitted: &Submitted,
    message: &str,
) -> Reattached {
    let outcome = StoredOutcome::from(&ItemOutcome::Retryable(message.to_owned()));
    let answers: Vec<(String, (String, StoredOutcome))> = submitted
        .custom_ids
        .iter()
        .map(|id| (id.clone(), (String::new(), outcome.clone())))
        .collect();
    let mut records: Vec<JournalRecord> = answers
        .iter()
        .map(|(id, (hash, outcome))| JournalRecord::Response {
            custom_id: id.clone(),
            hash: hash.clone(),
            outcome: outcome.clone(),
        })
        .collect();
    records.push(JournalRecord::Applied {
        batch_id: remote.id.clone(),
    });
    if let Err(e) = journal.append(&records) {
        tracing::warn!(batch = %remote.id, error = %e, "could not journal a lost batch");
    }
    Reattached {
        ids: submitted.custom_ids.clone(),
        answers,
    }
}
