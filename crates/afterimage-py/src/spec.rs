//! What the Python layer hands over: the generator's settings and the run's options, as
//! JSON (the Python objects, such as custom callbacks, travel beside it).

use serde::Deserialize;

/// A model endpoint as the Python constructor arguments describe it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ModelSpec {
    /// `gemini`, `openai`, `deepseek`, `openrouter`, `anthropic` or `local`.
    pub(crate) provider: Option<String>,
    /// The model; the provider's default when unset.
    pub(crate) model_name: Option<String>,
    /// One key, or several rotated through a key pool.
    #[serde(default)]
    pub(crate) api_keys: Vec<String>,
    /// Another endpoint speaking the provider's API.
    pub(crate) base_url: Option<String>,
}

impl ModelSpec {
    /// Whether the spec sets nothing, so the caller's model is reused.
    pub(crate) fn is_empty(&self) -> bool {
        self.provider.is_none()
            && self.model_name.is_none()
            && self.api_keys.is_empty()
            && self.base_url.is_none()
    }

    /// `self` with the unset fields taken from `base`.
    pub(crate) fn or(&self, base: &ModelSpec) -> ModelSpec {
        ModelSpec {
            provider: self.provider.clone().or_else(|| base.provider.clone()),
            model_name: self.model_name.clone().or_else(|| base.model_name.clone()),
            api_keys: if self.api_keys.is_empty() {
                base.api_keys.clone()
            } else {
                self.api_keys.clone()
            },
            base_url: self.base_url.clone().or_else(|| base.base_url.clone()),
        }
    }
}

/// The built-in instruction generators, or a Python object.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum InstructionsSpec {
    /// Questions from the prompts alone.
    Simple {
        #[serde(default)]
        model: ModelSpec,
        n_instructions: Option<usize>,
    },
    /// Questions about sampled documents.
    Contextual {
        #[serde(default)]
        model: ModelSpec,
        documents: Vec<String>,
        n_instructions: Option<usize>,
        num_random_contexts: Option<usize>,
    },
    /// Questions in a generated persona's voice about sampled documents.
    Persona {
        #[serde(default)]
        model: ModelSpec,
        documents: Vec<String>,
        n_instructions: Option<usize>,
        num_random_contexts: Option<usize>,
        max_depth: Option<u32>,
    },
    /// Requests that need the given tools.
    ToolCalling {
        #[serde(default)]
        model: ModelSpec,
        tools: serde_json::Value,
        documents: Option<Vec<String>>,
        n_instructions: Option<usize>,
        num_tools_to_sample: Option<usize>,
    },
    /// A Python callback (the object travels beside the JSON).
    Python,
}

/// The built-in respondent prompt modifiers, or a Python object.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum ModifierSpec {
    /// The dialog's documents in the system prompt.
    Context { prompt_template: Option<String> },
    /// Passages retrieved (BM25) from chunks of `documents`.
    Rag {
        documents: Vec<String>,
        top_k: Option<usize>,
        template: Option<String>,
    },
    /// A Python callback (the object travels beside the JSON).
    Python,
}

/// Where rows go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum StorageSpec {
    /// A JSONL file; a timestamped name in the working folder when unset.
    Jsonl { path: Option<String> },
}

/// The generator's settings: the constructor's arguments.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GeneratorSpec {
    pub(crate) respondent_prompt: String,
    pub(crate) model: ModelSpec,
    pub(crate) correspondent_prompt: Option<String>,
    pub(crate) instructions: InstructionsSpec,
    pub(crate) modifier: Option<ModifierSpec>,
    #[serde(default)]
    pub(crate) auto_improve: bool,
    pub(crate) evaluator_model_name: Option<String>,
    pub(crate) storage: Option<StorageSpec>,
}

/// A built-in stopping rule, or a Python object.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum StopSpec {
    /// Exactly `n` rows.
    Fixed { n: u64 },
    /// `n_personas` distinct personas among stored rows.
    PersonaUsage { n_personas: u64 },
    /// A Python callback: the `index`th object of the list beside the JSON.
    Python { index: usize },
}

/// The options of one `generate` call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunSpec {
    pub(crate) num_dialogs: Option<u64>,
    pub(crate) max_turns: u32,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) seed: Option<u64>,
    #[serde(default)]
    pub(crate) stopping_criteria: Vec<StopSpec>,
}
