//! afterimage: generate synthetic multi-turn conversations with LLMs, to train and
//! evaluate assistants.
//!
//! A simulated user (the correspondent) and the assistant being trained (the
//! respondent) talk for up to `max_turns` exchanges. The [`ConversationGenerator`]
//! runs many dialogs at once and streams rows, in the Python afterimage row format, to
//! storage. Instruction generators decide what the user asks; respondent prompt
//! modifiers decide what the assistant knows.
//!
//! This crate re-exports the workspace's crates; depend on a single one
//! (`afterimage-core`, `afterimage-providers`, ...) to keep your tree smaller.
//!
//! ```no_run
//! use std::sync::Arc;
//! use afterimage::prelude::*;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let key = std::env::var("GEMINI_API_KEY")?;
//! let model: Arc<dyn ChatModel> =
//!     Arc::new(Gemini::builder().api_key(key).model("gemini-2.0-flash").build()?);
//! let docs = Arc::new(InMemoryDocumentProvider::new([
//!     "Error 503 means the service is unavailable. Retry after 5 minutes.",
//!     "To reset your password, click 'Forgot Password' on the login screen.",
//! ]));
//! let generator = ConversationGenerator::builder()
//!     .respondent_prompt("You are a Tier 1 Technical Support agent.")
//!     .model(Arc::clone(&model))
//!     .instruction_generator(Arc::new(ContextualInstructionGenerator::new(model, docs)))
//!     .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()))
//!     .storage(Arc::new(JsonlStorage::new("support.jsonl")))
//!     .build()?;
//! let report = generator.generate(GenerateOptions::new().num_dialogs(10).max_turns(3)).await?;
//! println!("{} dialogs written", report.rows_written);
//! # Ok(())
//! # }
//! ```

pub use afterimage_core as core;
pub use afterimage_engine as engine;
pub use afterimage_providers as providers;
pub use afterimage_storage as storage;
pub use afterimage_strategies as strategies;

pub use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, ConversationRow, Document, Message, ProviderError, Role,
};
pub use afterimage_engine::{ConversationGenerator, EngineError, GenerateOptions, RunReport};

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The names most programs need, in one import.
pub mod prelude {
    pub use afterimage_core::{
        ApiKey, ChatModel, ChatRequest, ChatResponse, ConversationRow, Document, DocumentSource,
        Embedder, FixedNumber, InstructionGenerator, Message, PersonaSource, ProviderError,
        RespondentPromptModifier, Retriever, Role, RunProgress, StoppingCriterion, Storage,
        ToolExecutor, ToolSpec,
    };
    pub use afterimage_engine::{
        AllOf, AnyOf, ContextCoverage, ConversationGenerator, EngineError, GenerateOptions,
        InFlight, PersonaUsage, RunReport, TokenBudget, Turns,
    };
    // Schema-typed rows and turn hooks.
    pub use afterimage_core::JsonSchema;
    pub use afterimage_engine::{HookError, StructuredGenerator, TurnHooks, TurnView};
    pub use afterimage_providers::{
        Anthropic, EmbeddingEndpoint, Endpoint, Gemini, GeminiEmbedder, ModelStack,
        OpenAiCompatible, OpenAiEmbedder, Provider, SharedParts,
    };
    pub use afterimage_storage::JsonlStorage;
    pub use afterimage_strategies::{
        Bm25Retriever, ChunkOptions, ContextualInstructionGenerator, DirectoryDocumentProvider,
        EmbeddingRetriever, FileGlobDocumentProvider, InMemoryDocumentProvider,
        JsonlDocumentProvider, LlmToolSimulator, PersonaGenerator, PersonaInstructionGenerator,
        SimpleInstructionGenerator, ToolCallingInstructionGenerator, ToolHandlers,
        WithContextRespondentPromptModifier, WithRagRespondentPromptModifier, chunk_documents,
        parse_tool_specs,
    };
}
