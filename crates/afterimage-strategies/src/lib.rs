//! The strategies of an afterimage run: where documents come from, what the simulated
//! user asks first, and what the assistant is given to know.
//!
//! - Document sources ([`DocumentSource`](afterimage_core::DocumentSource)):
//!   [`InMemoryDocumentProvider`], [`DirectoryDocumentProvider`] (`.txt`/`.md` files),
//!   [`FileGlobDocumentProvider`] (files matching a shell glob),
//!   [`JsonlDocumentProvider`] (a JSONL file or a glob of them).
//! - Chunking: [`chunk_documents`] and [`chunk_text`] split long documents on
//!   paragraph, sentence and word boundaries, as [`ChunkOptions`] say.
//! - [`DocumentSampler`]: balanced, optionally weighted, seeded sampling of documents
//!   with per-document visit targets, shared by the instruction generators;
//!   [`merge_contexts`] joins the picks.
//! - Instruction generators ([`InstructionGenerator`](afterimage_core::InstructionGenerator)):
//!   [`ContextualInstructionGenerator`] (questions about sampled documents) and
//!   [`SimpleInstructionGenerator`] (questions from the correspondent prompt alone) and
//!   [`ToolCallingInstructionGenerator`] (requests that need the given tools).
//! - Personas: [`PersonaGenerator`] ([`PersonaSource`](afterimage_core::PersonaSource))
//!   generates personas per document in depth layers (5, 25, 125, ...), only as deep
//!   as the run needs, saves them with the run, and picks one per dialog (pruning deep
//!   layers when supply exceeds demand, reusing with depth weights when it falls
//!   short); [`PersonaInstructionGenerator`] asks questions in a picked persona's voice.
//! - Tools: [`parse_tool_specs`] reads OpenAI-style function specs,
//!   [`validate_arguments`] checks a call against its JSON Schema, and
//!   [`LlmToolSimulator`] or [`ToolHandlers`] answer the calls.
//! - [`WithContextRespondentPromptModifier`]: puts the question's context into the
//!   assistant's system prompt.
//! - Retrieval for RAG ([`Retriever`](afterimage_core::Retriever)): [`Bm25Retriever`]
//!   (an in-memory BM25 index, no server or model) and [`EmbeddingRetriever`] (cosine
//!   similarity over vectors from any [`Embedder`](afterimage_core::Embedder));
//!   [`WithRagRespondentPromptModifier`] puts what they find for the user's questions
//!   into the assistant's system prompt ([`DEFAULT_RAG_RESPONDENT_TEMPLATE`]).
//! - The correspondent: [`write_correspondent_prompt`] writes the simulated user's
//!   system prompt from the assistant's; [`correspondent_follow_up_note`] keeps its
//!   follow-up turns in a human voice.
//! - [`LlmJudge, Aggregation`] ([`Evaluator`](afterimage_core::Evaluator)): scores a finished dialog
//!   on [`DEFAULT_JUDGE_CRITERIA`] with one structured-JSON model call.
//!
//! Strategies reach models only through `Arc<dyn ChatModel>`, so any provider works.
//!
//! ```
//! use std::sync::Arc;
//!
//! use afterimage_core::{
//!     ChatModel, ChatRequest, ChatResponse, Instruction, InstructionGenerator,
//!     InstructionRequest, ProviderError, RespondentPromptModifier,
//! };
//! use afterimage_strategies::{
//!     ContextualInstructionGenerator, InMemoryDocumentProvider,
//!     WithContextRespondentPromptModifier,
//! };
//!
//! /// Stands in for a real provider: always proposes the same two questions.
//! #[derive(Debug)]
//! struct Canned;
//!
//! #[async_trait::async_trait]
//! impl ChatModel for Canned {
//!     async fn chat(&self, _request: ChatRequest) -> Result<ChatResponse, ProviderError> {
//!         Ok(ChatResponse::text(
//!             r#"{"instructions": ["What does error 503 mean?", "How long should I wait?"]}"#,
//!         ))
//!     }
//!     fn model_id(&self) -> &str {
//!         "canned"
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), afterimage_core::StrategyError> {
//! let documents = InMemoryDocumentProvider::new([
//!     "Error 503 means the service is unavailable. Retry after 5 minutes.",
//! ]);
//! let generator = ContextualInstructionGenerator::new(Arc::new(Canned), Arc::new(documents))
//!     .n_instructions(2);
//! let batch = generator
//!     .generate(&InstructionRequest::new("You are a customer whose app shows errors.", 7))
//!     .await?;
//! assert_eq!(batch.instructions, ["What does error 503 mean?", "How long should I wait?"]);
//! assert_eq!(batch.context, "Error 503 means the service is unavailable. Retry after 5 minutes.");
//!
//! let first = Instruction::split(batch).remove(0);
//! let prompt = WithContextRespondentPromptModifier::new()
//!     .modify("You are a Tier 1 support agent.", &first)
//!     .await?;
//! assert!(prompt.system_prompt.starts_with("You are a Tier 1 support agent."));
//! assert!(prompt.system_prompt.contains("Retry after 5 minutes."));
//! assert_eq!(prompt.response_context.as_deref(), Some(first.source.context.as_str()));
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::{
    bm25::Bm25Retriever,
    checks::{Rejection, check_dialog},
    chunking::{ChunkOptions, chunk_documents, chunk_text},
    contextual::ContextualInstructionGenerator,
    correspondent::{correspondent_follow_up_note, write_correspondent_prompt},
    dedup::NearDuplicates,
    documents::{
        DirectoryDocumentProvider, FileGlobDocumentProvider, InMemoryDocumentProvider,
        IntoDocument, JsonlDocumentProvider,
    },
    judge::{Aggregation, LlmJudge},
    modifiers::WithContextRespondentPromptModifier,
    persona_instructions::PersonaInstructionGenerator,
    personas::{
        PersonaFailure, PersonaGenerator, PersonaReport, expected_persona_count, persona_depth_for,
    },
    prompts::{
        CORRESPONDENT_FOLLOW_UP_NOTE, DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT,
        DEFAULT_JUDGE_CRITERIA, DEFAULT_JUDGE_PROMPT, DEFAULT_PERSONA_FROM_PERSONA_PROMPT,
        DEFAULT_PERSONA_FROM_TEXT_PROMPT, DEFAULT_PERSONA_INSTRUCTION_PROMPT,
        DEFAULT_RAG_RESPONDENT_TEMPLATE, DEFAULT_RESPONDENT_CONTEXT_TEMPLATE,
        DEFAULT_SIMPLE_INSTRUCTION_PROMPT, DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT,
        NO_RETRIEVED_CONTEXT,
    },
    rag::WithRagRespondentPromptModifier,
    sampling::{CONTEXT_SEPARATOR, DocumentPool, DocumentSampler, Reservation, merge_contexts},
    schema::{parse_tool_specs, validate_arguments, validate_tool_call},
    simple::SimpleInstructionGenerator,
    tool_calling::ToolCallingInstructionGenerator,
    tools::{LlmToolSimulator, ToolHandlers},
    vector::EmbeddingRetriever,
};

mod bm25;
mod checks;
mod chunking;
mod contextual;
mod correspondent;
mod dedup;
mod documents;
mod instructions;
mod judge;
mod modifiers;
mod persona_instructions;
mod personas;
mod prompts;
mod rag;
mod sampling;
mod schema;
mod simple;
mod tool_calling;
mod tools;
mod vector;
