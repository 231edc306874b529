//! OpenAI Chat Completions, and every server that speaks it (DeepSeek, OpenRouter,
//! vLLM, Ollama, llama.cpp, LiteLLM).

use std::borrow::Cow;

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, FinishReason, JsonSchema, Message, ProviderError, Role,
    ToolCall, ToolSpec, Usage,
};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BuildError;
use crate::builder::{ChatBuilder, ChatClient, sealed};
use crate::http::{Auth, Http, HttpSettings};

/// OpenAI's API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// DeepSeek's API (OpenAI-compatible, without `json_schema` output).
pub const DEEPSEEK_BASE_URL: &str = "https://api.deepseek.com";
/// OpenRouter's API.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// A local OpenAI-compatible server on vLLM's default port.
pub const LOCAL_BASE_URL: &str = "http://localhost:8000/v1";

/// How [`OpenAiCompatible`] asks for JSON when a request carries a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StructuredOutput {
    /// `response_format: {type: "json_schema"}`: the server enforces the schema
    /// (OpenAI, OpenRouter, vLLM).
    #[default]
    JsonSchema,
    /// `response_format: {type: "json_object"}` plus the schema in the system prompt,
    /// for servers that promise valid JSON but take no schema (DeepSeek).
    JsonObject,
    /// The schema in the system prompt only, for servers that reject `response_format`.
    PromptOnly,
}

/// A client for the OpenAI Chat Completions API at any base URL.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct OpenAiCompatible {
    http: Http,
    model: String,
    structured_output: StructuredOutput,
    max_completion_tokens: bool,
}

impl std::fmt::Debug for OpenAiCompatible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiCompatible")
            .field("model", &self.model)
            .field("http", &self.http)
            .field("structured_output", &self.structured_output)
            .finish()
    }
}

/// Settings for an [`OpenAiCompatible`] client: the shared setters of [`ChatBuilder`]
/// plus [`structured_output`](ChatBuilder::structured_output) and
/// [`max_completion_tokens`](ChatBuilder::max_completion_tokens).
pub type OpenAiCompatibleBuilder = ChatBuilder<OpenAiCompatible>;

/// The settings only OpenAI-compatible clients have.
#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    structured_output: StructuredOutput,
    max_completion_tokens: bool,
    key_required_by: Option<&'static str>,
}

impl OpenAiCompatible {
    /// A builder for a server at `base_url` (the part before `/chat/completions`).
    pub fn builder(base_url: impl Into<String>) -> OpenAiCompatibleBuilder {
        ChatBuilder::new(
            base_url,
            OpenAiOptions {
                structured_output: StructuredOutput::JsonSchema,
                max_completion_tokens: false,
                key_required_by: None,
            },
        )
    }

    /// A builder for OpenAI ([`OPENAI_BASE_URL`]); needs a key.
    pub fn openai() -> OpenAiCompatibleBuilder {
        Self::builder(OPENAI_BASE_URL).require_key("OpenAI")
    }

    /// A builder for DeepSeek ([`DEEPSEEK_BASE_URL`]), with [`StructuredOutput::JsonObject`]
    /// because DeepSeek has no `json_schema` mode; needs a key.
    pub fn deepseek() -> OpenAiCompatibleBuilder {
        Self::builder(DEEPSEEK_BASE_URL)
            .structured_output(StructuredOutput::JsonObject)
            .require_key("DeepSeek")
    }

    /// A builder for OpenRouter ([`OPENROUTER_BASE_URL`]); needs a key.
    pub fn openrouter() -> OpenAiCompatibleBuilder {
        Self::builder(OPENROUTER_BASE_URL).require_key("OpenRouter")
    }

    /// A builder for a local server ([`LOCAL_BASE_URL`]); no key needed.
    pub fn local() -> OpenAiCompatibleBuilder {
        Self::builder(LOCAL_BASE_URL)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    fn body<'a>(&self, request: &'a ChatRequest, model: &'a str) -> Body<'a> {
        let (max_tokens, max_completion_tokens) = if self.max_completion_tokens {
            (None, request.max_tokens)
        } else {
            (request.max_tokens, None)
        };
        let response_format = match (&request.response_schema, self.structured_output) {
            (None, _) | (Some(_), StructuredOutput::PromptOnly) => None,
            (Some(schema), StructuredOutput::JsonSchema) => Some(ResponseFormat::JsonSchema {
                json_schema: schema,
            }),
            (Some(_), StructuredOutput::JsonObject) => Some(ResponseFormat::JsonObject),
        };
        let mut messages: Vec<WireMessage<'a>> =
            request.messages.iter().map(WireMessage::from).collect();
        if let Some(schema) = &request.response_schema
            && self.structured_output != StructuredOutput::JsonSchema
        {
            put_schema_in_system_prompt(&mut messages, schema);
        }
        Body {
            model,
            messages,
            temperature: request.temperature,
            max_tokens,
            max_completion_tokens,
            tools: request.tools.iter().map(WireTool::from).collect(),
            response_format,
        }
    }

    pub(crate) fn response(
        &self,
        completion: Completion,
        model: &str,
        body: &str,
    ) -> Result<ChatResponse, ProviderError> {
        let Some(choice) = completion.choices.into_iter().next() else {
            return Err(self.http.malformed("the completion has no choices", body));
        };
        let wire = choice.message;
        let reasoning = [wire.reasoning_content, wire.reasoning, wire.thinking]
            .into_iter()
            .flatten()
            .find_map(|v| {
                v.as_str()
                    .filter(|s| !s.trim().is_empty())
                    .map(str::to_owned)
            });
        let tool_calls = wire
            .tool_calls
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, call)| call.into_tool_call(i))
            .collect();
        let message = Message {
            content: wire.content.map(Content::into_text).unwrap_or_default(),
            reasoning,
            tool_calls,
            ..Message::assistant("")
        };
        let usage = completion
            .usage
            .map(|u| {
                Usage::new(
                    u.prompt_tokens.unwrap_or(0),
                    u.completion_tokens.unwrap_or(0),
                )
            })
            .unwrap_or_default();
        Ok(ChatResponse {
            message,
            usage,
            finish_reason: choice.finish_reason.as_deref().map(finish_reason),
            model: completion
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            rate_limit: None,
        })
    }
}

impl ChatBuilder<OpenAiCompatible> {
    /// How to ask for JSON when a request carries a schema.
    pub fn structured_output(mut self, mode: StructuredOutput) -> Self {
        self.options.structured_output = mode;
        self
    }

    /// Sends the token limit as `max_completion_tokens` instead of `max_tokens`
    /// (OpenAI's reasoning models accept only the former; many other servers only the
    /// latter).
    pub fn max_completion_tokens(mut self, yes: bool) -> Self {
        self.options.max_completion_tokens = yes;
        self
    }

    fn require_key(mut self, provider: &'static str) -> Self {
        self.options.key_required_by = Some(provider);
        self
    }
}

impl ChatClient for OpenAiCompatible {}

#[allow(private_interfaces)]
impl sealed::Build for OpenAiCompatible {
    type Options = OpenAiOptions;

    fn build(
        http: HttpSettings,
        model: Option<String>,
        options: OpenAiOptions,
    ) -> Result<Self, BuildError> {
        if let Some(provider) = options.key_required_by
            && http.key.is_none()
        {
            return Err(BuildError::MissingApiKey { provider });
        }
        let model = model
            .filter(|m| !m.trim().is_empty())
            .ok_or(BuildError::MissingModel)?;
        Ok(OpenAiCompatible {
            http: http.build(Auth::Bearer)?,
            model,
            structured_output: options.structured_output,
            max_completion_tokens: options.max_completion_tokens,
        })
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let body = self.body(&request, model);
        let (text, hint) = self
            .http
            .post_json_hinted("/chat/completions", &body, model)
            .await?;
        let completion: Completion = self.http.parse_json(&text, "a chat completion")?;
        let mut response = self.response(completion, model, &text)?;
        response.rate_limit = hint;
        Ok(response)
    }

    fn model_id(&self) -> &str {
        &self.model
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        match self.http.get("/models", &self.model).await {
            Ok(_) => Ok(()),
            // Some compatible servers and gateways have no model list; a one-token
            // completion still checks the endpoint, the key and the model.
            Err(
                ProviderError::ModelNotFound { .. } | ProviderError::BadRequest { status: 405, .. },
            ) => {
                let ping = ChatRequest::new(vec![Message::user("ping")]).max_tokens(1);
                self.chat(ping).await.map(|_| ())
            }
            Err(error) => Err(error),
        }
    }
}

/// The text appended to the system prompt when the server cannot enforce a schema.
fn schema_instruction(schema: &JsonSchema) -> String {
    format!(
        "Reply with a single JSON object and nothing else. It must match this JSON Schema:\n{}",
        schema.schema
    )
}

fn put_schema_in_system_prompt(messages: &mut Vec<WireMessage<'_>>, schema: &JsonSchema) {
    let instruction = schema_instruction(schema);
    match messages
        .iter_mut()
        .find(|m| m.role == Role::System.as_str())
    {
        Some(system) => {
            let prompt = system.content.as_deref().unwrap_or_default();
            system.content = Some(Cow::Owned(format!("{prompt}\n\n{instruction}")));
        }
        None => messages.insert(
            0,
            WireMessage {
                role: Role::System.as_str(),
                content: Some(Cow::Owned(instruction)),
                tool_calls: &[],
                tool_call_id: None,
            },
        ),
    }
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        other => FinishReason::Other(other.to_owned()),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<WireTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<ResponseFormat<'a>>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    /// `null` for an assistant turn that only calls tools, as OpenAI itself sends it.
    content: Option<Cow<'a, str>>,
    /// Core's `ToolCall` already has OpenAI's shape.
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [ToolCall],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

impl<'a> From<&'a Message> for WireMessage<'a> {
    // Reasoning is not sent back: DeepSeek rejects `reasoning_content` in input
    // messages, and no server needs it to continue a dialog.
    fn from(message: &'a Message) -> Self {
        let content = if message.content.is_empty() && !message.tool_calls.is_empty() {
            None
        } else {
            Some(Cow::Borrowed(message.content.as_str()))
        };
        WireMessage {
            role: message.role.as_str(),
            content,
            tool_calls: &message.tool_calls,
            tool_call_id: message.tool_call_id.as_deref(),
        }
    }
}

#[derive(Serialize)]
struct WireTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: WireFunction<'a>,
}

#[derive(Serialize)]
struct WireFunction<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    description: &'a str,
    parameters: &'a Value,
}

impl<'a> From<&'a ToolSpec> for WireTool<'a> {
    fn from(tool: &'a ToolSpec) -> Self {
        WireTool {
            kind: "function",
            function: WireFunction {
                name: &tool.name,
                description: &tool.description,
                parameters: &tool.parameters,
            },
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ResponseFormat<'a> {
    /// Core's `JsonSchema` serialises as OpenAI's `{name, schema, strict}`.
    JsonSchema {
        json_schema: &'a JsonSchema,
    },
    JsonObject,
}

#[derive(Deserialize)]
pub(crate) struct Completion {
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
struct Choice {
    message: ResponseMessage,
    #[serde(default)]
    finish_reason: Option<String>,
}

/// The reasoning fields are `Value`s because servers disagree on their type; only
/// strings count.
#[derive(Deserialize)]
struct ResponseMessage {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    reasoning_content: Option<Value>,
    #[serde(default)]
    reasoning: Option<Value>,
    #[serde(default)]
    thinking: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

/// A string, or (Mistral and some gateways) a list of typed parts.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Value>),
}

impl Content {
    fn into_text(self) -> String {
        match self {
            Content::Text(text) => text,
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunctionCall,
}

#[derive(Deserialize)]
struct WireFunctionCall {
    name: String,
    /// A JSON text per OpenAI; some local servers send the object itself.
    #[serde(default)]
    arguments: Value,
}

impl WireToolCall {
    fn into_tool_call(self, index: usize) -> ToolCall {
        let id = self
            .id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| format!("call_{index}"));
        let arguments = match self.function.arguments {
            Value::String(text) => text,
            Value::Null => "{}".to_owned(),
            other => other.to_string(),
        };
        ToolCall::function(id, self.function.name, arguments)
    }
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}
