//! The quality gate an attempt passes through (a bad tool call, the cheap checks,
//! then the judge) and the record of a dialog's attempts.

use afterimage_core::{
    AttemptInfo, ConversationRow, CriterionScore, Evaluation, Spent, StrategyError, snippet,
};
use afterimage_strategies::{Rejection, check_dialog};

use super::{Dialog, Quality, QualityCounts};
use crate::{DialogError, UnjudgedPolicy};

/// What the quality gate says of one attempt.
pub(super) enum Gate {
    /// Good enough to keep.
    Pass,
    /// Not good enough.
    Reject(Rejected),
    /// The judge could not grade it: never a pass, but better than nothing when no
    /// attempt passes (unless the policy is [`UnjudgedPolicy::Drop`]).
    Unjudged(StrategyError),
}

/// Why the gate rejected an attempt.
pub(super) enum Rejected {
    /// A bad tool call or a cheap check.
    Check(Rejection),
    /// The judge's score is below the minimum (the row holds the verdict).
    LowScore,
}

impl Dialog<'_> {
    /// Passes `row` through the gate: `rejection` (a bad tool call found while
    /// conversing), then the cheap checks, then the judge, whose verdict is written
    /// into the row. A judge failure that would repeat on every dialog fails the dialog.
    pub(super) async fn quality_gate(
        &mut self,
        row: &mut ConversationRow,
        rejection: Option<Rejection>,
        truncated: bool,
    ) -> Result<Gate, DialogError> {
        let run = self.run;
        let quality = &run.quality;
        let rejection = rejection.or_else(|| {
            quality
                .checks
                .then(|| check_dialog(&row.conversations, truncated).err())
                .flatten()
        });
        if let Some(rejection) = rejection {
            return Ok(Gate::Reject(Rejected::Check(rejection)));
        }
        let Some(judge) = &quality.evaluator else {
            return Ok(Gate::Pass);
        };
        match judge.evaluate(row).await {
            Ok(verdict) => {
                run.watch.judge_answered(None);
                self.spent += verdict.spent();
                row.final_score = Some(verdict.score);
                row.evaluation = Some(verdict.evaluation);
                if verdict.score >= quality.min_score {
                    Ok(Gate::Pass)
                } else {
                    Ok(Gate::Reject(Rejected::LowScore))
                }
            }
            Err(e) if e.as_provider().is_some_and(|p| p.is_fatal()) => Err(DialogError::Judge(e)),
            // An answer the judge could not grade never counts as a pass.
            Err(e) => self.unjudged(e),
        }
    }

    /// An attempt the judge could not grade; with [`UnjudgedPolicy::Stop`], the run
    /// stops once the judge's first answers show it never answers readably.
    fn unjudged(&mut self, e: StrategyError) -> Result<Gate, DialogError> {
        let run = self.run;
        let StrategyError::MalformedOutput { message } = &e else {
            // A timeout or an overloaded server says nothing about the judge's answers.
            return Ok(Gate::Unjudged(e));
        };
        let tally = run.watch.judge_answered(Some(answer_start(message)));
        match tally {
            Some(tally) if run.quality.on_unjudged == UnjudgedPolicy::Stop => {
                self.counts.unjudged += 1;
                let judge = run.quality.evaluator.as_ref();
                Err(DialogError::JudgeUnreadable {
                    model: judge
                        .and_then(|j| j.model_name())
                        .unwrap_or("unnamed")
                        .to_owned(),
                    unreadable: tally.unreadable,
                    answers: tally.answers,
                    last: tally.last,
                })
            }
            _ => Ok(Gate::Unjudged(e)),
        }
    }
}

/// The start of the judge's answer quoted in `message` (the whole message when it
/// quotes none), short enough for a one-line error.
pub(super) fn answer_start(message: &str) -> String {
    const QUOTED: &str = "the answer starts: ";
    let answer = message
        .find(QUOTED)
        .map_or(message, |at| &message[at + QUOTED.len()..]);
    snippet(answer.trim(), 60)
}

/// A dialog's attempts so far, and what the next one needs.
#[derive(Default)]
pub(super) struct Attempts {
    /// Every attempt's record, in order.
    pub(super) list: Vec<AttemptInfo>,
    /// The judge's note for the next attempt (empty before the first verdict).
    pub(super) feedback: String,
    /// The highest-scoring attempt below the minimum.
    best: Option<ConversationRow>,
    /// The last attempt the judge could not grade.
    unjudged: Option<ConversationRow>,
}

impl Attempts {
    /// Records an attempt that cost `cost` and what the gate said of it; returns its
    /// row when it passed.
    pub(super) fn record(
        &mut self,
        gate: Gate,
        row: ConversationRow,
        cost: Spent,
        quality: &Quality,
        counts: &mut QualityCounts,
    ) -> Option<ConversationRow> {
        let mut attempt = AttemptInfo {
            score: row.final_score,
            grade: row.evaluation.as_ref().map(|e| e.overall_grade),
            usage: cost.usage,
            requests: cost.requests,
            ..AttemptInfo::default()
        };
        if let Some(evaluation) = &row.evaluation {
            self.feedback = feedback_note(evaluation, quality.min_score);
        }
        let passed = match gate {
            Gate::Pass => Some(row),
            Gate::Reject(Rejected::Check(rejection)) => {
                tracing::debug!(%rejection, "dialog rejected by the cheap checks");
                counts.rejections.push(rejection.cause);
                attempt.rejected = Some(rejection.to_string());
                None
            }
            Gate::Reject(Rejected::LowScore) => {
                if self.best.as_ref().and_then(|b| b.final_score) < row.final_score {
                    self.best = Some(row);
                }
                None
            }
            Gate::Unjudged(e) => {
                counts.unjudged += 1;
                attempt.judge_error = Some(e.to_string());
                if quality.on_unjudged != UnjudgedPolicy::Drop {
                    self.unjudged = Some(row);
                }
                None
            }
        };
        self.list.push(attempt);
        passed
    }

    /// No attempt passed: the best one (else the last unjudged one) when the policy
    /// keeps it, else the dialog fails with why the last attempt did not pass.
    pub(super) fn give_up(
        self,
        keep_best: bool,
    ) -> Result<(ConversationRow, Vec<AttemptInfo>), DialogError> {
        match (keep_best, self.best.or(self.unjudged)) {
            (true, Some(row)) => Ok((row, self.list)),
            _ => Err(DialogError::Rejected {
                attempts: self.list.len() as u32,
                last: self
                    .list
                    .last()
                    .and_then(|a| a.rejected.clone().or(a.judge_error.clone()))
                    .unwrap_or_else(|| "below the minimum score".to_owned()),
            }),
        }
    }
}

/// The judge's low-scoring points, as a note for the respondent's next attempt.
fn feedback_note(evaluation: &Evaluation, min_score: f64) -> String {
    let mut weak: Vec<(&String, &CriterionScore)> = evaluation
        .criteria
        .iter()
        .filter(|(_, c)| c.score < min_score && !c.feedback.trim().is_empty())
        .collect();
    if weak.is_empty() {
        return String::new();
    }
    weak.sort_by(|a, b| a.1.score.total_cmp(&b.1.score));
    let points: Vec<String> = weak
        .iter()
        .map(|(name, c)| format!("- {name}: {}", c.feedback.trim()))
        .collect();
    format!(
        "\n\nA reviewer read an earlier version of this conversation and found these problems. Avoid them in your answers:\n{}",
        points.join("\n")
    )
}
