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
//! First questions are steered away from repetition ([`SteeringConfig`]): each batch is
//! asked for a question type, and once questions repeat the generator is shown what
//! was asked already about its documents, at a higher temperature. When most recent
//! questions are near duplicates anyway, the questions have run out and the run ends
//! cleanly, or fails with [`OnExhausted::Fail`].
//!
//! The run writes exactly the requested number of rows at any concurrency: it never
//! starts a dialog beyond the count, replaces failed dialogs within a failure budget,
//! and stops at once on failures that would repeat (bad key, unknown model, dead
//! server). With [`GenerateOptions::oversample`] spare dialogs run beside the count
//! (a failed one is replaced by a spare already under way); a row is reserved before
//! it is stored, so the count stays exact and the spares left are cancelled.
//!
//! Batch mode hangs on two seams: every dialog runs inside
//! [`in_dialog`](afterimage_core::in_dialog) under its index, and
//! [`GenerateOptions::live_dialogs`] tells a batcher which dialogs are running (a
//! wave enters together; a finished dialog leaves once its replacements entered).
//! [`predicted_rounds`] says how many rounds a dialog takes.
//!
//! [`StructuredGenerator`] makes schema-typed rows instead of dialogs (one output per
//! instruction, checked against a JSON Schema and asked again once with the problems;
//! [`check_output_schema`] checks the schema itself) as jobs of the same
//! scheduler: the same exact counts, failure budget, stop handle, ledger and resume.
//! [`TurnHooks`] run the caller's code before and after every completion
//! of a dialog ([`ConversationGeneratorBuilder::turn_hooks`]).
//!
//! [`PreferenceGenerator`] makes preference pairs (DPO data) with the same parts and
//! scheduler: per question, several candidate answers that differ by a
//! [`PairStrategy`], scored by the judge; the best and the worst are written as one row
//! in a [`PairFormat`] when their scores are far enough apart.
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
    generator::{ConversationGenerator, ConversationGeneratorBuilder, new_run_id},
    hooks::{HookError, TurnHooks, TurnRole, TurnView},
    instructions::{OnExhausted, SteeringConfig},
    options::{GenerateOptions, InFlight, Price, ProgressFn, Turns},
    policy::UnjudgedPolicy,
    preference::{
        Candidate, GapStats, LabelWins, PairFormat, PairStrategy, PreferenceAnalytics,
        PreferenceGenerator, PreferenceGeneratorBuilder, PreferencePair, PreferenceReport,
    },
    pricing::{LedgerSummary, ModelSpend, PriceFn, SpendFigures},
    report::RunReport,
    rounds::{RoundEstimate, predicted_rounds},
    schema::{SchemaProblem, check_output_schema},
    stop::StopHandle,
    stop_rules::{StopRule, StopRuleError},
    stopping::{AllOf, AnyOf, ContextCoverage, CostBudget, ErrorRate, PersonaUsage, TokenBudget},
    structured::{StructuredGenerator, StructuredGeneratorBuilder},
};

mod checks;

mod dialog;
mod error;
mod fleet;
mod generator;
mod hooks;
mod instructions;
mod metrics;
mod options;
mod policy;
mod preference;
mod pricing;
mod report;
mod rounds;
mod rows;
mod run;
mod schema;
mod stop;
mod stop_rules;
mod stopping;
mod structured;
