//! A shared queue of first questions, refilled from the instruction generator.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterimage_core::{
    Instruction, InstructionGenerator, InstructionRequest, Spent, StrategyError,
};
use tokio::sync::Notify;

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
    queue: Mutex<VecDeque<Instruction>>,
    /// Woken when questions are queued or a dialog ends: what a dialog told to wait
    /// (every document visit held by dialogs in flight) waits for.
    changed: Notify,
}

impl InstructionPool {
    pub(crate) fn new(generator: Arc<dyn InstructionGenerator>) -> Self {
        InstructionPool {
            generator,
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
            let request = InstructionRequest::new(correspondent_prompt, seed).reporting_outcomes();
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

    fn pop(&self) -> Option<Instruction> {
        self.queue.lock().ok()?.pop_front()
    }
}
