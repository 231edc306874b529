//! One provider batch from intent to applied: journal the intent and the requests,
//! create, journal the id, poll to the end, keep the raw results on disk, journal
//! each answer, then `applied`. A batch found again at resume joins at the poll.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::round::response_record;
use super::{Ctx, Open, OpenBatch};
use crate::journal::{JournalRecord, request_hash};
use crate::{
    BatchBackend, BatchError, BatchItem, BatchPhase, BatchStatus, EndKind, ItemOutcome,
    RemoteBatch, line_errors_to_ids,
};

/// How long after its create a batch may answer 404 before it counts as lost.
const VISIBLE_WITHIN: Duration = Duration::from_secs(60);

/// How one batch went.
pub(super) enum Run {
    /// Its requests' outcomes.
    Done(Vec<(String, ItemOutcome)>),
    /// Refused for the enqueued-token limit: to be sent again in halves. `created`
    /// when the batch existed (and failed): its ids are spent, the halves need new
    /// ones.
    TokenLimit {
        /// The batch's items.
        chunk: Vec<BatchItem>,
        /// Whether the provider had created the batch.
        created: bool,
    },
}

/// The same outcome for every item.
fn all(chunk: &[BatchItem], outcome: &ItemOutcome) -> Run {
    Run::Done(
        chunk
            .iter()
            .map(|i| (i.custom_id.clone(), outcome.clone()))
            .collect(),
    )
}

/// Creates one batch of `chunk` under `local_key` with the next key of endpoint
/// `endpoint`'s pool and runs it to its end; a failure of the whole batch becomes
/// every item's outcome.
pub(super) async fn run(
    ctx: Arc<Ctx>,
    endpoint: usize,
    round: u64,
    local_key: String,
    chunk: Vec<BatchItem>,
) -> Run {
    let Some((backend, fingerprint)) = ctx.next_backend(endpoint) else {
        let message = "batch mode has no batch backend configured; give the provider a key";
        return all(&chunk, &ItemOutcome::Permanent(message.into()));
    };
    if let Err(e) = record_intent(&ctx, round, &local_key, &fingerprint, &chunk) {
        return all(&chunk, &ItemOutcome::Permanent(e.to_string()));
    }
    let mut batch = match backend.submit(&local_key, &chunk).await {
        Ok(batch) => batch,
        Err(e) => return refused(&ctx, &local_key, chunk, &e),
    };
    // Anthropic keeps no tag; the results file is named by our key all the same.
    batch.local_key = Some(local_key.clone());
    if let Err(e) = record_submitted(&ctx, &local_key, &batch, &fingerprint, chunk.len()) {
        // The batch runs, unjournalled: a resume finds it by its key. Its requests
        // go again under new ids rather than wait on a batch no journal knows.
        return all(&chunk, &ItemOutcome::Retryable(e.to_string()));
    }
    let deadline = Instant::now() + VISIBLE_WITHIN;
    finish(&ctx, &*backend, batch, &chunk, None, deadline).await
}

/// The requests file and the intent, on disk before the create.
fn record_intent(
    ctx: &Ctx,
    round: u64,
    local_key: &str,
    fingerprint: &str,
    chunk: &[BatchItem],
) -> Result<(), BatchError> {
    match &ctx.journal {
        Some(journal) => journal.record_intent(local_key, fingerprint, round, chunk),
        None => Ok(()),
    }
}

/// A create that failed. One the provider certainly refused closes its intent; an
/// ambiguous one (a timeout, a 5xx) leaves it for a resume to look for.
fn refused(ctx: &Ctx, local_key: &str, chunk: Vec<BatchItem>, error: &BatchError) -> Run {
    let certain = match error {
        BatchError::Provider(e) => !e.is_retryable(),
        BatchError::TokenLimitExceeded { .. } | BatchError::Invalid(_) => true,
        _ => false,
    };
    if let (true, Some(journal)) = (certain, &ctx.journal) {
        let record = JournalRecord::Abandoned {
            local_key: local_key.to_owned(),
            reason: error.to_string(),
        };
        if let Err(e) = journal.append(&[record]) {
            tracing::warn!(error = %e, "could not journal a refused batch; a resume looks for it");
        }
    }
    match error {
        BatchError::TokenLimitExceeded { .. } if chunk.len() > 1 => Run::TokenLimit {
            chunk,
            created: false,
        },
        _ => all(&chunk, &batch_outcome(error)),
    }
}

/// Counts and journals the created batch, then shows it in progress.
fn record_submitted(
    ctx: &Ctx,
    local_key: &str,
    batch: &RemoteBatch,
    fingerprint: &str,
    requests: usize,
) -> Result<(), BatchError> {
    {
        let mut state = ctx.state();
        state.report.batches_submitted += 1;
        state.report.requests_submitted += requests as u64;
    }
    if let Some(journal) = &ctx.journal {
        journal.append(&[JournalRecord::Submitted {
            local_key: local_key.to_owned(),
            batch_id: batch.id.clone(),
            backend: fingerprint.to_owned(),
        }])?;
    }
    track(ctx, batch, local_key, fingerprint, requests);
    Ok(())
}

/// Adds the batch to the open batches progress shows and shutdown cancels.
pub(super) fn track(
    ctx: &Ctx,
    batch: &RemoteBatch,
    local_key: &str,
    fingerprint: &str,
    requests: usize,
) {
    let view = OpenBatch {
        id: batch.id.clone(),
        local_key: local_key.to_owned(),
        backend: fingerprint.to_owned(),
        raw_state: String::new(),
        phase: BatchPhase::Queued,
        counts: None,
        requests,
    };
    let open = Open {
        view,
        remote: batch.clone(),
    };
    ctx.state().open.insert(batch.id.clone(), open);
}

/// Polls the batch to its end, reads its results (from `results`, a file an
/// earlier process kept, or the provider), journals each answer and `applied`.
pub(super) async fn finish(
    ctx: &Ctx,
    backend: &dyn BatchBackend,
    batch: RemoteBatch,
    chunk: &[BatchItem],
    results: Option<String>,
    visible_by: Instant,
) -> Run {
    // Results an earlier process kept need no poll: the batch may be gone by now.
    let kept = results.and_then(|r| ctx.journal.as_ref()?.read_results(&r));
    let run = match kept {
        Some(raw) => parse(backend, &raw, chunk),
        None => match wait_for_end(ctx, backend, &batch, visible_by).await {
            Ok(status) => ended(ctx, backend, &batch, chunk, &status).await,
            Err(e) => all(chunk, &unreadable(&batch, &e)),
        },
    };
    if let Run::Done(outcomes) = &run {
        record_applied(ctx, &batch, chunk, outcomes);
    } else {
        record_applied(ctx, &batch, chunk, &[]);
    }
    ctx.state().open.remove(&batch.id);
    if !ctx.settings.keep_files {
        delete_files(backend, &batch).await;
    }
    run
}

/// Deletes the provider's files of an applied batch (its results are on disk and
/// journalled); a failure only costs storage at the provider, so it is logged.
async fn delete_files(backend: &dyn BatchBackend, batch: &RemoteBatch) {
    if let Err(e) = backend.delete_files(batch).await {
        tracing::warn!(batch = %batch.id, error = %e, "could not delete the batch's files at the provider; they expire on their own");
    }
}

/// The outcome of each request of a batch that could not be polled to its end.
fn unreadable(batch: &RemoteBatch, error: &BatchError) -> ItemOutcome {
    ItemOutcome::Retryable(match error {
        BatchError::NotYetVisible { .. } => format!(
            "batch {} is gone (HTTP 404 with the key that created it, long after its create: expired or deleted); its requests go again",
            batch.id
        ),
        _ => format!("batch {}: {error}", batch.id),
    })
}

/// The outcomes of an ended batch.
async fn ended(
    ctx: &Ctx,
    backend: &dyn BatchBackend,
    batch: &RemoteBatch,
    chunk: &[BatchItem],
    status: &BatchStatus,
) -> Run {
    if status.token_limit_exceeded() && chunk.len() > 1 {
        return Run::TokenLimit {
            chunk: chunk.to_vec(),
            created: true,
        };
    }
    if status.phase == BatchPhase::Ended(EndKind::Failed) {
        return Run::Done(rejected(chunk, status));
    }
    match fetch_and_keep(ctx, backend, batch, status).await {
        Ok(raw) => parse(backend, &raw, chunk),
        Err(e) => all(chunk, &ItemOutcome::Retryable(e.to_string())),
    }
}

/// Each request's outcome in the raw results; answers marked as batched.
fn parse(backend: &dyn BatchBackend, raw: &[u8], chunk: &[BatchItem]) -> Run {
    match backend.parse_results(raw, chunk) {
        Ok(mut outcomes) => {
            mark_batched(&mut outcomes);
            Run::Done(outcomes)
        }
        Err(e) => all(chunk, &ItemOutcome::Retryable(e.to_string())),
    }
}

/// Downloads the raw results and, with a journal, writes them to disk and the
/// `terminal` record before anything is applied.
async fn fetch_and_keep(
    ctx: &Ctx,
    backend: &dyn BatchBackend,
    batch: &RemoteBatch,
    status: &BatchStatus,
) -> Result<Vec<u8>, BatchError> {
    let raw = backend.fetch_results(batch).await?;
    if let Some(journal) = &ctx.journal {
        let local_key = batch.local_key.clone().unwrap_or_else(|| batch.id.clone());
        let results = journal.write_results(&local_key, &raw)?;
        journal.append(&[JournalRecord::Terminal {
            batch_id: batch.id.clone(),
            phase: phase_name(status.phase).to_owned(),
            results,
        }])?;
    }
    Ok(raw)
}

/// Answers that came from a batch are billed at the batch rate.
fn mark_batched(outcomes: &mut [(String, ItemOutcome)]) {
    for (_, outcome) in outcomes {
        if let ItemOutcome::Ok(response) = outcome {
            response.batched = true;
        }
    }
}

/// Journals each outcome, then `applied`. A failed write is logged: the batch stays
/// open in the journal and a resume reads its kept results again.
fn record_applied(
    ctx: &Ctx,
    batch: &RemoteBatch,
    chunk: &[BatchItem],
    outcomes: &[(String, ItemOutcome)],
) {
    let Some(journal) = &ctx.journal else {
        return;
    };
    let items: HashMap<&str, &BatchItem> =
        chunk.iter().map(|i| (i.custom_id.as_str(), i)).collect();
    let mut records: Vec<JournalRecord> = outcomes
        .iter()
        .filter_map(|(id, outcome)| {
            let item = items.get(id.as_str())?;
            let hash = request_hash(&item.model, &item.request);
            Some(response_record(id, hash, outcome))
        })
        .collect();
    records.push(JournalRecord::Applied {
        batch_id: batch.id.clone(),
    });
    if let Err(e) = journal.append(&records) {
        tracing::warn!(batch = %batch.id, error = %e, "answers not journalled; a resume applies the batch again");
    }
}

fn phase_name(phase: BatchPhase) -> &'static str {
    match phase {
        BatchPhase::Ended(EndKind::Completed) => "completed",
        BatchPhase::Ended(EndKind::Failed) => "failed",
        BatchPhase::Ended(EndKind::Expired) => "expired",
        BatchPhase::Ended(EndKind::Cancelled) => "cancelled",
        BatchPhase::Queued => "queued",
        BatchPhase::Running => "running",
        BatchPhase::Finalizing => "finalizing",
        BatchPhase::Cancelling => "cancelling",
    }
}

/// The outcomes of a batch that failed as a whole: lines the provider named are
/// permanent, the others wait for the next round without them. A batch-wide error
/// other than the enqueued-token limit would repeat, so it is permanent for all.
fn rejected(chunk: &[BatchItem], status: &BatchStatus) -> Vec<(String, ItemOutcome)> {
    let ids: Vec<String> = chunk.iter().map(|i| i.custom_id.clone()).collect();
    let (mut outcomes, whole) = line_errors_to_ids(&ids, &status.errors);
    let rest = match whole.first() {
        _ if status.token_limit_exceeded() => ItemOutcome::Retryable(
            "the provider's enqueued-token limit was reached even for this request alone".into(),
        ),
        Some(error) => ItemOutcome::Permanent(format!(
            "the provider rejected the batch: {}: {}",
            error.code, error.message
        )),
        _ => ItemOutcome::Retryable(format!(
            "the batch failed ({}) because of other requests in it",
            status.raw_state
        )),
    };
    let named: HashSet<String> = outcomes.iter().map(|(id, _)| id.clone()).collect();
    outcomes.extend(
        ids.into_iter()
            .filter(|id| !named.contains(id))
            .map(|id| (id, rest.clone())),
    );
    outcomes
}

/// Polls until the batch ends, spacing polls by the settings and starting over when
/// the phase changes; each poll updates the progress view. A 404 before
/// `visible_by`, or a poll that failed for a reason that passes, is polled again.
async fn wait_for_end(
    ctx: &Ctx,
    backend: &dyn BatchBackend,
    batch: &RemoteBatch,
    visible_by: Instant,
) -> Result<BatchStatus, BatchError> {
    let mut attempt = 0;
    let mut phase: Option<BatchPhase> = None;
    loop {
        match backend.poll(batch).await {
            Ok(status) => {
                show(ctx, batch, &status);
                if status.phase.is_ended() {
                    return Ok(status);
                }
                if phase != Some(status.phase) {
                    attempt = 0;
                    phase = Some(status.phase);
                }
            }
            Err(BatchError::NotYetVisible { .. }) if Instant::now() < visible_by => {}
            Err(BatchError::Provider(e)) if e.is_retryable() => {
                tracing::warn!(batch = %batch.id, error = %e, "poll failed; polling again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(ctx.settings.poll_wait(attempt, jitter(&batch.id, attempt))).await;
        attempt = attempt.saturating_add(1);
    }
}

/// Puts a poll's news in the progress view.
fn show(ctx: &Ctx, batch: &RemoteBatch, status: &BatchStatus) {
    if let Some(open) = ctx.state().open.get_mut(&batch.id) {
        open.view.raw_state.clone_from(&status.raw_state);
        open.view.phase = status.phase;
        open.view.counts = status.counts;
    }
}

/// What a batch that could not be created means for each of its requests.
fn batch_outcome(error: &BatchError) -> ItemOutcome {
    match error {
        BatchError::Provider(e) => ItemOutcome::from_error(e),
        BatchError::Invalid(_) => ItemOutcome::Permanent(error.to_string()),
        _ => ItemOutcome::Retryable(error.to_string()),
    }
}

/// A draw in `[0, 1)` for poll `attempt` of batch `id`: different batches (and runs)
/// spread their polls instead of hitting the provider in step, and no random source
/// is needed for it.
fn jitter(id: &str, attempt: u32) -> f64 {
    let hash = afterimage_core::fnv1a(format!("{id}/{attempt}").as_bytes());
    (hash >> 11) as f64 / (1u64 << 53) as f64
}
