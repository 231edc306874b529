//! One dialog, from instruction to stored row, as named steps: draw an instruction,
//! write the respondent's prompt, make the best attempt (converse, pass the quality
//! gate, regenerate with feedback), store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use afterimage_core::{
    AttemptInfo, ChatModel, ChatRequest, ChatResponse, ConversationRow, Evaluator, GenerationInfo,
    Instruction, Message, ModifiedPrompt, RespondentPromptModifier, RowMetadata, Spent, Storage,
    ToolExecutor, ToolSpec,
};
use afterimage_strategies::{
    InstructionContext, InstructionRejection, NearDuplicates, check_instruction,
};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::instructions::InstructionPool;
use crate::policy::Sampling;
use crate::{DialogError, Turns, UnjudgedPolicy};

mod converse;
mod gate;
mod pair;
mod structured;
mod watch;

use gate::Attempts;
pub(crate) use pair::run_pair;
pub(crate) use structured::run_structured;
pub(crate) use watch::RunWatch;

/// Everything a dialog needs, shared by all dialogs of a run.
#[derive(Debug)]
pub(crate) struct RunContext {
    pub(crate) run_id: String,
    pub(crate) seed: u64,
    pub(crate) turns: Turns,
    pub(crate) respondent_prompt: String,
    pub(crate) respondent: Arc<dyn ChatModel>,
    pub(crate) correspondent: Arc<dyn ChatModel>,
    /// The correspondent's full system prompt (its persona plus the framing that
    /// keeps it a human user).
    pub(crate) correspondent_system: String,
    /// The correspondent prompt alone, as instruction generators see it.
    pub(crate) correspondent_prompt: String,
    /// The respondent's temperature and token limit.
    pub(crate) respondent_sampling: Sampling,
    /// The correspondent's temperature and token limit.
    pub(crate) correspondent_sampling: Sampling,
    pub(crate) instructions: InstructionPool,
    pub(crate) modifier: Option<Arc<dyn RespondentPromptModifier>>,
    pub(crate) tools: Tools,
    pub(crate) quality: Quality,
    pub(crate) storage: Arc<dyn Storage>,
    /// What every dialog reports to: the instruction checks' and the judge's record.
    pub(crate) watch: RunWatch,
    /// Every request the run pays for, and the prices.
    pub(crate) ledger: crate::pricing::RunLedger,
    /// The caller's hooks around every completion.
    pub(crate) hooks: Option<Arc<dyn crate::TurnHooks>>,
    /// The rows the run may still store: taken before a row is written.
    pub(crate) rows: crate::rows::RowCount,
}

/// The tools the respondent may call, and what answers the calls.
#[derive(Debug, Default)]
pub(crate) struct Tools {
    /// Offered to the respondent on every request (none: no tool loop).
    pub(crate) specs: Vec<ToolSpec>,
    /// Answers the calls.
    pub(crate) executor: Option<Arc<dyn ToolExecutor>>,
    /// Most tool rounds in one assistant turn.
    pub(crate) max_rounds: u32,
}

/// What decides whether a dialog is good enough, and what happens when it is not.
#[derive(Debug)]
pub(crate) struct Quality {
    /// The judge (with `auto_improve`).
    pub(crate) evaluator: Option<Arc<dyn Evaluator>>,
    /// The score a judged dialog needs.
    pub(crate) min_score: f64,
    /// Generations per dialog (1 + regenerations).
    pub(crate) max_attempts: u32,
    /// Run the cheap checks before the judge.
    pub(crate) checks: bool,
    /// Check each drawn first question before a dialog is spent on it.
    pub(crate) instruction_checks: bool,
    /// What happens to attempts the judge could not grade.
    pub(crate) on_unjudged: UnjudgedPolicy,
    /// Reject first questions that nearly repeat earlier ones.
    pub(crate) dedup: Option<NearDuplicates>,
    /// When no attempt passes: keep the best one (else drop the dialog and let the
    /// scheduler make another).
    pub(crate) keep_best: bool,
}

/// Most instructions a dialog draws looking for one that is not a near duplicate
/// before it is skipped (replaced, not counted as a failure).
const MAX_DUPLICATE_DRAWS: u32 = 8;

/// Most instructions a dialog discards as no request before it fails: they cost no
/// dialog, and a batch holds several.
const MAX_REJECTED_DRAWS: u32 = 10;

/// Quality events of one dialog, for the run report.
#[derive(Debug, Default)]
pub(crate) struct QualityCounts {
    /// Cheap-check causes of rejected attempts.
    pub(crate) rejections: Vec<&'static str>,
    /// Attempts the judge could not grade.
    pub(crate) unjudged: u32,
    /// Near-duplicate first questions skipped.
    pub(crate) duplicates: u32,
    /// Causes of first questions discarded by the instruction checks.
    pub(crate) instructions_rejected: Vec<&'static str>,
}

/// What a stored dialog reports back to the scheduler.
#[derive(Debug)]
pub(crate) struct DialogOutcome {
    pub(crate) persona: Option<String>,
    /// The documents the row was about, for coverage counting.
    pub(crate) context_ids: Vec<String>,
    pub(crate) spent: Spent,
    pub(crate) regenerations: u32,
    pub(crate) quality: QualityCounts,
}

/// A failed dialog, with what it cost before failing.
#[derive(Debug)]
pub(crate) struct DialogFailure {
    pub(crate) error: DialogError,
    pub(crate) spent: Spent,
    /// Boxed: failures are rare, and the result of every dialog carries room for one.
    pub(crate) quality: Box<QualityCounts>,
}

/// A borrowed model that counts what passes through it, for calls made outside a
/// dialog (writing the correspondent prompt) so the report still includes them.
#[derive(Debug)]
pub(crate) struct Tally<'a> {
    model: &'a dyn ChatModel,
    spent: std::sync::Mutex<Spent>,
}

impl<'a> Tally<'a> {
    pub(crate) fn new(model: &'a dyn ChatModel) -> Self {
        Tally {
            model,
            spent: std::sync::Mutex::new(Spent::default()),
        }
    }

    pub(crate) fn spent(&self) -> Spent {
        self.spent.lock().map(|s| *s).unwrap_or_default()
    }
}

#[async_trait::async_trait]
impl ChatModel for Tally<'_> {
    async fn chat(
        &self,
        request: ChatRequest,
    ) -> Result<ChatResponse, afterimage_core::ProviderError> {
        let response = self.model.chat(request).await?;
        if let Ok(mut spent) = self.spent.lock() {
            *spent += Spent::one(response.usage);
        }
        Ok(response)
    }

    fn model_id(&self) -> &str {
        self.model.model_id()
    }
}

/// Runs dialog `index` of the run, after `start_delay`: the steps of [`Dialog::steps`],
/// with what they spent reported whether they succeed or fail.
pub(crate) async fn run_dialog(
    run: Arc<RunContext>,
    index: u64,
    start_delay: Duration,
) -> Result<DialogOutcome, DialogFailure> {
    let seed = dialog_seed(run.seed, index);
    run_dialog_seeded(run, index, seed, start_delay).await
}

/// [`run_dialog`] with the dialog's seed given (a shared run's replacement attempt
/// draws a seed of its own).
pub(crate) async fn run_dialog_seeded(
    run: Arc<RunContext>,
    index: u64,
    seed: u64,
    start_delay: Duration,
) -> Result<DialogOutcome, DialogFailure> {
    if !start_delay.is_zero() {
        tokio::time::sleep(start_delay).await;
    }
    let mut dialog = Dialog::new(&run, index, seed);
    let stored = dialog.steps().await;
    dialog.finish(stored)
}

/// One dialog on its way: what it has spent and the quality events so far, which the
/// scheduler hears about whether the dialog is stored or fails.
struct Dialog<'a> {
    run: &'a RunContext,
    index: u64,
    seed: u64,
    started: Instant,
    spent: Spent,
    counts: QualityCounts,
}

/// What storing a dialog's row leaves for the scheduler.
struct Stored {
    persona: Option<String>,
    context_ids: Vec<String>,
    regenerations: u32,
}

impl<'a> Dialog<'a> {
    fn new(run: &'a RunContext, index: u64, seed: u64) -> Self {
        Dialog {
            run,
            index,
            seed,
            started: Instant::now(),
            spent: Spent::default(),
            counts: QualityCounts::default(),
        }
    }

    /// Draw the first question, write the assistant's prompt, make the best attempt,
    /// store it.
    async fn steps(&mut self) -> Result<Stored, DialogError> {
        let run = self.run;
        let instruction = self.draw_instruction().await?;
        // Whatever happens next, the generator hears how this instruction ended (also
        // when the task is cancelled), so a document's visits are counted right.
        let mut outcome = Outcome {
            run,
            instruction: &instruction,
            stored: false,
        };
        let prompt = self.respondent_prompt(&instruction).await?;
        let turns = pick_turns(run.turns, self.seed);
        let (row, attempts) = self.best_attempt(&instruction, &prompt, turns).await?;
        let stored = self.store(row, attempts, turns).await?;
        outcome.stored = true;
        Ok(stored)
    }

    /// The dialog's result for the scheduler, with what it spent either way.
    fn finish(self, stored: Result<Stored, DialogError>) -> Result<DialogOutcome, DialogFailure> {
        match stored {
            Ok(stored) => Ok(DialogOutcome {
                persona: stored.persona,
                context_ids: stored.context_ids,
                spent: self.spent,
                regenerations: stored.regenerations,
                quality: self.counts,
            }),
            Err(error) => Err(DialogFailure {
                error,
                spent: self.spent,
                quality: Box::new(self.counts),
            }),
        }
    }

    /// What the user asks first: a request (one that fails the instruction checks is
    /// handed back and another drawn, [`MAX_REJECTED_DRAWS`] times) and not a near
    /// duplicate of an earlier question (likewise, [`MAX_DUPLICATE_DRAWS`] times, after
    /// which the dialog is skipped). Every checked draw is told to the pool, which
    /// steers later requests and says when most recent draws were near duplicates:
    /// then the questions have run out and the dialog ends the run.
    async fn draw_instruction(&mut self) -> Result<Instruction, DialogError> {
        let run = self.run;
        loop {
            let draws = self.counts.duplicates + self.counts.instructions_rejected.len() as u32;
            let draw_seed = self.seed.wrapping_add(u64::from(draws));
            let (instruction, refill) = run
                .instructions
                .next(&run.correspondent_prompt, draw_seed)
                .await
                .map_err(DialogError::Instruction)?;
            self.spent += refill;
            if let Err(rejection) = self.check_instruction(&instruction) {
                run.instructions.done(&instruction, false);
                self.reject_instruction(&instruction, rejection)?;
                continue;
            }
            run.watch.instruction_passed();
            let fresh = run
                .quality
                .dedup
                .as_ref()
                .is_none_or(|seen| seen.insert(&instruction.text));
            let exhausted = run.instructions.drawn(&instruction, !fresh);
            if fresh {
                return Ok(instruction);
            }
            run.instructions.done(&instruction, false);
            self.counts.duplicates += 1;
            if let Some(out) = exhausted {
                return Err(DialogError::QuestionsExhausted {
                    duplicates: out.duplicates,
                    draws: out.draws,
                    steered: out.steered,
                });
            }
            if self.counts.duplicates >= MAX_DUPLICATE_DRAWS {
                return Err(DialogError::Duplicates(self.counts.duplicates));
            }
        }
    }

    /// The instruction checks (when on), against the generator's prompts and the
    /// documents the question is about.
    fn check_instruction(&self, instruction: &Instruction) -> Result<(), InstructionRejection> {
        let run = self.run;
        if !run.quality.instruction_checks {
            return Ok(());
        }
        let source = &instruction.source;
        let mut context = InstructionContext::new().prompt(&run.correspondent_prompt);
        if let Some(template) = run.instructions.prompt_template() {
            context = context.prompt(template);
        }
        for document in &source.documents {
            context = context.document(&document.text);
        }
        if source.documents.is_empty() && !source.context.is_empty() {
            context = context.document(&source.context);
        }
        check_instruction(&instruction.text, &context)
    }

    /// Counts a discarded question; after [`MAX_REJECTED_DRAWS`] the dialog fails,
    /// and the run stops when no question of it ever passed.
    fn reject_instruction(
        &mut self,
        instruction: &Instruction,
        rejection: InstructionRejection,
    ) -> Result<(), DialogError> {
        tracing::debug!(question = %instruction.text, %rejection, "generated question discarded");
        let rejected = &mut self.counts.instructions_rejected;
        rejected.push(rejection.cause);
        if (rejected.len() as u32) < MAX_REJECTED_DRAWS {
            return Ok(());
        }
        Err(DialogError::JunkInstructions {
            rejected: rejected.len() as u32,
            last: afterimage_core::snippet(instruction.text.trim(), 60),
            why: rejection.to_string(),
            none_passed: !self.run.watch.any_instruction_passed(),
        })
    }

    /// What the assistant knows: the respondent prompt as the modifier rewrites it for
    /// this instruction.
    async fn respondent_prompt(
        &self,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, DialogError> {
        let Some(modifier) = &self.run.modifier else {
            return Ok(ModifiedPrompt {
                system_prompt: self.run.respondent_prompt.clone(),
                ..ModifiedPrompt::default()
            });
        };
        modifier
            .modify(&self.run.respondent_prompt, instruction)
            .await
            .map_err(DialogError::Modifier)
    }

    /// Converses and passes the result through the quality gate, regenerating (each
    /// new attempt told what the judge found) until one passes or the attempts run
    /// out; then the best attempt is kept, or the dialog fails, as the policy says.
    /// Returns the kept row and every attempt's record.
    async fn best_attempt(
        &mut self,
        instruction: &Instruction,
        prompt: &ModifiedPrompt,
        turns: u32,
    ) -> Result<(ConversationRow, Vec<AttemptInfo>), DialogError> {
        let run = self.run;
        let quality = &run.quality;
        let mut attempts = Attempts::default();
        loop {
            let before = self.spent;
            let conversed = self
                .converse(instruction, prompt, &attempts.feedback, turns)
                .await?;
            let mut row = build_row(
                run,
                self.index,
                conversed.dialog,
                instruction,
                &conversed.prompt,
            );
            let gate = self
                .quality_gate(&mut row, conversed.rejection, conversed.truncated)
                .await?;
            let cost = self.spent.minus(before);
            if let Some(passed) = attempts.record(gate, row, cost, quality, &mut self.counts) {
                return Ok((passed, attempts.list));
            }
            if attempts.list.len() as u32 >= quality.max_attempts {
                return attempts.give_up(quality.keep_best);
            }
        }
    }

    /// Records how the row was made and stores it.
    async fn store(
        &self,
        mut row: ConversationRow,
        attempts: Vec<AttemptInfo>,
        turns: u32,
    ) -> Result<Stored, DialogError> {
        let run = self.run;
        let regenerations = attempts.len() as u32 - 1;
        row.metadata.generation = Some(GenerationInfo {
            run_id: run.run_id.clone(),
            index: self.index,
            respondent_model: run.respondent.model_id().to_owned(),
            correspondent_model: run.correspondent.model_id().to_owned(),
            turns,
            attempts,
            requests: self.spent.requests,
            usage: self.spent.usage,
            finished_at_ms: unix_ms(),
            elapsed_ms: self.started.elapsed().as_millis() as u64,
            seed: self.seed,
        });
        let place = run.rows.reserve().ok_or(DialogError::Spare)?;
        run.storage
            .write(&row)
            .await
            .map_err(DialogError::Storage)?;
        place.keep();
        Ok(Stored {
            persona: row.persona,
            context_ids: row.metadata.context_ids,
            regenerations,
        })
    }
}

/// Reports an instruction's outcome to the generator when dropped.
struct Outcome<'a> {
    run: &'a RunContext,
    instruction: &'a Instruction,
    stored: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        self.run.instructions.done(self.instruction, self.stored);
    }
}

fn build_row(
    run: &RunContext,
    index: u64,
    conversations: Vec<Message>,
    instruction: &Instruction,
    prompt: &ModifiedPrompt,
) -> ConversationRow {
    let source = &instruction.source;
    let context_ids = instruction.context_ids();
    let persona = source.persona.as_ref();
    let mut extra = source.metadata.clone();
    extra.extend(prompt.metadata.clone());
    ConversationRow {
        conversations,
        metadata: RowMetadata {
            context_id: context_ids.first().cloned(),
            context_ids,
            persona_name: persona.map(|p| p.description.clone()),
            persona_generation_depth: persona.and_then(|p| p.generation_depth),
            extra,
            generation: None,
        },
        instruction_context: source.context.clone(),
        response_context: prompt.response_context.clone(),
        persona: persona.map(|p| p.description.clone()),
        evaluation: None,
        final_score: None,
        id: row_id(&run.run_id, index),
    }
}

/// `<run_id>-<index>`, zero-padded so ids sort in generation order.
pub(crate) fn row_id(run_id: &str, index: u64) -> String {
    format!("{run_id}-{index:06}")
}

pub(crate) fn pick_turns(turns: Turns, seed: u64) -> u32 {
    match turns {
        Turns::Exactly(n) => n,
        Turns::UpTo(max) => StdRng::seed_from_u64(seed).random_range(1..=max.max(1)),
    }
}

/// A well-mixed per-dialog seed (splitmix64), so neighbouring indices do not get
/// correlated random streams.
pub(crate) fn dialog_seed(run_seed: u64, index: u64) -> u64 {
    let mut z = run_seed.wrapping_add(index.wrapping_add(1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_stay_in_range_and_vary() {
        let picks: Vec<u32> = (0..200)
            .map(|i| pick_turns(Turns::UpTo(3), dialog_seed(7, i)))
            .collect();
        assert!(picks.iter().all(|t| (1..=3).contains(t)));
        for t in 1..=3 {
            assert!(picks.contains(&t), "turn count {t} never drawn");
        }
        assert_eq!(pick_turns(Turns::Exactly(4), 1), 4);
    }
}
