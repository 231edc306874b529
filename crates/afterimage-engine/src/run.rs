//! The scheduler: keeps up to `max_concurrency` dialogs in flight, replaces failed
//! ones within a budget, and never starts a dialog beyond the requested count (and
//! its spares, with `oversample`). Every dialog runs inside `in_dialog()` under its
//! index; with `live_dialogs`, a wave of dialogs enters the live set together, and a
//! finished dialog leaves it only once its replacements have entered.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use afterimage_core::{
    FixedNumber, LiveGuard, ParkedRequests, RunProgress, RunRecord, Spent, StoppingCriterion,
    in_dialog, unix_ms,
};
use tokio::task::JoinSet;

use crate::dialog::{
    DialogFailure, DialogOutcome, QualityCounts, RunContext, dialog_seed, pick_turns, run_dialog,
};
use crate::metrics::RunMetrics;
use crate::pricing::LedgerSummary;
use crate::{DialogError, EngineError, GenerateOptions, InFlight, RunReport, StopHandle, Turns};

/// How often the scheduler looks for dialogs parked on a retry delay.
const PARKED_POLL: Duration = Duration::from_millis(50);

/// The longest pause before a replacement dialog starts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a slot runs instead of a dialog (preference pairs bring their own): the same
/// counting, replacement, resume and ledger apply to it.
pub(crate) type Job = Arc<
    dyn Fn(
            Arc<RunContext>,
            u64,
            Duration,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<DialogOutcome, DialogFailure>> + Send>,
        > + Send
        + Sync,
>;

/// Validated run limits.
pub(crate) struct Plan {
    /// What each slot runs (`None`: a dialog).
    pub(crate) job: Option<Job>,
    pub(crate) cap: Option<u64>,
    /// Most rows and dialogs under way together: the count times `oversample`.
    pub(crate) under_way: Option<u64>,
    pub(crate) criteria: Vec<Arc<dyn StoppingCriterion>>,
    pub(crate) max_failures: u64,
    pub(crate) backoff_base: Duration,
    /// Indices a resumed run already stored: they count towards the cap and are
    /// never scheduled again.
    pub(crate) done: HashSet<u64>,
    /// Stored rows per document of a resumed run: coverage goes on from them.
    pub(crate) stored_visits: HashMap<String, u64>,
    /// Whether running out of questions before the count fails the run.
    pub(crate) on_exhausted: crate::OnExhausted,
}

impl Plan {
    pub(crate) fn new(options: &GenerateOptions) -> Result<Plan, EngineError> {
        options
            .validate()
            .map_err(|error| EngineError::Config(error.to_string()))?;
        // The caller's list stays as it was; the count joins a copy.
        let mut criteria = options.stopping_criteria.clone();
        if let Some(n) = options.num_dialogs {
            criteria.push(Arc::new(FixedNumber(n)));
        }
        let cap = options.requested_rows();
        let max_failures = options
            .max_failures
            .unwrap_or_else(|| 10 + cap.map_or(100, |n| n / 10));
        Ok(Plan {
            job: None,
            cap,
            under_way: cap.map(|n| (n as f64 * options.oversample).ceil() as u64),
            criteria,
            max_failures,
            backoff_base: options.failure_backoff,
            done: HashSet::new(),
            stored_visits: HashMap::new(),
            on_exhausted: options.on_exhausted,
        })
    }

    /// Whether another dialog may start beside `in_flight` ones when `rows` are
    /// stored: not once the count is reached, and not beyond it with its spares.
    fn room(&self, rows: u64, in_flight: usize) -> bool {
        match (self.cap, self.under_way) {
            (Some(cap), Some(under_way)) => rows < cap && rows + (in_flight as u64) < under_way,
            _ => true,
        }
    }
}

/// Runs the plan to its end and reports: start dialogs while slots and criteria allow,
/// count each one that ends, stop as the criteria, the failures or the caller say.
pub(crate) async fn execute(
    run: Arc<RunContext>,
    plan: Plan,
    options: &GenerateOptions,
    setup: Spent,
    record: &mut RunRecord,
) -> Result<RunReport, EngineError> {
    let mut scheduler = Scheduler::new(run, &plan, options, setup, record);
    loop {
        scheduler.start_dialogs();
        let joined = match scheduler.next_finished().await {
            Next::Finished(joined) => joined,
            Next::LookAgain => continue,
            Next::Cancel => {
                scheduler.abort_in_flight().await;
                continue;
            }
            Next::Done => break,
        };
        scheduler.record(joined);
        scheduler.cancel_spares().await;
        scheduler.check_criteria();
        scheduler.cancel_if_stopping().await;
        scheduler.checkpoint().await;
        if let Some(report) = &options.on_progress {
            report(&scheduler.state.progress);
        }
    }
    scheduler.finish().await
}

/// How a dialog ended.
type Ended = Result<DialogOutcome, DialogFailure>;

/// What a dialog task returns: how it ended, and its place in the live set, which the
/// scheduler drops once the dialogs replacing it have entered.
type Joined = Result<(Ended, LiveGuard), tokio::task::JoinError>;

/// What waiting for the dialogs in flight gave.
enum Next {
    /// A dialog ended (or its task crashed).
    Finished(Joined),
    /// Dialogs may have parked on a retry delay: look for free slots again.
    LookAgain,
    /// The stop handle asks for the dialogs in flight to be cancelled (a cancel, or
    /// the end of a grace period).
    Cancel,
    /// Nothing is in flight and nothing more will start.
    Done,
}

/// One run in progress: the dialogs in flight and what the ended ones did.
struct Scheduler<'a> {
    run: Arc<RunContext>,
    plan: &'a Plan,
    options: &'a GenerateOptions,
    state: State,
    tasks: JoinSet<(Ended, LiveGuard)>,
    /// The live places of dialogs that ended, until their replacements have entered.
    ended: Vec<LiveGuard>,
    order: StartOrder,
    started: Instant,
    /// The run record, saved with the ledger now and then while the run goes on.
    record: &'a mut RunRecord,
    saved: Instant,
    metrics: RunMetrics,
}

impl<'a> Scheduler<'a> {
    fn new(
        run: Arc<RunContext>,
        plan: &'a Plan,
        options: &'a GenerateOptions,
        setup: Spent,
        record: &'a mut RunRecord,
    ) -> Self {
        let mut state = State {
            resumed: plan.done.len() as u64,
            ..State::default()
        };
        state.progress.rows_written = state.resumed;
        state.progress.context_visits = Arc::new(plan.stored_visits.clone());
        state.spend(setup);
        let order = StartOrder::new(run.seed, run.turns, plan.cap);
        Scheduler {
            run,
            plan,
            options,
            state,
            tasks: JoinSet::new(),
            ended: Vec::new(),
            order,
            started: Instant::now(),
            record,
            saved: Instant::now(),
            metrics: RunMetrics::new(),
        }
    }

    /// Reads the run's ledger into the progress the criteria see: what the whole run
    /// paid for so far, dialogs in flight included, and its cost.
    fn read_ledger(&mut self) {
        let ledger = &self.run.ledger;
        let book = ledger.run();
        self.state.progress.ledger = book.total();
        self.state.progress.cost = ledger.prices.cost(&book);
        self.metrics.cost(ledger.prices.cost(&ledger.session()));
    }

    /// Saves the run record with the ledger, at most once per
    /// [`GenerateOptions::ledger_checkpoint`], so a killed run loses only what it spent
    /// since. A failed save only warns: the next one or the run's end tries again.
    async fn checkpoint(&mut self) {
        if self.saved.elapsed() < self.options.ledger_checkpoint {
            return;
        }
        self.saved = Instant::now();
        self.record.ledger = self.run.ledger.run();
        self.record.rows_written = self.state.progress.rows_written;
        self.record.updated_at_ms = unix_ms();
        if let Err(e) = self.run.storage.save_run(self.record).await {
            tracing::warn!(
                "could not save the run record in {}: {e}",
                self.run.storage.location()
            );
        }
    }

    /// Starts the dialogs there is room for: all of them enter the live set before
    /// any starts, and only then do the dialogs that ended leave it.
    fn start_dialogs(&mut self) {
        self.read_ledger();
        self.note_stop_handle();
        let wave = self.admit();
        let guards = self.enter(&wave);
        for (index, guard) in wave.into_iter().zip(guards) {
            self.spawn(index, guard);
        }
        self.ended.clear();
    }

    /// A stop asked for through the handle stops the run from starting dialogs.
    fn note_stop_handle(&mut self) {
        if self.state.stop.is_none()
            && let Some(handle) = self.options.stop.as_ref().filter(|h| h.is_stopped())
        {
            self.state.stop = Some(Stop::Interrupted(handle.reason()));
        }
    }

    /// The dialog slots: `max_concurrency`, plus one per dialog waiting out a retry
    /// delay, which holds no request in flight (at most doubling the dialogs in
    /// memory).
    fn slots(&self) -> usize {
        let parked = self.options.parked.as_ref().map_or(0, ParkedRequests::now) as usize;
        let max_concurrency = self.options.max_concurrency;
        max_concurrency + parked.min(max_concurrency)
    }

    /// The indices to start now: until the slots are full, the count (with its
    /// spares) is covered by the rows and the dialogs in flight, or a criterion holds
    /// the next one back (which ends the run when nothing is in flight).
    fn admit(&mut self) -> Vec<u64> {
        let slots = self.slots();
        let (plan, state, order) = (self.plan, &mut self.state, &mut self.order);
        let mut wave = Vec::new();
        loop {
            let in_flight = self.tasks.len() + wave.len();
            if state.stop.is_some()
                || in_flight >= slots
                || !plan.room(state.progress.rows_written, in_flight)
            {
                break;
            }
            state.progress.in_flight = in_flight as u64;
            if let Some(gate) = plan.criteria.iter().find(|c| !c.may_start(&state.progress)) {
                if in_flight == 0 {
                    state.stop = Some(Stop::Criterion(format!(
                        "{} allows no further dialog",
                        gate.describe()
                    )));
                }
                break;
            }
            wave.push(order.next(&plan.done));
        }
        wave
    }

    /// The live places of the dialogs about to start, taken together so that a
    /// batcher counts the whole wave before the first of them asks anything.
    fn enter(&self, wave: &[u64]) -> Vec<LiveGuard> {
        match &self.options.live_dialogs {
            Some(live) => wave.iter().map(|index| live.enter(*index)).collect(),
            None => wave.iter().map(|_| LiveGuard::none()).collect(),
        }
    }

    /// Starts dialog `index` (or the plan's job) in its dialog scope; the task hands
    /// back its live place with its result.
    fn spawn(&mut self, index: u64, guard: LiveGuard) {
        let delay = self.state.backoff();
        let run = Arc::clone(&self.run);
        let dialog = match &self.plan.job {
            Some(job) => job(run, index, delay),
            None => Box::pin(run_dialog(run, index, delay)),
        };
        let in_flight = self.metrics.started();
        self.tasks.spawn(async move {
            let _in_flight = in_flight;
            (in_dialog(index, dialog).await, guard)
        });
    }

    /// Waits for the next dialog to end, or for the stop handle to cancel those in
    /// flight; with parked requests counted, also wakes up now and then to look for
    /// slots they freed.
    async fn next_finished(&mut self) -> Next {
        let busy = !self.tasks.is_empty();
        let poll = busy && self.options.parked.is_some();
        let stop = self.options.stop.clone();
        let cancelled = async {
            match &stop {
                Some(stop) => stop.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            joined = self.tasks.join_next() => joined.map_or(Next::Done, Next::Finished),
            () = cancelled, if busy => Next::Cancel,
            () = tokio::time::sleep(PARKED_POLL), if poll => Next::LookAgain,
        }
    }

    /// Counts a dialog that ended; its live place is kept until the next start.
    fn record(&mut self, joined: Joined) {
        match joined {
            Ok((ended, guard)) => {
                self.ended.push(guard);
                if ended.is_ok() && matches!(self.state.stop, Some(Stop::Interrupted(_))) {
                    self.state.drained += 1;
                }
                self.count(ended);
            }
            Err(join_error) => {
                self.state.record_crash(join_error.to_string(), self.plan);
                self.metrics.failed();
            }
        }
        self.state.progress.elapsed = self.started.elapsed();
        self.state.progress.in_flight = self.tasks.len() as u64;
        self.read_ledger();
    }

    /// Counts how a dialog ended: a row, a spare, a failure (or a skip). A dialog that
    /// fails once the stop handle asked for a cancel counts as cancelled: a stop that
    /// ends the requests it waits on (a batch round refused for the budget) must not
    /// read as failed dialogs, nor trip the failure budget.
    fn count(&mut self, ended: Ended) {
        let (failed, spares) = (self.state.progress.dialogs_failed, self.state.spares);
        match ended {
            Ok(outcome) => {
                self.state.record_row(outcome);
                self.metrics.written();
            }
            Err(failure) if self.cancelling() && !matches!(failure.error, DialogError::Spare) => {
                self.state.spend(failure.spent);
                self.state.cancelled += 1;
                self.metrics.cancelled(1);
            }
            Err(failure) => self.state.record_failure(failure, self.plan),
        }
        if self.state.progress.dialogs_failed > failed {
            self.metrics.failed();
        }
        self.metrics.spares(self.state.spares - spares);
    }

    /// Whether the stop handle asks for the dialogs in flight to be cancelled.
    fn cancelling(&self) -> bool {
        self.options
            .stop
            .as_ref()
            .is_some_and(StopHandle::is_cancelled)
    }

    /// Once the count's rows are stored, the dialogs still running are spares: they
    /// are cancelled, as they could store nothing.
    async fn cancel_spares(&mut self) {
        let reached = self
            .plan
            .cap
            .is_some_and(|cap| self.state.progress.rows_written >= cap);
        if !reached || self.tasks.is_empty() {
            return;
        }
        let cancelled = self.abort_all().await;
        self.state.spares += cancelled;
        self.metrics.spares(cancelled);
    }

    /// Stops the run when a criterion says so (reaching the count is no criterion
    /// stop: the report says the rows requested were written).
    fn check_criteria(&mut self) {
        let state = &mut self.state;
        let count_reached = self
            .plan
            .cap
            .is_some_and(|cap| state.progress.rows_written >= cap);
        if state.stop.is_none()
            && !count_reached
            && let Some(hit) = self
                .plan
                .criteria
                .iter()
                .find(|c| c.should_stop(&state.progress))
        {
            state.stop = Some(Stop::Criterion(hit.describe()));
        }
    }

    /// With [`InFlight::Cancel`], cancels the dialogs in flight once a criterion or
    /// the instruction generator ended the run.
    async fn cancel_if_stopping(&mut self) {
        if self.options.in_flight != InFlight::Cancel
            || !matches!(
                self.state.stop,
                Some(Stop::Criterion(_) | Stop::Exhausted(_))
            )
            || self.tasks.is_empty()
        {
            return;
        }
        self.abort_in_flight().await;
    }

    /// Cancels every dialog in flight and counts how each ended; the run starts no
    /// other.
    async fn abort_in_flight(&mut self) {
        if self.state.stop.is_none() {
            let reason = self.options.stop.as_ref().and_then(StopHandle::reason);
            self.state.stop = Some(Stop::Interrupted(reason));
        }
        // Cancelled dialogs never reach storage; their spend so far is lost to the
        // report, which is the price of stopping at once.
        let cancelled = self.abort_all().await;
        self.state.cancelled += cancelled;
        self.metrics.cancelled(cancelled);
    }

    /// Aborts the dialog tasks and waits for them; a dialog that finished before the
    /// abort reached it counts as it ended. Returns how many were cancelled.
    async fn abort_all(&mut self) -> u64 {
        self.tasks.abort_all();
        let mut cancelled = 0;
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok((ended, _guard)) => self.count(ended),
                Err(_) => cancelled += 1,
            }
        }
        self.state.progress.in_flight = 0;
        cancelled
    }

    /// Flushes storage and reports; a run stopped by failures, or whose rows could not
    /// be flushed, is an error carrying the report.
    async fn finish(mut self) -> Result<RunReport, EngineError> {
        let run = &self.run;
        let flushed = run.storage.flush().await;
        self.state.fail_if_exhausted_short(self.plan);
        let report = self.state.report(run, self.plan, self.started.elapsed());
        if let Err(e) = flushed {
            return Err(EngineError::RunFailed {
                cause: format!("flushing {} failed: {e}", run.storage.location()),
                report: Box::new(report),
            });
        }
        match self.state.stop {
            Some(Stop::Failed(cause)) => Err(EngineError::RunFailed {
                cause,
                report: Box::new(report),
            }),
            _ => Ok(report),
        }
    }
}

/// The order dialogs start in. With a known count and a drawn number of turns, the
/// dialogs with the most turns start first (longest-first scheduling): the last
/// dialogs to run are then the short ones, so the run's tail, where slots sit idle
/// waiting for the slowest dialogs, is as short as it can be. Replacements for failed
/// dialogs, and runs without a count, take indices in order.
struct StartOrder {
    run_seed: u64,
    turns: Turns,
    cap: Option<u64>,
    /// The turn count this pass starts (counting down to 1; 0 once the passes are
    /// over).
    pass: u32,
    /// The next index to look at.
    cursor: u64,
}

impl StartOrder {
    fn new(run_seed: u64, turns: Turns, cap: Option<u64>) -> Self {
        let pass = match (turns, cap) {
            (Turns::UpTo(max), Some(_)) if max > 1 => max,
            _ => 0,
        };
        StartOrder {
            run_seed,
            turns,
            cap,
            pass,
            cursor: 0,
        }
    }

    /// The next index to start, skipping those already stored.
    fn next(&mut self, done: &HashSet<u64>) -> u64 {
        while self.pass > 0 {
            let cap = self.cap.unwrap_or(0);
            while self.cursor < cap {
                let index = self.cursor;
                self.cursor += 1;
                let turns = pick_turns(self.turns, dialog_seed(self.run_seed, index));
                if turns == self.pass && !done.contains(&index) {
                    return index;
                }
            }
            self.pass -= 1;
            self.cursor = if self.pass == 0 { cap } else { 0 };
        }
        while done.contains(&self.cursor) {
            self.cursor += 1;
        }
        self.cursor += 1;
        self.cursor - 1
    }
}

pub(crate) enum Stop {
    Criterion(String),
    /// The instruction generator ran out of material (documents at their target).
    Exhausted(String),
    /// The stop handle stopped the run (with the reason it was given).
    Interrupted(Option<String>),
    Failed(String),
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) progress: RunProgress,
    pub(crate) personas: HashSet<String>,
    pub(crate) failures: BTreeMap<String, u64>,
    pub(crate) rejections: BTreeMap<String, u64>,
    pub(crate) instructions_rejected: BTreeMap<String, u64>,
    pub(crate) unjudged: u64,
    pub(crate) regenerations: u64,
    pub(crate) consecutive_failures: u32,
    pub(crate) next_delay: Duration,
    pub(crate) stop: Option<Stop>,
    pub(crate) resumed: u64,
    pub(crate) cancelled: u64,
    /// Dialogs that finished and were stored after a stop was asked for.
    pub(crate) drained: u64,
    /// Spare dialogs discarded once the count was reached.
    pub(crate) spares: u64,
}

impl State {
    pub(crate) fn spend(&mut self, spent: Spent) {
        self.progress.requests += u64::from(spent.requests);
        self.progress.usage += spent.usage;
    }

    fn count_quality(&mut self, counts: QualityCounts) {
        for cause in counts.rejections {
            *self.rejections.entry(cause.to_owned()).or_default() += 1;
        }
        for cause in counts.instructions_rejected {
            *self
                .instructions_rejected
                .entry(cause.to_owned())
                .or_default() += 1;
        }
        if counts.duplicates > 0 {
            *self
                .rejections
                .entry("duplicate_question".to_owned())
                .or_default() += u64::from(counts.duplicates);
        }
        self.unjudged += u64::from(counts.unjudged);
    }

    pub(crate) fn record_row(&mut self, outcome: DialogOutcome) {
        self.spend(outcome.spent);
        self.count_quality(outcome.quality);
        self.progress.rows_written += 1;
        self.regenerations += u64::from(outcome.regenerations);
        if let Some(persona) = outcome.persona {
            self.personas.insert(persona);
            self.progress.unique_personas = self.personas.len() as u64;
        }
        if !outcome.context_ids.is_empty() {
            let visits = Arc::make_mut(&mut self.progress.context_visits);
            for id in outcome.context_ids {
                *visits.entry(id).or_default() += 1;
            }
        }
        self.consecutive_failures = 0;
        self.next_delay = Duration::ZERO;
    }

    pub(crate) fn record_failure(&mut self, failure: DialogFailure, plan: &Plan) {
        self.spend(failure.spent);
        self.count_quality(*failure.quality);
        let error = failure.error;
        if matches!(error, DialogError::Spare) {
            self.spares += 1;
            return;
        }
        // Running out of documents (how a coverage run ends) or of new questions ends
        // the run; a dialog that only met near duplicates is replaced. Neither is a
        // failure.
        if error.is_exhausted() {
            if self.stop.is_none() {
                self.stop = Some(Stop::Exhausted(match &error {
                    DialogError::Instruction(e) => format!("instruction generator {e}"),
                    other => other.to_string(),
                }));
            }
            return;
        }
        if error.is_skipped() {
            return;
        }
        let seen = self.failures.entry(error.cause()).or_default();
        // The first failure of each kind is worth a line; the rest are counted (the
        // progress bar and the report show them), not repeated.
        // A discarded preference pair is the process working, not a failure to warn of.
        if *seen == 0 && !matches!(error, DialogError::ScoreGap { .. }) {
            tracing::warn!(cause = %error.cause(), "dialog failed (more like it are only counted): {error}");
        } else {
            tracing::debug!(cause = %error.cause(), "dialog failed: {error}");
        }
        *seen += 1;
        self.progress.dialogs_failed += 1;
        self.consecutive_failures += 1;
        // Back off before the replacement starts, so a struggling server is not
        // hammered; a Retry-After from the server is the floor.
        // Only failures that waiting can cure (rate limits, overload, timeouts) delay
        // the replacement; a model answering garbage is not helped by a pause.
        self.next_delay = match error.provider_error() {
            Some(e) if e.is_retryable() => {
                let exponential = plan
                    .backoff_base
                    .saturating_mul(1 << (self.consecutive_failures - 1).min(10))
                    .min(MAX_BACKOFF);
                exponential.max(e.retry_after().unwrap_or_default().min(MAX_BACKOFF))
            }
            _ => Duration::ZERO,
        };
        if self
            .stop
            .as_ref()
            .is_some_and(|s| matches!(s, Stop::Failed(_)))
        {
            return;
        }
        if error.is_fatal() {
            self.stop = Some(Stop::Failed(format!("run stopped: {error}")));
        } else if self.progress.dialogs_failed > plan.max_failures {
            self.stop = Some(Stop::Failed(format!(
                "run stopped: {} dialogs failed, more than the budget of {} (raise it with max_failures); last failure: {error}",
                self.progress.dialogs_failed, plan.max_failures
            )));
        }
    }

    pub(crate) fn record_crash(&mut self, message: String, plan: &Plan) {
        *self.failures.entry("crash".into()).or_default() += 1;
        self.progress.dialogs_failed += 1;
        tracing::error!("a dialog task crashed: {message}");
        if self.progress.dialogs_failed > plan.max_failures && self.stop.is_none() {
            self.stop = Some(Stop::Failed(format!(
                "run stopped: too many failed dialogs; last: a dialog task crashed: {message}"
            )));
        }
    }

    /// With [`OnExhausted::Fail`](crate::OnExhausted::Fail), a run whose questions ran
    /// out before its count fails, naming the rows missing.
    fn fail_if_exhausted_short(&mut self, plan: &Plan) {
        let (Some(Stop::Exhausted(what)), Some(cap)) = (&self.stop, plan.cap) else {
            return;
        };
        let rows = self.progress.rows_written;
        if plan.on_exhausted == crate::OnExhausted::Fail && rows < cap {
            self.stop = Some(Stop::Failed(format!(
                "run stopped with {rows} of {cap} rows ({} missing; generation.on_exhausted: fail): {what}",
                cap - rows
            )));
        }
    }

    pub(crate) fn backoff(&self) -> Duration {
        self.next_delay
    }

    pub(crate) fn report(&self, run: &RunContext, plan: &Plan, elapsed: Duration) -> RunReport {
        let rows = self.progress.rows_written - self.resumed;
        // A stop that came as the last dialogs finished still wrote every row asked.
        let count_reached = plan
            .cap
            .is_some_and(|cap| self.progress.rows_written >= cap);
        let stop = match &self.stop {
            Some(Stop::Interrupted(_)) if count_reached => None,
            stop => stop.as_ref(),
        };
        let stop_reason = match stop {
            Some(Stop::Criterion(c)) => format!("stopping criterion met: {c}"),
            Some(Stop::Exhausted(what)) => what.clone(),
            Some(Stop::Interrupted(reason)) => format!(
                "interrupted{}: no new dialogs were started; {} in flight finished and were stored",
                reason
                    .as_ref()
                    .map_or(String::new(), |r| format!(" by {r}")),
                self.drained
            ),
            Some(Stop::Failed(cause)) => cause.clone(),
            None if self.resumed > 0 => format!(
                "wrote the {rows} missing rows ({} were already stored)",
                self.resumed
            ),
            None => format!("wrote the {rows} rows requested"),
        };
        let stop_reason = if self.cancelled > 0 {
            format!(
                "{stop_reason}; {} dialogs in flight were cancelled",
                self.cancelled
            )
        } else {
            stop_reason
        };
        let stop_reason = match self.spares {
            0 => stop_reason,
            1 => {
                format!("{stop_reason}; 1 spare dialog was discarded (its spend is in the ledger)")
            }
            n => format!(
                "{stop_reason}; {n} spare dialogs were discarded (their spend is in the ledger)"
            ),
        };
        RunReport {
            run_id: run.run_id.clone(),
            rows_written: rows,
            rows_resumed: self.resumed,
            rows_requested: plan.cap,
            dialogs_failed: self.progress.dialogs_failed,
            failures: self.failures.clone(),
            regenerations: self.regenerations,
            rejections: self.rejections.clone(),
            instructions_rejected: self.instructions_rejected.clone(),
            unjudged: self.unjudged,
            spares: self.spares,
            requests: self.progress.requests,
            input_tokens: self.progress.usage.input_tokens,
            output_tokens: self.progress.usage.output_tokens,
            elapsed_secs: elapsed.as_secs_f64(),
            dialogs_per_sec: if elapsed.is_zero() {
                0.0
            } else {
                rows as f64 / elapsed.as_secs_f64()
            },
            cost: run.ledger.prices.cost(&run.ledger.session()),
            ledger: LedgerSummary::new(
                &run.ledger.run(),
                &run.ledger.prices,
                self.progress.rows_written,
                plan.cap,
            ),
            interrupted: matches!(stop, Some(Stop::Interrupted(_))),
            stop_reason,
            output: run.storage.location(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_dialogs_start_first_then_replacements_in_order() {
        let done: HashSet<u64> = [4, 31].into_iter().collect();
        let mut order = StartOrder::new(9, Turns::UpTo(3), Some(30));
        let first: Vec<u64> = (0..29).map(|_| order.next(&done)).collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        let expected: Vec<u64> = (0..30).filter(|i| *i != 4).collect();
        assert_eq!(sorted, expected, "each index once, the stored one skipped");
        let turns: Vec<u32> = first
            .iter()
            .map(|i| pick_turns(Turns::UpTo(3), dialog_seed(9, *i)))
            .collect();
        assert!(turns.windows(2).all(|w| w[0] >= w[1]), "{turns:?}");
        assert_eq!(turns.first(), Some(&3));
        assert_eq!(turns.last(), Some(&1));
        // Then replacements beyond the count, skipping stored ones.
        assert_eq!(order.next(&done), 30);
        assert_eq!(order.next(&done), 32);
    }

    #[test]
    fn fixed_turns_and_open_ended_runs_go_in_index_order() {
        let done = HashSet::new();
        for (turns, cap) in [(Turns::Exactly(3), Some(10)), (Turns::UpTo(3), None)] {
            let mut order = StartOrder::new(1, turns, cap);
            let got: Vec<u64> = (0..5).map(|_| order.next(&done)).collect();
            assert_eq!(got, [0, 1, 2, 3, 4]);
        }
    }
}
