//! How chat clients ask for JSON output, and the mode an endpoint settled on: with
//! [`StructuredOutput::Auto`] a client steps down to a plainer mode when a server
//! rejects the one it sent, and every client of the endpoint follows.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use afterimage_core::{JsonSchema, ProviderError, snippet};
use serde::{Deserialize, Serialize};

use crate::Provider;

/// How a chat client asks for JSON when a request carries a schema, from the
/// strictest mode to the plainest.
///
/// Each provider has its own wire form of a mode:
///
/// | mode | OpenAI-compatible | Gemini | Anthropic |
/// |---|---|---|---|
/// | `json_schema` | `response_format: {type: json_schema}` | `responseJsonSchema` | a forced tool |
/// | `json_object_schema` | `{type: json_object, schema}` (llama-cpp-python) | `responseSchema` (OpenAPI subset) | (prompt) |
/// | `json_object` | `{type: json_object}` | `responseMimeType` only | (prompt) |
/// | `prompt` | no `response_format` | no JSON mode | no tool |
///
/// Every mode below `json_schema` also writes the schema into the system prompt with
/// an instruction to answer with JSON only. A mode a provider lacks means its next
/// plainer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StructuredOutput {
    /// Start from the provider's best mode and step down, once per mode and for the
    /// whole endpoint, when a server rejects it.
    #[default]
    Auto,
    /// The server enforces the schema (OpenAI, OpenRouter, vLLM, Ollama, Gemini 2.5+).
    JsonSchema,
    /// JSON mode with the schema in a side field: llama-cpp-python's
    /// `{type: json_object, schema}`, Gemini's OpenAPI-subset `responseSchema`.
    JsonObjectSchema,
    /// JSON mode without a schema (DeepSeek); the schema goes in the prompt.
    JsonObject,
    /// The schema in the system prompt only, for servers with no JSON mode.
    #[serde(rename = "prompt")]
    PromptOnly,
}

/// The modes in the order [`StructuredOutput::Auto`] tries them.
const LADDER: [StructuredOutput; 4] = [
    StructuredOutput::JsonSchema,
    StructuredOutput::JsonObjectSchema,
    StructuredOutput::JsonObject,
    StructuredOutput::PromptOnly,
];

/// Anthropic has a forced tool or nothing.
const ANTHROPIC_LADDER: [StructuredOutput; 2] =
    [StructuredOutput::JsonSchema, StructuredOutput::PromptOnly];

impl StructuredOutput {
    /// Every name a config may use, in order.
    pub const NAMES: [&'static str; 5] = [
        "auto",
        "json_schema",
        "json_object_schema",
        "json_object",
        "prompt",
    ];

    /// The name configs use.
    pub fn name(self) -> &'static str {
        match self {
            StructuredOutput::Auto => "auto",
            StructuredOutput::JsonSchema => "json_schema",
            StructuredOutput::JsonObjectSchema => "json_object_schema",
            StructuredOutput::JsonObject => "json_object",
            StructuredOutput::PromptOnly => "prompt",
        }
    }

    /// Whether the schema also goes into the system prompt.
    pub(crate) fn schema_in_prompt(self) -> bool {
        !matches!(self, StructuredOutput::JsonSchema | StructuredOutput::Auto)
    }

    /// The position of a concrete mode in [`LADDER`] (`Auto` counts as the top).
    fn rank(self) -> usize {
        LADDER.iter().position(|m| *m == self).unwrap_or(0)
    }
}

impl std::fmt::Display for StructuredOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a [`StructuredOutput`] mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown structured output mode `{0}` (expected auto, json_schema, json_object_schema, json_object or prompt)"
)]
pub struct UnknownMode(pub String);

impl std::str::FromStr for StructuredOutput {
    type Err = UnknownMode;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        [
            StructuredOutput::Auto,
            StructuredOutput::JsonSchema,
            StructuredOutput::JsonObjectSchema,
            StructuredOutput::JsonObject,
            StructuredOutput::PromptOnly,
        ]
        .into_iter()
        .find(|m| m.name() == name)
        .ok_or_else(|| UnknownMode(name.to_owned()))
    }
}

/// One step down: the mode a server rejected, the one taken instead, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModeChange {
    /// The mode the server rejected.
    pub from: StructuredOutput,
    /// The mode used from then on.
    pub to: StructuredOutput,
    /// The URL that rejected it.
    pub url: String,
    /// The start of the server's message.
    pub message: String,
}

/// The structured output mode of one endpoint, shared by all its clients (every key
/// of a key pool, every clone): the mode requests use now, and how it got there.
///
/// Cloning shares the state. A step down is a compare-and-swap, so concurrent
/// rejections of one mode step down once.
///
/// ```
/// use afterimage_providers::{Provider, StructuredOutput, StructuredOutputState};
///
/// let state = StructuredOutputState::new(Provider::Deepseek, StructuredOutput::Auto);
/// assert_eq!(state.mode(), StructuredOutput::JsonObject);
/// assert!(state.is_auto() && state.changes().is_empty());
/// let resumed = StructuredOutputState::new(Provider::Local, StructuredOutput::Auto)
///     .starting_at(StructuredOutput::JsonObjectSchema);
/// assert_eq!(resumed.mode(), StructuredOutput::JsonObjectSchema);
/// ```
#[derive(Clone)]
pub struct StructuredOutputState {
    inner: Arc<Inner>,
}

struct Inner {
    configured: StructuredOutput,
    ladder: &'static [StructuredOutput],
    /// The index in `ladder` of the mode in use.
    rung: AtomicUsize,
    changes: Mutex<Vec<ModeChange>>,
}

impl std::fmt::Debug for StructuredOutputState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StructuredOutputState")
            .field("configured", &self.inner.configured)
            .field("mode", &self.mode())
            .finish()
    }
}

impl StructuredOutputState {
    /// The state of a `provider` endpoint configured with `mode`: `Auto` starts from
    /// the provider's best mode (`json_object` for DeepSeek, `json_schema` for the
    /// rest); an explicit mode stays (a mode the provider lacks means its next plainer
    /// one).
    pub fn new(provider: Provider, mode: StructuredOutput) -> Self {
        let ladder: &'static [StructuredOutput] = match provider {
            Provider::Anthropic => &ANTHROPIC_LADDER,
            _ => &LADDER,
        };
        let start = match (mode, provider) {
            (StructuredOutput::Auto, Provider::Deepseek) => StructuredOutput::JsonObject,
            (StructuredOutput::Auto, _) => StructuredOutput::JsonSchema,
            (explicit, _) => explicit,
        };
        StructuredOutputState {
            inner: Arc::new(Inner {
                configured: mode,
                ladder,
                rung: AtomicUsize::new(rung_for(ladder, start)),
                changes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// With `Auto`, starts from `mode` instead (the mode an earlier session of the run
    /// settled on); an explicit configuration ignores it.
    #[must_use]
    pub fn starting_at(self, mode: StructuredOutput) -> Self {
        if self.is_auto() && mode != StructuredOutput::Auto {
            let rung = rung_for(self.inner.ladder, mode);
            self.inner.rung.store(rung, Ordering::SeqCst);
        }
        self
    }

    /// The mode requests use now.
    pub fn mode(&self) -> StructuredOutput {
        self.current().1
    }

    /// The mode configured (`Auto` unless one was chosen).
    pub fn configured(&self) -> StructuredOutput {
        self.inner.configured
    }

    /// Whether the mode steps down when a server rejects it.
    pub fn is_auto(&self) -> bool {
        self.inner.configured == StructuredOutput::Auto
    }

    /// The steps down taken so far, oldest first (empty when the first mode worked).
    pub fn changes(&self) -> Vec<ModeChange> {
        match self.inner.changes.lock() {
            Ok(changes) => changes.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The rung in use and its mode.
    pub(crate) fn current(&self) -> (usize, StructuredOutput) {
        let rung = self.inner.rung.load(Ordering::SeqCst);
        let ladder = self.inner.ladder;
        (rung, ladder[rung.min(ladder.len() - 1)])
    }

    /// After `error` rejected rung `from` at `url`: the mode to retry in, or the
    /// error to give up with. Only the first rejection of a rung moves the state
    /// (and logs it); later ones retry in whatever mode is current.
    pub(crate) fn step_down(
        &self,
        from: usize,
        url: &str,
        error: &ProviderError,
        message: &str,
    ) -> Result<(usize, StructuredOutput), ProviderError> {
        let ladder = self.inner.ladder;
        if !self.is_auto() || from + 1 >= ladder.len() {
            return Err(self.exhausted(ladder[from.min(ladder.len() - 1)], url, error));
        }
        let rung = self.inner.rung.load(Ordering::SeqCst);
        if rung > from {
            return Ok((rung, ladder[rung.min(ladder.len() - 1)]));
        }
        let swapped =
            self.inner
                .rung
                .compare_exchange(from, from + 1, Ordering::SeqCst, Ordering::SeqCst);
        if swapped.is_ok() {
            self.record(ladder[from], ladder[from + 1], url, message);
        }
        Ok(self.current())
    }

    fn record(&self, from: StructuredOutput, to: StructuredOutput, url: &str, message: &str) {
        let message = snippet(message, 160);
        tracing::warn!(
            server = url,
            rejected = from.name(),
            now = to.name(),
            "the server rejected structured output mode {from}; using {to} from now on: {message}"
        );
        let change = ModeChange {
            from,
            to,
            url: url.to_owned(),
            message,
        };
        match self.inner.changes.lock() {
            Ok(mut changes) => changes.push(change),
            Err(poisoned) => poisoned.into_inner().push(change),
        }
    }

    /// The one-line error for a server that rejected the last mode there is to try.
    fn exhausted(&self, mode: StructuredOutput, url: &str, error: &ProviderError) -> ProviderError {
        let cause = snippet(&error.to_string(), 200);
        let message = if self.is_auto() {
            format!(
                "{url} rejected every way of asking for JSON output (the last, {mode}: {cause}); set `model.structured_output: prompt` or use a server that supports JSON output"
            )
        } else {
            format!(
                "{url} rejected structured output mode {mode} (set by `model.structured_output`): {cause}; set `model.structured_output: auto` (or `prompt`) or use a server that supports JSON output"
            )
        };
        ProviderError::Unsupported { message }
    }
}

/// The rung of `mode` on `ladder`, or of the next plainer mode it has.
fn rung_for(ladder: &[StructuredOutput], mode: StructuredOutput) -> usize {
    let rank = mode.rank();
    ladder
        .iter()
        .position(|m| m.rank() >= rank)
        .unwrap_or(ladder.len() - 1)
}

/// Sends a request in the endpoint's current mode through `send` and, when the server
/// rejects how a schema-carrying request asked for JSON, again at once in the next
/// mode `state` gives (or fails with the error that names the fix).
pub(crate) async fn send_with_fallback<T, F, Fut>(
    state: &StructuredOutputState,
    has_schema: bool,
    url: &str,
    mut send: F,
) -> Result<T, ProviderError>
where
    F: FnMut(StructuredOutput) -> Fut,
    Fut: Future<Output = Result<T, ProviderError>>,
{
    let (mut rung, mut mode) = state.current();
    loop {
        let error = match send(mode).await {
            Ok(answer) => return Ok(answer),
            Err(error) => error,
        };
        let rejection = if has_schema {
            rejection_message(&error)
        } else {
            None
        };
        let Some(message) = rejection else {
            return Err(error);
        };
        // Each pass moves at least one rung down the ladder, so this ends.
        let (next, next_mode) = state.step_down(rung, url, &error, message)?;
        if next <= rung {
            return Err(error);
        }
        (rung, mode) = (next, next_mode);
    }
}

/// The server's message when `error` is a rejection of how JSON output was asked
/// for: a 4xx (or a 5xx, as llama-cpp-python answers) whose message names
/// `response_format`, a schema field, JSON mode or a forced tool.
pub(crate) fn rejection_message(error: &ProviderError) -> Option<&str> {
    const WORDS: [&str; 8] = [
        "response_format",
        "responseformat",
        "json_object",
        "schema",
        "mime",
        "tool_choice",
        "structured",
        "json mode",
    ];
    let message = match error {
        ProviderError::BadRequest { message, .. } | ProviderError::Server { message, .. } => {
            message
        }
        _ => return None,
    };
    let lower = message.to_ascii_lowercase();
    WORDS
        .iter()
        .any(|w| lower.contains(w))
        .then_some(message.as_str())
}

/// The text added to the system prompt when the server does not get the schema.
pub(crate) fn schema_instruction(schema: &JsonSchema) -> String {
    format!(
        "Reply with a single JSON object and nothing else. It must match this JSON Schema:\n{}",
        schema.schema
    )
}

/// `system` with the schema instruction appended (or the instruction alone).
pub(crate) fn with_schema_instruction(system: Option<String>, schema: &JsonSchema) -> String {
    let instruction = schema_instruction(schema);
    match system {
        Some(prompt) if !prompt.trim().is_empty() => format!("{prompt}\n\n{instruction}"),
        _ => instruction,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected() -> ProviderError {
        ProviderError::BadRequest {
            status: 400,
            message: "'response_format.type' must be 'json_schema' or 'text'".into(),
        }
    }

    #[test]
    fn names_round_trip() {
        for name in StructuredOutput::NAMES {
            let mode: StructuredOutput = name.parse().unwrap();
            assert_eq!(mode.name(), name);
            let json = serde_json::to_string(&mode).unwrap();
            assert_eq!(json, format!("\"{name}\""));
        }
        assert!("json".parse::<StructuredOutput>().is_err());
    }

    #[test]
    fn auto_steps_down_once_per_mode_and_stops_at_prompt() {
        let state = StructuredOutputState::new(Provider::Local, StructuredOutput::Auto);
        let other = state.clone();
        assert_eq!(state.current(), (0, StructuredOutput::JsonSchema));
        let error = rejected();
        assert_eq!(
            state.step_down(0, "u", &error, "m").unwrap(),
            (1, StructuredOutput::JsonObjectSchema)
        );
        // A second rejection of the same rung (a concurrent request) moves nothing.
        assert_eq!(other.step_down(0, "u", &error, "m").unwrap().0, 1);
        assert_eq!(state.changes().len(), 1);
        state.step_down(1, "u", &error, "m").unwrap();
        state.step_down(2, "u", &error, "m").unwrap();
        assert_eq!(other.mode(), StructuredOutput::PromptOnly);
        let last = state.step_down(3, "u", &error, "m").unwrap_err();
        assert!(last.is_fatal());
        assert!(
            last.to_string()
                .contains("set `model.structured_output: prompt`"),
            "{last}"
        );
        assert_eq!(state.changes().len(), 3);
    }

    #[test]
    fn explicit_modes_never_move_and_anthropic_has_two() {
        let state = StructuredOutputState::new(Provider::Local, StructuredOutput::JsonObject);
        assert!(state.step_down(2, "u", &rejected(), "m").is_err());
        assert_eq!(state.mode(), StructuredOutput::JsonObject);
        let anthropic = StructuredOutputState::new(Provider::Anthropic, StructuredOutput::Auto)
            .starting_at(StructuredOutput::JsonObject);
        assert_eq!(anthropic.mode(), StructuredOutput::PromptOnly);
    }

    #[test]
    fn rejections_are_recognised_by_what_they_name() {
        assert!(rejection_message(&rejected()).is_some());
        let llama = ProviderError::Server {
            status: 500,
            message: "body.response_format.type: Input should be 'text' or 'json_object'".into(),
        };
        assert!(rejection_message(&llama).is_some());
        let other = ProviderError::BadRequest {
            status: 400,
            message: "temperature must be <= 2".into(),
        };
        assert!(rejection_message(&other).is_none());
        let auth = ProviderError::Auth {
            status: 401,
            message: "bad schema key".into(),
        };
        assert!(rejection_message(&auth).is_none());
    }
}
