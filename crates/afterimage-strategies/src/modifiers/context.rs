//! Respondent prompt modifiers: what the assistant is given to know.

use afterimage_core::{Instruction, ModifiedPrompt, RespondentPromptModifier, StrategyError};
use async_trait::async_trait;

use super::prompts::DEFAULT_RESPONDENT_CONTEXT_TEMPLATE;
use crate::template::fill;

/// Gives the respondent the context the dialog's first question was drawn from, so
/// that it answers from the same knowledge the question is about.
#[derive(Debug, Clone)]
pub struct WithContextRespondentPromptModifier {
    template: String,
}

impl WithContextRespondentPromptModifier {
    /// The modifier with the default template
    /// ([`DEFAULT_RESPONDENT_CONTEXT_TEMPLATE`](crate::DEFAULT_RESPONDENT_CONTEXT_TEMPLATE)).
    pub fn new() -> Self {
        WithContextRespondentPromptModifier {
            template: DEFAULT_RESPONDENT_CONTEXT_TEMPLATE.to_owned(),
        }
    }

    /// A modifier with its own template: `{prompt}` becomes the base respondent prompt
    /// and `{context}` the context. A template without `{context}` is refused, since it
    /// would silently drop the context.
    pub fn with_template(template: impl Into<String>) -> Result<Self, StrategyError> {
        let template = template.into();
        if !template.contains("{context}") {
            return Err(StrategyError::Config(
                "the respondent prompt template has no {context} placeholder".to_owned(),
            ));
        }
        Ok(WithContextRespondentPromptModifier { template })
    }

    /// The system prompt for `base` and `context`, as [`modify`](RespondentPromptModifier::modify)
    /// builds it.
    pub fn render(&self, base: &str, context: &str) -> String {
        fill(&self.template, &[("prompt", base), ("context", context)])
    }
}

impl Default for WithContextRespondentPromptModifier {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl RespondentPromptModifier for WithContextRespondentPromptModifier {
    async fn modify(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, StrategyError> {
        let context = &instruction.source.context;
        if context.trim().is_empty() {
            return Ok(ModifiedPrompt {
                system_prompt: respondent_prompt.to_owned(),
                ..ModifiedPrompt::default()
            });
        }
        Ok(ModifiedPrompt {
            system_prompt: self.render(respondent_prompt, context),
            response_context: Some(context.clone()),
            metadata: serde_json::Map::new(),
        })
    }
}
