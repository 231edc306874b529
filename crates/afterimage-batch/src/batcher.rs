//! The batcher: one task that gathers parked requests into rounds, submits each round
//! as provider batches (or through the synchronous model when it is small), polls,
//! applies the results and answers the waiting dialogs.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, atomic::AtomicUsize, atomic::Ordering};

use afterimage_core::{ChatModel, ProviderError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::batching_model::{Live, Msg, Parked, Shared};
use crate::{
    BatchBackend, BatchError, BatchItem, BatchPhase, BatchSettings, BatchStatus, EndKind,
    ItemOutcome, Tail, line_errors_to_ids, split,
};

/// What the batcher did, for the run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rounds formed (batch and synchronous).
    pub rounds: u64,
    /// Provider batches created.
    pub batches_submitted: u64,
    /// Requests sent in batches (each submission counts, a batch refused for the
    /// enqueued-token limit included).
    pub requests_submitted: u64,
    /// Requests sent through the synchronous model (each attempt counts).
    pub sync_requests: u64,
    /// Submissions per request key (`{run}-{dialog}-{step}{role}`, attempts together).
    pub submissions: BTreeMap<String, u32>,
    /// Requests put back for another round (retryable or missing).
    pub retried: u64,
    /// Requests that failed for good: permanent outcomes and spent attempts.
    pub permanent_failures: u64,
}

/// A handle on the batcher's task: hands out [`Live`] guards (and through them the
/// [`BatchingChatModel`](crate::BatchingChatModel)s) and reads the counters. The task
/// ends once every handle, guard and model is dropped and its last round is answered.
///
/// Take the guards of all dialogs started together before any of them runs (and a new
/// dialog's guard before the one it replaces is dropped): the first dialog to park
/// among fewer guards would otherwise go in a round of its own.
///
/// ```no_run
/// use std::sync::Arc;
/// use afterimage_batch::{BatchSettings, Batcher, OpenAiBatch, RequestRole};
/// use afterimage_core::{ApiKey, ChatModel, ChatRequest, Message};
/// use afterimage_providers::OpenAiCompatible;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = || OpenAiCompatible::openai().api_key(ApiKey::new("sk-...")).model("gpt-4o-mini").build();
/// let backend = Arc::new(OpenAiBatch::new(client()?));
/// let batcher = Batcher::start("r1", "gpt-4o-mini", backend, Some(Arc::new(client()?)), BatchSettings::default());
/// let guards: Vec<_> = (0..100).map(|d| batcher.live(d)).collect();
/// let mut dialogs = tokio::task::JoinSet::new();
/// for live in guards {
///     dialogs.spawn(async move {
///         let model = live.model(RequestRole::Assistant);
///         model.chat(ChatRequest::new(vec![Message::user("Hi")])).await
///     });
/// }
/// while let Some(answer) = dialogs.join_next().await {
///     println!("{}", answer??.message.content);
/// }
/// println!("{} rounds", batcher.report().rounds);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Msg>,
    report: Arc<Mutex<BatchReport>>,
}

impl Batcher {
    /// Starts the batcher's task on the current tokio runtime. `run` prefixes every
    /// request id (kept to its first 8 characters of `[A-Za-z0-9]`, so ids stay
    /// within Anthropic's pattern); `model` names the model for requests that name
    /// none; `sync` answers small rounds when `settings.tail` is [`Tail::Sync`]
    /// (without it every round is a batch).
    pub fn start(
        run: &str,
        model: impl Into<String>,
        backend: Arc<dyn BatchBackend>,
        sync: Option<Arc<dyn ChatModel>>,
        settings: BatchSettings,
    ) -> Batcher {
        let run: String = run
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let shared = Arc::new(Shared {
            run: if run.is_empty() { "run".into() } else { run },
            model: model.into(),
            live: AtomicUsize::new(0),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let report = Arc::new(Mutex::new(BatchReport::default()));
        let task = Task {
            shared: Arc::clone(&shared),
            backend,
            sync,
            settings,
            rx,
            report: Arc::clone(&report),
        };
        tokio::spawn(task.run());
        Batcher { shared, tx, report }
    }

    /// A guard for dialog number `dialog`, counted live until dropped.
    pub fn live(&self, dialog: u64) -> Live {
        Live::new(Arc::clone(&self.shared), self.tx.clone(), dialog)
    }

    /// The counters so far.
    pub fn report(&self) -> BatchReport {
        lock(&self.report).clone()
    }
}

fn lock(report: &Mutex<BatchReport>) -> std::sync::MutexGuard<'_, BatchReport> {
    report.lock().unwrap_or_else(|e| e.into_inner())
}

struct Task {
    shared: Arc<Shared>,
    backend: Arc<dyn BatchBackend>,
    sync: Option<Arc<dyn ChatModel>>,
    settings: BatchSettings,
    rx: mpsc::UnboundedReceiver<Msg>,
    report: Arc<Mutex<BatchReport>>,
}

impl Task {
    async fn run(mut self) {
        let mut pending: Vec<Parked> = Vec::new();
        loop {
            let open = self.gather(&mut pending).await;
            if !pending.is_empty() {
                let round = std::mem::take(&mut pending);
                pending = self.run_round(round).await;
            }
            if !open && pending.is_empty() {
                return;
            }
        }
    }

    /// Adds arrivals to `pending` until a round should go; false once every sender
    /// is gone.
    async fn gather(&mut self, pending: &mut Vec<Parked>) -> bool {
        let mut last_arrival = Instant::now();
        let max = self.backend.limits().max_requests.max(1);
        loop {
            let live = self.shared.live.load(Ordering::SeqCst);
            let all_parked = live > 0 && pending.len() >= live;
            if !pending.is_empty() && (all_parked || pending.len() >= max) {
                return true;
            }
            let msg = if pending.is_empty() {
                self.rx.recv().await
            } else {
                let deadline = last_arrival + self.settings.linger;
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(msg) => msg,
                    Err(_) => return true,
                }
            };
            match msg {
                Some(Msg::Park(parked)) => {
                    pending.push(*parked);
                    last_arrival = Instant::now();
                }
                Some(Msg::Wake) => {}
                None => return false,
            }
        }
    }

    /// Answers one round; returns the requests to try again in the next.
    async fn run_round(&mut self, round: Vec<Parked>) -> Vec<Parked> {
        let round_no = {
            let mut report = lock(&self.report);
            report.rounds += 1;
            for p in &round {
                *report.submissions.entry(p.key.clone()).or_default() += 1;
            }
            report.rounds
        };
        let small = round.len() < self.settings.min_requests;
        let outcomes = match (&self.sync, self.settings.tail) {
            (Some(sync), Tail::Sync) if small => {
                lock(&self.report).sync_requests += round.len() as u64;
                run_sync(Arc::clone(sync), &round).await
            }
            _ => self.run_batches(round_no, &round).await,
        };
        self.apply(round, outcomes)
    }

    /// Submits the round as batches, at most `max_open_batches` at a time. A batch
    /// refused for the provider's enqueued-token limit is halved and sent again once
    /// the batches beside it have finished, without spending an attempt.
    async fn run_batches(&self, round_no: u64, round: &[Parked]) -> HashMap<String, ItemOutcome> {
        let (chunks, mut outcomes) = self.chunks(round);
        let mut queue: VecDeque<Vec<BatchItem>> = chunks.into();
        let mut n = 0;
        while !queue.is_empty() {
            let mut open = JoinSet::new();
            let take = self.settings.max_open_batches.max(1).min(queue.len());
            for chunk in queue.drain(..take) {
                let key = format!("{}-round{round_no}-{n}", self.shared.run);
                n += 1;
                let backend = Arc::clone(&self.backend);
                let settings = self.settings.clone();
                let report = Arc::clone(&self.report);
                open.spawn(
                    async move { run_batch(&*backend, &key, chunk, &settings, &report).await },
                );
            }
            while let Some(done) = open.join_next().await {
                match done {
                    Ok(Run::Done(results)) => outcomes.extend(results),
                    Ok(Run::TokenLimit(mut chunk)) => {
                        let half = chunk.split_off(chunk.len() / 2);
                        queue.extend([chunk, half]);
                    }
                    Err(_) => {}
                }
            }
        }
        outcomes
    }

    /// The round cut into batches, and the outcomes of requests no batch can take: one
    /// the backend cannot serialize or larger than a whole batch fails alone rather
    /// than taking the round down with it.
    fn chunks(&self, round: &[Parked]) -> (Vec<Vec<BatchItem>>, HashMap<String, ItemOutcome>) {
        let backend = &self.backend;
        let limits = backend.limits();
        let mut refused = HashMap::new();
        let mut items = Vec::with_capacity(round.len());
        for p in round {
            let model = p.request.model.clone();
            let model = model.unwrap_or_else(|| self.shared.model.clone());
            let item = BatchItem::new(p.custom_id(), model, p.request.clone());
            match backend.line_bytes(&item) {
                Ok(bytes) if bytes < limits.max_bytes => items.push(item),
                Ok(bytes) => {
                    let message = format!(
                        "request {} is {bytes} bytes serialized, over the provider's {} bytes per batch; shorten the conversation or use the synchronous API",
                        p.key, limits.max_bytes
                    );
                    refused.insert(item.custom_id, ItemOutcome::Permanent(message));
                }
                Err(e) => {
                    refused.insert(item.custom_id, ItemOutcome::Permanent(e.to_string()));
                }
            }
        }
        match split(items, &limits, |i| backend.line_bytes(i)) {
            Ok(chunks) => (chunks, refused),
            Err(e) => {
                let outcome = ItemOutcome::Permanent(e.to_string());
                let all = round.iter().map(|p| (p.custom_id(), outcome.clone()));
                (Vec::new(), all.collect())
            }
        }
    }

    /// Answers each request of the round from `outcomes`; returns those to retry.
    fn apply(&self, round: Vec<Parked>, mut outcomes: HashMap<String, ItemOutcome>) -> Vec<Parked> {
        let mut again = Vec::new();
        let mut report = lock(&self.report);
        for mut parked in round {
            let outcome = outcomes.remove(&parked.custom_id()).unwrap_or_else(|| {
                ItemOutcome::Retryable("the batch ended without a result for it".into())
            });
            let answer = match outcome {
                ItemOutcome::Ok(response) => Ok(*response),
                // No credit or a refused key: fatal, so the engine stops the run.
                ItemOutcome::Fatal(error) => Err(error),
                ItemOutcome::Permanent(message) => {
                    report.permanent_failures += 1;
                    Err(ProviderError::BadRequest {
                        status: 400,
                        message,
                    })
                }
                ItemOutcome::Retryable(_)
                    if parked.attempt < self.settings.max_request_attempts =>
                {
                    report.retried += 1;
                    parked.attempt += 1;
                    again.push(parked);
                    continue;
                }
                ItemOutcome::Retryable(cause) => {
                    report.permanent_failures += 1;
                    Err(spent(&parked, &cause))
                }
            };
            // A dialog that gave up no longer waits; nothing to tell it.
            let _ = parked.reply.send(answer);
        }
        again
    }
}

fn spent(parked: &Parked, cause: &str) -> ProviderError {
    ProviderError::Other {
        message: format!(
            "request {} failed in all {} batch attempts, last: {cause} (raise max_request_attempts or run it synchronously)",
            parked.key, parked.attempt
        ),
        retryable: false,
    }
}

/// Sends each request of a small round through the synchronous model, all at once.
async fn run_sync(sync: Arc<dyn ChatModel>, round: &[Parked]) -> HashMap<String, ItemOutcome> {
    let mut calls = JoinSet::new();
    for parked in round {
        let (id, request, sync) = (
            parked.custom_id(),
            parked.request.clone(),
            Arc::clone(&sync),
        );
        calls.spawn(async move {
            let outcome = match sync.chat(request).await {
                Ok(response) => ItemOutcome::Ok(Box::new(response)),
                Err(e) => ItemOutcome::from_error(&e),
            };
            (id, outcome)
        });
    }
    let mut outcomes = HashMap::new();
    while let Some(done) = calls.join_next().await {
        if let Ok((id, outcome)) = done {
            outcomes.insert(id, outcome);
        }
    }
    outcomes
}

/// Submits one batch, polls it to its end and reads its results; a failure of the
/// whole batch becomes every item's outcome.
async fn run_batch(
    backend: &dyn BatchBackend,
    key: &str,
    chunk: Vec<BatchItem>,
    settings: &BatchSettings,
    report: &Mutex<BatchReport>,
) -> Run {
    let all = |outcome: ItemOutcome| -> Run {
        Run::Done(
            chunk
                .iter()
                .map(|i| (i.custom_id.clone(), outcome.clone()))
                .collect(),
        )
    };
    let batch = match backend.submit(key, &chunk).await {
        Ok(batch) => batch,
        Err(BatchError::TokenLimitExceeded { .. }) if chunk.len() > 1 => {
            return Run::TokenLimit(chunk);
        }
        Err(e) => return all(batch_outcome(&e)),
    };
    {
        let mut report = lock(report);
        report.batches_submitted += 1;
        report.requests_submitted += chunk.len() as u64;
    }
    let status = match wait_for_end(backend, &batch, settings).await {
        Ok(status) => status,
        Err(e) => return all(ItemOutcome::Retryable(e.to_string())),
    };
    if status.token_limit_exceeded() && chunk.len() > 1 {
        return Run::TokenLimit(chunk);
    }
    if status.phase == BatchPhase::Ended(EndKind::Failed) {
        return Run::Done(rejected(&chunk, &status));
    }
    let parsed = match backend.fetch_results(&batch).await {
        Ok(raw) => backend.parse_results(&raw, &chunk),
        Err(e) => Err(e),
    };
    parsed.map_or_else(|e| all(ItemOutcome::Retryable(e.to_string())), Run::Done)
}

/// How one batch went.
enum Run {
    /// Its requests' outcomes.
    Done(Vec<(String, ItemOutcome)>),
    /// Refused for the enqueued-token limit: to be sent again in halves.
    TokenLimit(Vec<BatchItem>),
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

/// Polls until the batch ends, spacing polls by `settings` and starting over when
/// the phase changes. A batch not yet visible, or a poll that failed for a reason
/// that passes, is polled again.
async fn wait_for_end(
    backend: &dyn BatchBackend,
    batch: &crate::RemoteBatch,
    settings: &BatchSettings,
) -> Result<BatchStatus, BatchError> {
    let mut attempt = 0;
    let mut phase: Option<BatchPhase> = None;
    loop {
        match backend.poll(batch).await {
            Ok(status) if status.phase.is_ended() => return Ok(status),
            Ok(status) => {
                if phase != Some(status.phase) {
                    attempt = 0;
                    phase = Some(status.phase);
                }
            }
            Err(BatchError::NotYetVisible { .. }) => {}
            Err(BatchError::Provider(e)) if e.is_retryable() => {
                tracing::warn!(batch = %batch.id, error = %e, "poll failed; polling again");
            }
            Err(e) => return Err(e),
        }
        tokio::time::sleep(settings.poll_wait(attempt)).await;
        attempt = attempt.saturating_add(1);
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
