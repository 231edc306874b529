//! The modifiers seam: what the assistant is given to know.
//!
//! Both modifiers implement
//! [`RespondentPromptModifier`](afterimage_core::RespondentPromptModifier): one puts the
//! question's own context into the assistant's system prompt, the other (RAG) what a
//! [`Retriever`](afterimage_core::Retriever) finds for the user's questions.

mod context;
mod prompts;
mod rag;

pub use self::context::WithContextRespondentPromptModifier;
pub use self::prompts::{
    DEFAULT_RAG_RESPONDENT_TEMPLATE, DEFAULT_RESPONDENT_CONTEXT_TEMPLATE, NO_RETRIEVED_CONTEXT,
};
pub use self::rag::WithRagRespondentPromptModifier;
