//! Rust handlers the user registers per tool ([`ToolHandlers`]), with an optional
//! fallback executor for the tools they leave out.

use std::collections::BTreeMap;
use std::sync::Arc;

use afterimage_core::{Message, StrategyError, ToolCall, ToolExecutor, ToolOutput, ToolSpec};
use async_trait::async_trait;
use serde_json::Value;

/// A Rust function answering calls of one tool: parsed arguments in, JSON result (or
/// an error message) out.
type Handler = Arc<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// A [`ToolExecutor`] dispatching each call to the Rust handler registered for its
/// tool, or to a fallback executor (for example an
/// [`LlmToolSimulator`](crate::LlmToolSimulator)) for the rest.
///
/// A call of a tool with no handler and no fallback, and a handler returning `Err`,
/// fail with [`StrategyError::Tool`].
#[derive(Clone, Default)]
pub struct ToolHandlers {
    handlers: BTreeMap<String, Handler>,
    fallback: Option<Arc<dyn ToolExecutor>>,
}

impl ToolHandlers {
    /// No handlers, no fallback.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers calls of the tool `name` with `handler` (replacing an earlier one).
    pub fn handler<F>(mut self, name: impl Into<String>, handler: F) -> Self
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.handlers.insert(name.into(), Arc::new(handler));
        self
    }

    /// Answers calls of tools without a handler with `executor`.
    pub fn fallback(mut self, executor: Arc<dyn ToolExecutor>) -> Self {
        self.fallback = Some(executor);
        self
    }
}

impl std::fmt::Debug for ToolHandlers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolHandlers")
            .field("handlers", &self.handlers.keys().collect::<Vec<_>>())
            .field("fallback", &self.fallback)
            .finish()
    }
}

#[async_trait]
impl ToolExecutor for ToolHandlers {
    async fn execute(
        &self,
        tool: &ToolSpec,
        call: &ToolCall,
        dialog: &[Message],
    ) -> Result<ToolOutput, StrategyError> {
        let name = &call.function.name;
        let failed = |message: String| StrategyError::Tool {
            tool: name.clone(),
            message,
        };
        let Some(handler) = self.handlers.get(name) else {
            return match &self.fallback {
                Some(fallback) => fallback.execute(tool, call, dialog).await,
                None => Err(failed(
                    "no handler is registered for this tool and there is no fallback".to_owned(),
                )),
            };
        };
        let text = call.function.arguments.trim();
        let arguments = if text.is_empty() {
            Value::Object(serde_json::Map::new())
        } else {
            serde_json::from_str(text)
                .map_err(|e| failed(format!("the arguments are not valid JSON: {e}")))?
        };
        let result = handler(arguments).map_err(failed)?;
        Ok(ToolOutput {
            content: result.to_string(),
            ..ToolOutput::default()
        })
    }
}
