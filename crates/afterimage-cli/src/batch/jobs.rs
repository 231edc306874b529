//! Batch mode for the jobs besides dialogs: `structured` rows and `preference`
//! pairs go through the same batcher and scheduler as `generate`'s dialogs; only
//! the rounds a row takes differ.

use super::{BatchRun, api_name, progress, turnaround};

/// What one row of a job takes, for the prediction line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum JobRounds {
    /// A structured row: one request, one re-ask when the output misses the schema.
    Structured,
    /// A preference pair: its candidates in one round, their scores in the next,
    /// after a simulated dialog of up to `max_turns - 1` exchanges when `multi_turn`.
    Pair {
        /// `preference.multi_turn`.
        multi_turn: bool,
        /// `generation.max_turns`.
        max_turns: u32,
    },
}

impl JobRounds {
    /// The rounds a row takes at least and at most (its re-asks included), and why.
    fn predict(self) -> (u32, u32, String) {
        match self {
            JobRounds::Structured => (
                1,
                2,
                "one request; 2 with a re-ask of output that misses the schema".into(),
            ),
            JobRounds::Pair {
                multi_turn: false, ..
            } => (2, 2, "the candidates, then their scores".into()),
            JobRounds::Pair {
                multi_turn: true,
                max_turns,
            } => {
                let dialog = 2 * max_turns.saturating_sub(1).max(1) + 1;
                (
                    dialog + 2,
                    dialog + 2,
                    format!(
                        "{dialog} for the dialog before the answer, then the candidates and their scores"
                    ),
                )
            }
        }
    }
}

impl BatchRun {
    /// Before a job's run: the API, the rounds a row takes and the provider's stated
    /// turnaround; the progress lines count rounds against the same figure.
    pub(crate) fn announce_job(&mut self, job: JobRounds) {
        let (floor, most, why) = job.predict();
        self.rounds.floor = floor;
        self.rounds.with_regenerations = most;
        progress::say(&format!(
            "batch mode: {}, about {floor} rounds ({why}); each round takes one batch turnaround: {}",
            api_name(self.provider),
            turnaround(self.provider)
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_take_the_rounds_their_requests_chain() {
        assert_eq!(JobRounds::Structured.predict().0, 1);
        assert_eq!(JobRounds::Structured.predict().1, 2);
        let single = JobRounds::Pair {
            multi_turn: false,
            max_turns: 3,
        };
        assert_eq!(single.predict().0, 2);
        // Two exchanges (4 rounds) and the user's next message, then the pair.
        let multi = JobRounds::Pair {
            multi_turn: true,
            max_turns: 3,
        };
        assert_eq!(multi.predict().0, 7);
    }
}
