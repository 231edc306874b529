//! Anthropic's Messages API (`POST /v1/messages`).

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, ProviderError, Role, ToolCall,
    Usage,
};
use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::BuildError;
use crate::builder::{ChatBuilder, ChatClient, sealed};
use crate::http::{Auth, Http, HttpSettings};

/// Anthropic's API.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The `anthropic-version` sent unless [`AnthropicBuilder::version`] says otherwise.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The `max_tokens` sent when a request sets none: the API requires one.
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

/// A client for Anthropic's Messages API.
///
/// A request's JSON Schema becomes a forced tool whose input is the answer, returned
/// as the message's JSON text. Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Anthropic {
    http: Http,
    model: String,
    max_tokens_default: u32,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("model", &self.model)
            .field("http", &self.http)
            .field("max_tokens_default", &self.max_tokens_default)
            .finish()
    }
}

/// Settings for an [`Anthropic`] client: the shared setters of [`ChatBuilder`] plus
/// [`max_tokens_default`](ChatBuilder::max_tokens_default) and
/// [`version`](ChatBuilder::version).
pub type AnthropicBuilder = ChatBuilder<Anthropic>;

/// The settings only Anthropic clients have.
#[derive(Debug, Clone)]
pub struct AnthropicOptions {
    max_tokens_default: u32,
    version: String,
}

impl Anthropic {
    /// A builder for the Anthropic API at [`ANTHROPIC_BASE_URL`].
    pub fn builder() -> AnthropicBuilder {
        ChatBuilder::new(
            ANTHROPIC_BASE_URL,
            AnthropicOptions {
                max_tokens_default: ANTHROPIC_DEFAULT_MAX_TOKENS,
                version: ANTHROPIC_VERSION.to_owned(),
            },
        )
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    fn body<'a>(
        &self,
        request: &'a ChatRequest,
        model: &'a str,
    ) -> Result<Body<'a>, ProviderError> {
        let mut tools: Vec<WireTool<'a>> = request
            .tools
            .iter()
            .map(|tool| WireTool {
                name: &tool.name,
                description: &tool.description,
                input_schema: &tool.parameters,
            })
            .collect();
        let tool_choice = request.response_schema.as_ref().map(|schema| {
            tools.push(WireTool {
                name: &schema.name,
                description: SCHEMA_TOOL_DESCRIPTION,
                input_schema: &schema.schema,
            });
            ToolChoice {
                kind: "tool",
                name: &schema.name,
            }
        });
        Ok(Body {
            model,
            max_tokens: request.max_tokens.unwrap_or(self.max_tokens_default),
            system: request.system_text(),
            messages: messages(&request.messages)?,
            temperature: request.temperature,
            tools,
            tool_choice,
        })
    }

    pub(crate) fn response(
        &self,
        reply: MessagesResponse,
        request: &ChatRequest,
        model: &str,
    ) -> ChatResponse {
        let schema_tool = request.response_schema.as_ref().map(|s| s.name.as_str());
        let mut content = String::new();
        let mut reasoning = String::new();
        let mut tool_calls = Vec::new();
        let mut structured = None;
        for block in reply.content {
            match block {
                Block::Text { text } => content.push_str(&text),
                Block::Thinking { thinking } => reasoning.push_str(&thinking),
                Block::ToolUse { id, name, input } => {
                    if structured.is_none() && Some(name.as_str()) == schema_tool {
                        structured = Some(input.to_string());
                    } else {
                        tool_calls.push(ToolCall::function(id, name, input.to_string()));
                    }
                }
                Block::Other => {}
            }
        }
        let finish_reason = reply.stop_reason.as_deref().map(|reason| {
            match stop_reason(reason) {
                // The forced schema tool is the answer, not a call the caller must run.
                FinishReason::ToolCalls if tool_calls.is_empty() && structured.is_some() => {
                    FinishReason::Stop
                }
                other => other,
            }
        });
        let message = Message {
            // Callers parse the answer's JSON from the content, as with the other
            // providers; text around a forced tool call is commentary.
            content: structured.unwrap_or(content),
            reasoning: (!reasoning.is_empty()).then_some(reasoning),
            tool_calls,
            ..Message::assistant("")
        };
        let usage = reply
            .usage
            .map(|u| {
                // `input_tokens` leaves out the cached part of the prompt.
                let input = u.input_tokens.unwrap_or(0)
                    + u.cache_creation_input_tokens.unwrap_or(0)
                    + u.cache_read_input_tokens.unwrap_or(0);
                Usage::new(input, u.output_tokens.unwrap_or(0))
            })
            .unwrap_or_default();
        ChatResponse {
            message,
            usage,
            finish_reason,
            model: reply
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            rate_limit: None,
        }
    }
}

impl ChatBuilder<Anthropic> {
    /// The `max_tokens` sent when a request sets none (default
    /// [`ANTHROPIC_DEFAULT_MAX_TOKENS`]).
    pub fn max_tokens_default(mut self, max_tokens: u32) -> Self {
        self.options.max_tokens_default = max_tokens;
        self
    }

    /// The `anthropic-version` header (default [`ANTHROPIC_VERSION`]).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.options.version = version.into();
        self
    }
}

impl ChatClient for Anthropic {}

#[allow(private_interfaces)]
impl sealed::Build for Anthropic {
    type Options = AnthropicOptions;

    fn build(
        mut http: HttpSettings,
        model: Option<String>,
        options: AnthropicOptions,
    ) -> Result<Self, BuildError> {
        // Anthropic's endpoint always needs a key; a proxy or mock server may not.
        if http.key.is_none() && http.base_url.trim_end_matches('/') == ANTHROPIC_BASE_URL {
            return Err(BuildError::MissingApiKey {
                provider: "Anthropic",
            });
        }
        let model = model
            .filter(|m| !m.trim().is_empty())
            .ok_or(BuildError::MissingModel)?;
        let version = HeaderValue::from_str(options.version.trim())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| BuildError::InvalidHeader {
                name: "anthropic-version",
                value: options.version.clone(),
            })?;
        http.headers
            .push((HeaderName::from_static("anthropic-version"), version));
        Ok(Anthropic {
            http: http.build(Auth::Header("x-api-key"))?,
            model,
            max_tokens_default: options.max_tokens_default.max(1),
        })
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let body = self.body(&request, model)?;
        let text = self.http.post_json("/messages", &body, model).await?;
        let reply: MessagesResponse = self.http.parse_json(&text, "a Messages API response")?;
        Ok(self.response(reply, &request, model))
    }

    fn model_id(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        match self.http.get("/models", &self.model).await {
            Ok(_) => Ok(()),
            // Proxies and gateways may have no model list; a one-token message still
            // checks the endpoint, the key and the model.
            Err(ProviderError::ModelNotFound { .. }) => {
                let ping = ChatRequest::new(vec![Message::user("ping")]).max_tokens(1);
                self.chat(ping).await.map(|_| ())
            }
            Err(error) => Err(error),
        }
    }
}

/// The description of the forced tool that carries a JSON Schema answer.
const SCHEMA_TOOL_DESCRIPTION: &str =
    "Give your answer by calling this tool; its input is the answer.";

fn stop_reason(reason: &str) -> FinishReason {
    match reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

/// The messages as Anthropic wants them: system messages left out (they go to
/// `system`), tool results as `tool_result` blocks of a user turn, and consecutive
/// turns of one role merged, because the roles must alternate.
fn messages(messages: &[Message]) -> Result<Vec<WireMessage>, ProviderError> {
    let mut out: Vec<WireMessage> = Vec::new();
    for message in messages {
        let (role, blocks) = match message.role {
            Role::System => continue,
            Role::User => ("user", text_block(&message.content)),
            Role::Assistant => {
                let mut blocks = text_block(&message.content);
                for call in &message.tool_calls {
                    blocks.push(WireBlock::ToolUse {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        input: call_input(call)?,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let block = WireBlock::ToolResult {
                    tool_use_id: message.tool_call_id.clone().unwrap_or_default(),
                    content: message.content.clone(),
                };
                ("user", vec![block])
            }
        };
        // The API rejects empty text blocks and empty turns, so a message that says
        // nothing adds nothing.
        if blocks.is_empty() {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.extend(blocks),
            _ => out.push(WireMessage {
                role,
                content: blocks,
            }),
        }
    }
    Ok(out)
}

fn text_block(text: &str) -> Vec<WireBlock> {
    if text.trim().is_empty() {
        Vec::new()
    } else {
        vec![WireBlock::Text {
            text: text.to_owned(),
        }]
    }
}

/// Anthropic wants the input as an object, not as the JSON text OpenAI uses.
fn call_input(call: &ToolCall) -> Result<Value, ProviderError> {
    let text = call.function.arguments.trim();
    if text.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(input @ Value::Object(_)) => Ok(input),
        _ => Err(ProviderError::Other {
            message: format!(
                "tool call `{}` ({}) has arguments that are not a JSON object, which Anthropic requires",
                call.function.name, call.id
            ),
            retryable: false,
        }),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Vec<WireBlock>,
}

impl WireMessage {
    fn extend(&mut self, blocks: Vec<WireBlock>) {
        for block in blocks {
            if matches!(block, WireBlock::ToolResult { .. }) {
                // Tool results must open a user turn, before any text in it.
                let at = self
                    .content
                    .iter()
                    .take_while(|b| matches!(b, WireBlock::ToolResult { .. }))
                    .count();
                self.content.insert(at, block);
            } else {
                self.content.push(block);
            }
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
    },
}

#[derive(Serialize)]
struct WireTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    input_schema: &'a Value,
}

#[derive(Serialize)]
struct ToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
}

#[derive(Deserialize)]
pub(crate) struct MessagesResponse {
    #[serde(default)]
    content: Vec<Block>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block {
    Text {
        #[serde(default)]
        text: String,
    },
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    /// Redacted thinking, server tool results and block types added later.
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_reasons_map_onto_core() {
        assert_eq!(stop_reason("end_turn"), FinishReason::Stop);
        assert_eq!(stop_reason("stop_sequence"), FinishReason::Stop);
        assert_eq!(stop_reason("max_tokens"), FinishReason::Length);
        assert_eq!(stop_reason("tool_use"), FinishReason::ToolCalls);
        assert_eq!(stop_reason("refusal"), FinishReason::ContentFilter);
        assert_eq!(
            stop_reason("pause_turn"),
            FinishReason::Other("pause_turn".into())
        );
    }

    #[test]
    fn tool_results_open_their_user_turn_and_empty_turns_vanish() {
        let wire = messages(&[
            Message::system("ignored here"),
            Message::user("first"),
            Message {
                tool_calls: vec![ToolCall::function("t1", "f", "{}")],
                ..Message::assistant("")
            },
            Message::user("   "),
            Message::user("note"),
            Message::tool("t1", "done"),
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_value(&wire).unwrap(),
            serde_json::json!([
                {"role": "user", "content": [{"type": "text", "text": "first"}]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
                    {"type": "text", "text": "note"}
                ]}
            ])
        );
    }

    #[test]
    fn tool_inputs_must_be_objects() {
        let bad = ToolCall::function("c1", "f", "[1]");
        assert!(call_input(&bad).unwrap_err().to_string().contains("`f`"));
        let empty = ToolCall::function("c1", "f", " ");
        assert_eq!(call_input(&empty).unwrap(), serde_json::json!({}));
    }
}
