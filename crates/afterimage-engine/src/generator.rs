//! `ConversationGenerator` and its builder.

use std::sync::Arc;

use std::collections::HashSet;

use afterimage_core::{
    ApiKey, ChatModel, Evaluator, InstructionGenerator, Ledger, LedgerBook,
    RespondentPromptModifier, RunRecord, RunStatus, Spent, Storage, ToolExecutor, ToolSpec,
    split_row_id, unix_ms,
};
use afterimage_providers::Gemini;
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{
    LlmJudge, LlmToolSimulator, NearDuplicates, correspondent_follow_up_note,
    write_correspondent_prompt,
};
use tokio::sync::OnceCell;

use crate::dialog::{Quality, RunContext, RunWatch, Tally, Tools};
use crate::fleet::{FencedStorage, execute_shared, join_run};
use crate::instructions::InstructionPool;
use crate::policy::Sampling;
use crate::pricing::{Accounted, Prices, RunLedger};
use crate::rows::RowCount;
use crate::run::{Job, Plan, execute};
use crate::{EngineError, GenerateOptions, RunReport, TurnHooks, UnjudgedPolicy};

/// Generates multi-turn dialogs between a simulated user (the correspondent) and the
/// assistant being trained (the respondent), and streams them to storage.
///
/// Build one with [`ConversationGenerator::builder`], then call
/// [`generate`](ConversationGenerator::generate) as often as you like.
#[derive(Debug, Clone)]
pub struct ConversationGenerator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    respondent_prompt: String,
    respondent: Arc<dyn ChatModel>,
    correspondent: Arc<dyn ChatModel>,
    correspondent_prompt: OnceCell<String>,
    instructions: Arc<dyn InstructionGenerator>,
    modifier: Option<Arc<dyn RespondentPromptModifier>>,
    tools: Vec<ToolSpec>,
    tool_executor: Option<Arc<dyn ToolExecutor>>,
    max_tool_rounds: u32,
    storage: Arc<dyn Storage>,
    evaluator: Option<Arc<dyn Evaluator>>,
    min_score: f64,
    max_attempts: u32,
    keep_best: bool,
    checks: bool,
    instruction_checks: bool,
    on_unjudged: UnjudgedPolicy,
    dedup: bool,
    respondent_sampling: Sampling,
    correspondent_sampling: Sampling,
    ledger: Ledger,
    /// The ledger as far as earlier runs of this generator account for it.
    accounted: Accounted,
    hooks: Option<Arc<dyn TurnHooks>>,
    /// Whether the correspondent model writes the correspondent prompt when neither
    /// the caller nor the instruction generator gives one (structured rows never
    /// spend a request on it: nobody plays the user).
    writes_correspondent_prompt: bool,
}

impl ConversationGenerator {
    /// Starts a builder.
    pub fn builder() -> ConversationGeneratorBuilder {
        ConversationGeneratorBuilder::default()
    }

    /// Runs dialogs until the options' count or criteria are met; returns what the run
    /// did. Rows are stored as each dialog finishes, so an error still leaves every
    /// finished row in storage (its report says how many).
    ///
    /// With [`GenerateOptions::resume`], the run recorded in storage is finished
    /// instead: same run id, seed and correspondent prompt, only the missing dialogs.
    pub async fn generate(&self, options: GenerateOptions) -> Result<RunReport, EngineError> {
        if let Some(shared) = options.shared.clone() {
            return self.generate_shared(options, &shared).await;
        }
        self.run_jobs(options, None, None).await
    }

    /// [`generate`](Self::generate), each slot running `job` instead of a dialog
    /// when one is given. `kind` names the generator in the run record
    /// (`config.generator`; `None`: dialogs), so that a resume by another generator
    /// is refused.
    pub(crate) async fn run_jobs(
        &self,
        options: GenerateOptions,
        job: Option<Job>,
        kind: Option<&str>,
    ) -> Result<RunReport, EngineError> {
        let start = self.accounted();
        let mut plan = Plan::new(&options)?;
        plan.job = job;
        let (mut record, setup) = self.open_run(&options, &mut plan, kind).await?;
        record.status = RunStatus::Running;
        record.stop_reason = None;
        record.rows_requested = plan.cap;
        record.rows_written = plan.done.len() as u64;
        if !options.run_config.is_null() {
            record.config = options.run_config.clone();
        }
        mark_generator(&mut record, kind);
        self.save_run(&mut record).await.map_err(|e| {
            EngineError::Setup(format!(
                "saving the run record in {}: {e}",
                self.inner.storage.location()
            ))
        })?;
        let ledger = RunLedger::new(
            self.inner.ledger.clone(),
            record.ledger.clone(),
            start,
            Prices::of(&options),
        );
        let mut context = self.run_context(&record, &options, ledger);
        context.rows = RowCount::new(plan.cap, plan.done.len() as u64);
        let run = Arc::new(context);
        let result = execute(Arc::clone(&run), plan, &options, setup, &mut record).await;
        record.ledger = run.ledger.run();
        self.close_run(&mut record, &result).await;
        *self
            .inner
            .accounted
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.inner.ledger.book();
        result
    }

    /// Works on a run shared with other workers ([`GenerateOptions::shared`]): joins
    /// it (creating it when first), then makes dialogs from its slots until none is
    /// open. The run record's status is left to the fleet (`afterimage status`).
    async fn generate_shared(
        &self,
        options: GenerateOptions,
        shared: &crate::SharedRun,
    ) -> Result<RunReport, EngineError> {
        let start = self.accounted();
        let plan = Plan::new(&options)?;
        refuse_batch_features(&options)?;
        let count = plan.cap.ok_or_else(|| {
            EngineError::Config(
                "a shared run needs a count: set num_dialogs (generation.num_dialogs or --num-dialogs)".into(),
            )
        })?;
        let slots = Arc::clone(shared.slots());
        let (record, setup, _created) = join_run(slots.as_ref(), count, || async {
            let (prompt, setup) = self.prepare_correspondent_prompt().await?;
            let seed = options.seed.unwrap_or_else(rand::random);
            let mut record = RunRecord::new(slots.run_id(), seed, prompt);
            record.rows_requested = Some(count);
            record.config = options.run_config.clone();
            self.save_run(&mut record).await.map_err(|e| {
                EngineError::Setup(format!(
                    "saving the run record in {}: {e}",
                    self.inner.storage.location()
                ))
            })?;
            Ok((record, setup))
        })
        .await?;
        let ledger = RunLedger::new(
            self.inner.ledger.clone(),
            LedgerBook::default(),
            start,
            Prices::of(&options),
        );
        let fenced = Arc::new(FencedStorage::new(
            Arc::clone(&self.inner.storage),
            Arc::clone(&slots),
        ));
        let mut context = self.run_context(&record, &options, ledger);
        context.storage = Arc::clone(&fenced) as Arc<dyn Storage>;
        let run = Arc::new(context);
        let result = execute_shared(run, fenced, plan, &options, shared, setup).await;
        self.close_shared(record, slots.as_ref()).await;
        *self
            .inner
            .accounted
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = self.inner.ledger.book();
        result
    }

    /// Marks the shared run done in its record once no slot is open (the worker that
    /// sees it first; the others write the same).
    async fn close_shared(&self, mut record: RunRecord, slots: &dyn afterimage_core::Slots) {
        let Ok(counts) = slots.counts().await else {
            return;
        };
        if counts.open() > 0 {
            return;
        }
        record.status = RunStatus::Done;
        record.rows_written = counts.done;
        if let Err(e) = self.save_run(&mut record).await {
            tracing::warn!("could not save the record of the shared run: {e}");
        }
    }

    /// The ledger every model of this generator records in (the one given to the
    /// builder, or its own): what its runs paid for, by model and role.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// The judge `auto_improve` set up (or the one given), if any.
    pub(crate) fn evaluator(&self) -> Option<Arc<dyn Evaluator>> {
        self.inner.evaluator.clone()
    }

    /// The part of the ledger earlier runs of this generator account for.
    fn accounted(&self) -> LedgerBook {
        self.inner
            .accounted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The run to make: the stored one when resuming (the plan learns what it already
    /// wrote), else a new one with its correspondent prompt and what writing it cost.
    async fn open_run(
        &self,
        options: &GenerateOptions,
        plan: &mut Plan,
        kind: Option<&str>,
    ) -> Result<(RunRecord, Spent), EngineError> {
        let inner = &self.inner;
        let Some((record, done)) = self.resumable_run(options, kind).await? else {
            let (prompt, setup) = self.prepare_correspondent_prompt().await?;
            let run_id = options.run_id.clone().unwrap_or_else(new_run_id);
            let seed = options.seed.unwrap_or_else(rand::random);
            return Ok((RunRecord::new(run_id, seed, prompt), setup));
        };
        plan.done = done;
        plan.stored_visits = inner.storage.context_visits().await.map_err(|e| {
            EngineError::Setup(format!(
                "reading the stored rows' documents in {}: {e}",
                inner.storage.location()
            ))
        })?;
        inner.instructions.record_stored_visits(&plan.stored_visits);
        Ok((record, Spent::default()))
    }

    /// What every dialog of the run shares.
    fn run_context(
        &self,
        record: &RunRecord,
        options: &GenerateOptions,
        ledger: RunLedger,
    ) -> RunContext {
        let inner = &self.inner;
        let correspondent_prompt = record.correspondent_prompt.clone();
        RunContext {
            run_id: record.run_id.clone(),
            seed: record.seed,
            turns: options.turns,
            respondent_prompt: inner.respondent_prompt.clone(),
            respondent: Arc::clone(&inner.respondent),
            correspondent: Arc::clone(&inner.correspondent),
            correspondent_system: format!(
                "{correspondent_prompt}\n\n{}",
                correspondent_follow_up_note()
            ),
            correspondent_prompt,
            respondent_sampling: inner.respondent_sampling,
            correspondent_sampling: inner.correspondent_sampling,
            instructions: InstructionPool::new(
                Arc::clone(&inner.instructions),
                options.steering.clone(),
            ),
            modifier: inner.modifier.clone(),
            tools: Tools {
                specs: inner.tools.clone(),
                executor: inner.tool_executor.clone(),
                max_rounds: inner.max_tool_rounds,
            },
            quality: Quality {
                evaluator: inner.evaluator.clone(),
                min_score: inner.min_score,
                max_attempts: inner.max_attempts,
                checks: inner.checks,
                instruction_checks: inner.instruction_checks,
                on_unjudged: inner.on_unjudged,
                dedup: inner.dedup.then(|| NearDuplicates::new(0.8)),
                keep_best: inner.keep_best,
            },
            storage: Arc::clone(&inner.storage),
            watch: RunWatch::default(),
            ledger,
            hooks: inner.hooks.clone(),
            rows: RowCount::unlimited(),
        }
    }

    /// Saves how the run ended, with this session's failures by cause added to those
    /// of earlier sessions (where `analyze` finds them without the report) and the
    /// ledger of all sessions (already in `record`). The final
    /// status and counts are for people reading the store; the rows are what resume
    /// trusts, so failing to save them only warns.
    async fn close_run(&self, record: &mut RunRecord, result: &Result<RunReport, EngineError>) {
        let (status, report) = match result {
            Ok(report) if report.interrupted => (RunStatus::Stopped, Some(report)),
            Ok(report) => (RunStatus::Done, Some(report)),
            Err(e) => (RunStatus::Failed, e.report()),
        };
        record.status = status;
        record.stop_reason = match (report, result) {
            (Some(report), _) => Some(report.stop_reason.clone()),
            (None, Err(e)) => Some(e.to_string()),
            (None, Ok(_)) => None,
        };
        if let Some(report) = report {
            record.rows_written = report.rows_resumed + report.rows_written;
            record.add_failures(&report.failures);
        }
        if let Err(e) = self.save_run(record).await {
            tracing::warn!(
                "could not save the run record in {}: {e}",
                self.inner.storage.location()
            );
        }
    }

    /// With `resume`, the stored run and the indices it already wrote; `None` when a
    /// new run starts. Without `resume`, an output holding rows is an error, and so
    /// is a run another generator (`kind`) made.
    async fn resumable_run(
        &self,
        options: &GenerateOptions,
        kind: Option<&str>,
    ) -> Result<Option<(RunRecord, HashSet<u64>)>, EngineError> {
        let storage = &self.inner.storage;
        let location = storage.location();
        let setup = |what: &str, e: afterimage_core::StorageError| {
            EngineError::Setup(format!("{what} {location}: {e}"))
        };
        let ids = storage
            .existing_ids()
            .await
            .map_err(|e| setup("reading the ids in", e))?;
        if !options.resume {
            if ids.is_empty() {
                return Ok(None);
            }
            return Err(EngineError::Config(format!(
                "{location} already holds {} rows of an earlier run: pass --resume (GenerateOptions::resume) to finish that run, or choose another output",
                ids.len()
            )));
        }
        let record = storage
            .load_run()
            .await
            .map_err(|e| setup("reading the run record in", e))?;
        let Some(record) = record else {
            if ids.is_empty() {
                return Ok(None);
            }
            return Err(EngineError::Config(format!(
                "{location} holds {} rows but no afterimage run record (written by another tool or an older version), so the run cannot be resumed: choose another output",
                ids.len()
            )));
        };
        check_generator(&record, kind, &location)?;
        let done = stored_indices(&ids, &record.run_id, &location)?;
        if let Some(seed) = options.seed.filter(|s| *s != record.seed) {
            tracing::warn!(
                "resuming run {} with its stored seed {}, not {seed}",
                record.run_id,
                record.seed
            );
        }
        tracing::info!(
            run_id = %record.run_id,
            stored = done.len(),
            "resuming: the stored dialogs are skipped"
        );
        Ok(Some((record, done)))
    }

    async fn save_run(&self, record: &mut RunRecord) -> Result<(), afterimage_core::StorageError> {
        record.updated_at_ms = unix_ms();
        self.inner.storage.save_run(record).await
    }

    /// The simulated user's system prompt: the one given, else the instruction
    /// generator's, else one the correspondent model writes from the respondent prompt
    /// (once; later runs reuse it).
    pub async fn correspondent_prompt(&self) -> Result<String, EngineError> {
        self.prepare_correspondent_prompt()
            .await
            .map(|(prompt, _)| prompt)
    }

    /// The correspondent prompt and what producing it cost (nothing when cached).
    async fn prepare_correspondent_prompt(&self) -> Result<(String, Spent), EngineError> {
        let inner = &self.inner;
        let tally = Tally::new(inner.correspondent.as_ref());
        let prompt = inner
            .correspondent_prompt
            .get_or_try_init(|| async {
                let own = inner
                    .instructions
                    .correspondent_prompt(&inner.respondent_prompt)
                    .await
                    .map_err(|e| EngineError::Setup(format!("instruction generator: {e}")))?;
                match own {
                    Some(prompt) => Ok(prompt),
                    None if !inner.writes_correspondent_prompt => Ok(String::new()),
                    None => write_correspondent_prompt(&tally, &inner.respondent_prompt)
                        .await
                        .map_err(|e| {
                            EngineError::Setup(format!("writing the correspondent prompt: {e}"))
                        }),
                }
            })
            .await?
            .clone();
        Ok((prompt, tally.spent()))
    }

    /// Where rows go.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.inner.storage
    }

    /// What a [`StructuredGenerator`](crate::StructuredGenerator) built from this
    /// generator takes over.
    pub(crate) fn structured_parts(&self) -> crate::structured::FromDialogs {
        let inner = &self.inner;
        crate::structured::FromDialogs {
            respondent_prompt: inner.respondent_prompt.clone(),
            respondent: Arc::clone(&inner.respondent),
            ledger: inner.ledger.clone(),
            instructions: Arc::clone(&inner.instructions),
            modifier: inner.modifier.clone(),
            sampling: inner.respondent_sampling,
            instruction_checks: inner.instruction_checks,
            correspondent_prompt: inner.correspondent_prompt.get().cloned(),
        }
    }

    /// The generator a [`StructuredGenerator`](crate::StructuredGenerator) runs its
    /// rows with: `parts` as the respondent, rows to `storage`; no judge, checks,
    /// tools or hooks, and no request spent on a correspondent prompt.
    pub(crate) fn for_structured(
        parts: crate::structured::FromDialogs,
        storage: Arc<dyn Storage>,
    ) -> Self {
        ConversationGenerator {
            inner: Arc::new(Inner {
                respondent_prompt: parts.respondent_prompt,
                correspondent: Arc::clone(&parts.respondent),
                respondent: parts.respondent,
                correspondent_prompt: OnceCell::new_with(parts.correspondent_prompt),
                instructions: parts.instructions,
                modifier: parts.modifier,
                tools: Vec::new(),
                tool_executor: None,
                max_tool_rounds: 0,
                storage,
                evaluator: None,
                min_score: 0.0,
                max_attempts: 1,
                keep_best: true,
                checks: false,
                instruction_checks: parts.instruction_checks,
                on_unjudged: UnjudgedPolicy::default(),
                dedup: false,
                respondent_sampling: parts.sampling,
                correspondent_sampling: parts.sampling,
                ledger: parts.ledger,
                accounted: Accounted::default(),
                hooks: None,
                writes_correspondent_prompt: false,
            }),
        }
    }
}

/// Builds a [`ConversationGenerator`]; the required parts are a respondent prompt, a
/// model and an instruction generator.
#[derive(Debug, Default)]
pub struct ConversationGeneratorBuilder {
    respondent_prompt: Option<String>,
    model: Option<Arc<dyn ChatModel>>,
    api_key: Option<ApiKey>,
    model_name: Option<String>,
    correspondent_model: Option<Arc<dyn ChatModel>>,
    correspondent_prompt: Option<String>,
    instructions: Option<Arc<dyn InstructionGenerator>>,
    modifier: Option<Arc<dyn RespondentPromptModifier>>,
    tools: Vec<ToolSpec>,
    tool_executor: Option<Arc<dyn ToolExecutor>>,
    max_tool_rounds: Option<u32>,
    storage: Option<Arc<dyn Storage>>,
    auto_improve: bool,
    evaluator: Option<Arc<dyn Evaluator>>,
    evaluator_model_name: Option<String>,
    min_score: Option<f64>,
    max_regenerations: Option<u32>,
    keep_best: Option<bool>,
    checks: Option<bool>,
    instruction_checks: Option<bool>,
    on_unjudged: Option<UnjudgedPolicy>,
    dedup: Option<bool>,
    temperature: Option<f32>,
    respondent: RoleSampling,
    correspondent: RoleSampling,
    judge: RoleSampling,
    ledger: Option<Ledger>,
    hooks: Option<Arc<dyn TurnHooks>>,
}

/// A role's sampling settings as the builder was given them.
#[derive(Debug, Default, Clone, Copy)]
struct RoleSampling {
    temperature: Option<f32>,
    max_tokens: Option<u32>,
}

impl RoleSampling {
    /// Checks the settings of the builder methods prefixed `role` (`respondent_`).
    fn check(self, role: &str) -> Result<(), EngineError> {
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(EngineError::Config(format!(
                "{role}temperature is {t}: it must lie between 0 and 2"
            )));
        }
        if self.max_tokens == Some(0) {
            return Err(EngineError::Config(format!(
                "{role}max_tokens is 0: allow at least one token"
            )));
        }
        Ok(())
    }

    /// The settings, with `temperature` where none was given.
    fn or(self, temperature: f32) -> Sampling {
        Sampling {
            temperature: self.temperature.unwrap_or(temperature),
            max_tokens: self.max_tokens,
        }
    }
}

impl ConversationGeneratorBuilder {
    /// The assistant's system prompt (what the trained assistant is).
    pub fn respondent_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.respondent_prompt = Some(prompt.into());
        self
    }

    /// The model for the respondent, and for the correspondent unless one is set.
    pub fn model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// The seed's shorthand: with an API key (and optionally
    /// [`model_name`](Self::model_name)) and no [`model`](Self::model), the generator
    /// talks to Gemini, the Python library's default provider.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The Gemini model for the [`api_key`](Self::api_key) shorthand (default
    /// `gemini-2.0-flash`).
    pub fn model_name(mut self, name: impl Into<String>) -> Self {
        self.model_name = Some(name.into());
        self
    }

    /// A separate model to play the user.
    pub fn correspondent_model(mut self, model: Arc<dyn ChatModel>) -> Self {
        self.correspondent_model = Some(model);
        self
    }

    /// A fixed system prompt for the simulated user (otherwise one is written).
    pub fn correspondent_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.correspondent_prompt = Some(prompt.into());
        self
    }

    /// What the user asks first.
    pub fn instruction_generator(mut self, generator: Arc<dyn InstructionGenerator>) -> Self {
        self.instructions = Some(generator);
        self
    }

    /// What the assistant knows (for example the sampled documents).
    pub fn respondent_prompt_modifier(
        mut self,
        modifier: Arc<dyn RespondentPromptModifier>,
    ) -> Self {
        self.modifier = Some(modifier);
        self
    }

    /// Tools the respondent may call (OpenAI function specs). Its calls are checked
    /// against the specs, answered by the [`tool_executor`](Self::tool_executor), and
    /// stored with their results in OpenAI message shape.
    pub fn tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// What answers the respondent's tool calls (default with tools: an
    /// [`LlmToolSimulator`] on the respondent's model).
    pub fn tool_executor(mut self, executor: Arc<dyn ToolExecutor>) -> Self {
        self.tool_executor = Some(executor);
        self
    }

    /// Most tool rounds in one assistant turn (default 4); an attempt whose respondent
    /// keeps calling tools past it is rejected (`too_many_tool_rounds`).
    pub fn max_tool_rounds(mut self, rounds: u32) -> Self {
        self.max_tool_rounds = Some(rounds);
        self
    }

    /// Where rows go (default: a timestamped JSONL file in the current folder).
    pub fn storage(mut self, storage: Arc<dyn Storage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Judge every dialog and regenerate low-scoring ones, a bounded number of times
    /// (`max_regenerations`), telling each new attempt what the judge found; by
    /// default the best attempt is kept when none passes. Without an explicit
    /// [`evaluator`](Self::evaluator), an [`LlmJudge`] on the respondent's model judges.
    pub fn auto_improve(mut self, on: bool) -> Self {
        self.auto_improve = on;
        self
    }

    /// The model name the default judge asks for (same client as the respondent).
    pub fn evaluator_model_name(mut self, name: impl Into<String>) -> Self {
        self.evaluator_model_name = Some(name.into());
        self
    }

    /// The judge used by `auto_improve`.
    pub fn evaluator(mut self, evaluator: Arc<dyn Evaluator>) -> Self {
        self.evaluator = Some(evaluator);
        self
    }

    /// The score a judged dialog needs to be kept without regeneration (default 0.72,
    /// the Python library's "good").
    pub fn min_score(mut self, score: f64) -> Self {
        self.min_score = Some(score);
        self
    }

    /// How many times a rejected dialog is generated again (default 2, so at most
    /// three attempts); each new attempt is told the judge's feedback.
    pub fn max_regenerations(mut self, n: u32) -> Self {
        self.max_regenerations = Some(n);
        self
    }

    /// When no attempt passes: keep the best one (`true`, the default), or drop the
    /// dialog so the scheduler makes another one in its place.
    pub fn keep_best(mut self, keep: bool) -> Self {
        self.keep_best = Some(keep);
        self
    }

    /// Reject broken dialogs (empty or truncated replies, a user speaking as the
    /// assistant or an AI, a language switch, a refusal, a repeated user turn) before
    /// the judge (default: on with `auto_improve`).
    pub fn quality_checks(mut self, on: bool) -> Self {
        self.checks = Some(on);
        self
    }

    /// Check each generated first question before a dialog is spent on it (default:
    /// on): a question that is no request (empty, too short, a placeholder such as
    /// `first message`, a MIME type or URL alone, an echo of the generator's prompt or
    /// the correspondent prompt, a copy of the document's first line) is discarded,
    /// counted in [`RunReport::instructions_rejected`], and another drawn. A dialog
    /// that draws 10 in a row fails; when no question of the run ever passed, the run
    /// stops.
    pub fn instruction_checks(mut self, on: bool) -> Self {
        self.instruction_checks = Some(on);
        self
    }

    /// What happens to attempts the judge could not grade (default
    /// [`UnjudgedPolicy::Stop`]: kept like today for the occasional unreadable
    /// answer, but the run stops when the judge's first answers are unreadable).
    pub fn on_unjudged(mut self, policy: UnjudgedPolicy) -> Self {
        self.on_unjudged = Some(policy);
        self
    }

    /// Skip first questions that nearly repeat an earlier one of the run (default: on
    /// with `auto_improve`).
    pub fn dedup_questions(mut self, on: bool) -> Self {
        self.dedup = Some(on);
        self
    }

    /// Sampling temperature of both roles (default 0.7); the per-role settings win.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// The respondent's (the assistant's) sampling temperature, 0 to 2 (default:
    /// [`temperature`](Self::temperature)).
    pub fn respondent_temperature(mut self, temperature: f32) -> Self {
        self.respondent.temperature = Some(temperature);
        self
    }

    /// Most tokens per respondent reply (default: the endpoint's). A reply cut at the
    /// limit is rejected by the cheap checks (`truncated_reply`).
    pub fn respondent_max_tokens(mut self, max_tokens: u32) -> Self {
        self.respondent.max_tokens = Some(max_tokens);
        self
    }

    /// The correspondent's (the simulated user's) sampling temperature, 0 to 2
    /// (default: [`temperature`](Self::temperature)).
    pub fn correspondent_temperature(mut self, temperature: f32) -> Self {
        self.correspondent.temperature = Some(temperature);
        self
    }

    /// Most tokens per correspondent message (default: the endpoint's).
    pub fn correspondent_max_tokens(mut self, max_tokens: u32) -> Self {
        self.correspondent.max_tokens = Some(max_tokens);
        self
    }

    /// The built-in judge's sampling temperature, 0 to 2 (default 0.2). Only for the
    /// judge `auto_improve` builds; an [`evaluator`](Self::evaluator) of your own
    /// keeps its settings.
    pub fn judge_temperature(mut self, temperature: f32) -> Self {
        self.judge.temperature = Some(temperature);
        self
    }

    /// Most tokens per answer of the built-in judge (default: the endpoint's); see
    /// [`judge_temperature`](Self::judge_temperature).
    pub fn judge_max_tokens(mut self, max_tokens: u32) -> Self {
        self.judge.max_tokens = Some(max_tokens);
        self
    }

    /// The ledger the generator's models record every answered request in (default:
    /// a ledger of its own, see [`ConversationGenerator::ledger`]). Give the models you
    /// build yourself (an evaluator's, an instruction generator's) the same ledger
    /// through [`Ledger::meter`] so the run's account holds them too.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Code of yours to run before and after every correspondent and respondent
    /// completion, seeing the dialog so far; a hook's error fails the attempt with its
    /// message.
    pub fn turn_hooks(mut self, hooks: Arc<dyn TurnHooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// Checks the parts and builds the generator.
    pub fn build(self) -> Result<ConversationGenerator, EngineError> {
        self.check_sampling()?;
        let missing =
            |what: &str, how: &str| EngineError::Config(format!("{what} is missing: {how}"));
        let respondent_prompt = self
            .respondent_prompt
            .filter(|p| !p.trim().is_empty())
            .ok_or_else(|| missing("the respondent prompt", "call .respondent_prompt(...)"))?;
        let model = respondent_model(self.model, self.api_key, self.model_name.as_deref())?;
        let ledger = self.ledger.unwrap_or_default();
        let respondent = ledger.meter(Arc::clone(&model), "respondent");
        let instructions = self.instructions.ok_or_else(|| {
            missing(
                "the instruction generator",
                "call .instruction_generator(...)",
            )
        })?;
        // With auto_improve and no judge given, the respondent's model judges.
        let (judge, judge_model) = (self.judge, self.evaluator_model_name);
        let evaluator = self.auto_improve.then(|| {
            self.evaluator.unwrap_or_else(|| {
                built_in_judge(
                    &ledger.meter(Arc::clone(&model), "judge"),
                    judge_model,
                    judge,
                )
            })
        });
        let max_attempts = self.max_regenerations.unwrap_or(2).saturating_add(1);
        let min_score = self.min_score.unwrap_or(0.72);
        if !(0.0..=1.0).contains(&min_score) {
            return Err(EngineError::Config(format!(
                "min_score is {min_score}: it must lie between 0 and 1"
            )));
        }
        check_tool_names(&self.tools)?;
        let tool_executor = tool_executor(self.tool_executor, &self.tools, &ledger, &model);
        let correspondent_prompt = OnceCell::new_with(self.correspondent_prompt);
        let temperature = self.temperature.unwrap_or(0.7);
        Ok(ConversationGenerator {
            inner: Arc::new(Inner {
                respondent_prompt,
                correspondent: ledger.meter(
                    self.correspondent_model
                        .unwrap_or_else(|| Arc::clone(&model)),
                    "correspondent",
                ),
                respondent,
                correspondent_prompt,
                instructions,
                modifier: self.modifier,
                tools: self.tools,
                tool_executor,
                max_tool_rounds: self.max_tool_rounds.unwrap_or(4),
                storage: self
                    .storage
                    .unwrap_or_else(|| Arc::new(JsonlStorage::timestamped())),
                evaluator,
                min_score,
                max_attempts,
                keep_best: self.keep_best.unwrap_or(true),
                checks: self.checks.unwrap_or(self.auto_improve),
                instruction_checks: self.instruction_checks.unwrap_or(true),
                on_unjudged: self.on_unjudged.unwrap_or_default(),
                dedup: self.dedup.unwrap_or(self.auto_improve),
                respondent_sampling: self.respondent.or(temperature),
                correspondent_sampling: self.correspondent.or(temperature),
                ledger,
                accounted: Accounted::default(),
                hooks: self.hooks,
                writes_correspondent_prompt: true,
            }),
        })
    }

    /// Temperatures within 0..=2 and token limits above 0; judge settings only for
    /// the built-in judge.
    fn check_sampling(&self) -> Result<(), EngineError> {
        let both = RoleSampling {
            temperature: self.temperature,
            max_tokens: None,
        };
        both.check("")?;
        self.respondent.check("respondent_")?;
        self.correspondent.check("correspondent_")?;
        self.judge.check("judge_")?;
        let judge_set = self.judge.temperature.is_some() || self.judge.max_tokens.is_some();
        if judge_set && self.evaluator.is_some() {
            return Err(EngineError::Config(
                "judge_temperature and judge_max_tokens apply to the built-in judge: set them on your own evaluator instead".to_owned(),
            ));
        }
        Ok(())
    }
}

/// The model given, else Gemini with the API key (the Python library's default
/// provider).
fn respondent_model(
    model: Option<Arc<dyn ChatModel>>,
    api_key: Option<ApiKey>,
    model_name: Option<&str>,
) -> Result<Arc<dyn ChatModel>, EngineError> {
    match (model, api_key) {
        (Some(model), _) => Ok(model),
        (None, Some(key)) => {
            let gemini = Gemini::builder()
                .api_key(key)
                .model(model_name.unwrap_or("gemini-2.0-flash"))
                .build()
                .map_err(|e| EngineError::Config(format!("the Gemini client: {e}")))?;
            Ok(Arc::new(gemini))
        }
        (None, None) => Err(EngineError::Config(
            "the model is missing: call .model(...), or .api_key(...) for Gemini".to_owned(),
        )),
    }
}

/// The judge `auto_improve` uses when none is given: an [`LlmJudge`] on the
/// respondent's client, asking for `model_name`, with the builder's sampling settings.
fn built_in_judge(
    respondent: &Arc<dyn ChatModel>,
    model_name: Option<String>,
    sampling: RoleSampling,
) -> Arc<dyn Evaluator> {
    let mut judge = LlmJudge::new(Arc::clone(respondent))
        .model_name(model_name)
        .max_tokens(sampling.max_tokens);
    if let Some(t) = sampling.temperature {
        judge = judge.temperature(t);
    }
    Arc::new(judge)
}

/// The executor given, else, when tools are offered, a simulator on the respondent's
/// model: offered tools need something to answer them.
fn tool_executor(
    given: Option<Arc<dyn ToolExecutor>>,
    tools: &[ToolSpec],
    ledger: &Ledger,
    model: &Arc<dyn ChatModel>,
) -> Option<Arc<dyn ToolExecutor>> {
    given.or_else(|| {
        (!tools.is_empty()).then(|| {
            let simulator = ledger.meter(Arc::clone(model), "tools");
            Arc::new(LlmToolSimulator::new(simulator)) as Arc<dyn ToolExecutor>
        })
    })
}

/// Tool names must be unique: a call names the tool it wants.
fn check_tool_names(tools: &[ToolSpec]) -> Result<(), EngineError> {
    let mut names = HashSet::new();
    match tools.iter().find(|t| !names.insert(t.name.as_str())) {
        Some(tool) => Err(EngineError::Config(format!(
            "the tool name `{}` is used twice",
            tool.name
        ))),
        None => Ok(()),
    }
}

/// The indices of the stored rows `ids`, all of which must be from run `run_id`.
fn stored_indices(
    ids: &[String],
    run_id: &str,
    location: &str,
) -> Result<HashSet<u64>, EngineError> {
    let mut done = HashSet::with_capacity(ids.len());
    for id in ids {
        match split_row_id(id) {
            Some((run, index)) if run == run_id => {
                done.insert(index);
            }
            _ => {
                return Err(EngineError::Config(format!(
                    "{location} holds row {id:?}, which is not from run {run_id}: resume needs an output holding one run; choose another output"
                )));
            }
        }
    }
    Ok(done)
}

/// A shared run claims its dialogs slot by slot from the pool; it has no waves to
/// enter together, and its slots, not a row count, bound what is stored. So batch
/// mode and spares are refused there rather than half applied.
fn refuse_batch_features(options: &GenerateOptions) -> Result<(), EngineError> {
    if options.live_dialogs.is_some() {
        return Err(EngineError::Config(
            "batch mode cannot be combined with a shared run (--join); run it without --join, or without --batch".into(),
        ));
    }
    if options.oversample > 1.0 {
        return Err(EngineError::Config(format!(
            "oversample {} cannot be combined with a shared run (--join): its slots already replace a failed dialog; set oversample to 1.0",
            options.oversample
        )));
    }
    Ok(())
}

/// Marks the record with the generator that makes its rows (`None`: dialogs, which
/// leave the record as it is).
fn mark_generator(record: &mut RunRecord, kind: Option<&str>) {
    let Some(kind) = kind else {
        return;
    };
    if !record.config.is_object() {
        record.config = serde_json::Value::Object(serde_json::Map::new());
    }
    if let Some(config) = record.config.as_object_mut() {
        config.insert("generator".into(), kind.into());
    }
}

/// Refuses to resume a run another generator made: its rows are not `kind`'s.
fn check_generator(
    record: &RunRecord,
    kind: Option<&str>,
    location: &str,
) -> Result<(), EngineError> {
    let recorded = record.config.get("generator").and_then(|k| k.as_str());
    if recorded == kind {
        return Ok(());
    }
    let wanted = kind.map_or_else(|| "dialogs".to_owned(), |k| format!("{k} rows"));
    Err(EngineError::Config(match recorded {
        Some(other) => format!(
            "{location} holds {other} rows, not {wanted}: resume it with `afterimage {other}`, or choose another output"
        ),
        None => format!("{location} holds a dialog run, not {wanted}: choose another output"),
    }))
}

/// A short random run id (12 hex digits), as a run gets when
/// [`GenerateOptions::run_id`](crate::GenerateOptions::run_id) names none: for a caller that
/// must know the id before the run starts (batch mode's journal).
pub fn new_run_id() -> String {
    format!("{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}
