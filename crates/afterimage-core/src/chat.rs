//! The model seam: one request type, one response type, one trait.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{Message, ProviderError, Role, ToolSpec, Usage};

/// A request for one chat completion.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChatRequest {
    /// The conversation so far; system messages carry instructions.
    pub messages: Vec<Message>,
    /// A model name overriding the client's default.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Upper bound on generated tokens.
    pub max_tokens: Option<u32>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// When set, the reply must be JSON matching this schema.
    pub response_schema: Option<JsonSchema>,
    /// Names the stable prefix this request shares with others (the same system prompt
    /// and document, a dialog's growing history), so a provider that routes by such a
    /// key (OpenAI's `prompt_cache_key`) sends them to the same prompt cache. Requests
    /// sharing a stable prefix should share a key; it never changes the answer.
    pub cache_key: Option<String>,
}

impl ChatRequest {
    /// A request with these messages and provider defaults for everything else.
    pub fn new(messages: Vec<Message>) -> Self {
        ChatRequest {
            messages,
            ..Default::default()
        }
    }

    /// Sets the temperature.
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Sets the token limit.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// Asks for JSON matching `schema`.
    pub fn json_schema(mut self, schema: JsonSchema) -> Self {
        self.response_schema = Some(schema);
        self
    }

    /// Offers these tools.
    pub fn tools(mut self, tools: Vec<ToolSpec>) -> Self {
        self.tools = tools;
        self
    }

    /// Marks this request as one of those sharing a stable prefix named `key`, for
    /// providers whose prompt cache is routed by a key.
    ///
    /// ```
    /// use afterimage_core::{ChatRequest, Message};
    ///
    /// let request = ChatRequest::new(vec![Message::user("Hi")]).cache_key("run-7/respondent");
    /// assert_eq!(request.cache_key.as_deref(), Some("run-7/respondent"));
    /// ```
    pub fn cache_key(mut self, key: impl Into<String>) -> Self {
        self.cache_key = Some(key.into());
        self
    }

    /// The system messages joined by blank lines, for providers that take the system
    /// prompt apart from the messages.
    pub fn system_text(&self) -> Option<String> {
        let parts: Vec<&str> = self
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }
}

/// A named JSON Schema for structured output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonSchema {
    /// A short identifier (`[a-zA-Z0-9_-]`, as OpenAI requires).
    pub name: String,
    /// The schema (an object schema).
    pub schema: serde_json::Value,
    /// Ask the provider to enforce it strictly where it can.
    pub strict: bool,
}

impl JsonSchema {
    /// A strict schema named `name`.
    pub fn new(name: impl Into<String>, schema: serde_json::Value) -> Self {
        JsonSchema {
            name: name.into(),
            schema,
            strict: true,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A natural end.
    Stop,
    /// The token limit cut it short.
    Length,
    /// It wants tools called.
    ToolCalls,
    /// A safety filter stopped it.
    ContentFilter,
    /// Anything else the provider said.
    Other(String),
}

/// One completion.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatResponse {
    /// The assistant message (text, reasoning, tool calls).
    pub message: Message,
    /// Tokens it cost.
    pub usage: Usage,
    /// Why it ended, when the provider says.
    pub finish_reason: Option<FinishReason>,
    /// The model that answered.
    pub model: String,
    /// What the server's rate-limit headers said, when it sent them.
    pub rate_limit: Option<RateLimitHint>,
    /// Whether a provider's batch API answered it (billed at the batch rate, see
    /// [`Price::batch_rate`](crate::Price::batch_rate)), not the synchronous API.
    pub batched: bool,
    /// Whether it was replayed from a batch journal rather than answered now: the
    /// process that received it metered it, so a [`Metered`](crate::Metered) model
    /// does not record it again.
    pub replayed: bool,
}

/// A server's account of the rate limit after a request (OpenAI's and many gateways'
/// `x-ratelimit-*` headers), so client-side pacing can slow down before a 429.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitHint {
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// When the request window resets.
    pub reset_requests: Option<std::time::Duration>,
    /// Tokens left in the current window.
    pub remaining_tokens: Option<u64>,
    /// When the token window resets.
    pub reset_tokens: Option<std::time::Duration>,
}

impl ChatResponse {
    /// A plain text answer, for tests and scripted models.
    pub fn text(content: impl Into<String>) -> Self {
        ChatResponse {
            message: Message::assistant(content),
            usage: Usage::default(),
            finish_reason: Some(FinishReason::Stop),
            model: String::new(),
            rate_limit: None,
            batched: false,
            replayed: false,
        }
    }

    /// The same response with this usage.
    pub fn with_usage(mut self, usage: Usage) -> Self {
        self.usage = usage;
        self
    }
}

/// A chat model: anything that turns a [`ChatRequest`] into a [`ChatResponse`].
///
/// Providers implement it over HTTP; middleware (retries, key pools, metering)
/// implements it by wrapping another `Arc<dyn ChatModel>`. A third-party provider crate
/// needs only this crate to plug in everywhere. `Debug` must never print API keys.
#[async_trait]
pub trait ChatModel: Send + Sync + std::fmt::Debug {
    /// Runs one completion.
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError>;

    /// The model name used when a request does not name one (for rows and reports).
    fn model_id(&self) -> &str;

    /// Checks that the endpoint answers and the credentials work, as cheaply as the
    /// provider allows. The default sends a one-token completion.
    async fn probe(&self) -> Result<(), ProviderError> {
        self.chat(ChatRequest::new(vec![Message::user("ping")]).max_tokens(1))
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl<M: ChatModel + ?Sized> ChatModel for Arc<M> {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        (**self).chat(request).await
    }

    fn model_id(&self) -> &str {
        (**self).model_id()
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        (**self).probe().await
    }
}

/// Turns texts into vectors, for retrieval and similarity metrics.
#[async_trait]
pub trait Embedder: Send + Sync + std::fmt::Debug {
    /// One vector per input text, in order.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError>;

    /// [`embed`](Self::embed) with the tokens the provider billed for it, so a run's
    /// ledger can count them. The default reports none: an embedder over an API that
    /// bills by token overrides it.
    async fn embed_billed(
        &self,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, crate::Usage), ProviderError> {
        Ok((self.embed(texts).await?, crate::Usage::default()))
    }
}
