//! LLM provider clients for afterimage, each a [`ChatModel`](afterimage_core::ChatModel).
//!
//! - [`OpenAiCompatible`]: OpenAI Chat Completions at any base URL (OpenAI, DeepSeek,
//!   OpenRouter, vLLM, Ollama, llama.cpp, LiteLLM), built with
//!   [`OpenAiCompatibleBuilder`].
//! - [`Gemini`]: Google's `generateContent` REST API, built with [`GeminiBuilder`];
//!   [`GeminiSchemaField`] picks the schema field.
//! - [`Anthropic`]: Anthropic's Messages API, built with [`AnthropicBuilder`]; a JSON
//!   Schema is asked for with a forced tool.
//! - Embeddings ([`Embedder`](afterimage_core::Embedder)): [`OpenAiEmbedder`]
//!   (OpenAI-compatible `/embeddings`) and [`GeminiEmbedder`] (`batchEmbedContents`),
//!   both sending inputs in batches and keeping their order.
//! - [`ChatBuilder`]: the settings every chat client shares, written once; each
//!   client's builder is one of its instances.
//! - [`StructuredOutput`]: how JSON output is asked for. `Auto` (the default) steps
//!   down a mode when a server rejects one (`json_schema`, then `json_object` with a
//!   schema, plain `json_object`, the prompt alone), once for the whole endpoint: a
//!   [`StructuredOutputState`] every client of an endpoint shares, with the
//!   [`ModeChange`]s that led to its mode.
//! - [`Provider`]: the catalogue (names, default URLs, key variables, models,
//!   concurrency).
//! - [`PriceTable`]: the built-in token prices of the common OpenAI, Anthropic,
//!   Gemini and DeepSeek models (`prices.json`, dated, each price with its source),
//!   looked up by provider and model name or dated snapshot.
//! - [`Endpoint`]: the production stack in one call, a [`ModelStack`]: a client per
//!   key (a [`KeyPool`] with several), a [`Throttle`], [`Retry`] on top; stacks built
//!   with the same [`SharedParts`] share an HTTP client and a parked-request gauge.
//!   [`EmbeddingEndpoint`] builds the matching retried embedder.
//! - [`BuildError`]: settings that cannot work (bad base URL, no model).
//! - [`decode_chat_response`] and [`decode_error`]: a provider's response and error
//!   bodies decoded without sending anything (batch result files, tests, fuzzing).
//! - [`Transport`]: a client's connection lent to its provider's batch endpoints;
//!   each client's `request_body` is the JSON it would send for a request.
//!
//! Gemini and Anthropic base URLs may be a server's root: a URL without a version
//! segment gets `/v1beta` or `/v1`. Response bodies are read up to a limit
//! ([`DEFAULT_MAX_RESPONSE_BYTES`] unless set), never further. A 404 from a chat
//! endpoint is told apart by listing the endpoint's models: a wrong model, or
//! nothing at that path.
//!
//! All map the wire formats (system prompts, tools, JSON Schema output, reasoning text)
//! onto the core types, and HTTP failures onto
//! [`ProviderError`](afterimage_core::ProviderError) (rate limits with their
//! retry-after, auth, unknown model, context length, timeouts, unreachable servers).
//! Each instance owns one pooled `reqwest::Client`, or shares the one it is given.
//! API keys never appear in errors or `Debug` output.
//!
//! ```no_run
//! use afterimage_core::{ApiKey, ChatModel, ChatRequest, Message};
//! use afterimage_providers::OpenAiCompatible;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = OpenAiCompatible::openai()
//!     .api_key(ApiKey::new("sk-..."))
//!     .model("gpt-4o-mini")
//!     .build()?;
//! let request = ChatRequest::new(vec![
//!     Message::system("You answer in one sentence."),
//!     Message::user("Why is the sky blue?"),
//! ])
//! .temperature(0.7);
//! let reply = model.chat(request).await?;
//! println!("{} ({} tokens)", reply.message.content, reply.usage.total());
//! # Ok(())
//! # }
//! ```
//!
//! The production stack, as the CLI runs it:
//!
//! ```no_run
//! use afterimage_core::{ChatRequest, Message};
//! use afterimage_providers::{Endpoint, Provider, SharedParts};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let endpoint = Endpoint::new(Provider::Gemini, "gemini-2.5-flash")
//!     .api_key("key-one")
//!     .api_key("key-two")
//!     .max_retries(5);
//! let shared = SharedParts::new(endpoint.http_client(16)?);
//! let stack = endpoint.build_with(&shared)?;
//! let reply = stack.model().chat(ChatRequest::new(vec![Message::user("Hi")])).await?;
//! println!("{} ({} keys)", reply.message.content, stack.key_stats().len());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::{
    anthropic::{
        ANTHROPIC_BASE_URL, ANTHROPIC_DEFAULT_MAX_TOKENS, ANTHROPIC_VERSION, Anthropic,
        AnthropicBuilder, anthropic_min_cacheable_tokens,
    },
    builder::{ChatBuilder, ChatClient},
    decode::{decode_chat_response, decode_error},
    embeddings::{
        GEMINI_EMBEDDING_BATCH, GeminiEmbedder, GeminiWire, HttpEmbedder, OPENAI_EMBEDDING_BATCH,
        OpenAiEmbedder, OpenAiWire, Wire,
    },
    error::BuildError,
    gemini::{GEMINI_BASE_URL, Gemini, GeminiBuilder, GeminiSchemaField},
    http::DEFAULT_MAX_RESPONSE_BYTES,
    keypool::{KeyPool, KeyStats, key_fingerprint},
    openai::{
        DEEPSEEK_BASE_URL, LOCAL_BASE_URL, OPENAI_BASE_URL, OPENROUTER_BASE_URL, OpenAiCompatible,
        OpenAiCompatibleBuilder,
    },
    prices::{PriceEntry, PriceTable, PriceTableError},
    provider::{Provider, UnknownProvider},
    retry::{Retry, RetryEmbedder, RetryPolicy},
    stack::{EmbeddingEndpoint, Endpoint, ModelStack, SharedParts},
    structured::{ModeChange, StructuredOutput, StructuredOutputState, UnknownMode},
    throttle::{Throttle, ThrottleConfig, ThrottleStats},
    transport::{Reply, Transport},
};

mod anthropic;
mod builder;
mod decode;
mod embeddings;
mod error;
mod gemini;
mod http;
mod keypool;
mod openai;
mod prices;
mod provider;
mod retry;
mod stack;
mod structured;
mod throttle;
mod transport;
mod usage;
