//! Stage two: the raw config plus command-line overrides, resolved and checked into
//! the settings a run is built from. Only these reach the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{ApiKey, FixedNumber, StoppingCriterion};
use afterimage_engine::{AllOf, ContextCoverage, ErrorRate, PersonaUsage, TokenBudget, Turns};
use afterimage_providers::{Provider, ThrottleConfig};
use afterimage_storage::StorageSpec;

use afterimage_datasets::{ExportFormat, ExportOptions};

use crate::config::{DocumentsKind, RawConfig, StoppingRule, StorageKind};

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
}

/// Where documents come from, with paths resolved against the config file.
#[derive(Debug, Clone)]
pub enum DocumentsSpec {
    /// A folder of `.txt`/`.md` files.
    Directory(PathBuf),
    /// One text file.
    File(PathBuf),
    /// Text files matching a glob pattern.
    Glob(String),
    /// A JSONL file.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// The text field.
        text_field: String,
        /// Keep ids.
        preserve_ids: bool,
        /// Keep metadata.
        include_metadata: bool,
        /// The field holding a sampling weight.
        weight_field: Option<String>,
    },
    /// Texts written in the config.
    Inline(Vec<String>),
    /// Documents already read (so a run reads its files once).
    Loaded(Vec<afterimage_core::Document>),
}

/// `personas:`, resolved.
#[derive(Debug, Clone, Copy)]
pub struct PersonaSettings {
    /// The deepest layer, when the file fixes it.
    pub max_depth: Option<u32>,
    /// Documents whose personas are generated at once.
    pub concurrency: usize,
}

/// `tools:`, resolved.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// The tools, checked.
    pub specs: Vec<afterimage_core::ToolSpec>,
    /// Where they came from, for messages.
    pub origin: String,
    /// Tools offered to each batch of questions.
    pub num_tools_to_sample: usize,
    /// Tool rounds per assistant turn.
    pub max_tool_rounds: u32,
}

/// `retrieval:`, resolved.
#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    /// BM25 or embeddings.
    pub retriever: crate::config::RetrieverKind,
    /// Chunks per question.
    pub top_k: usize,
    /// The lowest score kept.
    pub min_score: Option<f64>,
    /// Retrieve for every user turn.
    pub per_turn: bool,
    /// Also show the sampled document.
    pub include_document: bool,
    /// Characters per chunk.
    pub chunk_size: usize,
    /// Characters shared by neighbouring chunks.
    pub chunk_overlap: usize,
    /// The embedding endpoint (for `retriever: embedding`).
    pub embedding: Option<EmbeddingEndpoint>,
}

/// The embedding model's endpoint.
#[derive(Debug, Clone)]
pub struct EmbeddingEndpoint {
    /// OpenAI-compatible or Gemini.
    pub provider: Provider,
    /// The model.
    pub model_name: String,
    /// The endpoint, when not the provider's own.
    pub base_url: Option<String>,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// Texts per request.
    pub batch_size: Option<usize>,
}

/// A model endpoint other than the main one (the judge's).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider.
    pub provider: Provider,
    /// The model.
    pub model_name: String,
    /// The endpoint, when not the provider's own.
    pub base_url: Option<String>,
    /// The keys (several rotate through a key pool).
    pub api_keys: Vec<ApiKey>,
    /// Retries of a request that failed in a way that may pass.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Rate limits, adaptive concurrency and the circuit breaker.
    pub pacing: ThrottleConfig,
    /// Each key's own rate limits (with several keys).
    pub per_key: ThrottleConfig,
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
    /// Token prices, when given.
    pub price: Option<afterimage_engine::Price>,
    /// The assistant's system prompt.
    pub respondent_prompt: String,
    /// A fixed simulated-user prompt.
    pub correspondent_prompt: Option<String>,
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
    /// The stopping rules, kept to build once the documents are counted.
    pub stopping: Vec<StoppingRule>,
    /// What a stopping rule does to dialogs in flight.
    pub on_stop: crate::config::OnStop,
    /// Where rows go.
    pub output: StorageSpec,
    /// Rows to write.
    pub num_dialogs: Option<u64>,
    /// Turn rule.
    pub turns: Turns,
    /// Dialogs in flight.
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
    /// Things the user should know (parts of the file not implemented here yet).
    pub warnings: Vec<String>,
}

/// What `generate` writes after a successful run (`output.export`, `analytics`).
#[derive(Debug, Clone, Default)]
pub struct AfterRun {
    /// Export formats and options, when `output.export.formats` names any.
    pub export: Option<AutoExport>,
    /// The HTML report's path, when `analytics.auto_analyze` is on.
    pub analyze: Option<PathBuf>,
}

/// `output.export`, resolved.
#[derive(Debug, Clone)]
pub struct AutoExport {
    /// Formats, filters (none), shuffle and split.
    pub options: ExportOptions,
    /// Where the files go (`None`: the output file's folder).
    pub out_dir: Option<PathBuf>,
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
    ) -> Result<Settings, String> {
        let base_dir = config_path.parent().unwrap_or(Path::new("."));
        let mut warnings = upstream_gaps(&raw);

        let provider = overrides.provider.unwrap_or(raw.model.provider);
        let model_name = overrides
            .model
            .clone()
            .or(raw.model.model_name.clone())
            .unwrap_or_else(|| provider.default_model().to_owned());
        let base_url = overrides.base_url.clone().or(raw.model.base_url.clone());
        let (key_env, api_keys) = resolve_keys(&raw.model, provider, &env, keys, "model")?;

        let respondent_prompt = read_prompt(
            raw.respondent.as_ref().and_then(|r| r.system_prompt.clone()),
            raw.respondent.as_ref().and_then(|r| r.system_prompt_file.clone()),
            base_dir,
            "respondent",
        )?
        .ok_or("respondent.system_prompt is missing: add `respondent: {system_prompt: \"You are ...\"}` to the config")?;
        let correspondent = raw.correspondent.as_ref();
        let correspondent_prompt = read_prompt(
            correspondent.and_then(|c| c.system_prompt.clone()),
            correspondent.and_then(|c| c.system_prompt_file.clone()),
            base_dir,
            "correspondent",
        )?;
        let correspondent_model_name = correspondent.and_then(|c| c.model_name.clone());

        let documents = match (&raw.documents, raw.context.enabled) {
            (Some(section), true) => Some(documents_spec(section, base_dir)?),
            (Some(_), false) => {
                warnings.push(
                    "documents are configured but context.enabled is false: questions will not be drawn from them"
                        .into(),
                );
                None
            }
            (None, _) => None,
        };
        if raw.context.num_random_contexts == 0 || raw.context.n_instructions == 0 {
            return Err(
                "context.num_random_contexts and context.n_instructions must be at least 1".into(),
            );
        }

        let output = match &overrides.out {
            Some(out) => StorageSpec::parse(out),
            None => output_spec(raw.output.storage, &raw.output.path)?,
        };

        let generation = &raw.generation;
        let num_dialogs = overrides.num_dialogs.or(generation.num_dialogs);
        if num_dialogs == Some(0) {
            return Err("num_dialogs is 0: ask for at least one dialog".into());
        }
        let max_turns = overrides.max_turns.unwrap_or(generation.max_turns);
        if max_turns == 0 {
            return Err("generation.max_turns is 0: a dialog needs at least one turn".into());
        }
        let turns = if generation.fixed_turns {
            Turns::Exactly(max_turns)
        } else {
            Turns::UpTo(max_turns)
        };
        let max_concurrency = overrides
            .max_concurrency
            .or(generation.max_concurrency)
            .unwrap_or_else(|| provider.default_concurrency());
        if max_concurrency == 0 {
            return Err("max_concurrency is 0: allow at least one dialog at a time".into());
        }
        // Checked here with a stand-in document count; built for real once the
        // documents are read (coverage needs their number).
        let mut criteria = Vec::new();
        for rule in &generation.stopping {
            if let Some(criterion) = criterion(rule, Some(1))? {
                criteria.push(criterion);
            }
        }
        if documents.is_none() && rules_need_documents(&generation.stopping) {
            return Err(
                "generation.stopping: a context_coverage rule needs documents (add a `documents` section with context.enabled)"
                    .into(),
            );
        }
        if num_dialogs.is_none() && criteria.is_empty() {
            return Err(
                "nothing tells the run when to stop: set generation.num_dialogs or add a rule to generation.stopping"
                    .into(),
            );
        }

        if !(0.0..=1.0).contains(&raw.quality.min_score) {
            return Err(format!(
                "quality.min_score is {}: it must lie between 0 and 1",
                raw.quality.min_score
            ));
        }
        let evaluator = match &raw.quality.evaluator {
            None => None,
            Some(section) => {
                let provider = section.provider;
                let (_, api_keys) =
                    resolve_keys(section, provider, &env, keys, "quality.evaluator")?;
                Some(Endpoint {
                    provider,
                    model_name: section
                        .model_name
                        .clone()
                        .unwrap_or_else(|| provider.default_model().to_owned()),
                    base_url: section.base_url.clone(),
                    api_keys,
                    max_retries: section.max_retries.unwrap_or(5),
                    pacing: pacing(section, max_concurrency),
                    per_key: per_key(section, max_concurrency),
                    timeout: Duration::from_secs(section.timeout_secs.unwrap_or(120)),
                })
            }
        };
        let after_run = after_run(&raw, &output)?;

        let personas = if raw.personas.enabled {
            if documents.is_none() {
                return Err(
                    "personas.enabled needs documents: personas are drawn from them (add a `documents` section with context.enabled)"
                        .into(),
                );
            }
            Some(PersonaSettings {
                max_depth: raw.personas.n_iterations,
                concurrency: raw
                    .personas
                    .max_concurrency
                    .unwrap_or(max_concurrency)
                    .max(1),
            })
        } else {
            None
        };
        let tools = match &raw.tools {
            None => None,
            Some(section) => Some(tool_settings(section, base_dir)?),
        };
        let retrieval = match &raw.retrieval {
            Some(section) if section.enabled => {
                if documents.is_none() {
                    return Err(
                        "retrieval needs documents to search: add a `documents` section (with context.enabled)"
                            .into(),
                    );
                }
                Some(retrieval_settings(
                    section,
                    provider,
                    base_url.as_deref(),
                    &env,
                    keys,
                )?)
            }
            _ => None,
        };
        let target_visits = raw
            .context
            .target_visits
            .or_else(|| coverage_target(&generation.stopping));
        if target_visits == Some(0) {
            return Err("context.target_visits is 0: a document needs at least one visit".into());
        }

        Ok(Settings {
            provider,
            model_name,
            correspondent_model_name,
            base_url,
            api_keys,
            key_env,
            max_retries: raw.model.max_retries.unwrap_or(5),
            pacing: pacing(&raw.model, max_concurrency),
            per_key: per_key(&raw.model, max_concurrency),
            connect_timeout: Duration::from_secs(raw.model.connect_timeout_secs.unwrap_or(10)),
            price: raw.model.price.map(|p| afterimage_engine::Price {
                input_per_million: p.input_per_million,
                output_per_million: p.output_per_million,
            }),
            timeout: Duration::from_secs(raw.model.timeout_secs.unwrap_or(120)),
            respondent_prompt,
            correspondent_prompt,
            documents,
            min_length: raw
                .documents
                .as_ref()
                .and_then(|d| d.min_length)
                .unwrap_or(1),
            num_random_contexts: raw.context.num_random_contexts,
            n_instructions: raw.context.n_instructions,
            target_visits,
            personas,
            tools,
            retrieval,
            stopping: generation.stopping.clone(),
            on_stop: generation.on_stop,
            output,
            num_dialogs,
            turns,
            max_concurrency,
            seed: overrides.seed.or(generation.seed),
            max_failures: generation.max_failures,
            auto_improve: raw.quality.auto_improve,
            evaluator_model_name: raw.quality.evaluator_model_name.clone().or_else(|| {
                raw.quality
                    .evaluator
                    .as_ref()
                    .and_then(|e| e.model_name.clone())
            }),
            evaluator,
            after_run,
            quality: raw.quality,
            warnings,
        })
    }
}

/// A model section's pacing: its limits, the run's concurrency as the ceiling.
fn pacing(section: &crate::config::ModelSection, max_concurrency: usize) -> ThrottleConfig {
    ThrottleConfig {
        max_concurrency,
        requests_per_minute: section.requests_per_minute,
        tokens_per_minute: section.tokens_per_minute,
        breaker_after: match section.breaker_after_secs {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => Some(Duration::from_secs(300)),
        },
    }
}

/// Limits each key has on its own plan (no adaptive limit or breaker: the shared
/// throttle does that).
fn per_key(section: &crate::config::ModelSection, max_concurrency: usize) -> ThrottleConfig {
    ThrottleConfig {
        max_concurrency,
        requests_per_minute: section.requests_per_minute_per_key,
        tokens_per_minute: section.tokens_per_minute_per_key,
        breaker_after: None,
    }
}

/// The key variables of a `model` section and the keys they hold (a variable may hold
/// several, comma-separated).
fn resolve_keys(
    section: &crate::config::ModelSection,
    provider: Provider,
    env: &impl Fn(&str) -> Option<String>,
    policy: KeyPolicy,
    name: &str,
) -> Result<(Option<String>, Vec<ApiKey>), String> {
    let vars: Vec<String> = if section.api_key_envs.is_empty() {
        section
            .api_key_env
            .clone()
            .or_else(|| provider.default_key_env().map(str::to_owned))
            .into_iter()
            .collect()
    } else {
        section.api_key_envs.clone()
    };
    let mut keys = Vec::new();
    for var in &vars {
        let found: Vec<ApiKey> = env(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(ApiKey::new)
            .collect();
        if found.is_empty() && policy == KeyPolicy::Required && provider != Provider::Local {
            return Err(format!(
                "the API key variable {var} is not set: export {var}=<your key> (or point {name}.api_key_env at another variable)"
            ));
        }
        keys.extend(found);
    }
    let shown = (!vars.is_empty()).then(|| vars.join(", "));
    Ok((shown, keys))
}

/// Checks `output.export` and `analytics` before the run, so a typo in a format name
/// fails at once instead of after an hour of generation.
fn after_run(raw: &RawConfig, output: &StorageSpec) -> Result<AfterRun, String> {
    let export = match &raw.output.export {
        Some(section) if !section.formats.is_empty() => {
            let formats = section
                .formats
                .iter()
                .map(|f| f.parse::<ExportFormat>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("output.export.formats: {e}"))?;
            if let Some(split) = section.split
                && !(split > 0.0 && split < 1.0)
            {
                return Err(format!(
                    "output.export.split must be between 0 and 1 (exclusive), got {split}"
                ));
            }
            Some(AutoExport {
                options: ExportOptions {
                    formats,
                    shuffle: section.shuffle,
                    seed: section.seed,
                    split: section.split,
                    ..ExportOptions::default()
                },
                // Relative to the working directory, like output.path.
                out_dir: section.output_dir.as_ref().map(PathBuf::from),
            })
        }
        _ => None,
    };
    let analyze = raw.analytics.auto_analyze.then(|| {
        raw.analytics.output_path.as_ref().map_or_else(
            || match output {
                StorageSpec::Jsonl(path) => path.with_extension("html"),
                _ => PathBuf::from("afterimage_report.html"),
            },
            PathBuf::from,
        )
    });
    Ok(AfterRun { export, analyze })
}

/// Upstream features the file asks for that this version does not have yet.
fn upstream_gaps(raw: &RawConfig) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut gap =
        |what: &str| warnings.push(format!("{what} is not implemented yet and is ignored"));
    for (present, name) in [
        (raw.skills.is_some(), "the `skills` section"),
        (raw.skill.is_some(), "the `skill` section"),
        (raw.preference.is_some(), "the `preference` section"),
    ] {
        if present {
            gap(name);
        }
    }
    warnings
}

fn read_prompt(
    text: Option<String>,
    file: Option<String>,
    base_dir: &Path,
    section: &str,
) -> Result<Option<String>, String> {
    match (text, file) {
        (Some(_), Some(_)) => Err(format!(
            "{section}: give either system_prompt or system_prompt_file, not both"
        )),
        (Some(text), None) if text.trim().is_empty() => {
            Err(format!("{section}.system_prompt is empty"))
        }
        (Some(text), None) => Ok(Some(text)),
        (None, Some(file)) => {
            let path = base_dir.join(&file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "{section}.system_prompt_file: cannot read {}: {e}",
                    path.display()
                )
            })?;
            if text.trim().is_empty() {
                return Err(format!(
                    "{section}.system_prompt_file {} is empty",
                    path.display()
                ));
            }
            Ok(Some(text))
        }
        (None, None) => Ok(None),
    }
}

fn documents_spec(
    section: &crate::config::DocumentsSection,
    base_dir: &Path,
) -> Result<DocumentsSpec, String> {
    let path = || {
        section
            .path
            .as_ref()
            .map(|p| base_dir.join(p))
            .ok_or_else(|| "documents.path is missing: name the folder or file to read".to_owned())
    };
    if section.weight_key.is_some() && section.provider != DocumentsKind::Jsonl {
        return Err(
            "documents.weight_key reads a field of JSONL records: it needs provider: jsonl".into(),
        );
    }
    match section.provider {
        DocumentsKind::Directory => Ok(DocumentsSpec::Directory(path()?)),
        DocumentsKind::File => {
            let path = path()?;
            let text = path.to_string_lossy();
            if text.contains(['*', '?', '[']) {
                return Ok(DocumentsSpec::Glob(text.into_owned()));
            }
            Ok(DocumentsSpec::File(path))
        }
        DocumentsKind::Jsonl => Ok(DocumentsSpec::Jsonl {
            path: path()?,
            text_field: section.content_key.clone(),
            preserve_ids: section.preserve_ids,
            include_metadata: section.include_metadata,
            weight_field: section.weight_key.clone(),
        }),
        DocumentsKind::Memory => match &section.texts {
            Some(texts) if !texts.is_empty() => Ok(DocumentsSpec::Inline(texts.clone())),
            _ => Err(
                "documents.provider is memory but documents.texts is empty: list the texts".into(),
            ),
        },
        DocumentsKind::Qdrant => Err(
            "documents.provider: qdrant is not supported yet; use directory, file, jsonl or memory"
                .into(),
        ),
    }
}

/// Whether any rule (nested ones included) counts documents.
fn rules_need_documents(rules: &[StoppingRule]) -> bool {
    rules.iter().any(|rule| match rule {
        StoppingRule::ContextCoverage { .. } => true,
        StoppingRule::All { conditions } => rules_need_documents(conditions),
        _ => false,
    })
}

/// The largest `target_visits` of the coverage rules, nested ones included: how
/// upstream infers the sampling target.
fn coverage_target(rules: &[StoppingRule]) -> Option<u64> {
    rules
        .iter()
        .filter_map(|rule| match rule {
            StoppingRule::ContextCoverage { target_visits, .. } => Some(*target_visits),
            StoppingRule::All { conditions } => coverage_target(conditions),
            _ => None,
        })
        .max()
}

/// The criteria of `rules`, for a run over `documents` documents.
pub(crate) fn criteria(
    rules: &[StoppingRule],
    documents: Option<usize>,
) -> Result<Vec<Arc<dyn StoppingCriterion>>, String> {
    let mut out = Vec::new();
    for rule in rules {
        if let Some(criterion) = criterion(rule, documents)? {
            out.push(criterion);
        }
    }
    Ok(out)
}

fn tool_settings(
    section: &crate::config::ToolsSection,
    base_dir: &Path,
) -> Result<ToolSettings, String> {
    let (specs, origin) = match (&section.specs, &section.file) {
        (Some(_), Some(_)) => {
            return Err("tools: give either specs or file, not both".into());
        }
        (Some(specs), None) => (specs.clone(), "tools.specs".to_owned()),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("tools.file: cannot read {}: {e}", path.display()))?;
            let specs: serde_json::Value = serde_json::from_str(&text)
                .or_else(|_| serde_saphyr::from_str(&text).map_err(|e| e.to_string()))
                .map_err(|e| {
                    format!("tools.file {}: neither JSON nor YAML: {e}", path.display())
                })?;
            (specs, path.display().to_string())
        }
        (None, None) => {
            return Err(
                "tools: list the tools under `specs` (OpenAI function specs) or name a `file` holding them"
                    .into(),
            );
        }
    };
    let specs =
        afterimage_strategies::parse_tool_specs(&specs).map_err(|e| format!("{origin}: {e}"))?;
    if specs.is_empty() {
        return Err(format!("{origin}: the list of tools is empty"));
    }
    if section.num_tools_to_sample == 0 {
        return Err("tools.num_tools_to_sample is 0: offer at least one tool".into());
    }
    if section.max_tool_rounds == 0 {
        return Err("tools.max_tool_rounds is 0: allow at least one round of tool calls".into());
    }
    Ok(ToolSettings {
        specs,
        origin,
        num_tools_to_sample: section.num_tools_to_sample,
        max_tool_rounds: section.max_tool_rounds,
    })
}

fn retrieval_settings(
    section: &crate::config::RetrievalSection,
    chat_provider: Provider,
    chat_base_url: Option<&str>,
    env: &impl Fn(&str) -> Option<String>,
    keys: KeyPolicy,
) -> Result<RetrievalSettings, String> {
    use crate::config::RetrieverKind;
    if section.top_k == 0 {
        return Err("retrieval.top_k is 0: retrieve at least one chunk".into());
    }
    if section.chunk_size == 0 || section.chunk_overlap >= section.chunk_size {
        return Err(format!(
            "retrieval: chunk_overlap ({}) must be smaller than chunk_size ({}), and chunk_size at least 1",
            section.chunk_overlap, section.chunk_size
        ));
    }
    let embedding = match (section.retriever, &section.embedding) {
        (RetrieverKind::Bm25, Some(_)) => {
            return Err(
                "retrieval.embedding is set but retrieval.retriever is bm25: set `retriever: embedding` or drop the embedding section"
                    .into(),
            );
        }
        (RetrieverKind::Bm25, None) => None,
        (RetrieverKind::Embedding, embedding) => {
            let default = crate::config::EmbeddingSection::default();
            let e = embedding.as_ref().unwrap_or(&default);
            let provider = e.provider.unwrap_or(chat_provider);
            if provider == Provider::Anthropic {
                return Err(
                    "retrieval.embedding.provider: anthropic has no embeddings API; use openai, gemini or local"
                        .into(),
                );
            }
            let model_name = e.model_name.clone().ok_or(
                "retrieval.embedding.model_name is missing: name the embedding model (for example text-embedding-3-small or gemini-embedding-001)",
            )?;
            let var = e
                .api_key_env
                .clone()
                .or_else(|| provider.default_key_env().map(str::to_owned));
            let api_key = match var {
                Some(var) => match env(&var) {
                    Some(key) if !key.trim().is_empty() => Some(ApiKey::new(
                        key.split(',').next().unwrap_or_default().trim(),
                    )),
                    _ if keys == KeyPolicy::Required && provider != Provider::Local => {
                        return Err(format!(
                            "retrieval.embedding: the API key variable {var} is not set (export {var}=<your key>)"
                        ));
                    }
                    _ => None,
                },
                None => None,
            };
            // The chat endpoint serves embeddings too when the provider is the same.
            let base_url = e.base_url.clone().or_else(|| {
                (provider == chat_provider)
                    .then(|| chat_base_url.map(str::to_owned))
                    .flatten()
            });
            if e.batch_size == Some(0) {
                return Err("retrieval.embedding.batch_size is 0".into());
            }
            Some(EmbeddingEndpoint {
                provider,
                model_name,
                base_url,
                api_key,
                batch_size: e.batch_size,
            })
        }
    };
    Ok(RetrievalSettings {
        retriever: section.retriever,
        top_k: section.top_k,
        min_score: section.min_score,
        per_turn: section.per_turn,
        include_document: section.include_document,
        chunk_size: section.chunk_size,
        chunk_overlap: section.chunk_overlap,
        embedding,
    })
}

fn criterion(
    rule: &StoppingRule,
    documents: Option<usize>,
) -> Result<Option<Arc<dyn StoppingCriterion>>, String> {
    let tokens = |v: Option<f64>| v.map(|t| t.max(0.0) as u64);
    Ok(match rule {
        StoppingRule::Fixed { n } => {
            if *n == 0 {
                return Err("generation.stopping: a fixed rule needs n of at least 1".into());
            }
            Some(Arc::new(FixedNumber(*n)))
        }
        StoppingRule::Budget {
            max_prompt_tokens,
            max_completion_tokens,
            max_total_tokens,
        } => {
            if max_prompt_tokens.is_none()
                && max_completion_tokens.is_none()
                && max_total_tokens.is_none()
            {
                return Err("generation.stopping: a budget rule needs at least one limit".into());
            }
            Some(Arc::new(TokenBudget {
                max_input_tokens: tokens(*max_prompt_tokens),
                max_output_tokens: tokens(*max_completion_tokens),
                max_total_tokens: tokens(*max_total_tokens),
            }))
        }
        StoppingRule::PersonaUsage { n_personas } => Some(Arc::new(PersonaUsage(*n_personas))),
        StoppingRule::RateLimit {
            max_error_rate,
            min_samples,
        } => Some(Arc::new(ErrorRate {
            max_error_rate: *max_error_rate,
            min_samples: *min_samples,
        })),
        StoppingRule::All { conditions } => {
            let mut inner = Vec::new();
            for rule in conditions {
                match criterion(rule, documents)? {
                    Some(c) => inner.push(c),
                    // An AND with an unknown part could never be decided; drop it whole.
                    None => return Ok(None),
                }
            }
            Some(Arc::new(AllOf(inner)))
        }
        StoppingRule::ContextCoverage {
            target_visits,
            coverage_threshold,
        } => {
            if *target_visits == 0 || !(0.0..=1.0).contains(coverage_threshold) {
                return Err(format!(
                    "generation.stopping: context_coverage needs target_visits of at least 1 and a coverage_threshold between 0 and 1 (got {target_visits} and {coverage_threshold})"
                ));
            }
            match documents {
                Some(documents) => Some(Arc::new(ContextCoverage {
                    documents,
                    target_visits: *target_visits,
                    coverage_threshold: *coverage_threshold,
                })),
                None => None,
            }
        }
    })
}

/// Where `output.storage` and `output.path` send rows.
fn output_spec(kind: StorageKind, path: &str) -> Result<StorageSpec, String> {
    let parsed = StorageSpec::parse(path);
    match kind {
        StorageKind::Jsonl => Ok(parsed),
        StorageKind::Sqlite => Ok(match parsed {
            StorageSpec::Sqlite(file) => StorageSpec::Sqlite(file),
            _ => StorageSpec::Sqlite(PathBuf::from(path)),
        }),
        StorageKind::Postgres => match parsed {
            spec @ StorageSpec::Postgres(_) => Ok(spec),
            _ => Err(format!(
                "output.storage is postgres, so output.path must be a postgres:// URL, not {path:?}"
            )),
        },
        StorageKind::Sql => match parsed {
            spec @ StorageSpec::Postgres(_) => Ok(spec),
            // SQLAlchemy spells a SQLite file `sqlite:///FILE`.
            StorageSpec::Sqlite(file) => Ok(StorageSpec::Sqlite(PathBuf::from(
                file.to_string_lossy().trim_start_matches('/').to_owned(),
            ))),
            _ => Err(format!(
                "output.storage is sql, so output.path must be a database URL (postgres://... or sqlite:///FILE), not {path:?}"
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn resolve(yaml: &str, env: &[(&str, &str)]) -> Result<Settings, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::resolve(
            parse(yaml)?,
            Path::new("/configs/run.yaml"),
            &Overrides::default(),
            |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
            KeyPolicy::Required,
        )
    }

    #[test]
    fn a_missing_key_names_the_variable() {
        let err = resolve("respondent: {system_prompt: hi}\n", &[]).unwrap_err();
        assert!(err.contains("GEMINI_API_KEY"), "{err}");
        let err = resolve(
            "model: {provider: openai, api_key_env: TEAM_KEY}\nrespondent: {system_prompt: hi}\n",
            &[("OPENAI_API_KEY", "x")],
        )
        .unwrap_err();
        assert!(err.contains("TEAM_KEY"), "{err}");
        let ok = resolve(
            "model: {provider: local}\nrespondent: {system_prompt: hi}\n",
            &[],
        )
        .unwrap();
        assert!(ok.api_keys.is_empty());
        assert_eq!(ok.model_name, "default");
        assert_eq!(ok.max_concurrency, 8);
    }

    #[test]
    fn output_storage_and_path_pick_the_backend() {
        let key = [("GEMINI_API_KEY", "k")];
        for (output, expected) in [
            ("{path: a.jsonl}", StorageSpec::Jsonl("a.jsonl".into())),
            (
                "{path: a.db, storage: sqlite}",
                StorageSpec::Sqlite("a.db".into()),
            ),
            ("{path: 'sqlite:a.db'}", StorageSpec::Sqlite("a.db".into())),
            (
                "{path: 'sqlite:///a.db', storage: sql}",
                StorageSpec::Sqlite("a.db".into()),
            ),
            (
                "{path: 'postgres://u@h/db', storage: postgres}",
                StorageSpec::Postgres("postgres://u@h/db".into()),
            ),
            (
                "{path: 'postgresql://u@h/db', storage: sql}",
                StorageSpec::Postgres("postgresql://u@h/db".into()),
            ),
        ] {
            let yaml = format!("respondent: {{system_prompt: hi}}\noutput: {output}\n");
            assert_eq!(resolve(&yaml, &key).unwrap().output, expected, "{output}");
        }
        let err = resolve(
            "respondent: {system_prompt: hi}\noutput: {path: x.db, storage: postgres}\n",
            &key,
        )
        .unwrap_err();
        assert!(err.contains("postgres:// URL"), "{err}");
    }

    #[test]
    fn paths_resolve_against_the_config_file() {
        let settings = resolve(
            "respondent: {system_prompt: hi}\ndocuments: {provider: directory, path: docs}\n",
            &[("GEMINI_API_KEY", "k")],
        )
        .unwrap();
        match settings.documents {
            Some(DocumentsSpec::Directory(path)) => assert_eq!(path, Path::new("/configs/docs")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_values_are_explained() {
        let key = [("GEMINI_API_KEY", "k")];
        for (yaml, needle) in [
            (
                "generation: {num_dialogs: 0}\nrespondent: {system_prompt: hi}\n",
                "num_dialogs is 0",
            ),
            (
                "generation: {num_dialogs: null}\nrespondent: {system_prompt: hi}\n",
                "nothing tells the run",
            ),
            (
                "model: {provider: anthropic}\nrespondent: {system_prompt: hi}\n",
                "ANTHROPIC_API_KEY",
            ),
            (
                "generation: {num_dialogs: 1}\n",
                "respondent.system_prompt is missing",
            ),
            (
                "respondent: {system_prompt: hi}\noutput: {storage: sql}\n",
                "must be a database URL",
            ),
            (
                "respondent: {system_prompt: hi}\ndocuments: {provider: directory}\n",
                "documents.path",
            ),
        ] {
            let err = resolve(yaml, &key).unwrap_err();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
    }

    #[test]
    fn strategy_sections_need_documents_and_resolve_with_them() {
        let key = [("GEMINI_API_KEY", "k")];
        for (yaml, needle) in [
            (
                "personas: {enabled: true}\n",
                "personas.enabled needs documents",
            ),
            (
                "generation: {stopping: [{type: context_coverage}]}\n",
                "context_coverage rule needs documents",
            ),
            ("retrieval: {top_k: 2}\n", "retrieval needs documents"),
            ("tools: {num_tools_to_sample: 1}\n", "tools: list the tools"),
        ] {
            let err =
                resolve(&format!("respondent: {{system_prompt: hi}}\n{yaml}"), &key).unwrap_err();
            assert!(err.contains(needle), "{yaml}: {err}");
        }
        let settings = resolve(
            "respondent: {system_prompt: hi}\ndocuments: {provider: file, path: 'docs/*.md'}\npersonas: {enabled: true, n_iterations: 1}\nanalytics: {auto_analyze: true}\ngeneration: {num_dialogs: null, stopping: [{type: all, conditions: [{type: context_coverage, target_visits: 2}, {type: fixed, n: 3}]}]}\nretrieval: {per_turn: true, chunk_size: 400, chunk_overlap: 50}\ntools: {specs: [{name: lookup, description: finds, parameters: {type: object}}]}\n",
            &key,
        )
        .unwrap();
        assert!(settings.warnings.is_empty(), "{:?}", settings.warnings);
        assert!(
            matches!(settings.documents, Some(DocumentsSpec::Glob(ref p)) if p.ends_with("docs/*.md"))
        );
        assert_eq!(settings.personas.map(|p| p.max_depth), Some(Some(1)));
        assert_eq!(settings.target_visits, Some(2));
        let retrieval = settings.retrieval.as_ref().unwrap();
        assert!(retrieval.per_turn && retrieval.chunk_size == 400);
        assert_eq!(settings.tools.as_ref().unwrap().num_tools_to_sample, 2);
        assert_eq!(criteria(&settings.stopping, Some(4)).unwrap().len(), 1);
        assert_eq!(
            settings.after_run.analyze.as_deref(),
            Some(Path::new("./afterimage_output.html"))
        );
    }

    #[test]
    fn export_and_analytics_are_checked_before_the_run() {
        let settings = resolve(
            "respondent: {system_prompt: hi}\noutput: {path: out/a.jsonl, export: {formats: [openai, sharegpt], split: 0.1, seed: 7}}\nanalytics: {auto_analyze: true, output_path: r.html}\n",
            &[("GEMINI_API_KEY", "k")],
        )
        .unwrap();
        let export = settings.after_run.export.unwrap();
        assert_eq!(
            export.options.formats,
            [ExportFormat::OpenAi, ExportFormat::ShareGpt]
        );
        assert_eq!((export.options.split, export.options.seed), (Some(0.1), 7));
        assert_eq!(
            settings.after_run.analyze.as_deref(),
            Some(Path::new("r.html"))
        );
        for (yaml, needle) in [
            ("output: {export: {formats: [opnai]}}", "opnai"),
            ("output: {export: {formats: [raw], split: 2}}", "split"),
        ] {
            let err = resolve(
                &format!("respondent: {{system_prompt: hi}}\n{yaml}\n"),
                &[("GEMINI_API_KEY", "k")],
            )
            .unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        let settings = resolve(
            "respondent: {system_prompt: hi}\n",
            &[("GEMINI_API_KEY", "k")],
        )
        .unwrap();
        assert!(settings.after_run.export.is_none() && settings.after_run.analyze.is_none());
    }
}
