//! The data types and traits every afterimage crate shares.
//!
//! This crate has no HTTP, no files and no runtime. It defines:
//!
//! - the model seam: [`ChatModel`] (one async method), [`ChatRequest`],
//!   [`ChatResponse`], [`ProviderError`], and [`Embedder`];
//! - the data: [`Message`], [`Role`], [`ToolSpec`], [`Document`], [`Persona`],
//!   [`Usage`] and [`Spent`] (requests with their tokens), the [`Price`] of tokens, the
//!   run's [`Ledger`] (every paid request by model and role, kept through [`Metered`]
//!   models), the stored
//!   [`ConversationRow`] and the [`RunRecord`] that makes a run resumable;
//! - live [`Metrics`] for Prometheus: plain atomic [`Counter`]s and [`Gauge`]s that
//!   providers and the engine update and the CLI serves;
//! - the strategy traits: [`InstructionGenerator`], [`RespondentPromptModifier`],
//!   [`StoppingCriterion`], [`Storage`], [`Evaluator`], [`DocumentSource`],
//!   [`Retriever`];
//! - the dialog scope: [`in_dialog()`] runs a dialog so that the models it calls can
//!   name each request ([`next_dialog_step()`]), and [`LiveDialogs`] is told which
//!   dialogs run (batch mode's barrier);
//! - [`MinHash`], the near-duplicate signature the generator's filter and the
//!   report's diversity figures share.
//!
//! A provider crate that depends on this crate alone plugs in everywhere: implement
//! [`ChatModel`] and hand an `Arc<dyn ChatModel>` to the engine.
//!
//! ```
//! use afterimage_core::{ChatModel, ChatRequest, ChatResponse, Message, ProviderError};
//!
//! #[derive(Debug)]
//! struct Echo;
//!
//! #[async_trait::async_trait]
//! impl ChatModel for Echo {
//!     async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
//!         let last = request.messages.last().map(|m| m.content.clone()).unwrap_or_default();
//!         Ok(ChatResponse::text(last))
//!     }
//!     fn model_id(&self) -> &str {
//!         "echo"
//!     }
//! }
//!
//! # futures::executor::block_on(async {
//! let reply = Echo.chat(ChatRequest::new(vec![Message::user("hello")])).await.unwrap();
//! assert_eq!(reply.message.content, "hello");
//! # });
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// The attribute for implementing the async traits here (`#[afterimage_core::async_trait]`),
/// so provider crates need no direct `async-trait` dependency.
pub use async_trait::async_trait;

pub use crate::{
    chat::{
        ChatModel, ChatRequest, ChatResponse, Embedder, FinishReason, JsonSchema, RateLimitHint,
    },
    dialog_scope::{DialogStep, InDialog, LiveDialogs, LiveGuard, in_dialog, next_dialog_step},
    document::{
        Document, Persona, PersonaDocument, PersonaLayer, PersonaLayerInfo, content_id, fnv1a,
    },
    error::{ProviderError, StorageError, StrategyError},
    json::{parse_lenient, snippet},
    ledger::{
        BATCH_LEDGER_SUFFIX, Ledger, LedgerBook, Metered, batch_ledger_name,
        split_batch_ledger_name,
    },
    message::{FunctionCall, Message, Role, ToolCall, ToolSpec},
    metrics::{Counter, Gauge, Metrics},
    minhash::{MINHASH_HASHES, MinHash},
    parked::{Parked, ParkedRequests},
    price::{DEFAULT_BATCH_FACTOR, Price},
    row::{
        AttemptInfo, ConversationRow, CriterionScore, Evaluation, GenerationInfo, Grade,
        RowMetadata,
    },
    run::{RunRecord, RunStatus, split_row_id, unix_ms},
    secret::ApiKey,
    slots::{Completion, Renewal, Slot, SlotCounts, Slots, WorkerReport},
    steering::{AskedQuestions, QuestionType, Steering},
    strategy::{
        DocumentSource, Evaluator, FixedNumber, GeneratedInstructions, Instruction,
        InstructionGenerator, InstructionRequest, ModifiedPrompt, PersonaPick, PersonaSource,
        RespondentPromptModifier, Retrieved, Retriever, RunProgress, StoppingCriterion, Storage,
        ToolExecutor, ToolOutput, Verdict,
    },
    usage::{Spent, Usage},
};

mod chat;
mod dialog_scope;
mod document;
mod error;
mod json;
mod ledger;
mod message;
mod metrics;
mod minhash;
mod parked;
mod price;
mod row;
mod run;
mod secret;
mod slots;
mod steering;
mod strategy;
#[cfg(feature = "testing")]
pub mod testing;
mod usage;
