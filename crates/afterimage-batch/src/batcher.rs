//! The batcher: one task that gathers parked requests into rounds, submits each round
//! as provider batches (or through the synchronous model when it is small), polls,
//! applies the results and answers the waiting dialogs; with a [`Journal`], it
//! records every step and resumes a crashed run without submitting an id twice.
//!
//! This file is the handle; `gather.rs` collects a round, `round.rs` sends and
//! answers it, `batch.rs` runs one batch from intent to applied, `resume.rs` reads
//! the journal back at start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use afterimage_core::{ChatModel, LiveDialogs, LiveGuard};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::batching_model::{Live, Msg, Shared};
use crate::{
    BatchBackend, BatchCounts, BatchPhase, BatchSettings, BatchingChatModel, Journal, RemoteBatch,
    RequestRole,
};

mod batch;
mod gather;
mod resume;
mod round;

/// What the batcher did, for the run's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchReport {
    /// Rounds formed (batch and synchronous) by this process.
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
    /// Requests answered from the journal, without an API call.
    pub replayed: u64,
    /// Batches an earlier process created and this one found again: re-attached
    /// open batches, and creates that returned but were never journalled.
    pub adopted: u64,
}

/// A provider batch in flight, as [`Batcher::progress`] and [`Batcher::shutdown`]
/// show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenBatch {
    /// The provider's batch id.
    pub id: String,
    /// The local key it was created with.
    pub local_key: String,
    /// The fingerprint of the key that created it (only it can read or cancel it).
    pub backend: String,
    /// The provider's own state at the last poll (empty before the first).
    pub raw_state: String,
    /// Its phase at the last poll.
    pub phase: BatchPhase,
    /// Counts at the last poll, when the provider gives them (Anthropic's appear
    /// when the batch ends).
    pub counts: Option<BatchCounts>,
    /// Requests in it.
    pub requests: usize,
}

/// A snapshot of the batcher for progress lines.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchProgress {
    /// The run's current round (counting rounds of earlier processes of the run).
    pub round: u64,
    /// Requests parked and not yet answered.
    pub waiting: usize,
    /// Batches in flight.
    pub open: Vec<OpenBatch>,
}

/// Called with a round's request count before the round is submitted as batches; an
/// `Err` fails every request of the round with its message (not retryable). The CLI
/// checks the budget with it.
pub type RoundGate = Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync>;

/// One provider endpoint a [`Batcher`] submits to: its batch API, one backend per
/// key of the pool. A batcher has one or more (the run's main model, a judge on
/// another provider or base URL); each request goes to its model's endpoint, and
/// one endpoint serves any number of models (split() keeps one model per batch
/// where the provider needs it).
#[derive(Clone)]
pub struct BatchEndpoint {
    /// A name that stays the same across the run's processes (`""` for the main
    /// endpoint, `judge` for the judge's own): the journal pins each batch with
    /// [`pin_name()`] of it and the key, so a resume finds the backend that created it.
    pub name: String,
    /// The provider's batch API, one per key (new batches rotate between them).
    pub backends: Vec<Arc<dyn BatchBackend>>,
}

impl BatchEndpoint {
    /// An endpoint named `name` over `backends`.
    pub fn new(name: impl Into<String>, backends: Vec<Arc<dyn BatchBackend>>) -> Self {
        BatchEndpoint {
            name: name.into(),
            backends,
        }
    }

    /// What the journal pins a batch of `backend` (one of this endpoint's) with.
    pub fn pin(&self, backend: &dyn BatchBackend) -> String {
        pin_name(&self.name, &backend.key_fingerprint())
    }
}

impl std::fmt::Debug for BatchEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchEndpoint")
            .field("name", &self.name)
            .field("backends", &self.backends.len())
            .finish()
    }
}

/// The name a journal pins a batch with: the key's fingerprint on the main endpoint
/// (named `""`, as journals of a single endpoint always did), `fingerprint@endpoint`
/// on the others, so one key (or none, on a local server) used by two endpoints
/// still names one backend.
///
/// ```
/// assert_eq!(afterimage_batch::pin_name("", "k1a2b3c4d"), "k1a2b3c4d");
/// assert_eq!(afterimage_batch::pin_name("judge", "none"), "none@judge");
/// ```
pub fn pin_name(endpoint: &str, fingerprint: &str) -> String {
    if endpoint.is_empty() {
        fingerprint.to_owned()
    } else {
        format!("{fingerprint}@{endpoint}")
    }
}

/// A handle on the batcher's task: hands out the [`BatchingChatModel`]s, counts live
/// dialogs ([`LiveDialogs`]), reads progress and counters, and stops the task. The
/// task ends once every handle, guard and model is dropped and its last round is
/// answered, or at [`shutdown`](Self::shutdown).
///
/// Run each dialog inside [`in_dialog()`](afterimage_core::in_dialog) and
/// [`enter`](LiveDialogs::enter) all dialogs started together before any of them
/// runs (and a new dialog before the one it replaces drops its guard): the first
/// dialog to park among fewer guards would otherwise go in a round of its own.
///
/// ```no_run
/// use std::sync::Arc;
/// use afterimage_batch::{BatchSettings, Batcher, Journal, OpenAiBatch, RequestRole};
/// use afterimage_core::{ApiKey, ChatModel, ChatRequest, LiveDialogs, Message, in_dialog};
/// use afterimage_providers::OpenAiCompatible;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let client = || OpenAiCompatible::openai().api_key(ApiKey::new("sk-...")).model("gpt-4o-mini").build();
/// let backend = Arc::new(OpenAiBatch::new(client()?));
/// let journal = Journal::open("out/batch".as_ref(), "r1")?;
/// let batcher = Batcher::start("r1", "gpt-4o-mini", vec![backend], Some(Arc::new(client()?)), BatchSettings::default(), Some(journal));
/// let model = batcher.model(RequestRole::Assistant);
/// let guards: Vec<_> = (0..100).map(|d| batcher.enter(d)).collect();
/// let mut dialogs = tokio::task::JoinSet::new();
/// for (d, guard) in (0..100).zip(guards) {
///     let model = Arc::clone(&model);
///     dialogs.spawn(in_dialog(d, async move {
///         let answer = model.chat(ChatRequest::new(vec![Message::user("Hi")])).await;
///         drop(guard);
///         answer
///     }));
/// }
/// while let Some(answer) = dialogs.join_next().await {
///     println!("{}", answer??.message.content);
/// }
/// println!("{} rounds", batcher.report().rounds);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    tx: mpsc::UnboundedSender<Msg>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher")
            .field("run", &self.shared.run)
            .field("model", &self.shared.model)
            .finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the batcher's task on the current tokio runtime. `run` prefixes every
    /// request id (kept to its first 8 characters of `[A-Za-z0-9]`, so ids stay
    /// within Anthropic's pattern); `model` names the model for requests that name
    /// none; `backends` are the provider's batch API, one per key of the pool (new
    /// batches rotate between them; a batch stays with the key that created it);
    /// `sync` answers small rounds when `settings.tail` is [`Tail::Sync`](crate::Tail)
    /// (without it every round is a batch) and calls made outside any dialog. With a
    /// `journal` every step is recorded, and a journal with content is resumed
    /// first: open batches re-attached, answered requests replayed.
    pub fn start(
        run: &str,
        model: impl Into<String>,
        backends: Vec<Arc<dyn BatchBackend>>,
        sync: Option<Arc<dyn ChatModel>>,
        settings: BatchSettings,
        journal: Option<Journal>,
    ) -> Batcher {
        let endpoints = vec![BatchEndpoint::new("", backends)];
        Batcher::start_with(run, model, endpoints, sync, settings, journal)
    }

    /// [`start`](Self::start) over several endpoints (each with its own name; the
    /// first is the one [`model`](Self::model) uses, `model` and `sync` its
    /// defaults). One task, one journal and one round for them all: a round goes
    /// when every live dialog is parked, whichever endpoint its request waits on,
    /// and is then cut into batches per endpoint and model. Models on the other
    /// endpoints come from [`model_on`](Self::model_on).
    pub fn start_with(
        run: &str,
        model: impl Into<String>,
        endpoints: Vec<BatchEndpoint>,
        sync: Option<Arc<dyn ChatModel>>,
        settings: BatchSettings,
        journal: Option<Journal>,
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
        let ctx = Arc::new(Ctx {
            run: shared.run.clone(),
            endpoints: endpoints
                .into_iter()
                .map(|endpoint| Endpoint {
                    endpoint,
                    next_backend: AtomicUsize::new(0),
                })
                .collect(),
            sync,
            settings,
            journal,
            state: Mutex::new(State::default()),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let task = round::Task::new(Arc::clone(&ctx), Arc::clone(&shared), rx);
        let handle = tokio::spawn(task.run());
        Batcher {
            shared,
            ctx,
            tx,
            task: Arc::new(Mutex::new(Some(handle))),
        }
    }

    /// The model `role` calls: inside a dialog each call is a request of the next
    /// round; outside any dialog it goes to the synchronous model.
    pub fn model(&self, role: RequestRole) -> Arc<dyn ChatModel> {
        Arc::new(BatchingChatModel::new(
            Arc::clone(&self.shared),
            self.tx.clone(),
            role,
            self.ctx.sync.clone(),
        ))
    }

    /// The model `role` calls on the endpoint named `endpoint`, asking for `model`
    /// (the batch lines' model, its `model_id`, so the ledger names it), with `sync`
    /// answering its small rounds and its calls outside any dialog. `None` when no
    /// endpoint has that name.
    pub fn model_on(
        &self,
        endpoint: &str,
        model: impl Into<String>,
        role: RequestRole,
        sync: Option<Arc<dyn ChatModel>>,
    ) -> Option<Arc<dyn ChatModel>> {
        let index = self
            .ctx
            .endpoints
            .iter()
            .position(|e| e.endpoint.name == endpoint)?;
        let mut batching =
            BatchingChatModel::new(Arc::clone(&self.shared), self.tx.clone(), role, sync);
        batching.endpoint = index;
        batching.model = model.into();
        Some(Arc::new(batching))
    }

    /// The counters so far.
    pub fn report(&self) -> BatchReport {
        self.ctx.state().report.clone()
    }

    /// Where the batcher is: the round, the requests waiting, the batches in flight.
    pub fn progress(&self) -> BatchProgress {
        let state = self.ctx.state();
        BatchProgress {
            round: state.round,
            waiting: state.waiting,
            open: state.open.values().map(|o| o.view.clone()).collect(),
        }
    }

    /// Sets the check made before each batch round (see [`RoundGate`]).
    pub fn set_round_gate(&self, gate: RoundGate) {
        self.ctx.state().gate = Some(gate);
    }

    /// Stops submitting and polling, and with `cancel` asks the provider to cancel
    /// every open batch (the journal keeps them: a resume re-requests what the
    /// cancel cut off). Returns the batches open at the stop, for the CLI to print;
    /// those whose cancel the provider accepted are in [`BatchPhase::Cancelling`].
    /// Requests still waiting fail with a "batcher stopped" error.
    pub async fn shutdown(&self, cancel: bool) -> Vec<OpenBatch> {
        let handle = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle {
            handle.abort();
            // An aborted task ends at its next await; a journal write is never cut.
            let _ = handle.await;
        }
        let open: Vec<Open> = self.ctx.state().open.values().cloned().collect();
        let mut left = Vec::with_capacity(open.len());
        for mut batch in open {
            if cancel && self.ctx.cancel(&batch).await {
                batch.view.phase = BatchPhase::Cancelling;
            }
            left.push(batch.view);
        }
        left
    }
}

impl LiveDialogs for Batcher {
    fn enter(&self, _dialog: u64) -> LiveGuard {
        LiveGuard::new(Live::new(Arc::clone(&self.shared), self.tx.clone()))
    }
}

/// What the task, its batches and the handles share.
pub(crate) struct Ctx {
    pub(crate) run: String,
    pub(crate) endpoints: Vec<Endpoint>,
    /// The synchronous model of [`Batcher::model`]'s models.
    pub(crate) sync: Option<Arc<dyn ChatModel>>,
    pub(crate) settings: BatchSettings,
    pub(crate) journal: Option<Journal>,
    state: Mutex<State>,
}

/// An endpoint and where its key rotation stands.
pub(crate) struct Endpoint {
    pub(crate) endpoint: BatchEndpoint,
    next_backend: AtomicUsize,
}

/// What changes as the task runs, read by the handles.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) report: BatchReport,
    pub(crate) round: u64,
    pub(crate) waiting: usize,
    pub(crate) open: BTreeMap<String, Open>,
    pub(crate) gate: Option<RoundGate>,
}

/// A batch in flight and what it takes to cancel it.
#[derive(Debug, Clone)]
pub(crate) struct Open {
    pub(crate) view: OpenBatch,
    pub(crate) remote: RemoteBatch,
}

impl Ctx {
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend for endpoint `index`'s next new batch (its pool's keys in turn),
    /// with the name the journal pins the batch with.
    pub(crate) fn next_backend(&self, index: usize) -> Option<(Arc<dyn BatchBackend>, String)> {
        let endpoint = self.endpoints.get(index)?;
        let n = endpoint.next_backend.fetch_add(1, Ordering::Relaxed);
        let backends = &endpoint.endpoint.backends;
        let backend = backends.get(n % backends.len().max(1))?;
        Some((Arc::clone(backend), endpoint.endpoint.pin(&**backend)))
    }

    /// The first backend of endpoint `index`: whose limits cut its batches.
    pub(crate) fn first_backend(&self, index: usize) -> Option<Arc<dyn BatchBackend>> {
        let endpoint = self.endpoints.get(index)?;
        endpoint.endpoint.backends.first().cloned()
    }

    /// The most requests a round may hold: the smallest batch any endpoint takes.
    pub(crate) fn max_requests(&self) -> usize {
        (0..self.endpoints.len())
            .filter_map(|i| self.first_backend(i))
            .map(|b| b.limits().max_requests.max(1))
            .min()
            .unwrap_or(usize::MAX)
    }

    /// The backend a batch was pinned to ([`pin_name()`] of its endpoint and key).
    pub(crate) fn pinned(&self, pin: &str) -> Option<Arc<dyn BatchBackend>> {
        self.endpoints.iter().find_map(|e| {
            let endpoint = &e.endpoint;
            endpoint
                .backends
                .iter()
                .find(|b| endpoint.pin(&***b) == pin)
                .cloned()
        })
    }

    /// Asks the batch's own key to cancel it; whether the provider took the cancel.
    async fn cancel(&self, batch: &Open) -> bool {
        let Some(backend) = self.pinned(&batch.view.backend) else {
            tracing::warn!(batch = %batch.view.id, key = %batch.view.backend, "cannot cancel: its key is not configured");
            return false;
        };
        match backend.cancel(&batch.remote).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(batch = %batch.view.id, error = %e, "cancel failed");
                false
            }
        }
    }
}
