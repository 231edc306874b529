//! Questions drawn from sampled documents.

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, DocumentSource, GeneratedInstructions, InstructionGenerator, InstructionRequest,
    StrategyError,
};
use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::instructions::ask_for_instructions;
use crate::prompts::{DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT, fill, instruction_user_message};
use crate::sampling::{DocumentSampler, merge_contexts};

/// Samples documents and asks the model for first questions a real user would send
/// about them.
///
/// Documents are loaded once, on first use. Each call picks
/// [`num_random_contexts`](Self::num_random_contexts) documents, the least used first
/// (in proportion to [`weights`](Self::weights)), and records that it used them. With
/// [`target_visits`](Self::target_visits), once every document was used that often,
/// [`generate`](InstructionGenerator::generate) fails with
/// [`StrategyError::Exhausted`], which ends a run cleanly.
pub struct ContextualInstructionGenerator {
    model: Arc<dyn ChatModel>,
    source: Arc<dyn DocumentSource>,
    sampler: OnceCell<DocumentSampler>,
    n_instructions: usize,
    num_random_contexts: usize,
    temperature: f32,
    system_prompt: String,
    target_visits: Option<u64>,
    weights: Option<HashMap<String, f64>>,
}

impl ContextualInstructionGenerator {
    /// A generator asking `model` about documents from `source`: 3 questions from one
    /// document per call, at temperature 0.7.
    pub fn new(model: Arc<dyn ChatModel>, source: Arc<dyn DocumentSource>) -> Self {
        ContextualInstructionGenerator {
            model,
            source,
            sampler: OnceCell::new(),
            n_instructions: 3,
            num_random_contexts: 1,
            temperature: 0.7,
            system_prompt: DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT.to_owned(),
            target_visits: None,
            weights: None,
        }
    }

    /// Questions per call (default 3; at least 1).
    pub fn n_instructions(mut self, n: usize) -> Self {
        self.n_instructions = n;
        self
    }

    /// Documents merged into each call's context (default 1; at least 1).
    pub fn num_random_contexts(mut self, n: usize) -> Self {
        self.num_random_contexts = n;
        self
    }

    /// Sampling temperature (default 0.7).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Replaces the system prompt; `{n_instructions}` in it becomes the count.
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.system_prompt = template.into();
        self
    }

    /// Uses each document at most this many times (default: no limit); see
    /// [`DocumentSampler::target_visits`].
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.target_visits = target;
        self
    }

    /// Sampling weights by document id, replacing those in the documents' metadata;
    /// see [`DocumentSampler::weights`].
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.weights = Some(weights);
        self
    }

    /// The sampler over the loaded documents, loading them if this is the first use.
    pub async fn sampler(&self) -> Result<&DocumentSampler, StrategyError> {
        self.sampler
            .get_or_try_init(|| async {
                let documents = self.source.load().await?;
                if documents.is_empty() {
                    // The trait asks sources for an error instead, but a custom source
                    // may not comply; sampling nothing would silently drop the context.
                    return Err(StrategyError::NoDocuments {
                        message: "the document source returned an empty list".to_owned(),
                    });
                }
                let mut sampler = DocumentSampler::new(documents).target_visits(self.target_visits);
                if let Some(weights) = &self.weights {
                    sampler = sampler.weights(weights.clone());
                }
                Ok(sampler)
            })
            .await
    }

    fn check(&self) -> Result<(), StrategyError> {
        if self.n_instructions == 0 {
            return Err(StrategyError::Config(
                "n_instructions must be at least 1".to_owned(),
            ));
        }
        if self.num_random_contexts == 0 {
            return Err(StrategyError::Config(
                "num_random_contexts must be at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for ContextualInstructionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the documents can be large, and a `Debug` line should stay short.
        f.debug_struct("ContextualInstructionGenerator")
            .field("model", &self.model.model_id())
            .field("source", &self.source)
            .field("documents", &self.sampler.get().map(DocumentSampler::len))
            .field("n_instructions", &self.n_instructions)
            .field("num_random_contexts", &self.num_random_contexts)
            .field("temperature", &self.temperature)
            .field("target_visits", &self.target_visits)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InstructionGenerator for ContextualInstructionGenerator {
    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        self.check()?;
        let sampler = self.sampler().await?;
        let documents = sampler.take(self.num_random_contexts, request.seed);
        if documents.is_empty() {
            return Err(nothing_to_pick(sampler));
        }
        let context = merge_contexts(&documents);
        let n = self.n_instructions;
        let asked = ask_for_instructions(
            self.model.as_ref(),
            fill(&self.system_prompt, &[("n_instructions", &n.to_string())]),
            instruction_user_message(&request.correspondent_prompt, Some(&context)),
            self.temperature,
            n,
        )
        .await?;
        Ok(GeneratedInstructions {
            instructions: asked.instructions,
            documents,
            context,
            persona: None,
            metadata: serde_json::Map::new(),
            usage: asked.usage,
            requests: asked.requests,
        })
    }
}

/// Why a sampler picked nothing: every document reached its target visits (which ends
/// a run cleanly), or none has a positive weight (a configuration mistake).
fn nothing_to_pick(sampler: &DocumentSampler) -> StrategyError {
    let total = sampler.len();
    match sampler.target() {
        Some(target) if sampler.covered(target) > 0 => {
            let covered = sampler.covered(target);
            let message = if covered == total {
                format!("every document reached target_visits = {target} ({total} document(s))")
            } else {
                format!(
                    "every document with a positive weight reached target_visits = {target} \
                     ({covered} of {total} document(s))"
                )
            };
            StrategyError::Exhausted { message }
        }
        _ => StrategyError::Config(format!(
            "none of the {total} document(s) has a positive sampling weight"
        )),
    }
}
