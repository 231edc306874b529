//! Provider batch APIs for afterimage: the client side of batch mode.
//!
//! - [`BatchBackend`]: one provider's batch API (limits, submit, find, poll, fetch
//!   results, parse them, cancel), implemented by [`OpenAiBatch`] (files and batches,
//!   any OpenAI-compatible base URL), [`AnthropicBatch`] (message batches) and
//!   [`GeminiBatch`] (inline `batchGenerateContent`). Each is built from the
//!   provider's synchronous client, whose key, base URL, timeouts and request bodies
//!   it reuses, and decodes results as that client does (usage, cached tokens).
//! - [`BatchItem`] (an id, a model, a [`ChatRequest`](afterimage_core::ChatRequest)),
//!   [`RemoteBatch`], [`BatchStatus`] with its [`BatchPhase`] and [`BatchCounts`], and
//!   each request's [`ItemOutcome`]: ok, retryable or permanent.
//! - [`split()`] cuts a round into batches within [`BatchLimits`]; [`missing()`] names
//!   the ids an ended batch did not answer; [`line_errors_to_ids()`] maps a rejected
//!   batch's [`LineError`]s onto ids; [`poll_delay()`] spaces polls.
//! - [`Batcher`]: one task that gathers the requests of [`BatchingChatModel`]s (a
//!   `ChatModel`, so dialog code is unchanged; each dialog runs inside
//!   [`in_dialog()`](afterimage_core::in_dialog), which numbers its requests) into
//!   rounds, submits a round when every dialog that
//!   [entered](afterimage_core::LiveDialogs::enter) is parked, after
//!   [`BatchSettings::linger`] without news or at the provider's size limit, retries
//!   retryable and missing requests under a new attempt id, fails permanent ones with a
//!   400-class error, sends small rounds through the synchronous model ([`Tail`]),
//!   shows [`BatchProgress`], checks a [`RoundGate`] before each batch round, and
//!   counts it all in a [`BatchReport`]. One batcher serves several models and
//!   providers ([`BatchEndpoint`]s, [`Batcher::start_with`], [`Batcher::model_on`]):
//!   one barrier and one journal for all, each round cut into batches per endpoint
//!   and model, each batch pinned to its endpoint and key ([`pin_name()`]).
//! - [`Journal`]: the append-only, fsynced record of requests, batches and answers
//!   ([`JournalRecord`]) a [`Batcher`] resumes from after a crash: open batches
//!   re-attached with the key that created them, unconfirmed creates found again,
//!   answered requests replayed without an API call, no id ever submitted twice;
//!   [`Journal::summary`] reads it for `status` and `cancel`.
//! - [`BatchError`]: besides provider errors, the enqueued-token limit
//!   ([`BatchError::TokenLimitExceeded`]) and a batch not yet visible after create
//!   ([`BatchError::NotYetVisible`]), both for the caller to wait out, and the
//!   journal's own ([`BatchError::Journal`], [`BatchError::OtherRun`]).
//!
//! ```no_run
//! use afterimage_batch::{BatchBackend, BatchItem, OpenAiBatch, missing, split};
//! use afterimage_core::{ApiKey, ChatRequest, Message};
//! use afterimage_providers::OpenAiCompatible;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = OpenAiCompatible::openai().api_key(ApiKey::new("sk-...")).model("gpt-4o-mini").build()?;
//! let backend = OpenAiBatch::new(client);
//! let items = vec![BatchItem::new("r1-000001-01u-1", "gpt-4o-mini", ChatRequest::new(vec![Message::user("Hi")]))];
//! for (n, chunk) in split(items, &backend.limits(), |i| backend.line_bytes(i))?.into_iter().enumerate() {
//!     let batch = backend.submit(&format!("r1-round1-{n}"), &chunk).await?;
//!     let status = backend.poll(&batch).await?;
//!     if status.phase.is_ended() {
//!         let raw = backend.fetch_results(&batch).await?;
//!         let results = backend.parse_results(&raw, &chunk)?;
//!         let ids: Vec<String> = chunk.iter().map(|i| i.custom_id.clone()).collect();
//!         println!("{} results, {} missing", results.len(), missing(&ids, &results).len());
//!     }
//! }
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// The largest result file (or Gemini operation with inlined results) a backend reads
/// unless told otherwise (`max_result_bytes`): chat clients stop at 16 MiB, far below
/// what a full batch returns.
pub const DEFAULT_MAX_RESULT_BYTES: usize = 512 * 1024 * 1024;

pub use crate::{
    anthropic::AnthropicBatch,
    backend::BatchBackend,
    backoff::{POLL_INITIAL, POLL_MAX, poll_delay},
    batcher::{BatchEndpoint, BatchProgress, BatchReport, Batcher, OpenBatch, RoundGate, pin_name},
    batching_model::{BatchSettings, BatchingChatModel, RequestRole, Tail},
    gemini::GeminiBatch,
    journal::{
        Journal, JournalBatch, JournalIntent, JournalRecord, JournalSummary, StoredOutcome,
        StoredResponse, request_hash,
    },
    openai::{OPENAI_KEY_METADATA, OpenAiBatch},
    split::{line_errors_to_ids, missing, split},
    types::{
        BatchCounts, BatchError, BatchItem, BatchLimits, BatchPhase, BatchStatus, EndKind, IdRule,
        ItemOutcome, LineError, RemoteBatch,
    },
};

mod anthropic;
mod backend;
mod backoff;
mod batcher;
mod batching_model;
mod gemini;
mod journal;
mod openai;
mod split;
mod types;
mod wire;
