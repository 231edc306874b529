//! The YAML config file, in the Python afterimage CLI's schema (stage one: what the
//! file says, checked for typos; `settings.rs` turns it into a validated run).

use std::path::Path;

use afterimage_engine::{InFlight, OnExhausted, Price, StopRule, UnjudgedPolicy};
use afterimage_providers::{Provider, StructuredOutput};
use afterimage_strategies::Aggregation;
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The whole file. Unknown keys are errors that name the key and its line (the
/// Python tool silently ignores typos).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// How much to generate.
    #[serde(default)]
    pub generation: Generation,
    /// Which model answers.
    #[serde(default)]
    pub model: ModelSection,
    /// The assistant's system prompt.
    pub respondent: Option<PromptSection>,
    /// The simulated user (our addition: a fixed prompt, a separate model).
    pub correspondent: Option<CorrespondentSection>,
    /// The knowledge base.
    pub documents: Option<DocumentsSection>,
    /// How instructions are drawn from documents.
    #[serde(default)]
    pub context: ContextSection,
    /// Persona-driven instructions.
    #[serde(default)]
    pub personas: PersonasSection,
    /// (ours) How first questions are steered away from repetition.
    #[serde(default)]
    pub instructions: InstructionsSection,
    /// (ours) Tools the assistant may call, for tool-calling dialogs.
    pub tools: Option<ToolsSection>,
    /// (ours) Retrieval: the assistant sees chunks found for the question (RAG).
    pub retrieval: Option<RetrievalSection>,
    /// The judge.
    #[serde(default)]
    pub quality: QualitySection,
    /// Where rows go.
    #[serde(default)]
    pub output: OutputSection,
    /// Upstream's skill injection (not implemented here yet).
    pub skills: Option<IgnoredAny>,
    /// Upstream's skill discovery settings (not implemented here yet).
    pub skill: Option<IgnoredAny>,
    /// The analysis report written after a run.
    #[serde(default)]
    pub analytics: AnalyticsSection,
    /// Preference pairs (`afterimage preference`; `generate` ignores it).
    pub preference: Option<crate::settings::PreferenceSection>,
    /// (ours) Schema-typed rows for `afterimage structured`.
    pub structured: Option<crate::settings::StructuredSection>,
    /// (ours) Batch mode: dialogs through the providers' batch APIs.
    pub batch: Option<crate::settings::BatchSection>,
}

/// `generation:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Rows to write; `null` leaves the count to `stopping`.
    #[serde(default = "default_num_dialogs")]
    pub num_dialogs: Option<u64>,
    /// Most assistant replies per dialog.
    #[serde(default = "default_max_turns")]
    pub max_turns: u32,
    /// Use exactly `max_turns` in every dialog instead of drawing 1..=max_turns.
    #[serde(default)]
    pub fixed_turns: bool,
    /// Dialogs in flight at once (default by provider).
    pub max_concurrency: Option<usize>,
    /// Extra stopping rules (any one stops the run).
    #[serde(default)]
    pub stopping: Vec<StopRule>,
    /// Seed for reproducible sampling and turn counts.
    pub seed: Option<u64>,
    /// Failed dialogs tolerated before the run stops.
    pub max_failures: Option<u64>,
    /// (ours) What a stopping rule does to dialogs in flight: `finish` (keep them) or
    /// `cancel`.
    #[serde(default)]
    pub on_stop: InFlight,
    /// (ours) When the questions run out before the count: `stop` (end cleanly, exit
    /// 0) or `fail` (exit 1, naming the rows missing).
    #[serde(default)]
    pub on_exhausted: OnExhausted,
}

impl Default for Generation {
    fn default() -> Self {
        Generation {
            num_dialogs: default_num_dialogs(),
            max_turns: default_max_turns(),
            fixed_turns: false,
            max_concurrency: None,
            stopping: Vec::new(),
            seed: None,
            max_failures: None,
            on_stop: InFlight::Finish,
            on_exhausted: OnExhausted::Stop,
        }
    }
}

fn default_num_dialogs() -> Option<u64> {
    Some(10)
}

fn default_max_turns() -> u32 {
    1
}

/// `model:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Which API.
    #[serde(default)]
    pub provider: Provider,
    /// The model name (default by provider).
    pub model_name: Option<String>,
    /// The environment variable holding the key (several keys: comma-separated).
    pub api_key_env: Option<String>,
    /// (ours) Several variables, each holding one or more keys; the keys rotate.
    #[serde(default)]
    pub api_key_envs: Vec<String>,
    /// Another endpoint for the same API.
    pub base_url: Option<String>,
    /// Seconds before a request times out (default 120).
    pub timeout_secs: Option<u64>,
    /// (ours) Seconds to wait for a connection (default 10).
    pub connect_timeout_secs: Option<u64>,
    /// (ours) Retries of a request that failed in a way that may pass (default 5).
    pub max_retries: Option<u32>,
    /// (ours) Token prices, for the cost in the report and `--max-cost`.
    pub price: Option<Price>,
    /// (ours) The provider's request limit per minute.
    pub requests_per_minute: Option<u32>,
    /// (ours) The provider's token limit per minute.
    pub tokens_per_minute: Option<u64>,
    /// (ours) Each key's request limit per minute, with several keys.
    pub requests_per_minute_per_key: Option<u32>,
    /// (ours) Each key's token limit per minute, with several keys.
    pub tokens_per_minute_per_key: Option<u64>,
    /// (ours) Stop the run when only failures came back for this long (default 300;
    /// 0 turns the breaker off).
    pub breaker_after_secs: Option<u64>,
    /// (ours) How JSON output is asked for: `auto` (default: the provider's best
    /// mode, stepping down when the server rejects it), `json_schema`,
    /// `json_object_schema`, `json_object` or `prompt`.
    pub structured_output: Option<StructuredOutput>,
    /// (ours) The largest response body read, in bytes (default 16 MiB).
    pub max_response_bytes: Option<usize>,
    /// (ours) The token limit of every request that sets none, and the cap of those
    /// asking for more.
    pub max_tokens: Option<u32>,
    /// (ours) The temperature of every request that sets none.
    pub temperature: Option<f32>,
    /// (ours) Prompt caching hints: Anthropic's `cache_control` breakpoints and
    /// OpenAI's `prompt_cache_key` (default true; false sends neither).
    pub prompt_caching: Option<bool>,
}

/// `respondent:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptSection {
    /// The prompt text.
    pub system_prompt: Option<String>,
    /// A file holding it, relative to the config file.
    pub system_prompt_file: Option<String>,
    /// (ours) The assistant's sampling temperature (default 0.7).
    pub temperature: Option<f32>,
    /// (ours) Most tokens per assistant reply (default: the endpoint's).
    pub max_tokens: Option<u32>,
}

/// `correspondent:` (ours)
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrespondentSection {
    /// A fixed system prompt for the simulated user.
    pub system_prompt: Option<String>,
    /// A file holding it, relative to the config file.
    pub system_prompt_file: Option<String>,
    /// Another model (same provider) to play the user.
    pub model_name: Option<String>,
    /// The simulated user's sampling temperature (default 0.7).
    pub temperature: Option<f32>,
    /// Most tokens per simulated-user message (default: the endpoint's).
    pub max_tokens: Option<u32>,
}

/// Document source kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocumentsKind {
    /// A folder of `.txt`/`.md` files.
    #[default]
    Directory,
    /// One file (or a glob, later).
    File,
    /// A JSON Lines file.
    Jsonl,
    /// A Qdrant collection (not supported here).
    Qdrant,
    /// Inline texts (`texts:`; upstream documents it but raises).
    Memory,
}

/// `documents:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentsSection {
    /// The source kind.
    #[serde(default)]
    pub provider: DocumentsKind,
    /// Folder or file, relative to the config file.
    pub path: Option<String>,
    /// Inline documents (ours, for `provider: memory`).
    pub texts: Option<Vec<String>>,
    /// Qdrant collection.
    pub collection: Option<String>,
    /// Qdrant URL.
    pub url: Option<String>,
    /// The JSONL field holding the text.
    #[serde(default = "default_content_key")]
    pub content_key: String,
    /// Keep JSONL ids.
    #[serde(default)]
    pub preserve_ids: bool,
    /// Keep JSONL metadata.
    #[serde(default)]
    pub include_metadata: bool,
    /// (ours) Skip documents shorter than this many characters.
    pub min_length: Option<usize>,
    /// (ours) The JSONL field holding a document's sampling weight.
    pub weight_key: Option<String>,
}

fn default_content_key() -> String {
    "text".into()
}

/// `instructions:` (ours): steering first questions away from repetition.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionsSection {
    /// Steer at all (default true): question types, questions to avoid, a higher
    /// temperature when questions repeat, sections of long documents.
    pub steering: Option<bool>,
    /// The question types drawn per batch (default: the built-in seven).
    pub question_types: Option<Vec<QuestionTypeEntry>>,
    /// Most questions already asked shown to the writer (default 8).
    pub avoid_count: Option<usize>,
    /// Most characters of those questions in all (default 1200).
    pub avoid_chars: Option<usize>,
    /// The highest temperature repetition raises the writer's to (default 1.0).
    pub max_temperature: Option<f32>,
    /// Documents longer than this many characters are shown as a random section
    /// (default 4000; 0 shows documents whole).
    pub section_chars: Option<usize>,
}

/// One of `instructions.question_types`: a built-in type's name, or a type of one's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum QuestionTypeEntry {
    /// A built-in type (`how_to`, `troubleshooting`, ...).
    Name(String),
    /// `{name, description}`: a type of one's own.
    Custom(CustomQuestionType),
}

/// `{name, description}` in `instructions.question_types`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomQuestionType {
    /// Recorded in rows as `metadata.question_type`.
    pub name: String,
    /// What the writer is asked for ("a question about pricing and plans").
    pub description: String,
}

/// `context:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSection {
    /// Draw instructions from documents.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Documents per instruction batch.
    #[serde(default = "two")]
    pub num_random_contexts: usize,
    /// Questions per generator call.
    #[serde(default = "three")]
    pub n_instructions: usize,
    /// (ours) Uses after which a document is no longer sampled (default: the largest
    /// `target_visits` of the `context_coverage` rules, as upstream infers it).
    pub target_visits: Option<u64>,
}

impl Default for ContextSection {
    fn default() -> Self {
        ContextSection {
            enabled: true,
            num_random_contexts: 2,
            n_instructions: 3,
            target_visits: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn two() -> usize {
    2
}
fn three() -> usize {
    3
}

/// `personas:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersonasSection {
    /// Use persona-driven instructions.
    #[serde(default)]
    pub enabled: bool,
    /// The deepest persona layer (0: only personas drawn from the documents); `null`
    /// picks it from the dialogs each document must serve.
    pub n_iterations: Option<u32>,
    /// (ours) Accepted so existing files still load, but unused: personas are made
    /// as dialogs need them, within the run's `generation.max_concurrency`.
    pub max_concurrency: Option<usize>,
}

/// `tools:` (ours)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolsSection {
    /// OpenAI-style function specs, inline (`{type: function, function: {...}}` or
    /// `{name, description, parameters}`).
    pub specs: Option<serde_json::Value>,
    /// A JSON (or YAML) file holding the specs, relative to the config file.
    pub file: Option<String>,
    /// Tools offered to each batch of questions (default 2).
    #[serde(default = "two")]
    pub num_tools_to_sample: usize,
    /// Tool rounds per assistant turn before the dialog is rejected (default 4).
    #[serde(default = "four")]
    pub max_tool_rounds: u32,
}

fn four() -> u32 {
    4
}

/// `retrieval:` (ours)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSection {
    /// Turn retrieval on (default true when the section is present).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `bm25` (default: no server, no model) or `embedding`.
    #[serde(default)]
    pub retriever: RetrieverKind,
    /// Chunks put in the prompt per question (default 3).
    #[serde(default = "three")]
    pub top_k: usize,
    /// Chunks scoring below this are left out.
    pub min_score: Option<f64>,
    /// Retrieve for every user turn, not only the first question.
    #[serde(default)]
    pub per_turn: bool,
    /// Also give the assistant the document the question was drawn from.
    #[serde(default)]
    pub include_document: bool,
    /// Characters per chunk (default 1000).
    #[serde(default = "default_chunk_size")]
    pub chunk_size: usize,
    /// Characters repeated between neighbouring chunks (default 150).
    #[serde(default = "default_chunk_overlap")]
    pub chunk_overlap: usize,
    /// The embedding model, for `retriever: embedding`.
    pub embedding: Option<EmbeddingSection>,
}

fn default_chunk_size() -> usize {
    1000
}

fn default_chunk_overlap() -> usize {
    150
}

/// `retrieval.retriever`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RetrieverKind {
    /// Built-in BM25 keyword ranking.
    #[default]
    Bm25,
    /// Cosine similarity of embeddings.
    Embedding,
}

/// `retrieval.embedding:`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingSection {
    /// `openai`, `local`, `deepseek`, `openrouter` (OpenAI-compatible `/embeddings`) or
    /// `gemini` (default: the model section's provider).
    pub provider: Option<Provider>,
    /// The embedding model.
    pub model_name: Option<String>,
    /// The variable holding the key (default: the provider's).
    pub api_key_env: Option<String>,
    /// Another endpoint (default: the model section's, for the same provider).
    pub base_url: Option<String>,
    /// Texts per request.
    pub batch_size: Option<usize>,
}

/// `quality:` (upstream has `auto_improve`; the rest is ours)
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QualitySection {
    /// Judge and regenerate low-quality dialogs.
    #[serde(default)]
    pub auto_improve: bool,
    /// The judge's model name (default: the main model).
    pub evaluator_model_name: Option<String>,
    /// A judge on another provider or endpoint.
    pub evaluator: Option<ModelSection>,
    /// The score a dialog needs (default 0.72, upstream's "good").
    #[serde(default = "default_min_score")]
    pub min_score: f64,
    /// Regenerations of a rejected dialog (default 2).
    #[serde(default = "two_u32")]
    pub max_regenerations: u32,
    /// When no attempt passes: keep the best one, or drop the dialog and make another.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How criterion scores combine.
    #[serde(default)]
    pub aggregation: Aggregation,
    /// Weights for `aggregation: weighted_mean` (criterion name to weight).
    #[serde(default)]
    pub weights: std::collections::BTreeMap<String, f64>,
    /// Criteria of your own, each with the explanation the judge gets.
    #[serde(default)]
    pub criteria: Vec<CriterionEntry>,
    /// Reject broken dialogs before the judge (default: on).
    #[serde(default = "yes")]
    pub checks: bool,
    /// Skip first questions that nearly repeat earlier ones (default: on).
    #[serde(default = "yes")]
    pub dedup: bool,
    /// Discard generated first questions that are no request (a placeholder, a MIME
    /// type, an echo of the prompt) before a dialog is spent on them (default: on,
    /// with or without `auto_improve`).
    #[serde(default = "yes")]
    pub instruction_checks: bool,
    /// What happens to attempts the judge could not grade: `keep`, `drop`, or `stop`
    /// (the default: keep the occasional one, stop the run when the judge's first
    /// answers are unreadable).
    #[serde(default)]
    pub on_unjudged: UnjudgedPolicy,
    /// The judge's sampling temperature (default 0.2).
    pub temperature: Option<f32>,
    /// Most tokens per judge answer (default: the endpoint's).
    pub max_tokens: Option<u32>,
}

impl Default for QualitySection {
    fn default() -> Self {
        QualitySection {
            auto_improve: false,
            evaluator_model_name: None,
            evaluator: None,
            min_score: default_min_score(),
            max_regenerations: 2,
            on_failure: OnFailure::KeepBest,
            aggregation: Aggregation::Mean,
            weights: Default::default(),
            criteria: Vec::new(),
            checks: true,
            dedup: true,
            instruction_checks: true,
            on_unjudged: UnjudgedPolicy::Stop,
            temperature: None,
            max_tokens: None,
        }
    }
}

fn default_min_score() -> f64 {
    0.72
}

fn two_u32() -> u32 {
    2
}

/// What to do with a dialog none of whose attempts passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Keep the best attempt.
    #[default]
    KeepBest,
    /// Drop it; another dialog takes its place.
    Drop,
}

/// One user criterion of the judge.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionEntry {
    /// Its name (the key in `evaluation`).
    pub name: String,
    /// What the judge should look for.
    pub description: String,
}

/// Storage kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// JSON Lines.
    #[default]
    Jsonl,
    /// A SQLite file (`output.path` is the file).
    Sqlite,
    /// A PostgreSQL server (`output.path` is a `postgres://` URL).
    Postgres,
    /// Upstream's SQLAlchemy storage: `output.path` is a URL (`postgresql://...` or
    /// `sqlite:///FILE`).
    Sql,
}

/// `output:`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// The output file (relative to the working directory, as upstream).
    #[serde(default = "default_output_path")]
    pub path: String,
    /// The storage kind.
    #[serde(default)]
    pub storage: StorageKind,
    /// Export to training formats after a run.
    pub export: Option<ExportSection>,
}

/// `output.export:` (upstream's keys): formats written after a successful run.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportSection {
    /// Format names (`openai`, `sharegpt`, `alpaca`, `llama_factory`, `raw`).
    #[serde(default)]
    pub formats: Vec<String>,
    /// Where the files go (default: the output file's folder).
    pub output_dir: Option<String>,
    /// The share of rows for `_val` files; `null` writes one file per format.
    pub split: Option<f64>,
    /// Shuffle before writing.
    #[serde(default = "yes")]
    pub shuffle: bool,
    /// The shuffle's seed.
    #[serde(default = "default_export_seed")]
    pub seed: u64,
}

fn default_export_seed() -> u64 {
    42
}

/// `analytics:` (upstream's keys): the HTML report written after a run.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsSection {
    /// Write the report after a successful run.
    #[serde(default)]
    pub auto_analyze: bool,
    /// Where (default: the output file with `.html`).
    pub output_path: Option<String>,
}

impl Default for OutputSection {
    fn default() -> Self {
        OutputSection {
            path: default_output_path(),
            storage: StorageKind::Jsonl,
            export: None,
        }
    }
}

fn default_output_path() -> String {
    "./afterimage_output.jsonl".into()
}

/// Why a config file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The YAML does not fit the schema.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The first line of the parser's message (it names line and column).
        message: String,
    },
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<RawConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text).map_err(|message| ConfigError::Invalid {
        path: path.display().to_string(),
        message,
    })
}

/// Parses config text; the error is one line naming the line, column and problem.
pub fn parse(text: &str) -> Result<RawConfig, String> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_saphyr::from_str::<RawConfig>(text).map_err(|e| {
        let full = e.to_string();
        let first = full.lines().next().unwrap_or("invalid YAML");
        first.trim_start_matches("error: ").to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_python_config_parses() {
        let config = parse(
            r#"
generation:
  num_dialogs: 25
  max_turns: 3
  max_concurrency: null
  stopping:
    - {type: fixed, n: 100}
    - {type: budget, max_total_tokens: 1e6}
model:
  provider: openai
  model_name: gpt-4o-mini
  api_key_env: MY_KEY
  base_url: null
respondent:
  system_prompt: "You are helpful."
documents:
  provider: directory
  path: ./docs
context: {enabled: true, num_random_contexts: 1, n_instructions: 3}
personas: {enabled: false, n_iterations: null}
quality: {auto_improve: false}
skills: {enabled: false, path: ./skills, mode: context_id}
output:
  path: ./out.jsonl
  storage: jsonl
  export: {formats: [], output_dir: null, split: null, shuffle: true, seed: 42}
analytics: {auto_analyze: false, output_path: null}
"#,
        )
        .unwrap();
        assert_eq!(config.generation.num_dialogs, Some(25));
        assert_eq!(config.generation.stopping.len(), 2);
        assert_eq!(config.model.provider, Provider::Openai);
        assert_eq!(config.context.num_random_contexts, 1);
        assert!(config.skills.is_some());
        let export = config.output.export.unwrap();
        assert!(export.formats.is_empty() && export.shuffle && export.seed == 42);
        assert!(!config.analytics.auto_analyze);
        assert!(parse("analytics: {auto_analyze: true, output_pth: x}\n").is_err());
    }

    #[test]
    fn defaults_follow_upstream() {
        let config = parse("respondent: {system_prompt: hi}\n").unwrap();
        assert_eq!(config.generation.num_dialogs, Some(10));
        assert_eq!(config.generation.max_turns, 1);
        assert_eq!(config.model.provider, Provider::Gemini);
        assert_eq!(config.context.num_random_contexts, 2);
        assert_eq!(config.output.path, "./afterimage_output.jsonl");
        let config = parse("generation: {num_dialogs: null}\n").unwrap();
        assert_eq!(config.generation.num_dialogs, None);
    }

    #[test]
    fn a_typo_names_the_key_and_line() {
        let err = parse("generation:\n  num_dialogs: 3\n  max_turn: 2\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("max_turn"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
        let err = parse("model:\n  provider: gemni\n").unwrap_err();
        assert!(err.contains("gemni") && err.contains("line 2"), "{err}");
        let err = parse("generation:\n  stopping:\n    - {type: fixed, count: 3}\n").unwrap_err();
        assert!(err.contains("count") && err.contains("line 3"), "{err}");
        let err =
            parse("generation:\n  stopping:\n    - {type: fixed, n_personas: 3}\n").unwrap_err();
        assert!(
            err.contains("n_personas") && err.contains("line 3"),
            "{err}"
        );
        let err = parse("generation:\n  stopping:\n    - {type: fixd, n: 3}\n").unwrap_err();
        assert!(err.contains("fixd"), "{err}");
    }
}
