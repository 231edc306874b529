//! A shared queue of first questions, refilled from the instruction generator.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use afterimage_core::{
    Instruction, InstructionGenerator, InstructionRequest, StrategyError, Usage,
};

/// Hands out instructions one at a time. A generator call yields a batch (three
/// questions about one document, say); the dialog that triggered the call takes the
/// first and leaves the rest for the next dialogs, so no paid question is thrown away
/// while the run goes on.
#[derive(Debug)]
pub(crate) struct InstructionPool {
    generator: Arc<dyn InstructionGenerator>,
    queue: Mutex<VecDeque<Instruction>>,
}

/// What taking an instruction cost (non-zero only for the dialog that refilled).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RefillCost {
    pub(crate) requests: u32,
    pub(crate) usage: Usage,
}

impl InstructionPool {
    pub(crate) fn new(generator: Arc<dyn InstructionGenerator>) -> Self {
        InstructionPool {
            generator,
            queue: Mutex::new(VecDeque::new()),
        }
    }

    /// The next instruction; calls the generator when the queue is empty. Concurrent
    /// dialogs that find it empty each refill it rather than wait for one another.
    pub(crate) async fn next(
        &self,
        correspondent_prompt: &str,
        seed: u64,
    ) -> Result<(Instruction, RefillCost), StrategyError> {
        if let Some(instruction) = self.pop() {
            return Ok((instruction, RefillCost::default()));
        }
        let batch = self
            .generator
            .generate(&InstructionRequest::new(correspondent_prompt, seed).reporting_outcomes())
            .await?;
        let cost = RefillCost {
            requests: batch.requests,
            usage: batch.usage,
        };
        let mut instructions = Instruction::split(batch).into_iter();
        let first = instructions
            .next()
            .ok_or_else(|| StrategyError::MalformedOutput {
                message: "the instruction generator returned no instructions".into(),
            })?;
        if let Ok(mut queue) = self.queue.lock() {
            queue.extend(instructions);
        }
        Ok((first, cost))
    }

    /// Tells the generator how the dialog started from `instruction` ended.
    pub(crate) fn done(&self, instruction: &Instruction, stored: bool) {
        self.generator.instruction_done(instruction, stored);
    }

    fn pop(&self) -> Option<Instruction> {
        self.queue.lock().ok()?.pop_front()
    }
}
