//! The strategies of an afterimage run: where documents come from, what the simulated
//! user asks first, what the assistant is given to know, and which dialogs are kept.
//!
//! Each folder of the source serves one seam of the engine, named after it:
//!
//! - `documents`: document sources ([`DocumentSource`](afterimage_core::DocumentSource)):
//!   [`InMemoryDocumentProvider`], [`DirectoryDocumentProvider`] (`.txt`/`.md` files),
//!   [`FileGlobDocumentProvider`] (files matching a shell glob),
//!   [`JsonlDocumentProvider`] (a JSONL file or a glob of them). [`chunk_documents`] and
//!   [`chunk_text`] split long documents on paragraph, sentence and word boundaries, as
//!   [`ChunkOptions`] say. [`DocumentSampler`] samples documents balanced, optionally
//!   weighted and seeded, with per-document visit targets, for the instruction
//!   generators; [`merge_contexts`] joins the picks.
//! - `instructions`: instruction generators
//!   ([`InstructionGenerator`](afterimage_core::InstructionGenerator)):
//!   [`ContextualInstructionGenerator`] (questions about sampled documents),
//!   [`SimpleInstructionGenerator`] (questions from the correspondent prompt alone),
//!   [`PersonaInstructionGenerator`] (questions in a picked persona's voice) and
//!   [`ToolCallingInstructionGenerator`] (requests that need the given tools). The
//!   correspondent: [`write_correspondent_prompt`] writes the simulated user's system
//!   prompt from the assistant's; [`correspondent_follow_up_note`] keeps its follow-up
//!   turns in a human voice.
//! - `personas`: [`PersonaGenerator`] ([`PersonaSource`](afterimage_core::PersonaSource))
//!   generates personas per document in depth layers (5, 25, 125, ...), only as deep
//!   as the run needs, saves them with the run, and picks one per dialog (pruning deep
//!   layers when supply exceeds demand, reusing with depth weights when it falls
//!   short).
//! - `modifiers`: respondent prompt modifiers
//!   ([`RespondentPromptModifier`](afterimage_core::RespondentPromptModifier)):
//!   [`WithContextRespondentPromptModifier`] puts the question's context into the
//!   assistant's system prompt; [`WithRagRespondentPromptModifier`] puts what a
//!   retriever finds for the user's questions there ([`DEFAULT_RAG_RESPONDENT_TEMPLATE`]).
//! - `retrieval`: retrievers for RAG ([`Retriever`](afterimage_core::Retriever)):
//!   [`Bm25Retriever`] (an in-memory BM25 index, no server or model) and
//!   [`EmbeddingRetriever`] (cosine similarity over vectors from any
//!   [`Embedder`](afterimage_core::Embedder)).
//! - `quality`: [`LlmJudge`] ([`Evaluator`](afterimage_core::Evaluator)) scores a
//!   finished dialog on [`DEFAULT_JUDGE_CRITERIA`] with one structured-JSON model call,
//!   combined as [`Aggregation`] says; [`check_dialog`] rejects broken dialogs cheaply
//!   and [`NearDuplicates`] drops near-duplicate first questions; [`check_instruction`]
//!   rejects a generated first question that is no request ([`InstructionRejection`])
//!   before a dialog is spent on it, knowing its [`InstructionContext`].
//! - `tools`: [`parse_tool_specs`] reads OpenAI-style function specs,
//!   [`validate_arguments`] checks a call against its JSON Schema, and
//!   [`LlmToolSimulator`] or [`ToolHandlers`]
//!   ([`ToolExecutor`](afterimage_core::ToolExecutor)) answer the calls.
//!
//! Each folder keeps its own default prompts; every default template is public so that
//! a custom one can start from it.
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
    documents::{
        CONTEXT_SEPARATOR, ChunkOptions, DirectoryDocumentProvider, DocumentPool, DocumentSampler,
        FileGlobDocumentProvider, InMemoryDocumentProvider, IntoDocument, JsonlDocumentProvider,
        Reservation, chunk_documents, chunk_text, merge_contexts,
    },
    instructions::{
        CORRESPONDENT_FOLLOW_UP_NOTE, ContextualInstructionGenerator,
        DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT, DEFAULT_PERSONA_INSTRUCTION_PROMPT,
        DEFAULT_QUESTION_TYPES, DEFAULT_SIMPLE_INSTRUCTION_PROMPT,
        DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT, PersonaInstructionGenerator,
        SimpleInstructionGenerator, ToolCallingInstructionGenerator, builtin_question_type,
        correspondent_follow_up_note, default_question_types, write_correspondent_prompt,
    },
    modifiers::{
        DEFAULT_RAG_RESPONDENT_TEMPLATE, DEFAULT_RESPONDENT_CONTEXT_TEMPLATE, NO_RETRIEVED_CONTEXT,
        WithContextRespondentPromptModifier, WithRagRespondentPromptModifier,
    },
    personas::{
        DEFAULT_PERSONA_FROM_PERSONA_PROMPT, DEFAULT_PERSONA_FROM_TEXT_PROMPT, PersonaFailure,
        PersonaGenerator, PersonaReport, expected_persona_count, persona_depth_for,
    },
    quality::{
        Aggregation, DEFAULT_JUDGE_CRITERIA, DEFAULT_JUDGE_PROMPT, InstructionContext,
        InstructionRejection, LlmJudge, NearDuplicates, Rejection, check_dialog, check_instruction,
    },
    retrieval::{Bm25Retriever, EmbeddingRetriever},
    tools::{
        LlmToolSimulator, ToolHandlers, parse_tool_specs, validate_arguments, validate_tool_call,
    },
};

mod documents;
mod instructions;
mod modifiers;
mod personas;
mod quality;
mod retrieval;
mod template;
mod tools;
