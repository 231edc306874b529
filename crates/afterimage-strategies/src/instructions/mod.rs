//! The instructions seam: what the simulated user says first, and the prompt that
//! plays the simulated user.
//!
//! The generators implement [`InstructionGenerator`](afterimage_core::InstructionGenerator):
//! questions from the correspondent prompt alone, about sampled documents, in a
//! generated persona's voice, or requests that need the given tools. They share one
//! way of asking a model for a list of questions and reading its answer. The
//! correspondent writer turns the assistant's system prompt into the simulated user's.
//! Each built-in generator follows the request's
//! [`Steering`](afterimage_core::Steering) (`steering.rs`): the question type asked for,
//! the questions to avoid, a raised temperature, a section of a long document.

mod ask;
mod contextual;
mod correspondent;
mod persona;
mod prompts;
mod simple;
mod steering;
mod tool_calling;

pub use self::contextual::ContextualInstructionGenerator;
pub use self::correspondent::{correspondent_follow_up_note, write_correspondent_prompt};
pub use self::persona::PersonaInstructionGenerator;
pub use self::prompts::{
    CORRESPONDENT_FOLLOW_UP_NOTE, DEFAULT_CONTEXTUAL_INSTRUCTION_PROMPT,
    DEFAULT_PERSONA_INSTRUCTION_PROMPT, DEFAULT_SIMPLE_INSTRUCTION_PROMPT,
    DEFAULT_TOOL_CALLING_INSTRUCTION_PROMPT,
};
pub use self::simple::SimpleInstructionGenerator;
pub use self::steering::{DEFAULT_QUESTION_TYPES, builtin_question_type, default_question_types};
pub use self::tool_calling::ToolCallingInstructionGenerator;

/// The persona generator reads its answers as the same kind of keyed JSON list.
pub(crate) use self::ask::{KeyedList, ListKey, list_schema};
/// The instruction checks know the prompt pieces every generator sends.
pub(crate) use self::{
    ask::INSTRUCTIONS_DESCRIPTION,
    prompts::{FALLBACK_PERSONA, INSTRUCTIONS_CORRECTION, NO_CORRESPONDENT_PROMPT},
};
