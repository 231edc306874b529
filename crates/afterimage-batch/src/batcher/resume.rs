//! Resume: at start, the journal of an earlier process of the run is read back. Its
//! unconfirmed creates are looked for, its open batches re-attached with the key
//! that created them and applied, and its answers become a cache that answers
//! replayed requests without an API call.

use std::collections::HashSet;
use std::sync::Arc;

use afterimage_core::ProviderError;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Ctx;
use super::batch::{self, Run};
use super::round::{Task, replayed, spent};
use crate::batching_model::Parked;
use crate::journal::{Intent, Journal, JournalRecord, StoredOutcome, Submitted, request_hash};
use crate::{ItemOutcome, RemoteBatch};

impl Task {
    /// Reads the journal back, if there is one with content; a journal that cannot
    /// be read stops every request (sending them could repeat ids).
    pub(super) async fn resume(&mut self) {
        let Some(journal) = self.ctx.journal.clone() else {
            return;
        };
        if let Err(e) = self.resume_from(&journal).await {
            self.broken = Some(format!(
                "the batch journal cannot be read back, so requests are not sent (they could repeat ids): {e}"
            ));
        }
    }

    async fn resume_from(&mut self, journal: &Journal) -> Result<(), crate::BatchError> {
        let state = journal.state()?;
        self.round_offset = state.last_round;
        self.highest.clone_from(&state.highest);
        let mut open: Vec<Submitted> = state.open.into_values().collect();
        let mut known = state.known;
        for (local_key, intent) in state.unsubmitted {
            if let Some(found) = adopt(&self.ctx, journal, &known, local_key, intent).await {
                // Two intents of one size must not adopt the same batch.
                known.insert(found.batch_id.clone());
                open.push(found);
            }
        }
        reattach_all(&self.ctx, journal, open).await;
        self.cache = journal.state()?.responses;
        Ok(())
    }

    /// What to do with a request as it arrives: `None` once it is answered (from the
    /// journal, or failed for good), else the request for the next round.
    pub(super) fn admit(&mut self, mut parked: Parked) -> Option<Parked> {
        if let Some(message) = &self.broken {
            let _ = parked.reply.send(Err(ProviderError::Other {
                message: message.clone(),
                retryable: false,
            }));
            return None;
        }
        let Some(&latest) = self.highest.get(&parked.key) else {
            return Some(parked);
        };
        let id = format!("{}-{latest}", parked.key);
        let Some((hash, outcome)) = self.cache.get(&id) else {
            return Some(parked);
        };
        match outcome {
            StoredOutcome::Ok { response } => {
                if *hash == request_hash(&self.ctx.model_of(&parked), &parked.request) {
                    self.ctx.state().report.replayed += 1;
                    let _ = parked.reply.send(Ok(replayed(response.clone())));
                    return None;
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
                    return None;
                }
            }
        }
        Some(parked)
    }
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

/// Re-attaches every open batch at once and waits until each is applied.
async fn reattach_all(ctx: &Arc<Ctx>, journal: &Journal, open: Vec<Submitted>) {
    let mut running = JoinSet::new();
    for submitted in open {
        let (ctx, journal) = (Arc::clone(ctx), journal.clone());
        running.spawn(async move { reattach(&ctx, &journal, submitted).await });
    }
    while running.join_next().await.is_some() {}
}

/// Polls one batch an earlier process created, with the key that created it, to
/// its end and journals its answers; a batch whose key is gone, or whose requests
/// cannot be read back, has its requests failed as retryable.
async fn reattach(ctx: &Ctx, journal: &Journal, submitted: Submitted) {
    ctx.state().report.adopted += 1;
    let remote = RemoteBatch {
        id: submitted.batch_id.clone(),
        local_key: Some(submitted.local_key.clone()),
        requests: Some(submitted.custom_ids.len() as u64),
    };
    let items = match journal.read_requests(&submitted.local_key) {
        Ok(items) => items,
        Err(e) => return give_up(ctx, &remote, &submitted, &e.to_string()),
    };
    let Some(backend) = ctx.pinned(&submitted.backend) else {
        let message = format!(
            "batch {} was created with the key {}, which is not configured now; add that key back to collect its results (its requests go again under new ids meanwhile)",
            remote.id, submitted.backend
        );
        tracing::warn!("{message}");
        return give_up(ctx, &remote, &submitted, &message);
    };
    batch::track(
        ctx,
        &remote,
        &submitted.local_key,
        &submitted.backend,
        items.len(),
    );
    // Long after its create, a 404 means the batch is lost.
    let run = batch::finish(
        ctx,
        &*backend,
        remote,
        &items,
        submitted.results,
        Instant::now(),
    )
    .await;
    if let Run::TokenLimit { .. } = run {
        tracing::info!("a re-attached batch hit the enqueued-token limit; its requests go again");
    }
}

/// Journals a retryable answer for every request of the batch, then `applied`.
fn give_up(ctx: &Ctx, remote: &RemoteBatch, submitted: &Submitted, message: &str) {
    let Some(journal) = &ctx.journal else {
        return;
    };
    let outcome = StoredOutcome::from(&ItemOutcome::Retryable(message.to_owned()));
    let mut records: Vec<JournalRecord> = submitted
        .custom_ids
        .iter()
        .map(|id| JournalRecord::Response {
            custom_id: id.clone(),
            hash: String::new(),
            outcome: outcome.clone(),
        })
        .collect();
    records.push(JournalRecord::Applied {
        batch_id: remote.id.clone(),
    });
    if let Err(e) = journal.append(&records) {
        tracing::warn!(batch = %remote.id, error = %e, "could not journal a lost batch");
    }
}
