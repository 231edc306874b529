//! One dialog, from instruction to stored row.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use afterimage_core::{
    AttemptInfo, ChatModel, ChatRequest, ChatResponse, ConversationRow, CriterionScore, Evaluator,
    FinishReason, GenerationInfo, Instruction, Message, ModifiedPrompt, RespondentPromptModifier,
    Role, RowMetadata, Storage, StrategyError, ToolExecutor, ToolSpec, Usage, Verdict,
};
use afterimage_strategies::{NearDuplicates, Rejection, check_dialog, validate_tool_call};
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::instructions::InstructionPool;
use crate::{DialogError, Turns};

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
    pub(crate) temperature: f32,
    pub(crate) instructions: InstructionPool,
    pub(crate) modifier: Option<Arc<dyn RespondentPromptModifier>>,
    pub(crate) tools: Tools,
    pub(crate) quality: Quality,
    pub(crate) storage: Arc<dyn Storage>,
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

/// Times a respondent reply with a bad tool call is discarded and asked for again, per
/// turn, before the attempt is rejected.
const MAX_TOOL_REASKS: u32 = 2;

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
    /// Reject first questions that nearly repeat earlier ones.
    pub(crate) dedup: Option<NearDuplicates>,
    /// When no attempt passes: keep the best one (else drop the dialog and let the
    /// scheduler make another).
    pub(crate) keep_best: bool,
}

/// Most instructions a dialog draws looking for one that is not a near duplicate.
const MAX_DUPLICATE_DRAWS: u32 = 8;

/// Quality events of one dialog, for the run report.
#[derive(Debug, Default)]
pub(crate) struct QualityCounts {
    /// Cheap-check causes of rejected attempts.
    pub(crate) rejections: Vec<&'static str>,
    /// Attempts the judge could not grade.
    pub(crate) unjudged: u32,
    /// Near-duplicate first questions skipped.
    pub(crate) duplicates: u32,
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
    pub(crate) quality: QualityCounts,
}

/// Requests and tokens a dialog used.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Spent {
    pub(crate) requests: u32,
    pub(crate) usage: Usage,
}

impl Spent {
    pub(crate) fn add(&mut self, response: &ChatResponse) {
        self.requests += 1;
        self.usage += response.usage;
    }

    fn minus(self, earlier: Spent) -> Spent {
        Spent {
            requests: self.requests - earlier.requests,
            usage: Usage::new(
                self.usage.input_tokens - earlier.usage.input_tokens,
                self.usage.output_tokens - earlier.usage.output_tokens,
            ),
        }
    }
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
            spent.add(&response);
        }
        Ok(response)
    }

    fn model_id(&self) -> &str {
        self.model.model_id()
    }
}

/// Runs dialog `index` of the run: pick an instruction, modify the respondent prompt,
/// alternate turns, check and judge (regenerating a bounded number of times), store.
pub(crate) async fn run_dialog(
    run: Arc<RunContext>,
    index: u64,
    start_delay: Duration,
) -> Result<DialogOutcome, DialogFailure> {
    if !start_delay.is_zero() {
        tokio::time::sleep(start_delay).await;
    }
    let started = Instant::now();
    let seed = dialog_seed(run.seed, index);
    let mut spent = Spent::default();
    let mut counts = QualityCounts::default();
    macro_rules! fail {
        ($error:expr) => {
            return Err(DialogFailure {
                error: $error,
                spent,
                quality: counts,
            })
        };
    }

    // 1. What the user asks first: not a near duplicate of an earlier question.
    let instruction = loop {
        let draw_seed = seed.wrapping_add(u64::from(counts.duplicates));
        let (instruction, refill) = match run
            .instructions
            .next(&run.correspondent_prompt, draw_seed)
            .await
        {
            Ok(next) => next,
            Err(e) => fail!(DialogError::Instruction(e)),
        };
        spent.requests += refill.requests;
        spent.usage += refill.usage;
        match &run.quality.dedup {
            Some(seen) if !seen.insert(&instruction.text) => {
                run.instructions.done(&instruction, false);
                counts.duplicates += 1;
                if counts.duplicates >= MAX_DUPLICATE_DRAWS {
                    fail!(DialogError::Duplicates(counts.duplicates));
                }
            }
            _ => break instruction,
        }
    };
    // Whatever happens next, the generator hears how this instruction ended (also
    // when the task is cancelled), so a document's visits are counted right.
    let mut outcome = Outcome {
        run: &run,
        instruction: &instruction,
        stored: false,
    };

    // 2. What the assistant knows.
    let prompt = match &run.modifier {
        Some(modifier) => match modifier.modify(&run.respondent_prompt, &instruction).await {
            Ok(prompt) => prompt,
            Err(e) => fail!(DialogError::Modifier(e)),
        },
        None => ModifiedPrompt {
            system_prompt: run.respondent_prompt.clone(),
            ..ModifiedPrompt::default()
        },
    };

    let turns = pick_turns(run.turns, seed);
    let quality = &run.quality;
    let mut attempts: Vec<AttemptInfo> = Vec::new();
    let mut best: Option<ConversationRow> = None;
    let mut unjudged: Option<ConversationRow> = None;
    let mut feedback = String::new();
    let kept = loop {
        let before = spent;
        // 3. The dialog itself; a regeneration's respondent is told what to fix.
        let conversed = match converse(
            &run,
            &instruction,
            &prompt,
            &feedback,
            turns,
            &mut spent,
            &mut counts,
        )
        .await
        {
            Ok(conversed) => conversed,
            Err(e) => fail!(e),
        };
        let mut row = build_row(
            &run,
            index,
            conversed.dialog,
            &instruction,
            &conversed.prompt,
        );
        let mut attempt = AttemptInfo::default();

        // 4. A bad tool call, then the cheap checks, then the judge.
        let passed = if let Some(rejection) = conversed.rejection.or_else(|| {
            quality
                .checks
                .then(|| check_dialog(&row.conversations, conversed.truncated).err())
                .flatten()
        }) {
            tracing::debug!(%rejection, "dialog rejected by the cheap checks");
            counts.rejections.push(rejection.cause);
            attempt.rejected = Some(rejection.to_string());
            false
        } else if let Some(judge) = &quality.evaluator {
            match judge.evaluate(&row).await {
                Ok(verdict) => {
                    spent.requests += verdict.requests;
                    spent.usage += verdict.usage;
                    attempt.score = Some(verdict.score);
                    attempt.grade = Some(verdict.evaluation.overall_grade);
                    feedback = feedback_note(&verdict, quality.min_score);
                    row.final_score = Some(verdict.score);
                    row.evaluation = Some(verdict.evaluation);
                    let passed = verdict.score >= quality.min_score;
                    if !passed && best.as_ref().and_then(|b| b.final_score) < row.final_score {
                        best = Some(row.clone());
                    }
                    passed
                }
                Err(e) if e.as_provider().is_some_and(|p| p.is_fatal()) => {
                    fail!(DialogError::Judge(e))
                }
                // An answer the judge could not grade never counts as a pass.
                Err(e) => {
                    counts.unjudged += 1;
                    attempt.judge_error = Some(e.to_string());
                    unjudged = Some(row.clone());
                    false
                }
            }
        } else {
            true
        };
        let cost = spent.minus(before);
        attempt.usage = cost.usage;
        attempt.requests = cost.requests;
        attempts.push(attempt);
        if passed {
            break row;
        }
        if attempts.len() as u32 >= quality.max_attempts {
            match (quality.keep_best, best.take().or(unjudged.take())) {
                (true, Some(row)) => break row,
                _ => fail!(DialogError::Rejected {
                    attempts: attempts.len() as u32,
                    last: attempts
                        .last()
                        .and_then(|a| a.rejected.clone().or(a.judge_error.clone()))
                        .unwrap_or_else(|| "below the minimum score".to_owned()),
                }),
            }
        }
    };

    let mut row = kept;
    let regenerations = attempts.len() as u32 - 1;
    row.metadata.generation = Some(GenerationInfo {
        run_id: run.run_id.clone(),
        index,
        respondent_model: run.respondent.model_id().to_owned(),
        correspondent_model: run.correspondent.model_id().to_owned(),
        turns,
        attempts,
        requests: spent.requests,
        usage: spent.usage,
        finished_at_ms: unix_ms(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        seed,
    });

    // 5. Store.
    if let Err(e) = run.storage.write(&row).await {
        fail!(DialogError::Storage(e));
    }
    outcome.stored = true;
    Ok(DialogOutcome {
        persona: row.persona,
        context_ids: row.metadata.context_ids,
        spent,
        regenerations,
        quality: counts,
    })
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

/// The judge's low-scoring points, as a note for the respondent's next attempt.
fn feedback_note(verdict: &Verdict, min_score: f64) -> String {
    let mut weak: Vec<(&String, &CriterionScore)> = verdict
        .evaluation
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

/// A dialog as the turns left it.
struct Conversed {
    /// The messages, first user message first.
    dialog: Vec<Message>,
    /// Whether a reply stopped at the token limit.
    truncated: bool,
    /// Why the dialog stopped early and must not be kept (a bad tool call).
    rejection: Option<Rejection>,
    /// The respondent's prompt at the last turn (a modifier may rewrite it for each
    /// follow-up question): what the row reports the assistant saw.
    prompt: ModifiedPrompt,
}

/// Alternates respondent and correspondent for `turns` assistant replies, starting
/// from the instruction as the first user message. Before each follow-up answer the
/// modifier may rewrite the respondent's prompt for the new question; `feedback` (a
/// regeneration's note) always follows it.
async fn converse(
    run: &RunContext,
    instruction: &Instruction,
    prompt: &ModifiedPrompt,
    feedback: &str,
    turns: u32,
    spent: &mut Spent,
    counts: &mut QualityCounts,
) -> Result<Conversed, DialogError> {
    let mut dialog = vec![Message::user(instruction.text.as_str())];
    let mut prompt = prompt.clone();
    let mut truncated = false;
    for turn in 1..=turns {
        let system = format!("{}{feedback}", prompt.system_prompt);
        let answer = respond(run, &system, &dialog, spent, counts).await?;
        truncated |= answer.truncated;
        dialog.extend(answer.messages);
        if answer.rejection.is_some() {
            return Ok(Conversed {
                dialog,
                truncated,
                rejection: answer.rejection,
                prompt,
            });
        }
        if turn == turns {
            break;
        }
        let request = correspondent_request(&run.correspondent_system, &dialog, run.temperature);
        let follow_up = run
            .correspondent
            .chat(request)
            .await
            .map_err(DialogError::Correspondent)?;
        spent.add(&follow_up);
        let text = follow_up.message.content.trim();
        if text.is_empty() {
            return Err(DialogError::EmptyReply("correspondent"));
        }
        if let Some(modifier) = &run.modifier
            && let Some(next) = modifier
                .follow_up(&run.respondent_prompt, instruction, &prompt, text)
                .await
                .map_err(DialogError::Modifier)?
        {
            prompt = next;
        }
        dialog.push(Message::user(text));
    }
    Ok(Conversed {
        dialog,
        truncated,
        rejection: None,
        prompt,
    })
}

/// One assistant turn: its tool rounds and its final reply.
struct Answer {
    /// The assistant's tool calls with their results, then its reply.
    messages: Vec<Message>,
    /// Whether a reply stopped at the token limit.
    truncated: bool,
    /// Set when the turn ended on a tool call that cannot be kept.
    rejection: Option<Rejection>,
}

/// Asks the respondent to answer `dialog`. While it calls tools, each call is checked
/// (a bad one is discarded and asked again, [`MAX_TOOL_REASKS`] times), answered by the
/// executor, and the respondent asked again, for at most `max_rounds` rounds.
async fn respond(
    run: &RunContext,
    system: &str,
    dialog: &[Message],
    spent: &mut Spent,
    counts: &mut QualityCounts,
) -> Result<Answer, DialogError> {
    let tools = &run.tools;
    let mut messages: Vec<Message> = Vec::new();
    let mut truncated = false;
    let mut rounds = 0;
    let mut reasks = 0;
    let mut note = String::new();
    let rejected = |messages, truncated, cause, detail| {
        Ok(Answer {
            messages,
            truncated,
            rejection: Some(Rejection { cause, detail }),
        })
    };
    loop {
        let so_far: Vec<Message> = dialog.iter().chain(&messages).cloned().collect();
        let request = respondent_request(&format!("{system}{note}"), &so_far, run.temperature)
            .tools(tools.specs.clone());
        let reply = run
            .respondent
            .chat(request)
            .await
            .map_err(DialogError::Respondent)?;
        spent.add(&reply);
        let reply_message = Message {
            role: Role::Assistant,
            ..reply.message
        };
        if reply_message.content.trim().is_empty() && reply_message.tool_calls.is_empty() {
            return Err(DialogError::EmptyReply("respondent"));
        }
        truncated |= reply.finish_reason == Some(FinishReason::Length);
        if reply_message.tool_calls.is_empty() {
            messages.push(reply_message);
            return Ok(Answer {
                messages,
                truncated,
                rejection: None,
            });
        }
        let checked: Result<Vec<&ToolSpec>, String> = reply_message
            .tool_calls
            .iter()
            .map(|call| validate_tool_call(&tools.specs, call).map(|(tool, _)| tool))
            .collect();
        let called = match checked {
            Ok(called) => called,
            Err(problem) if reasks >= MAX_TOOL_REASKS => {
                return rejected(messages, truncated, "invalid_tool_call", problem);
            }
            Err(problem) => {
                reasks += 1;
                counts.rejections.push("tool_call_reasked");
                tracing::debug!(%problem, "bad tool call discarded; asking the respondent again");
                note = format!(
                    "\n\nYour previous reply was discarded because of this tool call error: {problem}. Call only the tools offered, with arguments that match their parameters, or answer in text."
                );
                continue;
            }
        };
        note.clear();
        if rounds >= tools.max_rounds {
            return rejected(
                messages,
                truncated,
                "too_many_tool_rounds",
                format!("the assistant still called tools after {rounds} rounds in one turn"),
            );
        }
        rounds += 1;
        let Some(executor) = &tools.executor else {
            return Err(DialogError::Tool(StrategyError::Config(
                "tools are offered but nothing answers their calls".to_owned(),
            )));
        };
        let calls = reply_message.tool_calls.clone();
        messages.push(reply_message);
        for (tool, call) in called.into_iter().zip(calls) {
            let so_far: Vec<Message> = dialog.iter().chain(&messages).cloned().collect();
            let output = executor
                .execute(tool, &call, &so_far)
                .await
                .map_err(DialogError::Tool)?;
            spent.requests += output.requests;
            spent.usage += output.usage;
            messages.push(Message::tool(call.id.clone(), output.content));
        }
    }
}

fn respondent_request(system: &str, dialog: &[Message], temperature: f32) -> ChatRequest {
    let mut messages = Vec::with_capacity(dialog.len() + 1);
    messages.push(Message::system(system));
    messages.extend(dialog.iter().cloned());
    ChatRequest::new(messages).temperature(temperature)
}

/// The dialog seen from the simulated user's side: its own messages are `assistant`,
/// the assistant's replies are `user`. A short opening note comes first because
/// chat APIs expect a conversation to open with a user turn.
fn correspondent_request(system: &str, dialog: &[Message], temperature: f32) -> ChatRequest {
    let mut messages = Vec::with_capacity(dialog.len() + 2);
    messages.push(Message::system(system));
    messages.push(Message::user(
        "[The conversation begins. Write your first message to the assistant.]",
    ));
    // Tool plumbing is the assistant's business: the user sees only text.
    let visible = dialog.iter().filter(|m| {
        m.role != Role::Tool && !(m.role == Role::Assistant && m.content.trim().is_empty())
    });
    for message in visible {
        let flipped = match message.role {
            Role::User => Message::assistant(message.content.clone()),
            _ => Message::user(message.content.clone()),
        };
        messages.push(flipped);
    }
    ChatRequest::new(messages).temperature(temperature)
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

    #[test]
    fn correspondent_sees_the_whole_dialog_from_the_user_side() {
        let dialog = vec![
            Message::user("first question"),
            Message::assistant("answer one"),
        ];
        let request = correspondent_request("be a user", &dialog, 0.7);
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(request.messages[2].content, "first question");
        assert_eq!(request.messages[3].content, "answer one");
    }
}
