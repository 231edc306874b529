//! A shared queue of first questions, refilled from the instruction generator, and
//! the steering that keeps those questions from repeating: each request names a
//! question type; once questions start to repeat it also shows questions already asked
//! about its documents and a random section of a long document, and raises the
//! temperature with the share of recent near duplicates. When most recent draws are
//! near duplicates anyway, the questions have run out.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterimage_core::{
    AskedQuestions, Instruction, InstructionGenerator, InstructionRequest, QuestionType, Spent,
    Steering, StrategyError, fnv1a,
};
use tokio::sync::Notify;

/// How a run steers its instruction generator away from questions it asked already
/// (see [`GenerateOptions::steering`](crate::GenerateOptions::steering)).
#[derive(Debug, Clone)]
pub struct SteeringConfig {
    /// Steer at all; off, requests carry no steering (the behaviour before it existed),
    /// while running out is still detected.
    pub enabled: bool,
    /// The question types drawn from, one per batch (empty: none named).
    pub question_types: Vec<QuestionType>,
    /// Most questions already asked to show the generator per request.
    pub avoid_count: usize,
    /// Most characters of those questions in all.
    pub avoid_chars: usize,
    /// The highest temperature repetition may raise the generator's to.
    pub max_temperature: f32,
    /// Documents longer than this many characters are shown as a random section of
    /// about this size (`None`: whole).
    pub section_chars: Option<usize>,
}

impl Default for SteeringConfig {
    fn default() -> Self {
        SteeringConfig {
            enabled: true,
            question_types: afterimage_strategies::default_question_types(),
            avoid_count: 8,
            avoid_chars: 1200,
            max_temperature: 1.0,
            section_chars: Some(4000),
        }
    }
}

impl SteeringConfig {
    /// No steering: every request as the generator would make it alone.
    pub fn off() -> Self {
        SteeringConfig {
            enabled: false,
            ..SteeringConfig::default()
        }
    }
}

/// What a run does when its questions run out (most recent draws near duplicates of
/// earlier ones) before its count is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExhausted {
    /// End the run cleanly with the rows written and a stop reason saying so (the
    /// default).
    #[default]
    Stop,
    /// Fail the run, naming how many rows are missing.
    Fail,
}

/// Draws remembered to judge whether questions repeat.
const WINDOW: usize = 32;

/// Near duplicates among the last [`WINDOW`] draws from which the questions count as
/// run out.
const EXHAUSTED_AT: usize = 24;

/// Mixed into a request's seed to draw its question type, apart from the other uses
/// of the seed.
const QUESTION_TYPE_STREAM: u64 = 0x51;

/// Questions remembered per document for the avoid lists.
const ASKED_PER_DOCUMENT: usize = 64;

/// The questions have run out: most recent draws were near duplicates.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exhaustion {
    pub(crate) duplicates: u32,
    pub(crate) draws: u32,
    pub(crate) steered: bool,
}

/// The steering state of a run: its settings, the questions asked per document, and
/// whether recent draws were fresh or near duplicates.
#[derive(Debug)]
struct Steerer {
    config: SteeringConfig,
    asked: Arc<AskedQuestions>,
    draws: Mutex<Draws>,
}

#[derive(Debug, Default)]
struct Draws {
    /// The last draws.
    recent: VecDeque<Draw>,
    /// Whether any draw of the run repeated an earlier question: from then on requests
    /// show what was asked already.
    repeating: bool,
    /// Hashes of every question drawn, so that exact repeats steer too when near
    /// duplicates are not filtered (`dedup` off).
    seen: HashSet<u64>,
}

/// How a drawn question compares with the run's earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draw {
    /// New.
    Fresh,
    /// The same text as an earlier question, kept (no near-duplicate filter): it
    /// steers, but never ends the run.
    Repeat,
    /// Skipped as a near duplicate: it steers, and counts towards running out.
    Duplicate,
}

impl Steerer {
    fn new(config: SteeringConfig) -> Self {
        Steerer {
            config,
            asked: Arc::new(AskedQuestions::new(ASKED_PER_DOCUMENT)),
            draws: Mutex::new(Draws::default()),
        }
    }

    /// The request for a new batch, steered when steering is on.
    fn request(&self, correspondent_prompt: &str, seed: u64) -> InstructionRequest {
        let request = InstructionRequest::new(correspondent_prompt, seed).reporting_outcomes();
        let config = &self.config;
        if !config.enabled {
            return request;
        }
        let (pressure, repeating) = self
            .draws
            .lock()
            .map(|d| (share(&d.recent), d.repeating))
            .unwrap_or((0.0, false));
        let kind = (!config.question_types.is_empty()).then(|| {
            let pick = crate::dialog::dialog_seed(seed, QUESTION_TYPE_STREAM)
                % config.question_types.len() as u64;
            config.question_types[pick as usize].clone()
        });
        let mut steering = Steering::new(kind).pressure(pressure, config.max_temperature);
        // Until questions repeat, only the type varies: sections of a long document
        // would change the respondent's prompt from dialog to dialog and so cost the
        // prompt cache, and an avoid list would have nothing to say.
        if repeating {
            steering = steering
                .avoiding(
                    Arc::clone(&self.asked),
                    config.avoid_count,
                    config.avoid_chars,
                )
                .sections(config.section_chars);
        }
        request.steering(steering)
    }

    /// Records a drawn question that passed the checks: fresh (remembered for the
    /// avoid lists) or a near duplicate. Returns the exhaustion when most recent draws
    /// were near duplicates.
    fn drawn(&self, instruction: &Instruction, duplicate: bool) -> Option<Exhaustion> {
        let mut draws = self.draws.lock().ok()?;
        let key = fnv1a(instruction.text.trim().to_lowercase().as_bytes());
        let draw = match (duplicate, draws.seen.insert(key)) {
            (true, _) => Draw::Duplicate,
            (false, false) => Draw::Repeat,
            (false, true) => Draw::Fresh,
        };
        if draw == Draw::Fresh {
            self.asked
                .record(&instruction.context_ids(), &instruction.text);
        }
        draws.repeating |= draw != Draw::Fresh;
        draws.recent.push_back(draw);
        if draws.recent.len() > WINDOW {
            draws.recent.pop_front();
        }
        let duplicates = draws
            .recent
            .iter()
            .filter(|d| **d == Draw::Duplicate)
            .count();
        (draws.recent.len() == WINDOW && duplicates >= EXHAUSTED_AT).then_some(Exhaustion {
            duplicates: duplicates as u32,
            draws: WINDOW as u32,
            steered: self.config.enabled,
        })
    }
}

/// The share of repeats among `recent` draws (0 when there are none).
fn share(recent: &VecDeque<Draw>) -> f32 {
    if recent.is_empty() {
        return 0.0;
    }
    recent.iter().filter(|d| **d != Draw::Fresh).count() as f32 / recent.len() as f32
}

/// The longest a dialog waits for a document visit to free up before its wait counts
/// as a failure (a safety net: every push and every dialog end wakes it).
const MAX_WAIT: Duration = Duration::from_secs(600);

/// Hands out instructions one at a time. A generator call yields a batch (three
/// questions about one document, say); the dialog that triggered the call takes the
/// first and leaves the rest for the next dialogs, so no paid question is thrown away
/// while the run goes on.
#[derive(Debug)]
pub(crate) struct InstructionPool {
    generator: Arc<dyn InstructionGenerator>,
    steerer: Steerer,
    queue: Mutex<VecDeque<Instruction>>,
    /// Woken when questions are queued or a dialog ends: what a dialog told to wait
    /// (every document visit held by dialogs in flight) waits for.
    changed: Notify,
}

impl InstructionPool {
    pub(crate) fn new(generator: Arc<dyn InstructionGenerator>, steering: SteeringConfig) -> Self {
        InstructionPool {
            generator,
            steerer: Steerer::new(steering),
            queue: Mutex::new(VecDeque::new()),
            changed: Notify::new(),
        }
    }

    /// The next instruction; calls the generator when the queue is empty. Concurrent
    /// dialogs that find it empty each refill it rather than wait for one another.
    ///
    /// When the generator says to wait (dialogs in flight hold every document visit
    /// left), the dialog waits for questions to be queued or a dialog to end, then
    /// looks again.
    pub(crate) async fn next(
        &self,
        correspondent_prompt: &str,
        seed: u64,
    ) -> Result<(Instruction, Spent), StrategyError> {
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        loop {
            // Registered before looking, so a change in between still wakes us.
            let changed = self.changed.notified();
            if let Some(instruction) = self.pop() {
                return Ok((instruction, Spent::default()));
            }
            let request = self.steerer.request(correspondent_prompt, seed);
            match self.generator.generate(&request).await {
                Ok(batch) => return self.take_first(batch),
                Err(e) if e.is_waiting() => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(e);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The first question of a fresh batch; the rest are queued for other dialogs.
    fn take_first(
        &self,
        batch: afterimage_core::GeneratedInstructions,
    ) -> Result<(Instruction, Spent), StrategyError> {
        let cost = batch.spent();
        let mut instructions = Instruction::split(batch).into_iter();
        let first = instructions
            .next()
            .ok_or_else(|| StrategyError::MalformedOutput {
                message: "the instruction generator returned no instructions".into(),
            })?;
        if let Ok(mut queue) = self.queue.lock() {
            queue.extend(instructions);
        }
        self.changed.notify_waiters();
        Ok((first, cost))
    }

    /// The generator's prompt template, for the instruction checks.
    pub(crate) fn prompt_template(&self) -> Option<&str> {
        self.generator.prompt_template()
    }

    /// Tells the generator how the dialog started from `instruction` ended.
    pub(crate) fn done(&self, instruction: &Instruction, stored: bool) {
        self.generator.instruction_done(instruction, stored);
        self.changed.notify_waiters();
    }

    /// Records a drawn question that passed the instruction checks, fresh or a near
    /// duplicate; returns the exhaustion when most recent draws were near duplicates.
    pub(crate) fn drawn(&self, instruction: &Instruction, duplicate: bool) -> Option<Exhaustion> {
        self.steerer.drawn(instruction, duplicate)
    }

    fn pop(&self) -> Option<Instruction> {
        self.queue.lock().ok()?.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::GeneratedInstructions;

    fn instruction(text: &str) -> Instruction {
        let batch = GeneratedInstructions {
            instructions: vec![text.to_owned()],
            ..GeneratedInstructions::default()
        };
        Instruction::split(batch).remove(0)
    }

    fn steering(steerer: &Steerer) -> Steering {
        steerer.request("A user.", 1).steering.unwrap()
    }

    #[test]
    fn near_duplicates_steer_and_run_out_exact_repeats_only_steer() {
        let steerer = Steerer::new(SteeringConfig::default());
        let first = steering(&steerer);
        assert!(first.question_type.is_some());
        assert!(first.asked.is_none() && first.section_chars.is_none());
        assert_eq!(first.pressure, 0.0);
        // Without a near-duplicate filter, a question asked twice is kept: it steers
        // (what to avoid, a higher temperature) but never ends the run.
        for _ in 0..WINDOW * 2 {
            assert!(
                steerer
                    .drawn(&instruction("How do I reset it?"), false)
                    .is_none()
            );
        }
        let steered = steering(&steerer);
        assert!(steered.asked.is_some() && steered.section_chars.is_some());
        assert!(steered.pressure > 0.9, "{}", steered.pressure);
        assert_eq!(steered.avoid(&[], 3), ["How do I reset it?"]);

        // Near duplicates run out at 24 of the last 32 draws, not before.
        let steerer = Steerer::new(SteeringConfig::default());
        for i in 0..8 {
            assert!(
                steerer
                    .drawn(&instruction(&format!("Question {i}?")), false)
                    .is_none()
            );
        }
        for _ in 0..EXHAUSTED_AT - 1 {
            assert!(steerer.drawn(&instruction("Question 0?"), true).is_none());
        }
        let out = steerer.drawn(&instruction("Question 0?"), true).unwrap();
        assert_eq!((out.duplicates, out.draws, out.steered), (24, 32, true));
    }

    #[test]
    fn steering_off_sends_plain_requests() {
        let steerer = Steerer::new(SteeringConfig::off());
        steerer.drawn(&instruction("Same?"), true);
        assert!(steerer.request("A user.", 1).steering.is_none());
    }

    #[test]
    fn question_types_vary_with_the_seed() {
        let steerer = Steerer::new(SteeringConfig::default());
        let kinds: HashSet<String> = (0..200)
            .filter_map(|seed| steerer.request("A user.", seed).steering?.question_type)
            .map(|kind| kind.name)
            .collect();
        assert_eq!(
            kinds.len(),
            afterimage_strategies::DEFAULT_QUESTION_TYPES.len()
        );
    }
}
