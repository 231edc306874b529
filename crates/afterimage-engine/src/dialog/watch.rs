//! Run-level quality counters every dialog reports to: whether the instruction
//! generator ever produced a usable question, and whether the judge ever answers
//! readably.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Judge answers looked at: the first ones tell whether the judge works at all.
const JUDGE_WINDOW: u32 = 20;
/// Unreadable answers, all of the first ones, that stop the run.
const ALL_UNREADABLE: u32 = 10;
/// Unreadable answers among the first [`JUDGE_WINDOW`] that stop the run.
const MOST_UNREADABLE: u32 = 15;

/// What all dialogs of a run have seen.
#[derive(Debug, Default)]
pub(crate) struct RunWatch {
    /// First questions that passed the instruction checks.
    instructions_passed: AtomicU64,
    judge: Mutex<JudgeTally>,
}

/// The judge's first answers.
#[derive(Debug, Default, Clone)]
pub(crate) struct JudgeTally {
    /// Answers counted (at most [`JUDGE_WINDOW`]).
    pub(crate) answers: u32,
    /// How many of them could not be read.
    pub(crate) unreadable: u32,
    /// The start of the last unreadable answer.
    pub(crate) last: String,
}

impl JudgeTally {
    /// Whether the judge never works: every one of at least [`ALL_UNREADABLE`]
    /// answers unreadable, or [`MOST_UNREADABLE`] of the first [`JUDGE_WINDOW`].
    fn never_works(&self) -> bool {
        (self.answers >= ALL_UNREADABLE && self.unreadable == self.answers)
            || self.unreadable >= MOST_UNREADABLE
    }
}

impl RunWatch {
    /// A question passed the instruction checks.
    pub(crate) fn instruction_passed(&self) {
        self.instructions_passed.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether any question of the run passed the instruction checks.
    pub(crate) fn any_instruction_passed(&self) -> bool {
        self.instructions_passed.load(Ordering::Relaxed) > 0
    }

    /// Counts a judge answer (`unreadable`: the start of an answer that could not be
    /// read); returns the tally when the judge never works.
    pub(crate) fn judge_answered(&self, unreadable: Option<String>) -> Option<JudgeTally> {
        let mut tally = self.judge.lock().ok()?;
        if tally.answers < JUDGE_WINDOW {
            tally.answers += 1;
            tally.unreadable += u32::from(unreadable.is_some());
        }
        if let Some(last) = unreadable {
            tally.last = last;
        }
        tally.never_works().then(|| tally.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(watch: &RunWatch, answers: &[bool]) -> Vec<bool> {
        answers
            .iter()
            .map(|readable| {
                let unreadable = (!readable).then(|| "x".to_owned());
                watch.judge_answered(unreadable).is_some()
            })
            .collect()
    }

    #[test]
    fn ten_unreadable_in_a_row_from_the_start_trip() {
        let watch = RunWatch::default();
        let tripped = feed(&watch, &[false; 10]);
        assert_eq!(tripped.iter().position(|t| *t), Some(9));
    }

    #[test]
    fn fifteen_of_the_first_twenty_trip_and_later_answers_never_do() {
        let mut answers = vec![true; 5];
        answers.extend([false; 15]);
        let watch = RunWatch::default();
        assert_eq!(feed(&watch, &answers).iter().position(|t| *t), Some(19));

        let mut answers = vec![true; 6];
        answers.extend([false; 14]);
        answers.extend([false; 30]);
        let watch = RunWatch::default();
        assert!(feed(&watch, &answers).iter().all(|t| !t));
    }

    #[test]
    fn a_readable_answer_among_the_first_ten_holds_off_the_all_rule() {
        let mut answers = vec![true];
        answers.extend([false; 13]);
        let watch = RunWatch::default();
        assert!(feed(&watch, &answers).iter().all(|t| !t));
    }
}
