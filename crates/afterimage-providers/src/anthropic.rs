//! Anthropic's Messages API (`POST /v1/messages`).

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, Message, ProviderError, Role, ToolCall,
    Usage,
};
use async_trait::async_trait;
use reqwest::header::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::builder::{ChatBuilder, ChatClient, Structured, sealed};
use crate::http::{Auth, Http, HttpSettings, NotFoundHelp, with_version};
use crate::structured::{send_with_fallback, with_schema_instruction};
use crate::usage::{billed, count, lenient};
use crate::{BuildError, Provider, StructuredOutput, StructuredOutputState};

/// Anthropic's API.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com/v1";
/// The version segment added to a base URL that has none.
const ANTHROPIC_PATH_VERSION: &str = "v1";
/// The `anthropic-version` sent unless [`AnthropicBuilder::version`] says otherwise.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// The `max_tokens` sent when a request sets none: the API requires one.
pub const ANTHROPIC_DEFAULT_MAX_TOKENS: u32 = 4096;

/// A client for Anthropic's Messages API.
///
/// A request's JSON Schema becomes a forced tool whose input is the answer, returned
/// as the message's JSON text (or, in [`StructuredOutput::PromptOnly`] mode, goes into
/// the system prompt). Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct Anthropic {
    http: Http,
    model: String,
    max_tokens_default: u32,
    structured_output: StructuredOutputState,
    prompt_caching: bool,
}

impl std::fmt::Debug for Anthropic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Anthropic")
            .field("model", &self.model)
            .field("http", &self.http)
            .field("max_tokens_default", &self.max_tokens_default)
            .field("prompt_caching", &self.prompt_caching)
            .finish()
    }
}

/// Settings for an [`Anthropic`] client: the shared setters of [`ChatBuilder`] plus
/// [`max_tokens_default`](ChatBuilder::max_tokens_default),
/// [`version`](ChatBuilder::version) and the structured output mode
/// ([`structured_output`](ChatBuilder::structured_output),
/// [`structured_output_state`](ChatBuilder::structured_output_state)).
pub type AnthropicBuilder = ChatBuilder<Anthropic>;

/// The settings only Anthropic clients have.
#[derive(Debug, Clone)]
pub struct AnthropicOptions {
    max_tokens_default: u32,
    version: String,
    prompt_caching: bool,
}

impl Anthropic {
    /// A builder for the Anthropic API at [`ANTHROPIC_BASE_URL`].
    pub fn builder() -> AnthropicBuilder {
        ChatBuilder::new(
            ANTHROPIC_BASE_URL,
            AnthropicOptions {
                max_tokens_default: ANTHROPIC_DEFAULT_MAX_TOKENS,
                version: ANTHROPIC_VERSION.to_owned(),
                prompt_caching: true,
            },
        )
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The structured output state this client shares with its endpoint.
    pub fn structured_output(&self) -> &StructuredOutputState {
        &self.structured_output
    }

    /// The JSON body this client would POST to `/messages` for `request` (its
    /// `model`, else the client's), in the structured-output mode the endpoint uses
    /// now: a batch request's `params`.
    pub fn request_body(&self, request: &ChatRequest) -> Result<serde_json::Value, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let body = self.body(request, model, self.structured_output.mode())?;
        crate::transport::to_value(&body)
    }

    /// This client's connection, for the provider's batch endpoints.
    pub fn transport(&self) -> crate::Transport {
        crate::Transport::new(self.http.clone(), &self.model)
    }

    fn body<'a>(
        &self,
        request: &'a ChatRequest,
        model: &'a str,
        mode: StructuredOutput,
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
        let mut system = request.system_text();
        let forced = match &request.response_schema {
            Some(schema) if mode.schema_in_prompt() => {
                system = Some(with_schema_instruction(system, schema));
                None
            }
            other => other.as_ref(),
        };
        let tool_choice = forced.map(|schema| {
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
        let mut messages = messages(&request.messages)?;
        let system = if self.prompt_caching {
            let history = request.cache_key.is_some();
            mark_cache_breakpoints(system, &mut messages, &tools, model, history)
        } else {
            system.map(System::Text)
        };
        Ok(Body {
            model,
            max_tokens: request.max_tokens.unwrap_or(self.max_tokens_default),
            system,
            messages,
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
        mode: StructuredOutput,
    ) -> ChatResponse {
        let schema_tool = request
            .response_schema
            .as_ref()
            .filter(|_| !mode.schema_in_prompt())
            .map(|s| s.name.as_str());
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
        let usage = reply.usage.map(WireUsage::billed).unwrap_or_default();
        ChatResponse {
            message,
            usage,
            finish_reason,
            model: reply
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            rate_limit: None,
            batched: false,
            replayed: false,
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

    /// Marks prompt cache breakpoints (default on): the system prompt, which carries
    /// the document or retrieved context, and the last message of the history, each
    /// once the prompt up to it is long enough for Anthropic to cache
    /// ([`anthropic_min_cacheable_tokens`], estimated from its characters). Later
    /// requests that share the prefix read it at a tenth of the input price; writing
    /// it costs a quarter more, so turn it off when no prefix is ever sent twice.
    pub fn prompt_caching(mut self, on: bool) -> Self {
        self.options.prompt_caching = on;
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
        structured: Structured,
        options: AnthropicOptions,
    ) -> Result<Self, BuildError> {
        http.base_url = with_version(&http.base_url, ANTHROPIC_PATH_VERSION);
        http.provider = Provider::Anthropic.name();
        http.not_found = Some(NotFoundHelp {
            models_path: "/models",
            url_hint: "`https://api.anthropic.com/v1`, or a server's root such as `http://host:4000` (`/v1` is added)",
        });
        // Anthropic's endpoint always needs a key; a proxy or mock server may not.
        if http.key.is_none() && http.base_url == ANTHROPIC_BASE_URL {
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
            structured_output: structured.state(Provider::Anthropic),
            prompt_caching: options.prompt_caching,
        })
    }
}

#[async_trait]
impl ChatModel for Anthropic {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let url = self.http.url("/messages");
        let has_schema = request.response_schema.is_some();
        let (text, mode) = send_with_fallback(&self.structured_output, has_schema, &url, |mode| {
            let body = self.body(&request, model, mode);
            async move {
                let text = self.http.post_json("/messages", &body?, model).await?;
                Ok((text, mode))
            }
        })
        .await?;
        let reply: MessagesResponse = self.http.parse_json(&text, "a Messages API response")?;
        Ok(self.response(reply, &request, model, mode))
    }

    fn model_id(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        match self.http.get("/models", &self.model, false).await {
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

/// The shortest prompt prefix Anthropic caches for `model`, in tokens: 2048 for the
/// Haiku models, 1024 for the others. A shorter marked prefix is simply not cached.
pub fn anthropic_min_cacheable_tokens(model: &str) -> u64 {
    if model.to_ascii_lowercase().contains("haiku") {
        2048
    } else {
        1024
    }
}

/// Characters per token in the estimate of a prefix's length: English prose runs at
/// about four, and a prefix estimated a little long is only marked in vain.
const CHARS_PER_TOKEN: u64 = 4;

/// Puts cache breakpoints on the system prompt and on the last block of the last
/// message, each only when the prompt up to it (tools come first) is long enough to
/// be cached. Two of Anthropic's four breakpoints: the system prompt is shared by
/// every turn of a dialog (and by dialogs on one document), the history by the next
/// turn, which finds the previous turn's breakpoint by looking back. The history is
/// marked only when `history` says a later request shares it (the request names a
/// `cache_key`): a one-off prompt, such as a judge's over one row, would pay the
/// write premium and never read it back.
fn mark_cache_breakpoints(
    system: Option<String>,
    messages: &mut [WireMessage],
    tools: &[WireTool<'_>],
    model: &str,
    history: bool,
) -> Option<System> {
    let minimum = anthropic_min_cacheable_tokens(model) * CHARS_PER_TOKEN;
    let mut chars: u64 = tools
        .iter()
        .map(|t| (t.name.len() + t.description.len() + t.input_schema.to_string().len()) as u64)
        .sum();
    let system = system.map(|text| {
        chars += text.len() as u64;
        if chars < minimum {
            return System::Text(text);
        }
        System::Blocks([WireBlock::Text {
            text,
            cache_control: Some(CacheControl::EPHEMERAL),
        }])
    });
    chars += messages.iter().map(WireMessage::chars).sum::<u64>();
    if history
        && chars >= minimum
        && let Some(block) = messages.last_mut().and_then(|m| m.content.last_mut())
    {
        block.mark();
    }
    system
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
                        cache_control: None,
                    });
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let block = WireBlock::ToolResult {
                    tool_use_id: message.tool_call_id.clone().unwrap_or_default(),
                    content: message.content.clone(),
                    cache_control: None,
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
            cache_control: None,
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
    system: Option<System>,
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
    /// The characters of its text, tool inputs and results.
    fn chars(&self) -> u64 {
        let block_chars = |block: &WireBlock| match block {
            WireBlock::Text { text, .. } => text.len(),
            WireBlock::ToolUse { name, input, .. } => name.len() + input.to_string().len(),
            WireBlock::ToolResult { content, .. } => content.len(),
        };
        self.content.iter().map(block_chars).sum::<usize>() as u64
    }

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
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolUse {
        id: String,
        name: String,
        input: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolResult {
        tool_use_id: String,
        content: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

impl WireBlock {
    /// Makes this block a cache breakpoint: the prompt up to and including it is cached.
    fn mark(&mut self) {
        let (WireBlock::Text { cache_control, .. }
        | WireBlock::ToolUse { cache_control, .. }
        | WireBlock::ToolResult { cache_control, .. }) = self;
        *cache_control = Some(CacheControl::EPHEMERAL);
    }
}

/// A prompt cache breakpoint, the only kind Anthropic has (a five-minute cache).
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

impl CacheControl {
    const EPHEMERAL: CacheControl = CacheControl { kind: "ephemeral" };
}

/// The system prompt: plain text, or one text block when it is a cache breakpoint.
#[derive(Serialize)]
#[serde(untagged)]
enum System {
    Text(String),
    Blocks([WireBlock; 1]),
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
    #[serde(default, deserialize_with = "lenient")]
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

/// Anthropic's usage: `input_tokens` is only the prompt after the last cache
/// breakpoint, apart from what was read from or written to the cache.
#[derive(Deserialize, Default)]
struct WireUsage {
    #[serde(default, deserialize_with = "count")]
    input_tokens: u64,
    /// All output, thinking included.
    #[serde(default, deserialize_with = "count")]
    output_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    cache_creation_input_tokens: u64,
    #[serde(default, deserialize_with = "count")]
    cache_read_input_tokens: u64,
}

impl WireUsage {
    /// Normalised to core's shape, where input counts every prompt token.
    fn billed(self) -> Usage {
        let (read, written) = (
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        );
        billed(
            self.input_tokens
                .saturating_add(read)
                .saturating_add(written),
            self.output_tokens,
            read,
            written,
            0,
        )
    }
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
