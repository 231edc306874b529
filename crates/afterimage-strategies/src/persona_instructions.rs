//! Questions drawn from sampled documents, asked in the voice of a persona generated
//! for them.

use std::sync::Arc;

use afterimage_core::{
    ChatModel, DocumentSource, GeneratedInstructions, InstructionGenerator, InstructionRequest,
    Persona, PersonaSource, StrategyError, Usage,
};
use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::PersonaGenerator;
use crate::instructions::ask_for_instructions;
use crate::prompts::{
    DEFAULT_PERSONA_INSTRUCTION_PROMPT, FALLBACK_PERSONA, fill, instruction_user_message,
};
use crate::sampling::{DocumentSampler, merge_contexts};

/// Samples documents, picks a persona for them from a [`PersonaGenerator`], and asks
/// the model for first questions that persona would send about them.
///
/// The persona comes from the sampled documents in an order chosen by the seed: the
/// first of them that has personas gives one. When none has any, the questions come
/// from a generic user ("A curious user", with no generation depth).
pub struct PersonaInstructionGenerator {
    model: Arc<dyn ChatModel>,
    source: Arc<dyn DocumentSource>,
    personas: Arc<PersonaGenerator>,
    sampler: OnceCell<DocumentSampler>,
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
            source,
            personas,
            sampler: OnceCell::new(),
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

    /// The sampler over the loaded documents, loading them if this is the first use.
    pub async fn sampler(&self) -> Result<&DocumentSampler, StrategyError> {
        self.sampler
            .get_or_try_init(|| async {
                let documents = self.source.load().await?;
                if documents.is_empty() {
                    return Err(StrategyError::NoDocuments {
                        message: "the document source returned an empty list".to_owned(),
                    });
                }
                Ok(DocumentSampler::new(documents))
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

impl std::fmt::Debug for PersonaInstructionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaInstructionGenerator")
            .field("model", &self.model.model_id())
            .field("source", &self.source)
            .field("personas", &self.personas)
            .field("documents", &self.sampler.get().map(DocumentSampler::len))
            .field("n_instructions", &self.n_instructions)
            .field("num_random_contexts", &self.num_random_contexts)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InstructionGenerator for PersonaInstructionGenerator {
    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        self.check()?;
        let documents = self
            .sampler()
            .await?
            .take(self.num_random_contexts, request.seed);
        let mut usage = Usage::default();
        let mut requests = 0;
        let mut persona = None;
        if !documents.is_empty() {
            let start = (request.seed % documents.len() as u64) as usize;
            for offset in 0..documents.len() {
                let document = &documents[(start + offset) % documents.len()];
                let pick = self.personas.persona_for(document, request.seed).await?;
                usage += pick.usage;
                requests += pick.requests;
                if pick.persona.is_some() {
                    persona = pick.persona;
                    break;
                }
            }
        }
        let persona = persona.unwrap_or_else(|| Persona {
            description: FALLBACK_PERSONA.to_owned(),
            generation_depth: None,
        });
        let context = merge_contexts(&documents);
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
