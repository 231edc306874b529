//! Persona-driven questions: a contextual generator asking in the voice of personas
//! generated for the sampled documents.

use std::sync::Arc;

use afterimage_core::{
    ChatModel, Document, DocumentSource, Persona, PersonaSource, StrategyError, Usage,
};

use super::prompts::FALLBACK_PERSONA;
use crate::{ContextualInstructionGenerator, PersonaGenerator};

/// Questions about sampled documents in the voice of personas from a
/// [`PersonaGenerator`]: the name under which the persona strategy is found.
///
/// It builds a [`ContextualInstructionGenerator`] with
/// [`personas`](ContextualInstructionGenerator::personas) set, so every sampling
/// option (targets, weights, batch sizes) is the same in both.
#[derive(Debug)]
pub struct PersonaInstructionGenerator;

impl PersonaInstructionGenerator {
    /// A generator asking `model` about documents from `source` in the voice of
    /// personas from `personas`: 3 questions from one document per call, at
    /// temperature 0.7.
    #[allow(clippy::new_ret_no_self)]
    pub fn new(
        model: Arc<dyn ChatModel>,
        source: Arc<dyn DocumentSource>,
        personas: Arc<PersonaGenerator>,
    ) -> ContextualInstructionGenerator {
        ContextualInstructionGenerator::new(model, source).personas(personas)
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
