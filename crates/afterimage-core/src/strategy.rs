//! The strategy traits: what the user asks, what the assistant knows, when a run
//! stops, where rows go, how dialogs are judged, where documents come from.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    ConversationRow, Document, Evaluation, Message, Persona, PersonaDocument, RunRecord, Spent,
    Steering, StorageError, StrategyError, ToolCall, ToolSpec, Usage,
};

/// What an [`InstructionGenerator`] is asked for.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct InstructionRequest {
    /// The simulated user's system prompt (instruction generators use it to pick a
    /// voice and language).
    pub correspondent_prompt: String,
    /// Seed for every random choice of this call (document sampling, personas), so a
    /// seeded run repeats itself.
    pub seed: u64,
    /// Whether the caller reports how each instruction's dialog ended
    /// ([`InstructionGenerator::instruction_done`]), so a generator waiting for
    /// documents to free up will be woken.
    pub reports_outcomes: bool,
    /// How to vary this batch away from questions already asked (a question type,
    /// questions to avoid, a higher temperature, a section of a long document).
    /// `None` (the default, and with steering off): ask as usual. Generators that do
    /// not know it may ignore it.
    pub steering: Option<Steering>,
}

impl InstructionRequest {
    /// A request with this correspondent prompt and seed.
    pub fn new(correspondent_prompt: impl Into<String>, seed: u64) -> Self {
        InstructionRequest {
            correspondent_prompt: correspondent_prompt.into(),
            seed,
            reports_outcomes: false,
            steering: None,
        }
    }

    /// Steers this request away from repetition (see [`Steering`]).
    pub fn steering(mut self, steering: Steering) -> Self {
        self.steering = Some(steering);
        self
    }

    /// Promises that every instruction handed out will be reported to
    /// [`InstructionGenerator::instruction_done`] (the engine does).
    pub fn reporting_outcomes(mut self) -> Self {
        self.reports_outcomes = true;
        self
    }
}

/// A batch of first user messages, all drawn from the same context.
#[derive(Debug, Clone, Default)]
pub struct GeneratedInstructions {
    /// The questions; each starts one dialog.
    pub instructions: Vec<String>,
    /// The documents the questions are about.
    pub documents: Vec<Document>,
    /// The merged document text (the row's `instruction_context`).
    pub context: String,
    /// The persona asking, when there is one.
    pub persona: Option<Persona>,
    /// Extra row metadata (merged into `metadata`).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Tokens the generator spent making this batch (for run reports).
    pub usage: Usage,
    /// Model requests the generator made for this batch.
    pub requests: u32,
}

impl GeneratedInstructions {
    /// The generator's requests and tokens for this batch.
    pub fn spent(&self) -> Spent {
        Spent::new(self.requests, self.usage)
    }
}

/// One instruction with what it was drawn from: the unit a dialog starts from.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// The first user message.
    pub text: String,
    /// The batch it came from (shared by its siblings).
    pub source: Arc<GeneratedInstructions>,
}

impl Instruction {
    /// Splits a batch into one instruction per question.
    pub fn split(batch: GeneratedInstructions) -> Vec<Instruction> {
        let texts = batch.instructions.clone();
        let source = Arc::new(batch);
        texts
            .into_iter()
            .map(|text| Instruction {
                text,
                source: Arc::clone(&source),
            })
            .collect()
    }

    /// The ids of the documents it was drawn from.
    pub fn context_ids(&self) -> Vec<String> {
        self.source.documents.iter().map(|d| d.id.clone()).collect()
    }
}

/// Decides what the simulated user asks first.
#[async_trait]
pub trait InstructionGenerator: Send + Sync + std::fmt::Debug {
    /// Produces a batch of first questions (one or more).
    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError>;

    /// How the dialog started from `instruction` ended: stored, or not (failed,
    /// rejected, skipped as a duplicate, cancelled). Generators that count visits per
    /// document use it; the default ignores it.
    fn instruction_done(&self, _instruction: &Instruction, _stored: bool) {}

    /// Dialogs an earlier part of this run stored, by document id (a resumed run
    /// reports them before it starts), so visit targets count them.
    fn record_stored_visits(&self, _visits: &HashMap<String, u64>) {}

    /// The system prompt template the generator asks its model with (placeholders
    /// unfilled), so the caller can tell a generated question that merely echoes it
    /// (`first message` from an example answer shape). `None` (the default) when it
    /// asks no model or keeps its prompt to itself.
    fn prompt_template(&self) -> Option<&str> {
        None
    }

    /// A correspondent (simulated user) system prompt of the generator's own, used when
    /// the caller gave none. `None` lets the engine write one from the respondent prompt.
    async fn correspondent_prompt(
        &self,
        _respondent_prompt: &str,
    ) -> Result<Option<String>, StrategyError> {
        Ok(None)
    }
}

/// The respondent's system prompt for one dialog, and what it was given to know.
#[derive(Debug, Clone, Default)]
pub struct ModifiedPrompt {
    /// The full system prompt.
    pub system_prompt: String,
    /// What the respondent was given (the row's `response_context`).
    pub response_context: Option<String>,
    /// Extra row metadata (for example retrieval hits).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Decides what the assistant knows: rewrites its system prompt for one dialog.
#[async_trait]
pub trait RespondentPromptModifier: Send + Sync + std::fmt::Debug {
    /// Builds the respondent's system prompt for a dialog starting with `instruction`.
    async fn modify(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, StrategyError>;

    /// Rewrites the prompt again before the assistant answers a follow-up `question`
    /// (a retriever looking up each turn's question). `current` is the prompt the
    /// assistant had so far; the answer replaces it whole, so a modifier that gathers
    /// context over turns merges `current`'s `response_context` and metadata itself.
    /// `None`, the default, keeps `current`.
    async fn follow_up(
        &self,
        _respondent_prompt: &str,
        _instruction: &Instruction,
        _current: &ModifiedPrompt,
        _question: &str,
    ) -> Result<Option<ModifiedPrompt>, StrategyError> {
        Ok(None)
    }
}

/// A persona picked for a document, and what picking it cost.
#[derive(Debug, Clone, Default)]
pub struct PersonaPick {
    /// The persona, or `None` when the document has none (the caller falls back to a
    /// generic user).
    pub persona: Option<Persona>,
    /// Tokens spent generating personas for this pick (zero when they existed).
    pub usage: Usage,
    /// Model requests made for this pick.
    pub requests: u32,
}

impl PersonaPick {
    /// The requests and tokens of this pick.
    pub fn spent(&self) -> Spent {
        Spent::new(self.requests, self.usage)
    }
}

/// Supplies personas for documents, so any instruction generator can ask in a
/// persona's voice.
#[async_trait]
pub trait PersonaSource: Send + Sync + std::fmt::Debug {
    /// A persona who would ask about `document`, chosen with `seed`.
    async fn persona_for(
        &self,
        document: &Document,
        seed: u64,
    ) -> Result<PersonaPick, StrategyError>;
}

/// What a tool returned, and what producing it cost.
#[derive(Debug, Clone, Default)]
pub struct ToolOutput {
    /// The result as the `tool` message's content (JSON text, usually).
    pub content: String,
    /// Tokens spent (a simulated tool is a model call).
    pub usage: Usage,
    /// Model requests made.
    pub requests: u32,
}

impl ToolOutput {
    /// The tool's requests and tokens.
    pub fn spent(&self) -> Spent {
        Spent::new(self.requests, self.usage)
    }
}

/// Answers the respondent's tool calls: a real handler, or a model playing the tool.
#[async_trait]
pub trait ToolExecutor: Send + Sync + std::fmt::Debug {
    /// Runs `call` of `tool` (its arguments already checked against the schema);
    /// `dialog` is the conversation so far, for simulators that keep answers
    /// consistent with it.
    async fn execute(
        &self,
        tool: &ToolSpec,
        call: &ToolCall,
        dialog: &[Message],
    ) -> Result<ToolOutput, StrategyError>;
}

/// Where a run stands, as stopping criteria see it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunProgress {
    /// Rows stored so far.
    pub rows_written: u64,
    /// Dialogs that failed so far.
    pub dialogs_failed: u64,
    /// Model requests so far (all roles, judge included).
    pub requests: u64,
    /// Tokens so far (all roles, judge included).
    pub usage: Usage,
    /// Distinct personas among stored rows.
    pub unique_personas: u64,
    /// Dialogs running now (for criteria that project what they will cost).
    pub in_flight: u64,
    /// Time since the run started.
    pub elapsed: Duration,
    /// How many stored rows used each document (by id), for coverage criteria.
    pub context_visits: Arc<HashMap<String, u64>>,
    /// Every request the whole run paid for (earlier sessions of a resumed run, failed
    /// dialogs and unreadable answers included), from its ledger.
    pub ledger: Spent,
    /// What the ledger cost at the run's prices (`None` without prices; models
    /// without a price count nothing).
    pub cost: Option<f64>,
}

/// Decides when a run has made enough.
pub trait StoppingCriterion: Send + Sync + std::fmt::Debug {
    /// Whether the run should start no new dialogs.
    fn should_stop(&self, progress: &RunProgress) -> bool;

    /// A hard cap on rows, when the criterion has one. The engine schedules against the
    /// smallest cap so that it never starts a dialog it would have to throw away.
    fn max_rows(&self) -> Option<u64> {
        None
    }

    /// Whether one more dialog may start now (`progress.in_flight` counts those
    /// running). A budget uses it to hold back dialogs that could push the run past
    /// its limit; when nothing runs and nothing may start, the run ends.
    fn may_start(&self, _progress: &RunProgress) -> bool {
        true
    }

    /// What the criterion waits for, in plain words for run reports ("100 dialogs",
    /// "token budget of 1000000 tokens"). The default is the type's name; implement it
    /// so a report says more.
    fn describe(&self) -> String {
        let name = std::any::type_name::<Self>();
        let name = name.split('<').next().unwrap_or(name);
        name.rsplit("::").next().unwrap_or(name).to_owned()
    }
}

/// Stops after exactly `n` rows.
#[derive(Debug, Clone, Copy)]
pub struct FixedNumber(pub u64);

impl StoppingCriterion for FixedNumber {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        progress.rows_written >= self.0
    }

    fn max_rows(&self) -> Option<u64> {
        Some(self.0)
    }

    fn describe(&self) -> String {
        match self.0 {
            1 => "1 dialog".to_owned(),
            n => format!("{n} dialogs"),
        }
    }
}

/// Where finished rows go.
#[async_trait]
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Stores one finished row durably (a whole row or nothing).
    async fn write(&self, row: &ConversationRow) -> Result<(), StorageError>;

    /// Stores one finished record that is not a dialog row (a preference pair), whole
    /// or not at all. Its `id` and `metadata.context_ids` fields are read back like a
    /// row's by [`existing_ids`](Self::existing_ids) and
    /// [`context_visits`](Self::context_visits), so such a run resumes like a dialog
    /// run. Storages that cannot keep such records refuse (the default).
    async fn write_record(&self, record: &serde_json::Value) -> Result<(), StorageError> {
        let _ = record;
        Err(StorageError::Backend(format!(
            "{} keeps dialog rows only, not preference pairs: write them to a JSONL file",
            self.location()
        )))
    }

    /// Ids of rows already stored, so a run can resume without duplicates.
    async fn existing_ids(&self) -> Result<Vec<String>, StorageError> {
        Ok(Vec::new())
    }

    /// Pushes buffered rows to durable storage.
    async fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }

    /// The record of the run these rows belong to, if one was saved (resume reads it
    /// to reuse the run id, seed and correspondent prompt).
    async fn load_run(&self) -> Result<Option<RunRecord>, StorageError> {
        Ok(None)
    }

    /// Saves the run record (replacing an earlier save of the same run). Storages that
    /// cannot keep one ignore it, and then cannot be resumed.
    async fn save_run(&self, _run: &RunRecord) -> Result<(), StorageError> {
        Ok(())
    }

    /// Saves documents with their generated personas (replacing earlier saves of the
    /// same ids), so a resumed run does not generate them again. Storages that cannot
    /// keep them ignore it.
    async fn save_documents(&self, _documents: &[PersonaDocument]) -> Result<(), StorageError> {
        Ok(())
    }

    /// How many stored rows were about each document (their `metadata.context_ids`),
    /// so a resumed run's coverage goes on from where it stopped.
    async fn context_visits(&self) -> Result<HashMap<String, u64>, StorageError> {
        Ok(HashMap::new())
    }

    /// Documents saved with [`save_documents`](Self::save_documents), latest save of
    /// each id.
    async fn load_documents(&self) -> Result<Vec<PersonaDocument>, StorageError> {
        Ok(Vec::new())
    }

    /// Where the rows go, for messages ("./out.jsonl").
    fn location(&self) -> String;
}

/// Judges a finished dialog.
#[async_trait]
pub trait Evaluator: Send + Sync + std::fmt::Debug {
    /// Grades `row`; the engine decides what to do with the verdict.
    async fn evaluate(&self, row: &ConversationRow) -> Result<Verdict, StrategyError>;

    /// The model that judges, for messages about it (`None`, the default, when there
    /// is none to name).
    fn model_name(&self) -> Option<&str> {
        None
    }
}

/// An evaluator's answer: the stored evaluation and its overall score.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Per-criterion scores and the grade.
    pub evaluation: Evaluation,
    /// The overall score in 0..=1.
    pub score: f64,
    /// Tokens the judge spent (for run reports and budgets).
    pub usage: Usage,
    /// Model requests the judge made.
    pub requests: u32,
}

impl Verdict {
    /// The judge's requests and tokens.
    pub fn spent(&self) -> Spent {
        Spent::new(self.requests, self.usage)
    }
}

/// Where documents come from.
#[async_trait]
pub trait DocumentSource: Send + Sync + std::fmt::Debug {
    /// Every usable document. An empty result is an error, not an empty vector.
    async fn load(&self) -> Result<Vec<Document>, StrategyError>;
}

/// A passage a [`Retriever`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieved {
    /// The document or chunk id.
    pub id: String,
    /// The passage.
    pub text: String,
    /// Relevance; higher is better.
    pub score: f64,
}

/// Finds passages relevant to a query, for RAG.
#[async_trait]
pub trait Retriever: Send + Sync + std::fmt::Debug {
    /// Up to `limit` passages, best first.
    async fn retrieve(&self, query: &str, limit: usize) -> Result<Vec<Retrieved>, StrategyError>;

    /// A short name for row metadata and logs (`"bm25"`, `"embedding"`).
    fn name(&self) -> &str {
        "retriever"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Quiet<T>(T);

    impl<T: Send + Sync + std::fmt::Debug> StoppingCriterion for Quiet<T> {
        fn should_stop(&self, _progress: &RunProgress) -> bool {
            false
        }
    }

    #[test]
    fn criteria_describe_themselves_in_words() {
        assert_eq!(FixedNumber(100).describe(), "100 dialogs");
        assert_eq!(FixedNumber(1).describe(), "1 dialog");
        // Without its own description, a criterion is named by its type alone.
        assert_eq!(Quiet(3u8).describe(), "Quiet");
    }
}
