//! The afterimage engine: runs many dialogs concurrently and streams them to storage.
//!
//! [`ConversationGenerator`] holds what a dialog needs (the respondent prompt, the
//! models, the instruction generator, the prompt modifier, storage, the judge);
//! [`generate`](ConversationGenerator::generate) takes [`GenerateOptions`] (count,
//! turns, concurrency, stopping criteria) and returns a [`RunReport`]. One dialog
//! runs top to bottom in `dialog::run_dialog`: pick an instruction, modify the
//! respondent prompt, alternate turns, judge, store.
//!
//! Before a dialog is spent on a generated first question, the question passes cheap
//! instruction checks (no placeholder, MIME type, URL, echo of the prompt or copy of
//! the document's title); discarded ones are counted by cause in the report. A judge
//! whose first answers cannot be read stops the run ([`UnjudgedPolicy`]).
//!
//! The run writes exactly the requested number of rows at any concurrency: it never
//! starts a dialog beyond the count, replaces failed dialogs within a failure budget,
//! and stops at once on failures that would repeat (bad key, unknown model, dead
//! server).
//!
//! Runs are resumable: the run record (run id, seed, correspondent prompt) is saved in
//! storage before the first dialog, and [`GenerateOptions::resume`] finishes a killed
//! run by making only the dialogs whose ids (`<run_id>-<index>`) are missing, each with
//! the seed it would have had. Without it, an output that already holds rows is refused.
//!
//! ```no_run
//! use std::sync::Arc;
//! use afterimage_engine::{ConversationGenerator, GenerateOptions};
//! use afterimage_storage::JsonlStorage;
//! use afterimage_strategies::{
//!     ContextualInstructionGenerator, InMemoryDocumentProvider, WithContextRespondentPromptModifier,
//! };
//!
//! # async fn demo(model: Arc<dyn afterimage_core::ChatModel>) -> Result<(), Box<dyn std::error::Error>> {
//! let docs = Arc::new(InMemoryDocumentProvider::new([
//!     "Error 503 means the service is unavailable. Retry after 5 minutes.",
//! ]));
//! let generator = ConversationGenerator::builder()
//!     .respondent_prompt("You are a Tier 1 technical support agent.")
//!     .model(model.clone())
//!     .instruction_generator(Arc::new(ContextualInstructionGenerator::new(model, docs)))
//!     .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()))
//!     .storage(Arc::new(JsonlStorage::new("support.jsonl")))
//!     .build()?;
//! let report = generator
//!     .generate(GenerateOptions::new().num_dialogs(10).max_turns(3))
//!     .await?;
//! println!("{} rows in {:.1}s", report.rows_written, report.elapsed_secs);
//! # Ok(())
//! # }
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub use crate::{
    checks::OptionsError,
    error::{DialogError, EngineError},
    fleet::{FleetCounters, ShareFn, SharedRun},
    generator::{ConversationGenerator, ConversationGeneratorBuilder},
    options::{GenerateOptions, InFlight, Price, ProgressFn, StopHandle, Turns},
    policy::UnjudgedPolicy,
    pricing::{LedgerSummary, ModelSpend, PriceFn, SpendFigures},
    report::RunReport,
    stop_rules::{StopRule, StopRuleError},
    stopping::{AllOf, AnyOf, ContextCoverage, CostBudget, ErrorRate, PersonaUsage, TokenBudget},
};

mod checks;

mod dialog;
mod error;
mod fleet;
mod generator;
mod instructions;
mod options;
mod policy;
mod pricing;
mod report;
mod run;
mod stop_rules;
mod stopping;
