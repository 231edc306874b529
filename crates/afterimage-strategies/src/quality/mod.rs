//! The quality seam: deciding which dialogs are worth keeping.
//!
//! The judge implements [`Evaluator`](afterimage_core::Evaluator), scoring a finished
//! dialog with one structured-JSON model call. The cheap checks reject a broken dialog
//! before any judge tokens are spent on it, and the near-duplicate index drops first
//! questions too close to ones already seen; both are plain functions and types the
//! engine calls, with no core trait.

mod checks;
mod dedup;
mod judge;
mod prompts;

pub use self::checks::{Rejection, check_dialog};
pub use self::dedup::NearDuplicates;
pub use self::judge::{Aggregation, LlmJudge};
pub use self::prompts::{DEFAULT_JUDGE_CRITERIA, DEFAULT_JUDGE_PROMPT};
