//! A run shared by many workers: dialogs come from a [`Slots`] pool instead of the
//! local start order. The scheduler claims slots in small batches, runs each with
//! the unchanged path of one dialog, and stores its row through the pool (the row
//! and the slot's completion are one step, fenced by the claim's attempt). A
//! heartbeat renews the leases; a dialog whose lease was taken over is cancelled,
//! and when the pool cannot be reached for longer than a lease, every dialog in
//! flight is.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afterimage_core::{
    Completion, ConversationRow, PersonaDocument, RunRecord, Slot, Slots, Spent, Storage,
    StorageError, WorkerReport,
};
use async_trait::async_trait;
use tokio::task::{AbortHandle, Id, JoinSet};

use crate::dialog::{DialogFailure, DialogOutcome, RunContext, dialog_seed, run_dialog_seeded};
use crate::run::{Plan, State, Stop};
use crate::{EngineError, GenerateOptions, RunReport, StopHandle};

/// Told the number of live workers at every heartbeat, to share the run's rate limits.
pub type ShareFn = Arc<dyn Fn(u32) + Send + Sync>;

/// Most slots claimed in one statement.
const CLAIM_BATCH: usize = 16;

/// How long a worker with free room waits before claiming less than a full batch.
const CLAIM_EVERY: Duration = Duration::from_millis(25);

/// The longest time between heartbeats, whatever the lease: rate shares follow a
/// joining or leaving worker, and lost dialogs stop, within it.
const MAX_BEAT: Duration = Duration::from_secs(2);

/// The longest wait between claims when the pool had nothing to give.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// What this worker did to the shared run, as plain counters (for metrics:
/// `afterimage_slots_claimed_total`, `afterimage_leases_lost_total`).
#[derive(Debug, Default)]
pub struct FleetCounters {
    /// Slots claimed (each claim is one attempt).
    pub slots_claimed: AtomicU64,
    /// Dialogs cancelled because their lease was taken over or the pool was lost.
    pub leases_lost: AtomicU64,
    /// Completions the pool refused: the lease had been taken over meanwhile.
    pub fenced: AtomicU64,
}

/// Joins a run shared with other workers ([`GenerateOptions::shared`]).
#[derive(Clone)]
pub struct SharedRun {
    pub(crate) slots: Arc<dyn Slots>,
    pub(crate) on_share: Option<ShareFn>,
    pub(crate) counters: Arc<FleetCounters>,
}

impl std::fmt::Debug for SharedRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRun")
            .field("run", &self.slots.run_id())
            .finish_non_exhaustive()
    }
}

impl SharedRun {
    /// Takes dialogs from `slots`.
    pub fn new(slots: Arc<dyn Slots>) -> Self {
        SharedRun {
            slots,
            on_share: None,
            counters: Arc::default(),
        }
    }

    /// Calls `share` with the number of live workers at every heartbeat (to set this
    /// worker's share of the run's rate limits).
    pub fn on_share(mut self, share: ShareFn) -> Self {
        self.on_share = Some(share);
        self
    }

    /// This worker's counters.
    pub fn counters(&self) -> Arc<FleetCounters> {
        Arc::clone(&self.counters)
    }

    /// The pool.
    pub fn slots(&self) -> &Arc<dyn Slots> {
        &self.slots
    }
}

/// The seed of a claim: the local run's seed for the first attempt (so a shared run
/// makes the rows a single process would), a seed of its own for each later one.
pub(crate) fn attempt_seed(run_seed: u64, index: u64, attempt: u32) -> u64 {
    let seed = dialog_seed(run_seed, index);
    if attempt <= 1 {
        seed
    } else {
        dialog_seed(seed, u64::from(attempt))
    }
}

/// Storage for a shared run's dialogs: a row is stored by completing its slot under
/// the attempt this worker claimed; everything else goes to the run's storage.
#[derive(Debug)]
pub(crate) struct FencedStorage {
    inner: Arc<dyn Storage>,
    slots: Arc<dyn Slots>,
    held: Mutex<HashMap<u64, u32>>,
    fenced: Mutex<HashSet<Slot>>,
}

impl FencedStorage {
    pub(crate) fn new(inner: Arc<dyn Storage>, slots: Arc<dyn Slots>) -> Self {
        FencedStorage {
            inner,
            slots,
            held: Mutex::default(),
            fenced: Mutex::default(),
        }
    }

    fn hold(&self, slot: Slot) {
        if let Ok(mut held) = self.held.lock() {
            held.insert(slot.index, slot.attempt);
        }
    }

    fn drop_slot(&self, slot: Slot) -> bool {
        if let Ok(mut held) = self.held.lock()
            && held.get(&slot.index) == Some(&slot.attempt)
        {
            held.remove(&slot.index);
        }
        self.fenced.lock().is_ok_and(|mut f| f.remove(&slot))
    }
}

#[async_trait]
impl Storage for FencedStorage {
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError> {
        let index = row
            .metadata
            .generation
            .as_ref()
            .map(|g| g.index)
            .ok_or_else(|| StorageError::Backend(format!("row {} has no index", row.id)))?;
        let attempt = self.held.lock().ok().and_then(|h| h.get(&index).copied());
        let Some(attempt) = attempt else {
            return Err(StorageError::Backend(format!(
                "row {}: this worker holds no lease on its slot",
                row.id
            )));
        };
        let slot = Slot { index, attempt };
        match self.slots.complete(slot, row).await? {
            Completion::Stored => Ok(()),
            Completion::Fenced => {
                if let Ok(mut fenced) = self.fenced.lock() {
                    fenced.insert(slot);
                }
                Err(StorageError::Backend(format!(
                    "row {}: its lease was taken over by another worker, so it was not stored",
                    row.id
                )))
            }
        }
    }

    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        self.inner.existing_ids().await
    }

    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        self.inner.context_visits().await
    }

    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        self.inner.load_run().await
    }

    async fn save_run(&self, run: &RunRecord) -> Result<(), StorageError> {
        self.inner.save_run(run).await
    }

    async fn save_documents(&self, documents: &[PersonaDocument]) -> Result<(), StorageError> {
        self.inner.save_documents(documents).await
    }

    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        self.inner.load_documents().await
    }

    async fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush().await
    }

    fn location(&self) -> String {
        self.inner.location()
    }
}

/// Joins the shared run: the first worker creates it (record and slots) under the
/// pool's setup lock with `make`, the others read the record it stored.
pub(crate) async fn join_run<F, Fut>(
    slots: &dyn Slots,
    count: u64,
    make: F,
) -> Result<(RunRecord, Spent, bool), EngineError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(RunRecord, Spent), EngineError>>,
{
    let setup =
        |e: StorageError| EngineError::Setup(format!("joining run {}: {e}", slots.run_id()));
    if let Some(record) = slots.begin_setup().await.map_err(setup)? {
        slots.end_setup().await.map_err(setup)?;
        return Ok((record, Spent::default(), false));
    }
    match make().await {
        Ok((record, spent)) => {
            slots.create(&record, count).await.map_err(setup)?;
            Ok((record, spent, true))
        }
        Err(e) => {
            let _ = slots.end_setup().await;
            Err(e)
        }
    }
}

/// Runs this worker's share of the run until no slot is left open, the run is
/// cancelled, or this worker is asked to stop; then hands back what it holds.
pub(crate) async fn execute_shared(
    run: Arc<RunContext>,
    fenced: Arc<FencedStorage>,
    plan: Plan,
    options: &GenerateOptions,
    shared: &SharedRun,
    setup: Spent,
) -> Result<RunReport, EngineError> {
    let mut worker = Worker::new(run, fenced, &plan, options, shared, setup);
    // Report in (and take this worker's share of the rate limits) before the first
    // claim, so the first requests are already paced as a part of the fleet.
    worker.beat.tick().await;
    worker.heartbeat().await;
    loop {
        worker.claim().await;
        if worker.tasks.is_empty() && worker.idle_and_done().await {
            break;
        }
        let wait = worker.wait();
        tokio::select! {
            Some(joined) = worker.tasks.join_next_with_id(), if !worker.tasks.is_empty() => {
                worker.joined(joined).await;
            }
            _ = worker.beat.tick() => worker.heartbeat().await,
            () = grace_over(options), if !worker.tasks.is_empty() => worker.cancel_all(),
            () = tokio::time::sleep(wait) => {}
        }
        worker.check_stop();
        if let Some(report) = &options.on_progress {
            report(&worker.state.progress);
        }
    }
    worker.finish().await
}

/// Resolves when the stop's grace period is over (or a second signal cancels); never
/// without a stop handle.
async fn grace_over(options: &GenerateOptions) {
    match &options.stop {
        Some(stop) => stop.cancelled().await,
        None => std::future::pending().await,
    }
}

/// A fleet counter in the process's metrics registry.
fn fleet_metric(name: &str, help: &str) -> afterimage_core::Counter {
    afterimage_core::Metrics::global().counter(name, help, &[])
}

type Joined = Result<(Id, Result<DialogOutcome, DialogFailure>), tokio::task::JoinError>;

/// One worker of a shared run.
struct Worker<'a> {
    run: Arc<RunContext>,
    fenced: Arc<FencedStorage>,
    plan: &'a Plan,
    options: &'a GenerateOptions,
    shared: &'a SharedRun,
    state: State,
    tasks: JoinSet<Result<DialogOutcome, DialogFailure>>,
    running: HashMap<Id, (Slot, AbortHandle)>,
    beat: tokio::time::Interval,
    last_beat_ok: Instant,
    last_claim: Instant,
    idle: Duration,
    others_cost: f64,
    started: Instant,
}

impl<'a> Worker<'a> {
    fn new(
        run: Arc<RunContext>,
        fenced: Arc<FencedStorage>,
        plan: &'a Plan,
        options: &'a GenerateOptions,
        shared: &'a SharedRun,
        setup: Spent,
    ) -> Self {
        let mut state = State::default();
        state.spend(setup);
        let lease = shared.slots.lease();
        let mut beat =
            tokio::time::interval((lease / 3).min(MAX_BEAT).max(Duration::from_millis(50)));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Worker {
            run,
            fenced,
            plan,
            options,
            shared,
            state,
            tasks: JoinSet::new(),
            running: HashMap::new(),
            beat,
            last_beat_ok: Instant::now(),
            last_claim: Instant::now() - CLAIM_EVERY,
            idle: Duration::ZERO,
            others_cost: 0.0,
            started: Instant::now(),
        }
    }

    fn room(&self) -> usize {
        self.options
            .max_concurrency
            .saturating_sub(self.tasks.len())
    }

    /// Claims up to a batch when there is room for one, or for less once
    /// [`CLAIM_EVERY`] has passed; starts a dialog per slot.
    async fn claim(&mut self) {
        let room = self.room().min(CLAIM_BATCH);
        let full_batch = room >= CLAIM_BATCH.min(self.options.max_concurrency);
        if self.state.stop.is_some()
            || room == 0
            || !(full_batch || self.last_claim.elapsed() >= CLAIM_EVERY.max(self.idle))
            || !self.may_start()
        {
            return;
        }
        self.last_claim = Instant::now();
        let claimed = match self.shared.slots.claim(room).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!("claiming dialogs of run {}: {e}", self.run.run_id);
                self.idle = (self.idle * 2).clamp(Duration::from_millis(100), MAX_IDLE);
                return;
            }
        };
        self.idle = if claimed.is_empty() {
            (self.idle * 2).clamp(Duration::from_millis(50), MAX_IDLE)
        } else {
            Duration::ZERO
        };
        let counters = &self.shared.counters;
        counters
            .slots_claimed
            .fetch_add(claimed.len() as u64, Ordering::Relaxed);
        fleet_metric(
            "afterimage_slots_claimed_total",
            "Slots of a shared run this worker claimed (each claim is one attempt).",
        )
        .add(claimed.len() as f64);
        for slot in claimed {
            self.start(slot);
        }
        self.state.progress.in_flight = self.tasks.len() as u64;
    }

    fn start(&mut self, slot: Slot) {
        self.fenced.hold(slot);
        let seed = attempt_seed(self.run.seed, slot.index, slot.attempt);
        let delay = self.state.backoff();
        // In its dialog scope like a local dialog, so its requests carry stable ids.
        let handle = self.tasks.spawn(afterimage_core::in_dialog(
            slot.index,
            run_dialog_seeded(Arc::clone(&self.run), slot.index, seed, delay),
        ));
        self.running.insert(handle.id(), (slot, handle));
    }

    /// Whether the stopping criteria (other than the count, which the slots keep)
    /// allow another dialog.
    fn may_start(&mut self) -> bool {
        self.read_ledger();
        let progress = &self.state.progress;
        let held = self
            .options
            .stopping_criteria
            .iter()
            .find(|c| !c.may_start(progress));
        if let Some(gate) = held
            && self.tasks.is_empty()
        {
            self.state.stop = Some(Stop::Criterion(format!(
                "{} allows no further dialog",
                gate.describe()
            )));
        }
        held.is_none()
    }

    /// The run's spend as the criteria see it: this worker's plus what the others
    /// reported at the last heartbeat.
    fn read_ledger(&mut self) {
        let ledger = &self.run.ledger;
        let book = ledger.run();
        self.state.progress.ledger = book.total();
        self.state.progress.cost = ledger.prices.cost(&book).map(|c| c + self.others_cost);
    }

    /// What this worker's requests cost (0 when no price is known).
    fn own_cost(&self) -> f64 {
        let ledger = &self.run.ledger;
        ledger.prices.cost(&ledger.run()).unwrap_or(0.0)
    }

    /// How long to sleep when nothing else happens.
    fn wait(&self) -> Duration {
        if self.state.stop.is_some() || self.room() == 0 {
            MAX_IDLE
        } else {
            CLAIM_EVERY.max(self.idle)
        }
    }

    /// With nothing in flight: whether this worker is done (stopping, or no slot
    /// open in the pool).
    async fn idle_and_done(&mut self) -> bool {
        if self.state.stop.is_some() {
            return true;
        }
        match self.shared.slots.open().await {
            Ok(open) => open == 0,
            Err(e) => {
                tracing::warn!("reading the slots of run {}: {e}", self.run.run_id);
                false
            }
        }
    }

    /// Counts a dialog that ended (or was cancelled) and settles its slot.
    async fn joined(&mut self, joined: Joined) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let Some((slot, _)) = self.running.remove(&id) else {
            return;
        };
        let was_fenced = self.fenced.drop_slot(slot);
        match joined {
            Ok((_, Ok(outcome))) => self.state.record_row(outcome),
            Ok((_, Err(failure))) if was_fenced => {
                self.state.spend(failure.spent);
                self.shared.counters.fenced.fetch_add(1, Ordering::Relaxed);
                fleet_metric("afterimage_late_completions_refused_total", "Dialogs finished after their lease was taken over, whose rows the coordinator refused.").inc();
            }
            Ok((_, Err(failure))) => {
                let cause = failure.error.cause();
                self.state.record_failure(failure, self.plan);
                if let Err(e) = self.shared.slots.fail(slot, &cause).await {
                    tracing::warn!(
                        "handing back dialog {} for another attempt: {e}",
                        slot.index
                    );
                }
            }
            Err(e) if e.is_cancelled() => {
                self.state.cancelled += 1;
            }
            Err(e) => {
                self.state.record_crash(e.to_string(), self.plan);
                let _ = self.shared.slots.fail(slot, "crash").await;
            }
        }
        self.state.progress.in_flight = self.tasks.len() as u64;
        self.state.progress.elapsed = self.started.elapsed();
    }

    /// Renews the leases: cancels dialogs whose slot was taken over, and all of them
    /// once the pool has been out of reach for longer than a lease.
    async fn heartbeat(&mut self) {
        let report = WorkerReport {
            in_flight: self.tasks.len() as u64,
            rows: self.state.progress.rows_written,
            cost: self.own_cost(),
            leases_lost: self.shared.counters.leases_lost.load(Ordering::Relaxed),
        };
        match self.shared.slots.renew(report).await {
            Ok(renewal) => {
                self.last_beat_ok = Instant::now();
                self.others_cost = renewal.others_cost;
                let held: HashSet<Slot> = renewal.held.into_iter().collect();
                self.cancel_where(|slot| !held.contains(slot));
                if renewal.cancelled && self.state.stop.is_none() {
                    self.state.stop = Some(Stop::Criterion(format!(
                        "run {} was cancelled (afterimage cancel)",
                        self.run.run_id
                    )));
                }
                if let Some(share) = &self.shared.on_share {
                    share(renewal.live_workers);
                }
            }
            Err(e) => {
                tracing::warn!("heartbeat of run {}: {e}", self.run.run_id);
                if self.last_beat_ok.elapsed() > self.shared.slots.lease() {
                    self.cancel_where(|_| true);
                    if self.state.stop.is_none() {
                        self.state.stop = Some(Stop::Failed(format!(
                            "run stopped: the coordinator was out of reach for longer than the lease ({e}); the dialogs in flight were cancelled, their slots go to other workers"
                        )));
                    }
                }
            }
        }
    }

    fn cancel_where(&mut self, lost: impl Fn(&Slot) -> bool) {
        for (slot, handle) in self.running.values() {
            if lost(slot) && !handle.is_finished() {
                handle.abort();
                self.shared
                    .counters
                    .leases_lost
                    .fetch_add(1, Ordering::Relaxed);
                fleet_metric("afterimage_leases_lost_total", "Dialogs this worker cancelled because their lease was taken over or the coordinator was out of reach.").inc();
            }
        }
    }

    /// The grace period after a stop is over: cancels every dialog in flight; their
    /// claims go back to the pool when the worker finishes.
    fn cancel_all(&mut self) {
        for (_, handle) in self.running.values() {
            handle.abort();
        }
    }

    fn check_stop(&mut self) {
        if self.state.stop.is_none()
            && self
                .options
                .stop
                .as_ref()
                .is_some_and(StopHandle::is_stopped)
        {
            self.state.stop = Some(Stop::Interrupted(
                self.options.stop.as_ref().and_then(StopHandle::reason),
            ));
        }
        if self.state.stop.is_none()
            && let Some(hit) = self
                .options
                .stopping_criteria
                .iter()
                .find(|c| c.should_stop(&self.state.progress))
        {
            self.state.stop = Some(Stop::Criterion(hit.describe()));
        }
    }

    /// Hands back what this worker still holds and reports.
    async fn finish(mut self) -> Result<RunReport, EngineError> {
        let slots = &self.shared.slots;
        // Nothing is in flight here; a last heartbeat records this worker's totals.
        let _ = slots
            .renew(WorkerReport {
                in_flight: 0,
                rows: self.state.progress.rows_written,
                cost: self.own_cost(),
                leases_lost: self.shared.counters.leases_lost.load(Ordering::Relaxed),
            })
            .await;
        if let Err(e) = slots.release_all().await {
            tracing::warn!("handing back the slots of run {}: {e}", self.run.run_id);
        }
        let counts = slots.counts().await.unwrap_or_default();
        self.state.progress.elapsed = self.started.elapsed();
        let mut report = self
            .state
            .report(&self.run, self.plan, self.started.elapsed());
        let counters = &self.shared.counters;
        let summary = format!(
            "run {}: {} of {} slots done, {} failed; this worker stored {} rows, lost {} leases, {} late completions refused",
            self.run.run_id,
            counts.done,
            counts.done + counts.open() + counts.failed,
            counts.failed,
            report.rows_written,
            counters.leases_lost.load(Ordering::Relaxed),
            counters.fenced.load(Ordering::Relaxed),
        );
        report.stop_reason = match &self.state.stop {
            None => summary,
            Some(_) => format!("{}; {summary}", report.stop_reason),
        };
        match self.state.stop {
            Some(Stop::Failed(cause)) => Err(EngineError::RunFailed {
                cause,
                report: Box::new(report),
            }),
            _ => Ok(report),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_attempt_keeps_the_local_seed_later_ones_differ() {
        assert_eq!(attempt_seed(7, 3, 1), dialog_seed(7, 3));
        assert_eq!(attempt_seed(7, 3, 0), dialog_seed(7, 3));
        let later: HashSet<u64> = (2..10).map(|a| attempt_seed(7, 3, a)).collect();
        assert_eq!(later.len(), 8);
        assert!(!later.contains(&dialog_seed(7, 3)));
    }
}
