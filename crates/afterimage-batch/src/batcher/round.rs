//! Rounds: gathering parked requests until every live dialog waits, numbering their
//! attempts, sending the round as batches or synchronously, and answering each
//! waiter or putting it back for the next round.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use afterimage_core::{ChatModel, ChatResponse, ProviderError};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::batch::{self, Run};
use super::resume::Reattached;
use super::{Ctx, State};
use crate::batching_model::{Msg, Parked, Shared};
use crate::journal::{JournalRecord, StoredOutcome, request_hash};
use crate::{BatchItem, ItemOutcome, Tail, split};

/// A batch's worth of items and the endpoint (its index) they go to.
type EndpointChunk = (usize, Vec<BatchItem>);

/// The batcher's task.
pub(crate) struct Task {
    pub(super) ctx: Arc<Ctx>,
    pub(super) shared: Arc<Shared>,
    pub(super) rx: mpsc::UnboundedReceiver<Msg>,
    /// Every sender is gone: nothing more will be parked.
    pub(super) rx_closed: bool,
    /// Request key → the highest attempt ever numbered (journal included), so no id
    /// is used twice.
    pub(super) highest: HashMap<String, u32>,
    /// Request id → its journalled answer, from earlier processes of the run.
    pub(super) cache: HashMap<String, (String, StoredOutcome)>,
    /// Batches of earlier processes being re-attached, each answering its ids.
    pub(super) reattaching: JoinSet<Reattached>,
    /// Ids in those batches: a request whose latest attempt is one waits for it.
    pub(super) in_flight: HashSet<String>,
    /// Requests waiting for a re-attached batch.
    pub(super) held: Vec<Parked>,
    /// Rounds of earlier processes, so local keys stay unique across resumes.
    pub(super) round_offset: u64,
    /// Why requests cannot be sent at all (a journal that cannot be read).
    pub(super) broken: Option<String>,
    /// The first fatal outcome (no credit, a refused key): every request after it
    /// fails with it, and no further batch is submitted.
    pub(super) fatal: Option<ProviderError>,
}

impl Task {
    pub(crate) fn new(
        ctx: Arc<Ctx>,
        shared: Arc<Shared>,
        rx: mpsc::UnboundedReceiver<Msg>,
    ) -> Self {
        Task {
            ctx,
            shared,
            rx,
            rx_closed: false,
            highest: HashMap::new(),
            cache: HashMap::new(),
            reattaching: JoinSet::new(),
            in_flight: HashSet::new(),
            held: Vec::new(),
            round_offset: 0,
            broken: None,
            fatal: None,
        }
    }

    pub(crate) async fn run(mut self) {
        self.resume();
        let mut pending: Vec<Parked> = Vec::new();
        loop {
            self.gather(&mut pending).await;
            if pending.is_empty() {
                // Gathering ends without a round only once nothing can come.
                return;
            }
            let round = std::mem::take(&mut pending);
            pending = self.run_round(round).await;
        }
    }

    /// Answers one round; returns the requests to try again in the next. A small
    /// round goes through each request's synchronous model (those without one go
    /// as batches anyway).
    async fn run_round(&mut self, round: Vec<Parked>) -> Vec<Parked> {
        if let Some(error) = &self.fatal {
            self.fail_all(round, error, true);
            return Vec::new();
        }
        let settings = &self.ctx.settings;
        let small = round.len() < settings.min_requests && settings.tail == Tail::Sync;
        let (mut sync, mut batched): (Vec<Parked>, Vec<Parked>) =
            round.into_iter().partition(|p| small && p.sync.is_some());
        if !batched.is_empty()
            && let Err(message) = self.check_gate(batched.len())
        {
            // A refusal is the gate's stop (the budget), not the requests' failure:
            // nothing of it is sent.
            self.fail_all(std::mem::take(&mut batched), &other(message), false);
        }
        if sync.is_empty() && batched.is_empty() {
            return Vec::new();
        }
        let round_no = self.count_round(sync.iter().chain(&batched));
        self.number(&mut sync);
        self.number(&mut batched);
        if let Err(e) = self.journal_requests(sync.iter().chain(&batched)) {
            let error = other(e.to_string());
            self.fail_all(sync, &error, true);
            self.fail_all(batched, &error, true);
            return Vec::new();
        }
        self.ctx.state().report.sync_requests += sync.len() as u64;
        let ctx = Arc::clone(&self.ctx);
        let (mut outcomes, batch_outcomes) = tokio::join!(
            run_sync(&ctx, &sync),
            self.run_batches(round_no, &mut batched)
        );
        outcomes.extend(batch_outcomes);
        sync.append(&mut batched);
        self.apply(sync, outcomes)
    }

    /// Counts the round and each request's submission; the run's round number.
    fn count_round<'a>(&self, round: impl Iterator<Item = &'a Parked>) -> u64 {
        let mut state = self.ctx.state();
        state.report.rounds += 1;
        for p in round {
            *state.report.submissions.entry(p.key.clone()).or_default() += 1;
        }
        state.round = self.round_offset + state.report.rounds;
        state.round
    }

    /// The round gate's verdict on a batch round of `requests`.
    fn check_gate(&self, requests: usize) -> Result<(), String> {
        let gate = self.ctx.state().gate.clone();
        gate.map_or(Ok(()), |gate| gate(requests))
    }

    /// Gives each request the attempt after the highest its key ever had, so no id
    /// is submitted twice, across retries and resumes.
    fn number(&mut self, round: &mut [Parked]) {
        for parked in round {
            let highest = self.highest.entry(parked.key.clone()).or_default();
            *highest += 1;
            parked.attempt = *highest;
        }
    }

    /// One `request` record per request, on disk before any of them is sent.
    fn journal_requests<'a>(
        &self,
        round: impl Iterator<Item = &'a Parked>,
    ) -> Result<(), crate::BatchError> {
        let Some(journal) = &self.ctx.journal else {
            return Ok(());
        };
        let records: Vec<JournalRecord> = round
            .map(|p| JournalRecord::Request {
                custom_id: p.custom_id(),
                key: p.key.clone(),
                attempt: p.attempt,
                hash: request_hash(&self.ctx.model_of(p), &p.request),
            })
            .collect();
        journal.append(&records)
    }

    /// Fails every request of the round with `error` (counted as failures when
    /// `counted`).
    fn fail_all(&self, round: Vec<Parked>, error: &ProviderError, counted: bool) {
        let mut state = self.ctx.state();
        for parked in round {
            state.waiting = state.waiting.saturating_sub(1);
            if counted {
                state.report.permanent_failures += 1;
            }
            let _ = parked.reply.send(Err(error.clone()));
        }
    }

    /// Submits the round as batches, at most `max_open_batches` at a time. A batch
    /// refused for the provider's enqueued-token limit is halved and sent again once
    /// the batches beside it have finished, without spending an attempt (under new
    /// ids if the provider had created it).
    async fn run_batches(
        &mut self,
        round_no: u64,
        round: &mut [Parked],
    ) -> HashMap<String, ItemOutcome> {
        if round.is_empty() {
            return HashMap::new();
        }
        let (chunks, mut outcomes) = self.chunks(round);
        let mut queue: VecDeque<(usize, Vec<BatchItem>)> = chunks.into();
        // Local keys count across endpoints, so each batch of the round has its own.
        let mut n = 0;
        while !queue.is_empty() {
            if let Some(error) = fatal_in(&outcomes) {
                // No credit or a refused key: the rest of the round would fail alike.
                let items: Vec<BatchItem> = queue.drain(..).flat_map(|(_, c)| c).collect();
                let fatal = |i: BatchItem| (i.custom_id, ItemOutcome::Fatal(error.clone()));
                outcomes.extend(items.into_iter().map(fatal));
                break;
            }
            let mut open = JoinSet::new();
            let take = self.ctx.settings.max_open_batches.max(1).min(queue.len());
            for (endpoint, chunk) in queue.drain(..take) {
                let key = format!("{}-round{round_no}-{n}", self.ctx.run);
                n += 1;
                let ctx = Arc::clone(&self.ctx);
                open.spawn(async move {
                    (
                        endpoint,
                        batch::run(ctx, endpoint, round_no, key, chunk).await,
                    )
                });
            }
            while let Some(done) = open.join_next().await {
                match done {
                    Ok((_, Run::Done(results))) => outcomes.extend(results),
                    Ok((endpoint, Run::TokenLimit { mut chunk, created })) => {
                        if created && let Err(e) = self.renumber(round, &mut chunk) {
                            let outcome = ItemOutcome::Permanent(e.to_string());
                            let ids = chunk.into_iter().map(|i| (i.custom_id, outcome.clone()));
                            outcomes.extend(ids);
                            continue;
                        }
                        let half = chunk.split_off(chunk.len() / 2);
                        queue.extend([(endpoint, chunk), (endpoint, half)]);
                    }
                    Err(_) => {}
                }
            }
        }
        outcomes
    }

    /// Gives the items of a batch the provider created and failed new attempts, so
    /// their ids are never submitted twice; journals them like any round's requests.
    fn renumber(
        &mut self,
        round: &mut [Parked],
        chunk: &mut [BatchItem],
    ) -> Result<(), crate::BatchError> {
        let index: HashMap<String, usize> = round
            .iter()
            .enumerate()
            .map(|(i, p)| (p.custom_id(), i))
            .collect();
        let mut renamed = Vec::with_capacity(chunk.len());
        for item in chunk.iter_mut() {
            let Some(parked) = index.get(&item.custom_id).map(|&i| &mut round[i]) else {
                continue;
            };
            let highest = self.highest.entry(parked.key.clone()).or_default();
            *highest += 1;
            parked.attempt = *highest;
            item.custom_id = parked.custom_id();
            renamed.push(JournalRecord::Request {
                custom_id: item.custom_id.clone(),
                key: parked.key.clone(),
                attempt: parked.attempt,
                hash: request_hash(&item.model, &item.request),
            });
        }
        match &self.ctx.journal {
            Some(journal) => journal.append(&renamed),
            None => Ok(()),
        }
    }

    /// The round cut into batches, each with its endpoint, and the outcomes of
    /// requests no batch can take.
    fn chunks(&self, round: &[Parked]) -> (Vec<EndpointChunk>, HashMap<String, ItemOutcome>) {
        let mut chunks = Vec::new();
        let mut refused = HashMap::new();
        for endpoint in 0..self.ctx.endpoints.len() {
            let part: Vec<&Parked> = round.iter().filter(|p| p.endpoint == endpoint).collect();
            if part.is_empty() {
                continue;
            }
            let (cut, failed) = self.endpoint_chunks(endpoint, &part);
            chunks.extend(cut.into_iter().map(|c| (endpoint, c)));
            refused.extend(failed);
        }
        (chunks, refused)
    }

    /// One endpoint's part of the round cut into batches, and the outcomes of
    /// requests no batch can take: one the backend cannot serialize or larger than a
    /// whole batch fails alone rather than taking the round down with it.
    fn endpoint_chunks(
        &self,
        endpoint: usize,
        round: &[&Parked],
    ) -> (Vec<Vec<BatchItem>>, HashMap<String, ItemOutcome>) {
        let Some(backend) = self.ctx.first_backend(endpoint) else {
            let outcome = ItemOutcome::Permanent(
                "batch mode has no batch backend configured; give the provider a key".into(),
            );
            let all = round.iter().map(|p| (p.custom_id(), outcome.clone()));
            return (Vec::new(), all.collect());
        };
        let limits = backend.limits();
        let mut refused = HashMap::new();
        let mut items = Vec::with_capacity(round.len());
        for p in round {
            let item = BatchItem::new(p.custom_id(), self.ctx.model_of(p), p.request.clone());
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
    /// After a fatal outcome nothing is retried: every request not answered fails
    /// with that error, as will every later one.
    fn apply(
        &mut self,
        round: Vec<Parked>,
        mut outcomes: HashMap<String, ItemOutcome>,
    ) -> Vec<Parked> {
        if self.fatal.is_none() {
            self.fatal = fatal_in(&outcomes);
        }
        let mut again = Vec::new();
        let mut state = self.ctx.state();
        for mut parked in round {
            let outcome = outcomes.remove(&parked.custom_id()).unwrap_or_else(|| {
                ItemOutcome::Retryable("the batch ended without a result for it".into())
            });
            let outcome = match (outcome, &self.fatal) {
                (ItemOutcome::Retryable(_), Some(error)) => ItemOutcome::Fatal(error.clone()),
                (outcome, _) => outcome,
            };
            parked.tries += 1;
            let answer = match outcome {
                ItemOutcome::Ok(response) => Ok(*response),
                // No credit or a refused key: fatal, so the engine stops the run.
                ItemOutcome::Fatal(error) => {
                    state.report.permanent_failures += 1;
                    Err(error)
                }
                ItemOutcome::Permanent(message) => Err(permanent(&mut state, message)),
                ItemOutcome::Retryable(cause)
                    if parked.tries < self.ctx.settings.max_request_attempts =>
                {
                    state.report.retried += 1;
                    parked.last_cause = Some(cause);
                    again.push(parked);
                    continue;
                }
                ItemOutcome::Retryable(cause) => {
                    state.report.permanent_failures += 1;
                    Err(spent(&parked, &cause))
                }
            };
            state.waiting = state.waiting.saturating_sub(1);
            // A dialog that gave up no longer waits; nothing to tell it.
            let _ = parked.reply.send(answer);
        }
        again
    }
}

/// The first fatal outcome among `outcomes`, if any.
fn fatal_in(outcomes: &HashMap<String, ItemOutcome>) -> Option<ProviderError> {
    outcomes.values().find_map(|o| match o {
        ItemOutcome::Fatal(error) => Some(error.clone()),
        _ => None,
    })
}

/// A non-retryable error carrying `message`.
fn other(message: String) -> ProviderError {
    ProviderError::Other {
        message,
        retryable: false,
    }
}

fn permanent(state: &mut State, message: String) -> ProviderError {
    state.report.permanent_failures += 1;
    ProviderError::BadRequest {
        status: 400,
        message,
    }
}

/// The error of a request whose attempts are spent.
pub(super) fn spent(parked: &Parked, cause: &str) -> ProviderError {
    ProviderError::Other {
        message: format!(
            "request {} failed in all {} batch attempts, last: {cause} (raise max_request_attempts or run it synchronously)",
            parked.key, parked.tries
        ),
        retryable: false,
    }
}

impl Ctx {
    /// The model a request goes to: the one it names, or its batching model's.
    pub(super) fn model_of(&self, parked: &Parked) -> String {
        parked
            .request
            .model
            .clone()
            .unwrap_or_else(|| parked.model.clone())
    }
}

/// Sends each request of a small round through its synchronous model, all at once,
/// and journals the answers.
async fn run_sync(ctx: &Ctx, round: &[Parked]) -> HashMap<String, ItemOutcome> {
    let mut calls = JoinSet::new();
    for parked in round {
        let Some(sync) = parked.sync.clone() else {
            continue;
        };
        let (id, request) = (parked.custom_id(), parked.request.clone());
        let hash = request_hash(&ctx.model_of(parked), &request);
        calls.spawn(async move {
            let outcome = match sync.chat(request).await {
                Ok(response) => ItemOutcome::Ok(Box::new(response)),
                Err(e) => ItemOutcome::from_error(&e),
            };
            (id, hash, outcome)
        });
    }
    let mut outcomes = HashMap::new();
    if round.is_empty() {
        return outcomes;
    }
    let mut records = Vec::new();
    while let Some(done) = calls.join_next().await {
        if let Ok((id, hash, outcome)) = done {
            records.push(response_record(&id, hash, &outcome));
            outcomes.insert(id, outcome);
        }
    }
    if let Some(journal) = &ctx.journal
        && let Err(e) = journal.append(&records)
    {
        tracing::warn!(error = %e, "synchronous answers not journalled; a resume asks again");
    }
    outcomes
}

/// The `response` record of one outcome.
pub(super) fn response_record(id: &str, hash: String, outcome: &ItemOutcome) -> JournalRecord {
    JournalRecord::Response {
        custom_id: id.to_owned(),
        hash,
        outcome: StoredOutcome::from(outcome),
    }
}

/// A journalled answer as the dialog receives it, marked replayed: the process that
/// received it paid for it and metered it (its run record's ledger holds it up to its
/// last checkpoint, as for any killed run), so the ledger must not count it again. Its
/// usage stays, for the row of the dialog that replays it.
pub(super) fn replayed(response: crate::journal::StoredResponse) -> ChatResponse {
    let mut response = ChatResponse::from(response);
    response.replayed = true;
    response
}
