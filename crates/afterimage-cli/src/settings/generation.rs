//! `generation:`: how many dialogs, how long, how many at once, and the stopping
//! rules (compiled by [`afterimage_engine::StopRule`]).

use std::sync::Arc;

use afterimage_core::StoppingCriterion;
use afterimage_engine::{
    GenerateOptions, InFlight, OnExhausted, OptionsError, StopRule, StopRuleError, Turns,
};

use super::{Overrides, SettingsError};
use crate::config::Generation;
use afterimage_providers::Provider;

/// `generation:`, resolved (the concurrency comes from [`concurrency`]).
pub(super) struct Run {
    pub(super) num_dialogs: Option<u64>,
    pub(super) turns: Turns,
    pub(super) seed: Option<u64>,
    pub(super) max_failures: Option<u64>,
    pub(super) stopping: Vec<StopRule>,
    pub(super) on_stop: InFlight,
    pub(super) on_exhausted: OnExhausted,
}

/// Dialogs in flight: `--max-concurrency`, the file's, else the provider's default.
pub(super) fn concurrency(
    generation: &Generation,
    overrides: &Overrides,
    provider: Provider,
) -> usize {
    overrides
        .max_concurrency
        .or(generation.max_concurrency)
        .unwrap_or_else(|| provider.default_concurrency())
}

/// Checks `generation` (with the command line's overrides) the way the engine will:
/// the rules compile, coverage rules have documents, something ends the run.
pub(super) fn resolve(
    generation: &Generation,
    overrides: &Overrides,
    max_concurrency: usize,
    has_documents: bool,
) -> Result<Run, SettingsError> {
    let num_dialogs = overrides.num_dialogs.or(generation.num_dialogs);
    let max_turns = overrides.max_turns.unwrap_or(generation.max_turns);
    let turns = if generation.fixed_turns {
        Turns::Exactly(max_turns)
    } else {
        Turns::UpTo(max_turns)
    };
    // Compiled here with a stand-in document count to check them; for real once the
    // documents are read (coverage needs their number).
    let criteria = criteria(&generation.stopping, Some(1))?;
    if !has_documents
        && let Some(i) = generation
            .stopping
            .iter()
            .position(StopRule::needs_documents)
    {
        return Err(SettingsError::new(
            format!("generation.stopping[{i}]"),
            "a context_coverage rule needs documents (add a `documents` section with context.enabled)",
        ));
    }
    let mut options = GenerateOptions::new()
        .turns(turns)
        .max_concurrency(max_concurrency)
        .stopping_criteria(criteria);
    if let Some(n) = num_dialogs {
        options = options.num_dialogs(n);
    }
    options.validate().map_err(options_error)?;
    Ok(Run {
        num_dialogs,
        turns,
        seed: overrides.seed.or(generation.seed),
        max_failures: generation.max_failures,
        stopping: generation.stopping.clone(),
        on_stop: generation.on_stop,
        on_exhausted: generation.on_exhausted,
    })
}

/// The criteria of `rules` for a run over `documents` documents; rules that count
/// documents are left out while their number is unknown.
pub(crate) fn criteria(
    rules: &[StopRule],
    documents: Option<usize>,
) -> Result<Vec<Arc<dyn StoppingCriterion>>, SettingsError> {
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        // An AND with an unknown part could never be decided; it is dropped whole.
        if documents.is_none() && rule.needs_documents() {
            continue;
        }
        let criterion = rule
            .compile(documents.unwrap_or(0))
            .map_err(|e| rule_error(i, &e))?;
        out.push(criterion);
    }
    Ok(out)
}

fn rule_error(index: usize, error: &StopRuleError) -> SettingsError {
    let inner = error.key();
    let sep = if inner.is_empty() { "" } else { "." };
    SettingsError::new(
        format!("generation.stopping[{index}]{sep}{inner}"),
        error.cause().to_string(),
    )
}

/// The engine's check, in the file's words.
fn options_error(error: OptionsError) -> SettingsError {
    match error {
        OptionsError::ZeroDialogs => SettingsError::new(
            "generation.num_dialogs",
            "is 0: ask for at least one dialog",
        ),
        OptionsError::ZeroTurns => SettingsError::new(
            "generation.max_turns",
            "is 0: a dialog needs at least one turn",
        ),
        OptionsError::ZeroConcurrency => SettingsError::new(
            "generation.max_concurrency",
            "is 0: allow at least one dialog at a time",
        ),
        OptionsError::NoStop => SettingsError::new(
            "generation.num_dialogs",
            "nothing tells the run when to stop: set generation.num_dialogs or add a rule to generation.stopping",
        ),
        other => SettingsError::new("generation", other.to_string()),
    }
}
