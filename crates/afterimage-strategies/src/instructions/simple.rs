//! Questions from the correspondent prompt alone, without documents.

use std::sync::Arc;

use afterimage_core::{
    ChatModel, GeneratedInstructions, InstructionGenerator, InstructionRequest, StrategyError,
};
use async_trait::async_trait;

use super::ask::ask_for_instructions;
use super::prompts::{DEFAULT_SIMPLE_INSTRUCTION_PROMPT, instruction_user_message};
use super::steering::{steered_metadata, steered_temperature, steering_note};
use crate::template::fill;

/// Asks the model for first questions the simulated user would send, knowing only the
/// correspondent prompt; the batch has no documents and an empty context.
pub struct SimpleInstructionGenerator {
    model: Arc<dyn ChatModel>,
    n_instructions: usize,
    temperature: f32,
    system_prompt: String,
}

impl SimpleInstructionGenerator {
    /// A generator asking `model` for 3 questions per call, at temperature 0.7.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        SimpleInstructionGenerator {
            model,
            n_instructions: 3,
            temperature: 0.7,
            system_prompt: DEFAULT_SIMPLE_INSTRUCTION_PROMPT.to_owned(),
        }
    }

    /// Questions per call (default 3; at least 1).
    pub fn n_instructions(mut self, n: usize) -> Self {
        self.n_instructions = n;
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
}

impl std::fmt::Debug for SimpleInstructionGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimpleInstructionGenerator")
            .field("model", &self.model.model_id())
            .field("n_instructions", &self.n_instructions)
            .field("temperature", &self.temperature)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl InstructionGenerator for SimpleInstructionGenerator {
    fn prompt_template(&self) -> Option<&str> {
        Some(&self.system_prompt)
    }

    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let n = self.n_instructions;
        if n == 0 {
            return Err(StrategyError::Config(
                "n_instructions must be at least 1".to_owned(),
            ));
        }
        let steering = request.steering.as_ref();
        let mut user = instruction_user_message(&request.correspondent_prompt, None);
        if let Some(steering) = steering {
            user.push_str(&steering_note(steering, &steering.avoid(&[], request.seed)));
        }
        let asked = ask_for_instructions(
            self.model.as_ref(),
            fill(&self.system_prompt, &[("n_instructions", &n.to_string())]),
            user,
            steered_temperature(steering, self.temperature),
            n,
        )
        .await?;
        Ok(GeneratedInstructions {
            instructions: asked.instructions,
            metadata: steered_metadata(steering),
            usage: asked.usage,
            requests: asked.requests,
            ..GeneratedInstructions::default()
        })
    }
}
