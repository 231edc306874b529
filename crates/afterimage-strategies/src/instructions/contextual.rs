//! Questions drawn from sampled documents, optionally in a persona's voice.

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, DocumentSource, GeneratedInstructions, Instruction, InstructionGenerator,
    InstructionRequest, PersonaSource, StrategyError, Usage,
};
use async_trait::async_trait;

use super::ask::ask_for_instructions;
use super::persona::pick_persona;
use super::prompts::{
    DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT, DEFAULT_PERSONA_INSTRUCTION_PROMPT,
    instruction_user_message,
};
use super::steering::{steered_context, steered_metadata, steered_temperature, steering_note};
use crate::documents::{DocumentPool, DocumentSampler};
use crate::template::fill;

/// Samples documents and asks the model for first questions a real user would send
/// about them.
///
/// Documents are loaded once, on first use. Each call picks
/// [`num_random_contexts`](Self::num_random_contexts) documents, the least used first
/// (in proportion to [`weights`](Self::weights)), and records that it used them. With
/// [`target_visits`](Self::target_visits), once every document was used that often,
/// [`generate`](InstructionGenerator::generate) fails with
/// [`StrategyError::Exhausted`], which ends a run cleanly.
///
/// With [`personas`](Self::personas), each batch is asked in the voice of a persona
/// for the sampled documents (the first of them, in a seed-chosen order, that has
/// one; else "A curious user" with no depth), and the batch carries the persona.
pub struct ContextualInstructionGenerator {
    model: Arc<dyn ChatModel>,
    documents: DocumentPool,
    personas: Option<Arc<dyn PersonaSource>>,
    n_instructions: usize,
    num_random_contexts: usize,
    temperature: f32,
    /// A custom template; `None` uses the default for the mode (with or without
    /// personas).
    system_prompt: Option<String>,
}

impl ContextualInstructionGenerator {
    /// A generator asking `model` about documents from `source`: 3 questions from one
    /// document per call, at temperature 0.7.
    pub fn new(model: Arc<dyn ChatModel>, source: Arc<dyn DocumentSource>) -> Self {
        ContextualInstructionGenerator {
            model,
            documents: DocumentPool::new(source),
            personas: None,
            n_instructions: 3,
            num_random_contexts: 1,
            temperature: 0.7,
            system_prompt: None,
        }
    }

    /// Asks each batch in the voice of a persona from `personas` (a
    /// [`PersonaGenerator`](crate::PersonaGenerator), usually).
    pub fn personas(mut self, personas: Arc<dyn PersonaSource>) -> Self {
        self.personas = Some(personas);
        self
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

    /// Replaces the system prompt; `{n_instructions}` in it becomes the count and
    /// `{persona}` the persona's description (empty without personas).
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.system_prompt = Some(template.into());
        self
    }

    /// Uses each document at most this many times (default: no limit); see
    /// [`DocumentSampler::target_visits`].
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.documents = self.documents.target_visits(target);
        self
    }

    /// Sampling weights by document id, replacing those in the documents' metadata;
    /// see [`DocumentSampler::weights`].
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.documents = self.documents.weights(weights);
        self
    }

    /// The sampler over the loaded documents, loading them if this is the first use.
    pub async fn sampler(&self) -> Result<&DocumentSampler, StrategyError> {
        self.documents.sampler().await
    }

    /// The system prompt template: the custom one, else the default for the mode.
    fn template(&self) -> &str {
        let default = match self.personas {
            Some(_) => DEFAULT_PERSONA_INSTRUCTION_PROMPT,
            None => DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT,
        };
        self.system_prompt.as_deref().unwrap_or(default)
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
            .field("documents", &self.documents)
            .field("n_instructions", &self.n_instructions)
            .field("num_random_contexts", &self.num_random_contexts)
            .field("personas", &self.personas)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InstructionGenerator for ContextualInstructionGenerator {
    fn prompt_template(&self) -> Option<&str> {
        Some(self.template())
    }

    fn instruction_done(&self, instruction: &Instruction, stored: bool) {
        self.documents.finish(&instruction.context_ids(), stored);
    }

    fn record_stored_visits(&self, visits: &HashMap<String, u64>) {
        self.documents.record_stored(visits);
    }

    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        self.check()?;
        let picked = self
            .documents
            .take(
                self.num_random_contexts,
                request,
                self.n_instructions as u64,
            )
            .await?;
        let documents = picked.documents();
        let (persona, mut usage, mut requests) = match &self.personas {
            Some(source) => {
                let pick = pick_persona(source.as_ref(), documents, request.seed).await?;
                (Some(pick.persona), pick.usage, pick.requests)
            }
            None => (None, Usage::default(), 0),
        };
        let template = self.template();
        let n = self.n_instructions.to_string();
        let who = persona.as_ref().map_or("", |p| p.description.as_str());
        let steering = request.steering.as_ref();
        let context = steered_context(documents, steering, request.seed);
        let mut user = instruction_user_message(&request.correspondent_prompt, Some(&context));
        if let Some(steering) = steering {
            let ids: Vec<String> = documents.iter().map(|d| d.id.clone()).collect();
            user.push_str(&steering_note(
                steering,
                &steering.avoid(&ids, request.seed),
            ));
        }
        let asked = ask_for_instructions(
            self.model.as_ref(),
            fill(template, &[("n_instructions", &n), ("persona", who)]),
            user,
            steered_temperature(steering, self.temperature),
            self.n_instructions,
        )
        .await?;
        usage += asked.usage;
        requests += asked.requests;
        let documents = picked.confirm(asked.instructions.len());
        Ok(GeneratedInstructions {
            instructions: asked.instructions,
            documents,
            context,
            persona,
            metadata: steered_metadata(steering),
            usage,
            requests,
        })
    }
}
