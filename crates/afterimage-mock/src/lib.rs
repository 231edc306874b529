//! A mock LLM server for afterimage's end-to-end tests, `cargo xtask demo` and benchmarks.
//!
//! [`MockServer`] is a real HTTP/1.1 server on `127.0.0.1` (hyper) speaking the OpenAI
//! Chat Completions, Gemini `generateContent` and Anthropic Messages wire formats (the
//! last at `POST /v1/messages`, a schema asked for as a forced tool), so the real provider
//! clients run against it unchanged. It also serves embeddings (OpenAI `POST
//! /v1/embeddings`, Gemini `batchEmbedContents` and `embedContent`): deterministic unit
//! vectors hashed from the lowercased words of each text
//! ([`MockConfig::embedding_dimensions`], 64 by default), so texts that share words are
//! similar and retrieval works end to end. [`MockConfig`] adds latency with jitter, injected
//! 500s and 429s (with `Retry-After`), an API key requirement, prose where JSON was
//! asked for, and JSON that breaks the requested schema
//! ([`MockConfig::schema_violation_rate`]); [`MockStats`] counts what was served, including the peak concurrency and
//! every token billed. A prompt cache per server ([`MockConfig::prompt_cache`], on by
//! default from 1024 estimated tokens) reports a prefix shared with an earlier request
//! as cached, in each format's own fields (Anthropic: only prefixes marked with
//! `cache_control`).
//!
//! The three batch protocols are served too, each line answered as its synchronous
//! endpoint would answer it: OpenAI (`POST /v1/files` multipart, `/v1/files/{id}/content`,
//! `/v1/batches` create, get, list with `after`/`limit`, cancel; output and error files of
//! shuffled lines), Anthropic (`/v1/messages/batches` create, get, list, cancel,
//! `/results`; counts only once ended) and Gemini (`:batchGenerateContent` with inline
//! requests or a JSONL file uploaded resumably at `/upload/v1beta/files`,
//! `/v1beta/batches` get, list, `:cancel`, the responses file at
//! `/download/v1beta/files/{id}:download`; `BATCH_STATE_*` or, with
//! [`MockConfig::gemini_job_states`], `JOB_STATE_*`). A batch runs three phases of
//! [`MockConfig::batch_phase`] (200 ms by default); the `batch_*` switches inject
//! retryable, permanent and missing lines, whole batches failing validation (or OpenAI's
//! `token_limit_exceeded`), expiry with half the lines done, a lower request limit per
//! batch, a window after create in which the batch is not found yet, short list pages
//! ([`MockConfig::with_batch_list_page`]) and an account whose credit runs out
//! ([`MockConfig::with_batch_credit`]). Batches and files are visible only to the API
//! key that created them; files can be deleted (OpenAI and Gemini, counted by
//! [`MockServer::files_deleted`]) and answer 404 afterwards. [`MockServer::batch_submissions`] counts submissions per `custom_id`
//! (a request submitted twice shows 2), beside [`MockServer::batches_created`] and
//! [`MockServer::batch_requests_answered`]. For crash tests,
//! [`MockServer::stall_batches`] makes one point of the protocols hang (upload, create
//! before or after the batch exists, poll, results download) until
//! [`MockServer::unstall_batches`], and [`MockServer::batch_stalled`] says how many
//! requests hang there now, so a test can kill its client exactly at that point.
//!
//! Answers need no model but look the part: structured-output requests get JSON that
//! validates against the requested schema (arrays of `questions` are distinct questions
//! built from words of the prompt), a system prompt casting the model as the user gets a
//! follow-up question, one asking to write a system prompt gets a user persona's, anything
//! else an assistant answer quoting the user. An instruction request that afterimage
//! steers (a question type, questions already asked) is answered from a finite pool of
//! questions per document, leaving out those already asked, so steering widens what
//! the mock writes and a small document still runs out. Offered tools are called (arguments valid
//! against their parameters), `stream: true` is answered with SSE. Every reply differs
//! from the previous one, so generated datasets are not all identical.
//!
//! ```
//! use afterimage_mock::{MockConfig, MockServer};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = MockConfig::default().with_latency(Duration::from_millis(5));
//! let server = MockServer::start(config).await?;
//!
//! let reply: serde_json::Value = reqwest::Client::new()
//!     .post(format!("{}/chat/completions", server.openai_base_url()))
//!     .json(&serde_json::json!({
//!         "model": "mock-model",
//!         "messages": [{"role": "user", "content": "How do refunds work?"}],
//!     }))
//!     .send()
//!     .await?
//!     .json()
//!     .await?;
//! let content = reply["choices"][0]["message"]["content"].as_str().unwrap_or_default();
//! assert!(content.contains("How do refunds work?"));
//! assert_eq!(server.stats().chat_completions, 1);
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! For a server in a terminal, `cargo xtask mock --port 8080 --latency-ms 200` calls
//! [`run`].
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::{
    batch::BatchStall,
    config::MockConfig,
    server::{MockServer, run},
    stats::MockStats,
};

mod anthropic;
mod batch;
mod cache;
mod config;
mod embeddings;
mod gemini;
mod openai;
mod reply;
mod schema_fill;
mod server;
mod stats;
mod steered;
mod text;
