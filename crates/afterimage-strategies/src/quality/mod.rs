//! The quality seam: deciding which dialogs are worth keeping.
//!
//! The judge implements [`Evaluator`](afterimage_core::Evaluator), scoring a finished
//! dialog with one structured-JSON model call. The cheap checks reject a broken dialog
//! before any judge tokens are spent on it, and the near-duplicate index drops first
//! questions too close to ones already seen; both are plain functions and types the
//! engine calls, with no core trait. The instruction checks reject a generated first
//! question that is no request (a placeholder, a MIME type, an echo of the prompt)
//! before a dialog is spent on it.

mod checks;
mod dedup;
mod instruction;
mod judge;
mod prompts;

pub use self::checks::{Rejection, check_dialog};
pub use self::dedup::NearDuplicates;
pub use self::instruction::{InstructionContext, InstructionRejection, check_instruction};
pub use self::judge::{Aggregation, LlmJudge};
pub use self::prompts::{DEFAULT_JUDGE_CRITERIA, DEFAULT_JUDGE_PROMPT};
