//! Stage two: the raw config plus command-line overrides, resolved and checked into
//! the settings a run is built from. Only these reach the engine.
//!
//! One module per config section, each with a function taking its raw section;
//! [`Settings::resolve`] calls them in the file's order. Every failure is a
//! [`SettingsError`] naming the key at fault.

use std::path::Path;
use std::time::Duration;

use afterimage_core::ApiKey;
use afterimage_engine::{InFlight, OnExhausted, SteeringConfig, StopRule, Turns};
use afterimage_providers::ThrottleConfig;
use afterimage_storage::StorageSpec;

use crate::config::{QualitySection, RawConfig};
use afterimage_providers::Provider;

pub use self::{
    after_run::{AfterRun, AutoExport},
    batch::{BatchRole, BatchSection, Oversample, PollSection, TailMode},
    documents::DocumentsSpec,
    error::SettingsError,
    model::{Endpoint, EndpointOptions},
    preference::{PreferenceOverrides, PreferenceSection, PreferenceSettings},
    sampling::RoleSampling,
    structured::StructuredSection,
};
pub(crate) use self::{
    batch::{BatchConfig, BatchFlags},
    generation::criteria,
    model::EmbeddingEndpoint,
    prices::{ModelPrice, Prices, table_source},
    strategies::{PersonaSettings, RetrievalSettings, ToolSettings},
    structured::{StructuredSettings, resolve as resolve_structured},
};

mod after_run;
pub(crate) mod batch;
mod documents;
mod error;
mod generation;
mod instructions;
mod model;
mod output;
pub(crate) mod preference;
mod prices;
mod prompts;
mod quality;
mod sampling;
mod strategies;
mod structured;
#[cfg(test)]
mod tests;

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--provider`
    pub provider: Option<Provider>,
    /// `--model`
    pub model: Option<String>,
    /// `--base-url`
    pub base_url: Option<String>,
    /// `--num-dialogs`
    pub num_dialogs: Option<u64>,
    /// `--max-turns`
    pub max_turns: Option<u32>,
    /// `--max-concurrency`
    pub max_concurrency: Option<usize>,
    /// `--out` (`FILE.jsonl`, `sqlite:FILE`, `postgres://...`)
    pub out: Option<String>,
    /// `--seed`
    pub seed: Option<u64>,
    /// `--batch`
    pub batch: bool,
    /// `--cancel-on-exit`
    pub cancel_on_exit: bool,
}

/// A run, fully resolved.
#[derive(Debug)]
pub struct Settings {
    /// The provider.
    pub provider: Provider,
    /// The respondent's (and by default the correspondent's) model.
    pub model_name: String,
    /// A separate model for the simulated user.
    pub correspondent_model_name: Option<String>,
    /// The endpoint, when not the provider's own.
    pub base_url: Option<String>,
    /// The keys (several rotate through a key pool); empty when none is needed.
    pub api_keys: Vec<ApiKey>,
    /// The variable(s) the keys came from (for messages).
    pub key_env: Option<String>,
    /// Retries of a request that failed in a way that may pass.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Rate limits, adaptive concurrency and the circuit breaker.
    pub pacing: ThrottleConfig,
    /// Each key's own rate limits (with several keys).
    pub per_key: ThrottleConfig,
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// The main model's token prices: `model.price`, else the built-in table's.
    pub price: Option<afterimage_engine::Price>,
    /// Where [`price`](Self::price) comes from: `model.price` or `built-in table of
    /// YYYY-MM-DD`.
    pub price_source: Option<String>,
    /// The price of every model the run calls (respondent, correspondent, judge), by
    /// model name, and the models without one.
    pub prices: Prices,
    /// JSON output, body limit and generation defaults of the main endpoint.
    pub endpoint_options: EndpointOptions,
    /// With `structured_output: auto`, the mode to start from (the one a resumed
    /// run's earlier session settled on).
    pub structured_output_start: Option<afterimage_providers::StructuredOutput>,
    /// The assistant's system prompt.
    pub respondent_prompt: String,
    /// A fixed simulated-user prompt.
    pub correspondent_prompt: Option<String>,
    /// The assistant's temperature and token limit (`respondent.*`).
    pub respondent_sampling: RoleSampling,
    /// The simulated user's (`correspondent.*`).
    pub correspondent_sampling: RoleSampling,
    /// The judge's (`quality.temperature`, `quality.max_tokens`).
    pub judge_sampling: RoleSampling,
    /// Documents, when instructions are drawn from them.
    pub documents: Option<DocumentsSpec>,
    /// Documents shorter than this (in characters) are skipped.
    pub min_length: usize,
    /// Documents per instruction batch.
    pub num_random_contexts: usize,
    /// Questions per generator call.
    pub n_instructions: usize,
    /// Uses after which a document is no longer sampled.
    pub target_visits: Option<u64>,
    /// Persona-driven questions.
    pub personas: Option<PersonaSettings>,
    /// Tool-calling dialogs.
    pub tools: Option<ToolSettings>,
    /// RAG.
    pub retrieval: Option<RetrievalSettings>,
    /// The stopping rules, kept to compile once the documents are counted.
    pub stopping: Vec<StopRule>,
    /// What a stopping rule does to dialogs in flight.
    pub on_stop: InFlight,
    /// How first questions are steered away from repetition (`instructions:`).
    pub steering: SteeringConfig,
    /// What running out of questions does (`generation.on_exhausted`).
    pub on_exhausted: OnExhausted,
    /// Where rows go.
    pub output: StorageSpec,
    /// Rows to write.
    pub num_dialogs: Option<u64>,
    /// Turn rule.
    pub turns: Turns,
    /// Dialogs in flight (also the ceiling of every endpoint's pacing).
    pub max_concurrency: usize,
    /// Seed.
    pub seed: Option<u64>,
    /// Failure budget.
    pub max_failures: Option<u64>,
    /// Judge dialogs and regenerate low-scoring ones.
    pub auto_improve: bool,
    /// The judge's model name.
    pub evaluator_model_name: Option<String>,
    /// The judge's own endpoint, when not the main one.
    pub evaluator: Option<Endpoint>,
    /// The judge's and the checks' settings.
    pub quality: crate::config::QualitySection,
    /// The export and report to write after a successful run.
    pub after_run: AfterRun,
    /// Batch mode (`batch:`, `--batch`), when on.
    pub(crate) batch: Option<BatchConfig>,
    /// Things the user should know (parts of the file not implemented here yet).
    pub warnings: Vec<String>,
}

/// Whether the API key must be present (validate reports a missing one instead of
/// failing on it at once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPolicy {
    /// A missing key is an error.
    Required,
    /// A missing key is left `None`.
    Optional,
}

impl Settings {
    /// Resolves `raw` (read from `config_path`) with `overrides`; `env` reads
    /// environment variables.
    pub fn resolve(
        raw: RawConfig,
        config_path: &Path,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
        keys: KeyPolicy,
    ) -> Result<Settings, SettingsError> {
        let base_dir = config_path.parent().unwrap_or(Path::new("."));
        let mut warnings = upstream_gaps(&raw);
        let provider = overrides.provider.unwrap_or(raw.model.provider);
        let max_concurrency = generation::concurrency(&raw.generation, overrides, provider);
        let model = model::resolve(&raw.model, overrides, &env, keys, max_concurrency)?;
        let prompts = prompts::resolve(
            raw.respondent.as_ref(),
            raw.correspondent.as_ref(),
            base_dir,
        )?;
        let context = documents::resolve(
            raw.documents.as_ref(),
            &raw.context,
            base_dir,
            &mut warnings,
        )?;
        let has_documents = context.documents.is_some();
        let output = output::resolve(&raw.output, overrides)?;
        let run = generation::resolve(&raw.generation, overrides, max_concurrency, has_documents)?;
        let judge = quality::resolve(&raw.quality, &env, keys, max_concurrency)?;
        let prices = prices::resolve(
            &model,
            prompts.correspondent_model_name.as_deref(),
            judge.endpoint.as_ref(),
            &raw.quality,
        )?;
        if prices.get(&model.model_name).is_none()
            && let Some(i) = run.stopping.iter().position(StopRule::needs_prices)
        {
            return Err(SettingsError::new(
                format!("generation.stopping[{i}]"),
                format!(
                    "a budget with max_cost needs token prices, and {} is not in the {}: add model.price: {{input_per_million: ..., output_per_million: ...}}",
                    model.model_name,
                    table_source()
                ),
            ));
        }
        let after_run = after_run::after_run(&raw, &output)?;
        let flags = BatchFlags {
            enabled: overrides.batch,
            cancel_on_exit: overrides.cancel_on_exit,
        };
        let batch = batch::resolve(
            raw.batch.as_ref(),
            flags,
            model.provider,
            model.base_url.as_deref(),
            &output,
        )?;
        let chat = strategies::Chat {
            provider: model.provider,
            base_url: model.base_url.as_deref(),
            max_response_bytes: model.options.max_response_bytes,
            env: &env,
            keys,
        };
        let strategies = strategies::resolve(&raw, base_dir, has_documents, &chat)?;
        let target_visits = documents::target_visits(&raw.context, &run.stopping)?;
        let steering = instructions::resolve(&raw.instructions)?;
        let sections = Sections {
            steering,
            model,
            prompts,
            context,
            target_visits,
            strategies,
            run,
            max_concurrency,
            output,
            judge,
            prices,
            after_run,
            batch,
        };
        Ok(sections.into_settings(raw.quality, warnings))
    }
}

/// The sections, each resolved on its own.
struct Sections {
    steering: SteeringConfig,
    model: model::MainModel,
    prompts: prompts::Prompts,
    context: documents::Context,
    target_visits: Option<u64>,
    strategies: strategies::Strategies,
    run: generation::Run,
    max_concurrency: usize,
    output: StorageSpec,
    judge: quality::Judge,
    prices: Prices,
    after_run: AfterRun,
    batch: Option<BatchConfig>,
}

impl Sections {
    fn into_settings(self, quality: QualitySection, warnings: Vec<String>) -> Settings {
        let Sections {
            model,
            prompts,
            context,
            run,
            judge,
            strategies,
            prices,
            ..
        } = self;
        let main = prices.entry(&model.model_name).cloned();
        Settings {
            provider: model.provider,
            model_name: model.model_name,
            correspondent_model_name: prompts.correspondent_model_name,
            base_url: model.base_url,
            api_keys: model.api_keys,
            key_env: model.key_env,
            max_retries: model.max_retries,
            timeout: model.timeout,
            pacing: model.pacing,
            per_key: model.per_key,
            connect_timeout: model.connect_timeout,
            price: main.as_ref().map(|m| m.price),
            price_source: main.map(|m| m.source),
            prices,
            endpoint_options: model.options,
            structured_output_start: None,
            respondent_prompt: prompts.respondent,
            correspondent_prompt: prompts.correspondent,
            // `model.temperature` is the dialog roles' default too: the engine sets
            // its own temperature on their requests, so the endpoint's would never apply.
            respondent_sampling: prompts
                .respondent_sampling
                .or_temperature(model.options.temperature),
            correspondent_sampling: prompts
                .correspondent_sampling
                .or_temperature(model.options.temperature),
            judge_sampling: judge.sampling,
            documents: context.documents,
            min_length: context.min_length,
            num_random_contexts: context.num_random_contexts,
            n_instructions: context.n_instructions,
            target_visits: self.target_visits,
            personas: strategies.personas,
            tools: strategies.tools,
            retrieval: strategies.retrieval,
            stopping: run.stopping,
            on_stop: run.on_stop,
            steering: self.steering,
            on_exhausted: run.on_exhausted,
            output: self.output,
            num_dialogs: run.num_dialogs,
            turns: run.turns,
            max_concurrency: self.max_concurrency,
            seed: run.seed,
            max_failures: run.max_failures,
            auto_improve: quality.auto_improve,
            evaluator_model_name: judge.model_name,
            evaluator: judge.endpoint,
            after_run: self.after_run,
            batch: self.batch,
            quality,
            warnings,
        }
    }
}

/// Upstream features the file asks for that this version does not have yet.
fn upstream_gaps(raw: &RawConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut gap =
        |what: &str| warnings.push(format!("{what} is not implemented yet and is ignored"));
    for (present, name) in [
        (raw.skills.is_some(), "the `skills` section"),
        (raw.skill.is_some(), "the `skill` section"),
    ] {
        if present {
            gap(name);
        }
    }
    warnings
}
