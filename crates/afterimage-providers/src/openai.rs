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

use crate::builder::{ChatBuilder, ChatClient, Structured, sealed};
use crate::http::{Auth, Http, HttpSettings, NotFoundHelp};
use crate::structured::{schema_instruction, send_with_fallback};
use crate::usage::{billed, count, lenient};
use crate::{BuildError, Provider, StructuredOutput, StructuredOutputState};

/// OpenAI's API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// DeepSeek's API (OpenAI-compatible, without `json_schema` output).
pub const DEEPSEEK_BASE_URL: &str = "https://api.deepseek.com";
/// OpenRouter's API.
pub const OPENROUTER_BASE_URL: &str = "https://openrouter.ai/api/v1";
/// A local OpenAI-compatible server on vLLM's default port.
pub const LOCAL_BASE_URL: &str = "http://localhost:8000/v1";

/// A client for the OpenAI Chat Completions API at any base URL.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Clone)]
pub struct OpenAiCompatible {
    http: Http,
    model: String,
    structured_output: StructuredOutputState,
    max_completion_tokens: bool,
    send_cache_key: bool,
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
/// plus [`structured_output`](ChatBuilder::structured_output),
/// [`structured_output_state`](ChatBuilder::structured_output_state) and
/// [`max_completion_tokens`](ChatBuilder::max_completion_tokens).
pub type OpenAiCompatibleBuilder = ChatBuilder<OpenAiCompatible>;

/// The settings only OpenAI-compatible clients have.
#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    /// Whose ladder and best mode `Auto` uses.
    provider: Provider,
    /// Whose API it is, for the request metrics (OpenAI's own ladder is `Local`'s).
    label: Provider,
    max_completion_tokens: bool,
    key_required_by: Option<&'static str>,
    /// `None`: only to OpenAI's own API.
    send_cache_key: Option<bool>,
}

impl OpenAiCompatible {
    /// A builder for a server at `base_url` (the part before `/chat/completions`).
    pub fn builder(base_url: impl Into<String>) -> OpenAiCompatibleBuilder {
        ChatBuilder::new(
            base_url,
            OpenAiOptions {
                provider: Provider::Local,
                label: Provider::Local,
                max_completion_tokens: false,
                key_required_by: None,
                send_cache_key: None,
            },
        )
    }

    /// A builder for OpenAI ([`OPENAI_BASE_URL`]); needs a key.
    pub fn openai() -> OpenAiCompatibleBuilder {
        let mut builder = Self::builder(OPENAI_BASE_URL).require_key("OpenAI");
        builder.options.label = Provider::Openai;
        builder
    }

    /// A builder for DeepSeek ([`DEEPSEEK_BASE_URL`]), whose `Auto` mode starts from
    /// [`StructuredOutput::JsonObject`] because DeepSeek has no `json_schema` mode;
    /// needs a key.
    pub fn deepseek() -> OpenAiCompatibleBuilder {
        let mut builder = Self::builder(DEEPSEEK_BASE_URL).require_key("DeepSeek");
        builder.options.provider = Provider::Deepseek;
        builder.options.label = Provider::Deepseek;
        builder
    }

    /// A builder for OpenRouter ([`OPENROUTER_BASE_URL`]); needs a key.
    pub fn openrouter() -> OpenAiCompatibleBuilder {
        let mut builder = Self::builder(OPENROUTER_BASE_URL).require_key("OpenRouter");
        builder.options.label = Provider::Openrouter;
        builder
    }

    /// A builder for a local server ([`LOCAL_BASE_URL`]); no key needed.
    pub fn local() -> OpenAiCompatibleBuilder {
        Self::builder(LOCAL_BASE_URL)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The structured output state this client shares with its endpoint.
    pub fn structured_output(&self) -> &StructuredOutputState {
        &self.structured_output
    }

    /// The JSON body this client would POST to `/chat/completions` for `request`
    /// (its `model`, else the client's), in the structured-output mode the endpoint
    /// uses now: a batch line's `body`.
    pub fn request_body(&self, request: &ChatRequest) -> Result<serde_json::Value, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let body = self.body(request, model, self.structured_output.mode());
        crate::transport::to_value(&body)
    }

    /// This client's connection, for the provider's batch and file endpoints.
    pub fn transport(&self) -> crate::Transport {
        crate::Transport::new(self.http.clone(), &self.model)
    }

    fn body<'a>(
        &self,
        request: &'a ChatRequest,
        model: &'a str,
        mode: StructuredOutput,
    ) -> Body<'a> {
        let (max_tokens, max_completion_tokens) = if self.max_completion_tokens {
            (None, request.max_tokens)
        } else {
            (request.max_tokens, None)
        };
        let schema = request.response_schema.as_ref();
        let response_format = schema.and_then(|schema| match mode {
            StructuredOutput::JsonSchema | StructuredOutput::Auto => {
                Some(ResponseFormat::JsonSchema {
                    json_schema: schema,
                })
            }
            StructuredOutput::JsonObjectSchema => Some(ResponseFormat::JsonObjectSchema {
                schema: &schema.schema,
            }),
            StructuredOutput::JsonObject => Some(ResponseFormat::JsonObject),
            _ => None,
        });
        let mut messages: Vec<WireMessage<'a>> =
            request.messages.iter().map(WireMessage::from).collect();
        if let Some(schema) = schema
            && mode.schema_in_prompt()
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
            prompt_cache_key: self
                .send_cache_key
                .then(|| request.cache_key.as_deref().and_then(prompt_cache_key))
                .flatten(),
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
        let usage = completion.usage.map(WireUsage::billed).unwrap_or_default();
        Ok(ChatResponse {
            message,
            usage,
            finish_reason: choice.finish_reason.as_deref().map(finish_reason),
            model: completion
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| model.to_owned()),
            rate_limit: None,
            batched: false,
            replayed: false,
        })
    }
}

impl ChatBuilder<OpenAiCompatible> {
    /// Sends the token limit as `max_completion_tokens` instead of `max_tokens`
    /// (OpenAI's reasoning models accept only the former; many other servers only the
    /// latter).
    pub fn max_completion_tokens(mut self, yes: bool) -> Self {
        self.options.max_completion_tokens = yes;
        self
    }

    /// Sends a request's [`cache_key`](afterimage_core::ChatRequest::cache_key) as
    /// `prompt_cache_key`, which routes requests sharing a prefix to the same prompt
    /// cache. By default only OpenAI's own API (`api.openai.com`) gets it: many
    /// compatible servers reject fields they do not know.
    pub fn prompt_cache_key(mut self, send: bool) -> Self {
        self.options.send_cache_key = Some(send);
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
        structured: Structured,
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
        let send_cache_key = options
            .send_cache_key
            .unwrap_or_else(|| is_openai_itself(&http.base_url));
        let mut http = http;
        http.provider = options.label.name();
        http.not_found = Some(NotFoundHelp {
            models_path: "/models",
            url_hint: "`https://api.openai.com/v1`, or a local server's `http://localhost:8000/v1` (the part before `/chat/completions`)",
        });
        Ok(OpenAiCompatible {
            http: http.build(Auth::Bearer)?,
            model,
            structured_output: structured.state(options.provider),
            max_completion_tokens: options.max_completion_tokens,
            send_cache_key,
        })
    }
}

#[async_trait]
impl ChatModel for OpenAiCompatible {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        let model = request.model.as_deref().unwrap_or(&self.model);
        let url = self.http.url(CHAT_PATH);
        let has_schema = request.response_schema.is_some();
        let (text, hint) = send_with_fallback(&self.structured_output, has_schema, &url, |mode| {
            let body = self.body(&request, model, mode);
            async move { self.http.post_json_hinted(CHAT_PATH, &body, model).await }
        })
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
        match self.http.get("/models", &self.model, false).await {
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

/// Where chat requests go, after the base URL.
const CHAT_PATH: &str = "/chat/completions";

/// The longest `prompt_cache_key` OpenAI accepts, in characters.
const MAX_CACHE_KEY_CHARS: usize = 64;

/// Whether `base_url` is OpenAI's own API, which knows `prompt_cache_key`.
fn is_openai_itself(base_url: &str) -> bool {
    reqwest::Url::parse(base_url)
        .ok()
        .and_then(|url| url.host_str().map(str::to_ascii_lowercase))
        .is_some_and(|host| host == "api.openai.com" || host.ends_with(".api.openai.com"))
}

/// The key as OpenAI accepts it: none when blank; when too long, its head and a hash
/// of the whole, so distinct keys stay distinct and each stays stable.
fn prompt_cache_key(key: &str) -> Option<Cow<'_, str>> {
    let key = key.trim();
    if key.is_empty() {
        return None;
    }
    if key.chars().count() <= MAX_CACHE_KEY_CHARS {
        return Some(Cow::Borrowed(key));
    }
    // FNV-1a: stable across runs and builds, unlike std's hasher.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let head: String = key.chars().take(MAX_CACHE_KEY_CHARS - 17).collect();
    Some(Cow::Owned(format!("{head}-{hash:016x}")))
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
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_cache_key: Option<Cow<'a, str>>,
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
// The variants are named after the wire's `type` values.
#[allow(clippy::enum_variant_names)]
enum ResponseFormat<'a> {
    /// Core's `JsonSchema` serialises as OpenAI's `{name, schema, strict}`.
    JsonSchema {
        json_schema: &'a JsonSchema,
    },
    /// llama-cpp-python's JSON mode with a schema it turns into a grammar.
    #[serde(rename = "json_object")]
    JsonObjectSchema {
        schema: &'a Value,
    },
    JsonObject,
}

#[derive(Deserialize)]
pub(crate) struct Completion {
    choices: Vec<Choice>,
    #[serde(default, deserialize_with = "lenient")]
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

/// OpenAI's usage object, with DeepSeek's cache fields beside it.
#[derive(Deserialize, Default)]
struct WireUsage {
    /// All prompt tokens, cached ones included (DeepSeek: hits plus misses).
    #[serde(default, deserialize_with = "count")]
    prompt_tokens: u64,
    /// All completion tokens, reasoning included.
    #[serde(default, deserialize_with = "count")]
    completion_tokens: u64,
    #[serde(default, deserialize_with = "lenient")]
    prompt_tokens_details: PromptDetails,
    #[serde(default, deserialize_with = "lenient")]
    completion_tokens_details: CompletionDetails,
    /// DeepSeek's cached part of the prompt.
    #[serde(default, deserialize_with = "count")]
    prompt_cache_hit_tokens: u64,
    /// DeepSeek's uncached part of the prompt.
    #[serde(default, deserialize_with = "count")]
    prompt_cache_miss_tokens: u64,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default, deserialize_with = "count")]
    cached_tokens: u64,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default, deserialize_with = "count")]
    reasoning_tokens: u64,
}

impl WireUsage {
    fn billed(self) -> Usage {
        let deepseek_prompt = self.prompt_cache_hit_tokens + self.prompt_cache_miss_tokens;
        let input = if self.prompt_tokens == 0 {
            deepseek_prompt
        } else {
            self.prompt_tokens
        };
        // Servers report cached tokens in one of the two places, never both.
        let cached = self
            .prompt_tokens_details
            .cached_tokens
            .max(self.prompt_cache_hit_tokens);
        billed(
            input,
            self.completion_tokens,
            cached,
            0,
            self.completion_tokens_details.reasoning_tokens,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_openai_itself_gets_cache_keys_by_default() {
        assert!(is_openai_itself(OPENAI_BASE_URL));
        assert!(is_openai_itself("https://eu.api.openai.com/v1"));
        assert!(!is_openai_itself(DEEPSEEK_BASE_URL));
        assert!(!is_openai_itself("https://api.openai.com.example.net/v1"));
        assert!(!is_openai_itself("not a url"));
    }

    #[test]
    fn cache_keys_fit_openai_limit_and_stay_distinct() {
        assert_eq!(prompt_cache_key("  "), None);
        assert_eq!(
            prompt_cache_key("run-1/respondent").unwrap(),
            "run-1/respondent"
        );
        let long_a = format!("{}a", "x".repeat(80));
        let long_b = format!("{}b", "x".repeat(80));
        let (a, b) = (
            prompt_cache_key(&long_a).unwrap(),
            prompt_cache_key(&long_b).unwrap(),
        );
        assert_eq!(a.chars().count(), MAX_CACHE_KEY_CHARS);
        assert_ne!(a, b);
        assert_eq!(prompt_cache_key(&long_a).unwrap(), a);
    }
}
