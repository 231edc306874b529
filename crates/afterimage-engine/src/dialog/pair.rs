//! One preference pair, from instruction to stored row: draw the question, write the
//! assistant's prompt, simulate the shared dialog (with `multi_turn`), ask every
//! candidate, score each with the judge, keep the best and the worst when they are far
//! enough apart.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{
    ChatModel, Instruction, Message, ModifiedPrompt, Spent, StrategyError, Verdict,
};
use futures::future::join_all;

use super::converse::{cache_key, respondent_request};
use super::{
    Dialog, DialogFailure, DialogOutcome, Outcome, RunContext, Stored, build_row, dialog_seed,
};
use crate::DialogError;
use crate::Turns;
use crate::preference::{Candidate, PairJob, PreferencePair, Variant, Which};

/// Runs pair `index` of the run after `start_delay`; a pair whose scores are too
/// close fails with [`DialogError::ScoreGap`], so the scheduler counts it and starts
/// another in its place.
pub(crate) async fn run_pair(
    run: Arc<RunContext>,
    job: Arc<PairJob>,
    index: u64,
    start_delay: Duration,
) -> Result<DialogOutcome, DialogFailure> {
    if !start_delay.is_zero() {
        tokio::time::sleep(start_delay).await;
    }
    let mut dialog = Dialog::new(&run, index, dialog_seed(run.seed, index));
    let stored = dialog.pair_steps(&job).await;
    dialog.finish(stored)
}

/// A candidate's answer with what asking it cost.
struct Asked {
    text: String,
    spent: Spent,
}

impl Dialog<'_> {
    /// Question, prompt, shared prefix, candidates, scores, the pair.
    async fn pair_steps(&mut self, job: &PairJob) -> Result<Stored, DialogError> {
        let run = self.run;
        let instruction = self.draw_instruction().await?;
        let mut outcome = Outcome {
            run,
            instruction: &instruction,
            stored: false,
        };
        let prompt = self.respondent_prompt(&instruction).await?;
        let (history, prompt) = self.shared_prefix(&instruction, prompt, job).await?;
        let answers = self
            .candidates(&prompt.system_prompt, &history, job)
            .await?;
        let scores = self
            .score(job, &instruction, &prompt, &history, &answers)
            .await?;
        let candidates: Vec<Candidate> = job
            .variants
            .iter()
            .zip(answers)
            .zip(scores)
            .map(|((variant, text), score)| Candidate {
                label: variant.label.clone(),
                model: job.model_of(variant, run.respondent.model_id()).to_owned(),
                temperature: variant
                    .temperature
                    .unwrap_or(run.respondent_sampling.temperature),
                text,
                score: crate::preference::round_score(score),
            })
            .collect();
        let (chosen, rejected) = pick(&candidates, job.min_score_gap)?;
        let source = &instruction.source;
        let pair = PreferencePair {
            id: super::row_id(&run.run_id, self.index),
            system_prompt: prompt.system_prompt.clone(),
            history,
            candidates,
            chosen,
            rejected,
            strategy: job.strategy,
            model: run.respondent.model_id().to_owned(),
            context_ids: instruction.context_ids(),
            persona: source.persona.as_ref().map(|p| p.description.clone()),
            requests: self.spent.requests,
            usage: self.spent.usage,
        };
        let place = run.rows.reserve().ok_or(DialogError::Spare)?;
        run.storage
            .write_record(&job.format.row(&pair))
            .await
            .map_err(DialogError::Storage)?;
        place.keep();
        // The pair is stored; a log that cannot keep it is worth a warning, not the pair.
        if let Some(log) = &job.log
            && let Err(e) = log.write_record(&pair.to_json()).await
        {
            tracing::warn!("could not log pair {} to {}: {e}", pair.id, log.location());
        }
        job.collector.kept(&pair);
        outcome.stored = true;
        Ok(Stored {
            persona: pair.persona,
            context_ids: pair.context_ids,
            regenerations: 0,
        })
    }

    /// The dialog the candidates answer, ending with a user message, and the
    /// assistant's prompt at that point. With `multi_turn` it is a simulated dialog
    /// of 1 to `max_turns - 1` exchanges and the user's next message; else the first
    /// question alone.
    async fn shared_prefix(
        &mut self,
        instruction: &Instruction,
        prompt: ModifiedPrompt,
        job: &PairJob,
    ) -> Result<(Vec<Message>, ModifiedPrompt), DialogError> {
        let first = vec![Message::user(instruction.text.as_str())];
        if !job.multi_turn {
            return Ok((first, prompt));
        }
        let exchanges = super::pick_turns(
            Turns::UpTo(self.run.turns.max().saturating_sub(1).max(1)),
            self.seed,
        );
        let conversed = self.converse(instruction, &prompt, "", exchanges).await?;
        if let Some(rejection) = conversed.rejection {
            return Err(DialogError::Rejected {
                attempts: 1,
                last: rejection.to_string(),
            });
        }
        let mut history = conversed.dialog;
        let mut prompt = conversed.prompt;
        let text = self.follow_up(&history).await?;
        if let Some(modifier) = &self.run.modifier
            && let Some(next) = modifier
                .follow_up(&self.run.respondent_prompt, instruction, &prompt, &text)
                .await
                .map_err(DialogError::Modifier)?
        {
            prompt = next;
        }
        history.push(Message::user(text));
        Ok((history, prompt))
    }

    /// Every variant's answer to `history`, asked at once: real chat requests with
    /// the system prompt (and the variant's note) as the system message.
    async fn candidates(
        &mut self,
        system: &str,
        history: &[Message],
        job: &PairJob,
    ) -> Result<Vec<String>, DialogError> {
        let run = self.run;
        let asks = job
            .variants
            .iter()
            .map(|variant| ask(run, job, variant, system, history));
        let mut answers = Vec::with_capacity(job.variants.len());
        let mut failure = None;
        for asked in join_all(asks).await {
            match asked {
                Ok(asked) => {
                    self.spent += asked.spent;
                    answers.push(asked.text);
                }
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }

    /// The judge's overall score of each answer, as the last turn of `history`.
    async fn score(
        &mut self,
        job: &PairJob,
        instruction: &Instruction,
        prompt: &ModifiedPrompt,
        history: &[Message],
        answers: &[String],
    ) -> Result<Vec<f64>, DialogError> {
        let run = self.run;
        let judge = &job.judge;
        let rows: Vec<_> = answers
            .iter()
            .map(|answer| {
                let mut dialog = history.to_vec();
                dialog.push(Message::assistant(answer.as_str()));
                build_row(run, self.index, dialog, instruction, prompt)
            })
            .collect();
        let verdicts = join_all(rows.iter().map(|row| judge.evaluate(row))).await;
        let mut scores = Vec::with_capacity(verdicts.len());
        let mut failure = None;
        for verdict in verdicts {
            match verdict {
                Ok(Verdict {
                    score,
                    usage,
                    requests,
                    ..
                }) => {
                    run.watch.judge_answered(None);
                    self.spent += Spent::new(requests, usage);
                    scores.push(score);
                }
                Err(e) => failure = failure.or(Some(self.unscored(job, e))),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(scores),
        }
    }

    /// A candidate the judge could not score fails the attempt; a judge whose first
    /// answers are all unreadable stops the run, as for dialogs.
    fn unscored(&mut self, job: &PairJob, e: StrategyError) -> DialogError {
        let StrategyError::MalformedOutput { message } = &e else {
            return DialogError::Judge(e);
        };
        self.counts.unjudged += 1;
        match self
            .run
            .watch
            .judge_answered(Some(super::gate::answer_start(message)))
        {
            Some(tally) => DialogError::JudgeUnreadable {
                model: job.judge.model_name().unwrap_or("unnamed").to_owned(),
                unreadable: tally.unreadable,
                answers: tally.answers,
                last: tally.last,
            },
            None => DialogError::Judge(e),
        }
    }
}

/// One candidate: the variant's model, temperature and note.
async fn ask(
    run: &RunContext,
    job: &PairJob,
    variant: &Variant,
    system: &str,
    history: &[Message],
) -> Result<Asked, DialogError> {
    let system = format!("{system}{}", variant.note);
    let mut sampling = run.respondent_sampling;
    if let Some(t) = variant.temperature {
        sampling.temperature = t;
    }
    let mut request = respondent_request(&system, history, sampling).cache_key(cache_key(
        &run.run_id,
        "r",
        &system,
    ));
    if variant.model == Which::Secondary {
        request.model = job.secondary_model.clone();
    }
    let reply = run
        .respondent
        .chat(request)
        .await
        .map_err(DialogError::Respondent)?;
    let text = reply.message.content.trim().to_owned();
    if text.is_empty() {
        return Err(DialogError::EmptyReply("respondent"));
    }
    Ok(Asked {
        text,
        spent: Spent::one(reply.usage),
    })
}

/// The highest- and lowest-scoring candidates (the first of equals), or the gap that
/// was too small.
fn pick(candidates: &[Candidate], min_gap: f64) -> Result<(usize, usize), DialogError> {
    let mut best = 0;
    let mut worst = 0;
    for (i, c) in candidates.iter().enumerate() {
        if c.score > candidates[best].score {
            best = i;
        }
        if c.score < candidates[worst].score {
            worst = i;
        }
    }
    let gap = candidates.get(best).map_or(0.0, |c| c.score)
        - candidates.get(worst).map_or(0.0, |c| c.score);
    // A hair of float error must not discard a pair whose rounded scores meet the gap.
    if best == worst || gap + 1e-9 < min_gap {
        return Err(DialogError::ScoreGap { gap, min_gap });
    }
    Ok((best, worst))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates(scores: &[f64]) -> Vec<Candidate> {
        scores
            .iter()
            .map(|s| Candidate {
                label: String::new(),
                model: String::new(),
                temperature: 0.5,
                text: String::new(),
                score: *s,
            })
            .collect()
    }

    #[test]
    fn the_best_and_worst_make_the_pair_when_far_enough_apart() {
        assert_eq!(pick(&candidates(&[0.5, 0.9, 0.3]), 0.1).unwrap(), (1, 2));
        assert_eq!(pick(&candidates(&[0.6, 0.5]), 0.1).unwrap(), (0, 1));
        let close = pick(&candidates(&[0.6, 0.55]), 0.1).unwrap_err();
        assert_eq!(close.cause(), "pair: score_gap_too_small");
        assert!(
            pick(&candidates(&[0.7, 0.7]), 0.0).is_err(),
            "a tie is no pair"
        );
    }
}
