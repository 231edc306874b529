//! A model playing the tool ([`LlmToolSimulator`]): each call answered with a JSON
//! result that fits the tool's description, the arguments and the earlier results.

use std::collections::BTreeMap;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, ChatRequest, JsonSchema, Message, Role, StrategyError, ToolCall, ToolExecutor,
    ToolOutput, ToolSpec, parse_lenient, snippet,
};
use async_trait::async_trait;
use serde_json::Value;

use super::prompts::{TOOL_SIMULATOR_CORRECTION, TOOL_SIMULATOR_PROMPT};
use crate::template::fill;

/// A [`ToolExecutor`] that asks a model to play the tool: it answers each call with a
/// JSON result consistent with the tool's description, the call's arguments and the
/// tool results earlier in the dialog (so repeated calls agree).
///
/// The result is stored as compact JSON text. An answer that holds no JSON gets one
/// more chance; then the call fails with [`StrategyError::MalformedOutput`].
pub struct LlmToolSimulator {
    model: Arc<dyn ChatModel>,
    temperature: f32,
}

impl LlmToolSimulator {
    /// A simulator asking `model`, at temperature 0.3.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        LlmToolSimulator {
            model,
            temperature: 0.3,
        }
    }

    /// Sampling temperature (default 0.3: results should be plausible, not creative).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }
}

impl std::fmt::Debug for LlmToolSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlmToolSimulator")
            .field("model", &self.model.model_id())
            .field("temperature", &self.temperature)
            .finish()
    }
}

/// The structured-output schema of a simulated result: any JSON object.
fn result_schema() -> JsonSchema {
    JsonSchema {
        name: "tool_result".to_owned(),
        schema: serde_json::json!({"type": "object"}),
        strict: false,
    }
}

/// The earlier calls of the dialog with their results, one line each.
fn earlier_results(dialog: &[Message]) -> String {
    let mut calls: BTreeMap<&str, &ToolCall> = BTreeMap::new();
    let mut lines = Vec::new();
    for message in dialog {
        for call in &message.tool_calls {
            calls.insert(call.id.as_str(), call);
        }
        if message.role == Role::Tool
            && let Some(call) = message.tool_call_id.as_deref().and_then(|id| calls.get(id))
        {
            lines.push(format!(
                "- {}({}) returned {}",
                call.function.name,
                call.function.arguments.trim(),
                message.content.trim()
            ));
        }
    }
    if lines.is_empty() {
        "(none)".to_owned()
    } else {
        lines.join("\n")
    }
}

/// The last user message of the dialog: what the call is for.
fn last_request(dialog: &[Message]) -> &str {
    dialog
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// A JSON object or array in `answer`, as compact text.
fn read_result(answer: &str) -> Option<String> {
    let value = parse_lenient::<Value>(answer).ok()?;
    (value.is_object() || value.is_array()).then(|| value.to_string())
}

#[async_trait]
impl ToolExecutor for LlmToolSimulator {
    async fn execute(
        &self,
        tool: &ToolSpec,
        call: &ToolCall,
        dialog: &[Message],
    ) -> Result<ToolOutput, StrategyError> {
        let parameters = tool.parameters.to_string();
        let earlier = earlier_results(dialog);
        let system = fill(
            TOOL_SIMULATOR_PROMPT,
            &[
                ("name", &tool.name),
                ("description", tool.description.trim()),
                ("parameters", &parameters),
            ],
        );
        let arguments = call.function.arguments.trim();
        let user = format!(
            "# The user's request\n{}\n\n# Earlier results of tools in this conversation\n{earlier}\n\n# The call\n{}({})",
            last_request(dialog).trim(),
            tool.name,
            if arguments.is_empty() {
                "{}"
            } else {
                arguments
            }
        );
        let mut messages = vec![Message::system(system), Message::user(user)];
        let request = |messages: Vec<Message>| {
            ChatRequest::new(messages)
                .temperature(self.temperature)
                .json_schema(result_schema())
        };
        let response = self.model.chat(request(messages.clone())).await?;
        let mut usage = response.usage;
        if let Some(content) = read_result(&response.message.content) {
            return Ok(ToolOutput {
                content,
                usage,
                requests: 1,
            });
        }
        tracing::debug!(
            tool = %tool.name,
            answer = %snippet(&response.message.content, 200),
            "simulated tool result holds no JSON; asking once more"
        );
        messages.push(Message::assistant(response.message.content));
        messages.push(Message::user(TOOL_SIMULATOR_CORRECTION));
        let response = self.model.chat(request(messages)).await?;
        usage += response.usage;
        match read_result(&response.message.content) {
            Some(content) => Ok(ToolOutput {
                content,
                usage,
                requests: 2,
            }),
            None => Err(StrategyError::MalformedOutput {
                message: format!(
                    "asked twice to play tool `{}`, but the answer holds no JSON object; it starts: {}",
                    tool.name,
                    snippet(response.message.content.trim(), 200)
                ),
            }),
        }
    }
}
