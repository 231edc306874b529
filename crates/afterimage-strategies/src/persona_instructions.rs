//! Questions drawn from sampled documents, asked in the voice of a persona generated
//! for them.

use std::collections::HashMap;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, Document, DocumentSource, GeneratedInstructions, Instruction, InstructionGenerator,
    InstructionRequest, Persona, PersonaSource, StrategyError, Usage,
};
use async_trait::async_trait;

use crate::PersonaGenerator;
use crate::instructions::ask_for_instructions;
use crate::prompts::{
    DEFAULT_PERSONA_INSTRUCTION_PROMPT, FALLBACK_PERSONA, fill, instruction_user_message,
};
use crate::sampling::{DocumentPool, DocumentSampler, merge_contexts};

/// Samples documents, picks a persona for them from a [`PersonaGenerator`], and asks
/// the model for first questions that persona would send about them.
///
/// The persona comes from the sampled documents in an order chosen by the seed: the
/// first of them that has personas gives one. When none has any, the questions come
/// from a generic user ("A curious user", with no generation depth).
pub struct PersonaInstructionGenerator {
    model: Arc<dyn ChatModel>,
    documents: DocumentPool,
    personas: Arc<PersonaGenerator>,
    n_instructions: usize,
    num_random_contexts: usize,
    temperature: f32,
    system_prompt: String,
}

impl PersonaInstructionGenerator {
    /// A generator asking `model` about documents from `source` in the voice of
    /// personas from `personas`: 3 questions from one document per call, at
    /// temperature 0.7.
    pub fn new(
        model: Arc<dyn ChatModel>,
        source: Arc<dyn DocumentSource>,
        personas: Arc<PersonaGenerator>,
    ) -> Self {
        PersonaInstructionGenerator {
            model,
            documents: DocumentPool::new(source),
            personas,
            n_instructions: 3,
            num_random_contexts: 1,
            temperature: 0.7,
            system_prompt: DEFAULT_PERSONA_INSTRUCTION_PROMPT.to_owned(),
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

    /// Replaces the system prompt; `{n_instructions}` in it becomes the count and
    /// `{persona}` the persona's description.
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.system_prompt = template.into();
        self
    }

    /// The persona generator this one asks.
    pub fn persona_generator(&self) -> &Arc<PersonaGenerator> {
        &self.personas
    }

    /// Uses each document at most this many times (default: no limit); see
    /// [`DocumentSampler::target_visits`].
    pub fn target_visits(mut self, target: Option<u64>) -> Self {
        self.documents = self.documents.target_visits(target);
        self
    }

    /// Sampling weights by document id; see [`DocumentSampler::weights`].
    pub fn weights(mut self, weights: HashMap<String, f64>) -> Self {
        self.documents = self.documents.weights(weights);
        self
    }

    /// The sampler over the loaded documents, loading them if this is the first use.
    pub async fn sampler(&self) -> Result<&DocumentSampler, StrategyError> {
        self.documents.sampler().await
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

impl std::fmt::Debug for PersonaInstructionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaInstructionGenerator")
            .field("model", &self.model.model_id())
            .field("documents", &self.documents)
            .field("personas", &self.personas)
            .field("n_instructions", &self.n_instructions)
            .field("num_random_contexts", &self.num_random_contexts)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InstructionGenerator for PersonaInstructionGenerator {
    fn instruction_done(&self, instruction: &Instruction, stored: bool) {
        self.documents.finish(&instruction.context_ids(), stored);
    }

    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        self.check()?;
        let reserved = self
            .documents
            .take(
                self.num_random_contexts,
                request,
                self.n_instructions as u64,
            )
            .await?;
        let documents = reserved.documents();
        let picked = pick_persona(self.personas.as_ref(), documents, request.seed).await?;
        let (persona, usage, requests) = (picked.persona, picked.usage, picked.requests);
        let context = merge_contexts(documents);
        let n = self.n_instructions;
        let asked = ask_for_instructions(
            self.model.as_ref(),
            fill(
                &self.system_prompt,
                &[
                    ("n_instructions", &n.to_string()),
                    ("persona", &persona.description),
                ],
            ),
            instruction_user_message(&request.correspondent_prompt, Some(&context)),
            self.temperature,
            n,
        )
        .await?;
        let documents = reserved.confirm(asked.instructions.len());
        Ok(GeneratedInstructions {
            instructions: asked.instructions,
            documents,
            context,
            persona: Some(persona),
            metadata: serde_json::Map::new(),
            usage: usage + asked.usage,
            requests: requests + asked.requests,
        })
    }
}

/// A persona for a batch drawn from `documents`, and what generating it cost.
#[derive(Debug)]
pub(crate) struct PickedPersona {
    pub(crate) persona: Persona,
    pub(crate) usage: Usage,
    pub(crate) requests: u32,
}

/// Asks `source` for a persona for the documents in a seed-chosen order; the first
/// that has one gives it, else a generic user ("A curious user", no depth).
pub(crate) async fn pick_persona(
    source: &dyn PersonaSource,
    documents: &[Document],
    seed: u64,
) -> Result<PickedPersona, StrategyError> {
    let mut usage = Usage::default();
    let mut requests = 0;
    if !documents.is_empty() {
        let start = (seed % documents.len() as u64) as usize;
        for offset in 0..documents.len() {
            let document = &documents[(start + offset) % documents.len()];
            let pick = source.persona_for(document, seed).await?;
            usage += pick.usage;
            requests += pick.requests;
            if let Some(persona) = pick.persona {
                return Ok(PickedPersona {
                    persona,
                    usage,
                    requests,
                });
            }
        }
    }
    Ok(PickedPersona {
        persona: Persona {
            description: FALLBACK_PERSONA.to_owned(),
            generation_depth: None,
        },
        usage,
        requests,
    })
}
