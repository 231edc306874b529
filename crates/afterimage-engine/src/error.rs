//! What can stop a run.

use afterimage_core::{ProviderError, StorageError, StrategyError};

use crate::RunReport;

/// Why a run could not start or did not finish.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The generator or the options are inconsistent.
    #[error("invalid settings: {0}")]
    Config(String),
    /// Preparing the run (writing the correspondent prompt, resuming) failed.
    #[error("could not prepare the run: {0}")]
    Setup(String),
    /// The run stopped early. Rows written before it stopped are kept.
    #[error("{cause} ({} rows written to {} are kept)", .report.rows_written, .report.output)]
    RunFailed {
        /// What stopped it.
        cause: String,
        /// What it did before stopping.
        report: Box<RunReport>,
    },
}

impl EngineError {
    /// The report of a run that stopped early.
    pub fn report(&self) -> Option<&RunReport> {
        match self {
            EngineError::RunFailed { report, .. } => Some(report),
            _ => None,
        }
    }

    /// Whether the caller's settings are at fault (as opposed to the run).
    pub fn is_config(&self) -> bool {
        matches!(self, EngineError::Config(_))
    }
}

/// Why one dialog failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    /// The instruction generator failed.
    #[error("instruction generator: {0}")]
    Instruction(StrategyError),
    /// The respondent prompt modifier failed.
    #[error("respondent prompt modifier: {0}")]
    Modifier(StrategyError),
    /// The respondent model call failed.
    #[error("respondent: {0}")]
    Respondent(ProviderError),
    /// The correspondent model call failed.
    #[error("correspondent: {0}")]
    Correspondent(ProviderError),
    /// A model answered with nothing.
    #[error("{0}: the model returned an empty message")]
    EmptyReply(&'static str),
    /// Answering a tool call failed (a handler's error, a simulator's unusable answer).
    #[error("tool: {0}")]
    Tool(StrategyError),
    /// The judge failed.
    #[error("judge: {0}")]
    Judge(StrategyError),
    /// Storing the row failed.
    #[error("storage: {0}")]
    Storage(StorageError),
    /// No attempt was good enough and the policy is to drop such dialogs.
    #[error("no attempt of {attempts} passed the quality checks; the last: {last}")]
    Rejected {
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        last: String,
    },
    /// The dialog drew this many near duplicates of earlier questions in a row and gave
    /// up; it is replaced, and does not count against the failure budget (running out
    /// of questions is [`QuestionsExhausted`](Self::QuestionsExhausted)).
    #[error(
        "instruction generator: {0} questions in a row were near duplicates of earlier ones (the documents may be too few for this many dialogs)"
    )]
    Duplicates(u32),
    /// The run's questions ran out: most recent draws were near duplicates of earlier
    /// questions. It ends the run (cleanly, unless `on_exhausted` says to fail).
    #[error("{}", exhausted_message(*.duplicates, *.draws, *.steered))]
    QuestionsExhausted {
        /// Near duplicates among the recent draws.
        duplicates: u32,
        /// Recent draws counted.
        draws: u32,
        /// Whether steering was on (question types, avoid lists, temperature).
        steered: bool,
    },
    /// The instruction generator kept producing questions that are no request.
    #[error("{}", junk_message(*.rejected, .last, .why, *.none_passed))]
    JunkInstructions {
        /// Questions discarded in a row.
        rejected: u32,
        /// The start of the last one.
        last: String,
        /// What was wrong with it, with its cause.
        why: String,
        /// Whether no question of the run ever passed (then the run stops).
        none_passed: bool,
    },
    /// The candidates of a preference pair scored too close together to teach a
    /// preference: the pair is discarded and another made in its place.
    #[error(
        "the best and worst candidates scored {gap:.3} apart, less than min_score_gap {min_gap}"
    )]
    ScoreGap {
        /// Best score minus worst score.
        gap: f64,
        /// The gap a pair needs.
        min_gap: f64,
    },
    /// The judge's first answers could not be read (policy
    /// [`UnjudgedPolicy::Stop`](crate::UnjudgedPolicy::Stop)).
    #[error(
        "the judge (model {model}) never answered in readable JSON: {unreadable} of its first {answers} answers were unreadable, the last began `{last}`; use a stronger judge model (quality.evaluator_model_name), or keep unjudged rows (quality.on_unjudged: keep)"
    )]
    JudgeUnreadable {
        /// The judge's model.
        model: String,
        /// Unreadable answers among the first ones.
        unreadable: u32,
        /// Answers counted.
        answers: u32,
        /// The start of the last unreadable answer.
        last: String,
    },
    /// A [`TurnHooks`](crate::TurnHooks) hook failed the attempt.
    #[error("turn hook {stage}: {error}")]
    Hook {
        /// The hook (`before_respondent`, ...).
        stage: &'static str,
        /// The hook's error.
        error: crate::HookError,
    },
    /// The run's count was reached before this dialog could store its row: it was a
    /// spare ([`GenerateOptions::oversample`](crate::GenerateOptions::oversample)), and
    /// is discarded and counted as one, never as a failure.
    #[error(
        "the rows requested were all written before this dialog finished: it is a spare and was discarded"
    )]
    Spare,
    /// A structured output did not match its schema, also when asked again with the
    /// problems.
    #[error("the output did not match the schema in {attempts} tries; the last answer: {problems}")]
    InvalidOutput {
        /// Requests made for it.
        attempts: u32,
        /// What was wrong with the last answer.
        problems: String,
    },
}

/// The message of [`DialogError::QuestionsExhausted`]: what ran out, and what gives
/// more.
fn exhausted_message(duplicates: u32, draws: u32, steered: bool) -> String {
    let (after, more) = if steered {
        (
            ", even with steering (question types, questions to avoid, a higher temperature)",
            "add documents, turn personas on (personas.enabled: true) or add question types (instructions.question_types)",
        )
    } else {
        (
            "",
            "turn steering on (instructions.steering: true), add documents, turn personas on (personas.enabled: true)",
        )
    };
    format!(
        "questions ran out: {duplicates} of the last {draws} questions drawn were near duplicates of earlier ones{after}; for more rows, {more}"
    )
}

/// The message of [`DialogError::JunkInstructions`]: what was discarded, and what to
/// change.
fn junk_message(rejected: u32, last: &str, why: &str, none_passed: bool) -> String {
    let fix = if none_passed {
        "no question of the run has passed the instruction checks: use a stronger model or a clearer prompt for the instructions, or turn the checks off (quality.instruction_checks: false)"
    } else {
        "the instruction model rarely writes a usable question"
    };
    format!(
        "instruction generator: {rejected} questions in a row were no request, the last `{last}`: {why}; {fix}"
    )
}

impl DialogError {
    /// A short cause for reports: the stage and the kind of failure.
    pub fn cause(&self) -> String {
        match self {
            DialogError::Instruction(e) => format!("instruction: {}", e.kind()),
            DialogError::Modifier(e) => format!("modifier: {}", e.kind()),
            DialogError::Respondent(e) => format!("respondent: {}", e.kind()),
            DialogError::Correspondent(e) => format!("correspondent: {}", e.kind()),
            DialogError::EmptyReply(role) => format!("{role}: empty_reply"),
            DialogError::Tool(e) => format!("tool: {}", e.kind()),
            DialogError::Judge(e) => format!("judge: {}", e.kind()),
            DialogError::Storage(_) => "storage".to_owned(),
            DialogError::Rejected { .. } => "quality: rejected".to_owned(),
            DialogError::Duplicates(_) => "instruction: duplicates".to_owned(),
            DialogError::QuestionsExhausted { .. } => "instruction: exhausted".to_owned(),
            DialogError::JunkInstructions { .. } => "instruction: no_request".to_owned(),
            DialogError::JudgeUnreadable { .. } => "judge: unreadable".to_owned(),
            DialogError::Hook { stage, .. } => format!("hook: {stage}"),
            DialogError::InvalidOutput { .. } => "output: invalid".to_owned(),
            DialogError::ScoreGap { .. } => "pair: score_gap_too_small".to_owned(),
            DialogError::Spare => "spare".to_owned(),
        }
    }

    /// The provider error behind this failure, if any.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            DialogError::Respondent(e) | DialogError::Correspondent(e) => Some(e),
            DialogError::Instruction(e)
            | DialogError::Modifier(e)
            | DialogError::Tool(e)
            | DialogError::Judge(e) => e.as_provider(),
            _ => None,
        }
    }

    /// Whether the dialog ended because the instruction generator ran out (documents
    /// at their visit target, or questions that only repeat): the run ends, and it is
    /// no failure.
    pub fn is_exhausted(&self) -> bool {
        match self {
            DialogError::Instruction(e) => e.is_exhausted(),
            DialogError::QuestionsExhausted { .. } => true,
            _ => false,
        }
    }

    /// Whether the dialog was only skipped (it drew near duplicates until it gave up):
    /// it is replaced without counting against the failure budget.
    pub fn is_skipped(&self) -> bool {
        matches!(self, DialogError::Duplicates(_))
    }

    /// Whether every later dialog would fail the same way (bad key, unknown model,
    /// dead server, storage broken, no documents, a generator that never wrote a
    /// usable question, a judge that never answers readably), so the run stops at once.
    pub fn is_fatal(&self) -> bool {
        match self {
            DialogError::Storage(_) | DialogError::JudgeUnreadable { .. } => true,
            DialogError::JunkInstructions { none_passed, .. } => *none_passed,
            DialogError::Instruction(StrategyError::NoDocuments { .. })
            | DialogError::Instruction(StrategyError::Io { .. })
            | DialogError::Instruction(StrategyError::Config(_)) => true,
            _ => self.provider_error().is_some_and(ProviderError::is_fatal),
        }
    }
}
