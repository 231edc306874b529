//! Preference pairs (DPO data): for each question, several candidate answers that
//! differ by a strategy, scored by the judge; the best and the worst make a pair when
//! their scores are far enough apart.
//!
//! A pair run is a dialog run with another job in each slot: the same instruction
//! pool, modifier, models, ledger, storage, exact count, failure budget and resume
//! (`crate::run`); the one pair is `crate::dialog::pair`.

use std::sync::Arc;

use afterimage_core::{Evaluator, Storage};
use serde::Serialize;

use crate::run::Job;
use crate::{ConversationGenerator, EngineError, GenerateOptions, RunReport};

mod analytics;
mod format;
mod variants;

pub(crate) use analytics::Collector;
pub use analytics::{GapStats, LabelWins, PreferenceAnalytics};
pub(crate) use format::round;
pub use format::{Candidate, PairFormat, PreferencePair};
pub use variants::PairStrategy;
pub(crate) use variants::{Variant, Which};

/// Upstream's defaults.
const DEFAULT_NUM_RESPONSES: usize = 2;
const DEFAULT_MIN_SCORE_GAP: f64 = 0.1;

/// Makes preference pairs with the parts of a [`ConversationGenerator`]: its
/// instruction generator, modifier (documents, RAG), personas, models, ledger and
/// storage.
///
/// Per pair: draw a question, write the assistant's prompt, optionally simulate a
/// dialog before it (`multi_turn`), ask `num_responses` candidates (real chat requests,
/// the system prompt as the system message), score each with the judge as the last
/// turn of the dialog, and keep the highest as chosen and the lowest as rejected when
/// they are at least `min_score_gap` apart. Discarded and failed attempts are replaced
/// within the run's failure budget (by default the larger of 50 and three times the
/// pairs asked for), so the run writes exactly the pairs requested.
///
/// Pairs go to the generator's storage through
/// [`Storage::write_record`](afterimage_core::Storage::write_record) (JSON Lines), one
/// row per pair in the chosen [`PairFormat`], with id `<run_id>-<index>`; a killed run
/// resumes with [`GenerateOptions::resume`], writing only the missing pairs.
///
/// ```no_run
/// use std::sync::Arc;
/// use afterimage_engine::{
///     ConversationGenerator, GenerateOptions, PairFormat, PairStrategy, PreferenceGenerator,
/// };
/// use afterimage_storage::JsonlStorage;
/// use afterimage_strategies::SimpleInstructionGenerator;
///
/// # async fn demo(model: Arc<dyn afterimage_core::ChatModel>) -> Result<(), Box<dyn std::error::Error>> {
/// let conversation = ConversationGenerator::builder()
///     .respondent_prompt("You are a Tier 1 technical support agent.")
///     .model(model.clone())
///     .instruction_generator(Arc::new(SimpleInstructionGenerator::new(model)))
///     .auto_improve(true) // its judge scores the candidates
///     .storage(Arc::new(JsonlStorage::new("prefs.jsonl")))
///     .build()?;
/// let pairs = PreferenceGenerator::builder()
///     .conversation(conversation)
///     .strategy(PairStrategy::Prompt)
///     .format(PairFormat::ChatDpo)
///     .build()?;
/// let report = pairs
///     .generate(GenerateOptions::new().num_dialogs(100).max_concurrency(8))
///     .await?;
/// println!("{} pairs, discard rate {}", report.run.rows_written, report.preference.discard_rate);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PreferenceGenerator {
    conversation: ConversationGenerator,
    settings: Arc<PairSettings>,
}

/// What every pair of a generator shares.
#[derive(Debug)]
struct PairSettings {
    strategy: PairStrategy,
    variants: Vec<Variant>,
    min_score_gap: f64,
    secondary_model: Option<String>,
    multi_turn: bool,
    format: PairFormat,
    judge: Arc<dyn Evaluator>,
    log: Option<Arc<dyn Storage>>,
}

/// What a pair task needs: the settings and the run's analytics.
#[derive(Debug)]
pub(crate) struct PairJob {
    pub(crate) strategy: PairStrategy,
    pub(crate) variants: Vec<Variant>,
    pub(crate) min_score_gap: f64,
    pub(crate) secondary_model: Option<String>,
    pub(crate) multi_turn: bool,
    pub(crate) format: PairFormat,
    pub(crate) judge: Arc<dyn Evaluator>,
    pub(crate) collector: Collector,
    /// Where every kept pair also goes whole, every candidate included.
    pub(crate) log: Option<Arc<dyn Storage>>,
}

impl PairJob {
    /// The model name a variant asks for.
    pub(crate) fn model_of<'a>(&'a self, variant: &Variant, primary: &'a str) -> &'a str {
        match (variant.model, &self.secondary_model) {
            (Which::Secondary, Some(name)) => name,
            _ => primary,
        }
    }
}

/// A judge's score as stored: three decimals.
pub(crate) fn round_score(score: f64) -> f64 {
    round(score.clamp(0.0, 1.0))
}

/// What a preference run did: the run's report and the pairs' analytics.
#[derive(Debug, Clone, Serialize)]
pub struct PreferenceReport {
    /// Counts, failures by cause (discarded pairs as `pair: score_gap_too_small`),
    /// requests, tokens, cost, the output.
    #[serde(flatten)]
    pub run: RunReport,
    /// Gaps, win rates, discards and warnings.
    pub preference: PreferenceAnalytics,
    /// Attempts that could end without a pair before the run stops.
    pub attempt_budget: u64,
}

impl PreferenceGenerator {
    /// Starts a builder.
    pub fn builder() -> PreferenceGeneratorBuilder {
        PreferenceGeneratorBuilder::default()
    }

    /// Makes `options`' `num_dialogs` pairs (the count is required); `max_turns`
    /// bounds a `multi_turn` dialog, concurrency, seed, resume and prices apply as
    /// for dialogs.
    pub async fn generate(
        &self,
        mut options: GenerateOptions,
    ) -> Result<PreferenceReport, EngineError> {
        let Some(pairs) = options.num_dialogs else {
            return Err(EngineError::Config(
                "the number of pairs is missing: set preference.num_pairs (GenerateOptions::num_dialogs)".to_owned(),
            ));
        };
        let s = &self.settings;
        if s.multi_turn && options.turns.max() < 2 {
            return Err(EngineError::Config(format!(
                "multi_turn needs room for a dialog before the pair's answer: max_turns is {}, set it to 2 or more",
                options.turns.max()
            )));
        }
        let budget = *options
            .max_failures
            .get_or_insert_with(|| pairs.saturating_mul(3).max(50));
        let job = Arc::new(PairJob {
            strategy: s.strategy,
            variants: s.variants.clone(),
            min_score_gap: s.min_score_gap,
            secondary_model: s.secondary_model.clone(),
            multi_turn: s.multi_turn,
            format: s.format,
            judge: Arc::clone(&s.judge),
            collector: Collector::default(),
            log: s.log.clone(),
        });
        let task = Arc::clone(&job);
        let slot: Job = Arc::new(move |run, index, delay| {
            Box::pin(crate::dialog::run_pair(
                run,
                Arc::clone(&task),
                index,
                delay,
            ))
        });
        let run = self.conversation.run_jobs(options, Some(slot), None).await;
        if let Some(log) = &s.log
            && let Err(e) = log.flush().await
        {
            tracing::warn!("could not flush the pair log {}: {e}", log.location());
        }
        let run = run?;
        let preference = job.collector.analytics(run.failures.clone());
        Ok(PreferenceReport {
            run,
            preference,
            attempt_budget: budget,
        })
    }

    /// The ledger every model of the run records in.
    pub fn ledger(&self) -> &afterimage_core::Ledger {
        self.conversation.ledger()
    }
}

/// Builds a [`PreferenceGenerator`]; only [`conversation`](Self::conversation) is
/// required.
#[derive(Debug, Default)]
pub struct PreferenceGeneratorBuilder {
    conversation: Option<ConversationGenerator>,
    judge: Option<Arc<dyn Evaluator>>,
    num_responses: Option<usize>,
    min_score_gap: Option<f64>,
    strategy: PairStrategy,
    secondary_model: Option<String>,
    multi_turn: bool,
    format: PairFormat,
    log: Option<Arc<dyn Storage>>,
}

impl PreferenceGeneratorBuilder {
    /// The parts pairs are made with (questions, prompt, models, storage); its judge
    /// (`auto_improve`) scores the candidates unless [`judge`](Self::judge) gives one.
    pub fn conversation(mut self, generator: ConversationGenerator) -> Self {
        self.conversation = Some(generator);
        self
    }

    /// The judge that scores each candidate.
    pub fn judge(mut self, judge: Arc<dyn Evaluator>) -> Self {
        self.judge = Some(judge);
        self
    }

    /// Candidates per pair, 2 or more (default 2).
    pub fn num_responses(mut self, n: usize) -> Self {
        self.num_responses = Some(n);
        self
    }

    /// The score difference a pair needs between chosen and rejected, 0 to 1
    /// (default 0.1).
    pub fn min_score_gap(mut self, gap: f64) -> Self {
        self.min_score_gap = Some(gap);
        self
    }

    /// How the candidates differ (default [`PairStrategy::Temperature`]).
    pub fn strategy(mut self, strategy: PairStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The model name the `model` and `combined` strategies ask on the respondent's
    /// client for their secondary candidates.
    pub fn secondary_model(mut self, name: impl Into<String>) -> Self {
        self.secondary_model = Some(name.into());
        self
    }

    /// Simulate a dialog of 1 to `max_turns - 1` exchanges before the pair's answer
    /// (default: the first question alone).
    pub fn multi_turn(mut self, on: bool) -> Self {
        self.multi_turn = on;
        self
    }

    /// The shape of the written rows (default [`PairFormat::Dpo`]).
    pub fn format(mut self, format: PairFormat) -> Self {
        self.format = format;
        self
    }

    /// Also write every kept pair whole (each candidate's answer, score and label)
    /// to `log` (upstream's `save_log`); a failed log write only warns.
    pub fn log(mut self, log: Arc<dyn Storage>) -> Self {
        self.log = Some(log);
        self
    }

    /// Checks the settings and builds the generator.
    pub fn build(self) -> Result<PreferenceGenerator, EngineError> {
        let config = |m: String| EngineError::Config(m);
        let conversation = self.conversation.ok_or_else(|| {
            config("the conversation generator is missing: call .conversation(...)".to_owned())
        })?;
        let judge = self.judge.or_else(|| conversation.evaluator()).ok_or_else(|| {
            config("preference pairs need a judge: call .judge(...), or build the conversation generator with .auto_improve(true)".to_owned())
        })?;
        let n = self.num_responses.unwrap_or(DEFAULT_NUM_RESPONSES);
        if !(2..=16).contains(&n) {
            return Err(config(format!(
                "num_responses is {n}: a pair needs 2 candidates or more (at most 16)"
            )));
        }
        let min_score_gap = self.min_score_gap.unwrap_or(DEFAULT_MIN_SCORE_GAP);
        if !(0.0..=1.0).contains(&min_score_gap) {
            return Err(config(format!(
                "min_score_gap is {min_score_gap}: it must lie between 0 and 1"
            )));
        }
        let secondary_model = self.secondary_model.filter(|m| !m.trim().is_empty());
        if self.strategy == PairStrategy::Model && secondary_model.is_none() {
            return Err(config(
                "strategy `model` compares two models: set secondary_model".to_owned(),
            ));
        }
        Ok(PreferenceGenerator {
            conversation,
            settings: Arc::new(PairSettings {
                strategy: self.strategy,
                variants: variants::variants(self.strategy, n, secondary_model.is_some()),
                min_score_gap,
                secondary_model,
                multi_turn: self.multi_turn,
                format: self.format,
                judge,
                log: self.log,
            }),
        })
    }
}
