//! An exact-count loop of independent jobs, for the generators beside dialogs
//! (structured outputs): up to `max_concurrency` jobs in flight, never one beyond the
//! count, failed jobs replaced within the failure budget (with a backoff after
//! failures a pause can cure), a fatal failure stopping the run at once, the stop
//! handle and the stopping criteria obeyed, the run record checkpointed with the
//! ledger. The dialog scheduler (`run.rs`) does the same for dialogs with more
//! (longest-first order, parked requests, cancellation).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use afterimage_core::{
    RunProgress, RunRecord, RunStatus, Spent, Storage, StorageError, split_row_id, unix_ms,
};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::pricing::{LedgerSummary, RunLedger};
use crate::run::Plan;
use crate::{DialogError, EngineError, GenerateOptions, RunReport, StopHandle};

/// The longest pause before a replacement job starts after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a stored job reports.
#[derive(Debug, Default)]
pub(crate) struct JobDone {
    /// What it spent.
    pub(crate) spent: Spent,
    /// The documents its row is about (coverage).
    pub(crate) context_ids: Vec<String>,
    /// Its persona.
    pub(crate) persona: Option<String>,
    /// Causes of attempts asked again (`output_reasked`), for the report.
    pub(crate) rejections: Vec<&'static str>,
    /// Causes of generated questions discarded before use.
    pub(crate) instructions_rejected: Vec<&'static str>,
}

/// A failed job, with what it spent and counted before failing.
#[derive(Debug)]
pub(crate) struct JobFailed {
    /// Why it failed.
    pub(crate) error: DialogError,
    /// Its spend and events until then (`context_ids` and `persona` unused).
    pub(crate) so_far: JobDone,
}

/// One job's end.
pub(crate) type JobResult = Result<JobDone, Box<JobFailed>>;

/// What the loop works with besides the jobs.
pub(crate) struct Session<'a> {
    pub(crate) plan: Plan,
    pub(crate) options: &'a GenerateOptions,
    /// Where rows go: flushed at the end; the record is checkpointed in it.
    pub(crate) storage: &'a dyn Storage,
    pub(crate) ledger: &'a RunLedger,
    pub(crate) record: &'a mut RunRecord,
}

/// Runs `start(index)` for every index the plan still owes until the count is written
/// or the run stops, and reports.
pub(crate) async fn run_jobs<F, Fut>(
    mut session: Session<'_>,
    mut start: F,
) -> Result<RunReport, EngineError>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = JobResult> + Send + 'static,
{
    let mut state = Tally::new(&session.plan);
    let mut tasks: JoinSet<JobResult> = JoinSet::new();
    let (started, mut saved) = (Instant::now(), Instant::now());
    let mut next_index = 0;
    loop {
        state.read_ledger(session.ledger);
        state.notice_stop(session.options.stop.as_ref());
        while state.may_start(&session.plan, tasks.len(), session.options.max_concurrency) {
            while session.plan.done.contains(&next_index) {
                next_index += 1;
            }
            let (job, delay) = (start(next_index), state.next_delay);
            next_index += 1;
            tasks.spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                job.await
            });
        }
        let Some(joined) = tasks.join_next().await else {
            break;
        };
        match joined {
            Ok(Ok(done)) => state.record_done(done),
            Ok(Err(failed)) => state.record_failure(*failed, &session.plan),
            Err(crash) => state.record_crash(&crash, &session.plan),
        }
        state.progress.elapsed = started.elapsed();
        state.progress.in_flight = tasks.len() as u64;
        state.check_criteria(&session.plan);
        if saved.elapsed() >= session.options.ledger_checkpoint {
            saved = Instant::now();
            checkpoint(&mut session, state.progress.rows_written).await;
        }
        if let Some(report) = &session.options.on_progress {
            report(&state.progress);
        }
    }
    finish(session, state, started.elapsed()).await
}

/// The run record to write under: the stored one of a `kind` run when resuming (with
/// the indices already written), else a new one. Without `resume`, an output holding
/// rows is an error, as for dialogs.
pub(crate) async fn open_record(
    storage: &dyn Storage,
    options: &GenerateOptions,
    kind: &str,
    correspondent_prompt: &str,
) -> Result<(RunRecord, HashSet<u64>), EngineError> {
    let location = storage.location();
    let setup = |what: &str, e: StorageError| EngineError::Setup(format!("{what} {location}: {e}"));
    let ids = storage
        .existing_ids()
        .await
        .map_err(|e| setup("reading the ids in", e))?;
    let stored = if options.resume {
        storage
            .load_run()
            .await
            .map_err(|e| setup("reading the run record in", e))?
    } else {
        None
    };
    let record = match stored {
        Some(record) => record,
        None if ids.is_empty() => new_record(options, kind, correspondent_prompt),
        None if options.resume => {
            return Err(EngineError::Config(format!(
                "{location} holds {} rows but no afterimage run record, so the run cannot be resumed: choose another output",
                ids.len()
            )));
        }
        None => {
            return Err(EngineError::Config(format!(
                "{location} already holds {} rows of an earlier run: pass --resume (GenerateOptions::resume) to finish that run, or choose another output",
                ids.len()
            )));
        }
    };
    let recorded = record.config.get("generator").and_then(Value::as_str);
    if recorded != Some(kind) {
        return Err(EngineError::Config(format!(
            "{location} holds a {} run, not {kind} rows: choose another output",
            recorded.unwrap_or("dialog")
        )));
    }
    let done = stored_indices(&ids, &record.run_id, &location)?;
    Ok((record, done))
}

/// A new run's record, marked with the generator `kind` so that a resume with
/// another generator is refused.
fn new_record(options: &GenerateOptions, kind: &str, correspondent_prompt: &str) -> RunRecord {
    let run_id = options
        .run_id
        .clone()
        .unwrap_or_else(|| format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff));
    let seed = options.seed.unwrap_or_else(rand::random);
    let mut record = RunRecord::new(run_id, seed, correspondent_prompt);
    let mut config = match &options.run_config {
        Value::Object(map) => map.clone(),
        _ => serde_json::Map::new(),
    };
    config.insert("generator".into(), kind.into());
    record.config = Value::Object(config);
    record
}

/// The indices of the stored rows `ids`, all of which must be from run `run_id`.
fn stored_indices(
    ids: &[String],
    run_id: &str,
    location: &str,
) -> Result<HashSet<u64>, EngineError> {
    ids.iter()
        .map(|id| match split_row_id(id) {
            Some((run, index)) if run == run_id => Ok(index),
            _ => Err(EngineError::Config(format!(
                "{location} holds row {id:?}, which is not from run {run_id}: resume needs an output holding one run; choose another output"
            ))),
        })
        .collect()
}

/// Saves how the run ended (status, rows, failures added to earlier sessions'); a
/// failed save only warns, since the rows are what resume trusts.
pub(crate) async fn close_record(
    storage: &dyn Storage,
    record: &mut RunRecord,
    result: &Result<RunReport, EngineError>,
) {
    let (status, report) = match result {
        Ok(report) => (RunStatus::Done, Some(report)),
        Err(e) => (RunStatus::Failed, e.report()),
    };
    record.status = status;
    if let Some(report) = report {
        record.rows_written = report.rows_resumed + report.rows_written;
        record.add_failures(&report.failures);
    }
    record.updated_at_ms = unix_ms();
    if let Err(e) = storage.save_run(record).await {
        tracing::warn!(
            "could not save the run record in {}: {e}",
            storage.location()
        );
    }
}

/// Saves the run record with the ledger; a failed save only warns.
async fn checkpoint(session: &mut Session<'_>, rows_written: u64) {
    session.record.ledger = session.ledger.run();
    session.record.rows_written = rows_written;
    session.record.updated_at_ms = unix_ms();
    if let Err(e) = session.storage.save_run(session.record).await {
        tracing::warn!(
            "could not save the run record in {}: {e}",
            session.storage.location()
        );
    }
}

/// Flushes storage and reports; a run stopped by failures, or whose rows could not be
/// flushed, is an error carrying the report.
async fn finish(
    session: Session<'_>,
    state: Tally,
    elapsed: Duration,
) -> Result<RunReport, EngineError> {
    let flushed = session.storage.flush().await;
    let report = state.report(&session, elapsed);
    if let Err(e) = flushed {
        return Err(EngineError::RunFailed {
            cause: format!("flushing {} failed: {e}", session.storage.location()),
            report: Box::new(report),
        });
    }
    match state.stop {
        Some(Stop::Failed(cause)) => Err(EngineError::RunFailed {
            cause,
            report: Box::new(report),
        }),
        _ => Ok(report),
    }
}

enum Stop {
    Criterion(String),
    Exhausted(String),
    Interrupted,
    Failed(String),
}

/// What the ended jobs did.
struct Tally {
    progress: RunProgress,
    personas: HashSet<String>,
    failures: BTreeMap<String, u64>,
    rejections: BTreeMap<String, u64>,
    instructions_rejected: BTreeMap<String, u64>,
    consecutive_failures: u32,
    next_delay: Duration,
    stop: Option<Stop>,
    resumed: u64,
}

impl Tally {
    fn new(plan: &Plan) -> Self {
        let resumed = plan.done.len() as u64;
        let mut progress = RunProgress::default();
        progress.rows_written = resumed;
        progress.context_visits = Arc::new(plan.stored_visits.clone());
        Tally {
            progress,
            personas: HashSet::new(),
            failures: BTreeMap::new(),
            rejections: BTreeMap::new(),
            instructions_rejected: BTreeMap::new(),
            consecutive_failures: 0,
            next_delay: Duration::ZERO,
            stop: None,
            resumed,
        }
    }

    fn read_ledger(&mut self, ledger: &RunLedger) {
        let book = ledger.run();
        self.progress.ledger = book.total();
        self.progress.cost = ledger.prices.cost(&book);
    }

    fn notice_stop(&mut self, handle: Option<&StopHandle>) {
        if self.stop.is_none() && handle.is_some_and(StopHandle::is_stopped) {
            self.stop = Some(Stop::Interrupted);
        }
    }

    /// Whether another job may start: no stop, a free slot, the count not covered by
    /// the rows and the jobs in flight, and no criterion holding it back (which ends
    /// the run when nothing is in flight).
    fn may_start(&mut self, plan: &Plan, in_flight: usize, max_concurrency: usize) -> bool {
        let rows = self.progress.rows_written;
        if self.stop.is_some()
            || in_flight >= max_concurrency.max(1)
            || plan.cap.is_some_and(|cap| rows + in_flight as u64 >= cap)
        {
            return false;
        }
        self.progress.in_flight = in_flight as u64;
        match plan.criteria.iter().find(|c| !c.may_start(&self.progress)) {
            Some(gate) => {
                if in_flight == 0 {
                    self.stop = Some(Stop::Criterion(format!(
                        "{} allows no further row",
                        gate.describe()
                    )));
                }
                false
            }
            None => true,
        }
    }

    fn count(&mut self, events: &JobDone) {
        self.progress.requests += u64::from(events.spent.requests);
        self.progress.usage += events.spent.usage;
        for cause in &events.rejections {
            *self.rejections.entry((*cause).to_owned()).or_default() += 1;
        }
        for cause in &events.instructions_rejected {
            *self
                .instructions_rejected
                .entry((*cause).to_owned())
                .or_default() += 1;
        }
    }

    fn record_done(&mut self, done: JobDone) {
        self.count(&done);
        self.progress.rows_written += 1;
        if let Some(persona) = done.persona {
            self.personas.insert(persona);
            self.progress.unique_personas = self.personas.len() as u64;
        }
        if !done.context_ids.is_empty() {
            let visits = Arc::make_mut(&mut self.progress.context_visits);
            for id in done.context_ids {
                *visits.entry(id).or_default() += 1;
            }
        }
        self.consecutive_failures = 0;
        self.next_delay = Duration::ZERO;
    }

    fn record_failure(&mut self, failed: JobFailed, plan: &Plan) {
        self.count(&failed.so_far);
        let error = failed.error;
        if let DialogError::Instruction(e) = &error
            && e.is_exhausted()
        {
            self.stop.get_or_insert(Stop::Exhausted(e.to_string()));
            return;
        }
        let seen = self.failures.entry(error.cause()).or_default();
        if *seen == 0 {
            tracing::warn!(cause = %error.cause(), "a row failed (more like it are only counted): {error}");
        }
        *seen += 1;
        self.progress.dialogs_failed += 1;
        self.consecutive_failures += 1;
        self.next_delay = match error.provider_error() {
            Some(e) if e.is_retryable() => plan
                .backoff_base
                .saturating_mul(1 << (self.consecutive_failures - 1).min(10))
                .min(MAX_BACKOFF)
                .max(e.retry_after().unwrap_or_default().min(MAX_BACKOFF)),
            _ => Duration::ZERO,
        };
        if matches!(self.stop, Some(Stop::Failed(_))) {
            return;
        }
        if error.is_fatal() {
            self.stop = Some(Stop::Failed(format!("run stopped: {error}")));
        } else if self.progress.dialogs_failed > plan.max_failures {
            self.stop = Some(Stop::Failed(format!(
                "run stopped: {} rows failed, more than the budget of {} (raise it with max_failures); last failure: {error}",
                self.progress.dialogs_failed, plan.max_failures
            )));
        }
    }

    fn record_crash(&mut self, crash: &tokio::task::JoinError, plan: &Plan) {
        *self.failures.entry("crash".into()).or_default() += 1;
        self.progress.dialogs_failed += 1;
        tracing::error!("a row's task crashed: {crash}");
        if self.progress.dialogs_failed > plan.max_failures && self.stop.is_none() {
            self.stop = Some(Stop::Failed(format!(
                "run stopped: too many failed rows; last: a task crashed: {crash}"
            )));
        }
    }

    /// Stops the run when a criterion says so (reaching the count is no such stop).
    fn check_criteria(&mut self, plan: &Plan) {
        let reached = plan
            .cap
            .is_some_and(|cap| self.progress.rows_written >= cap);
        if self.stop.is_none()
            && !reached
            && let Some(hit) = plan.criteria.iter().find(|c| c.should_stop(&self.progress))
        {
            self.stop = Some(Stop::Criterion(hit.describe()));
        }
    }

    fn stop_reason(&self) -> String {
        let rows = self.progress.rows_written - self.resumed;
        match &self.stop {
            Some(Stop::Criterion(c)) => format!("stopping criterion met: {c}"),
            Some(Stop::Exhausted(what)) => format!("instruction generator {what}"),
            Some(Stop::Interrupted) => {
                "interrupted: no new rows were started and those in flight were finished".to_owned()
            }
            Some(Stop::Failed(cause)) => cause.clone(),
            None if self.resumed > 0 => format!(
                "wrote the {rows} missing rows ({} were already stored)",
                self.resumed
            ),
            None => format!("wrote the {rows} rows requested"),
        }
    }

    fn report(&self, session: &Session<'_>, elapsed: Duration) -> RunReport {
        let rows = self.progress.rows_written - self.resumed;
        let ledger = session.ledger;
        RunReport {
            run_id: session.record.run_id.clone(),
            rows_written: rows,
            rows_resumed: self.resumed,
            rows_requested: session.plan.cap,
            dialogs_failed: self.progress.dialogs_failed,
            failures: self.failures.clone(),
            regenerations: self.rejections.values().sum(),
            rejections: self.rejections.clone(),
            instructions_rejected: self.instructions_rejected.clone(),
            unjudged: 0,
            requests: self.progress.requests,
            input_tokens: self.progress.usage.input_tokens,
            output_tokens: self.progress.usage.output_tokens,
            elapsed_secs: elapsed.as_secs_f64(),
            dialogs_per_sec: if elapsed.is_zero() {
                0.0
            } else {
                rows as f64 / elapsed.as_secs_f64()
            },
            cost: ledger.prices.cost(&ledger.session()),
            ledger: LedgerSummary::new(
                &ledger.run(),
                &ledger.prices,
                self.progress.rows_written,
                session.plan.cap,
            ),
            interrupted: matches!(self.stop, Some(Stop::Interrupted)),
            stop_reason: self.stop_reason(),
            output: session.storage.location(),
        }
    }
}
