//! The turns of one attempt: respondent and correspondent in alternation, with the
//! respondent's tool rounds.

use afterimage_core::{
    ChatRequest, FinishReason, Instruction, Message, ModifiedPrompt, Role, Spent, StrategyError,
    ToolSpec,
};
use afterimage_strategies::{Rejection, validate_tool_call};

use super::{Dialog, row_id};
use crate::policy::Sampling;
use crate::{DialogError, HookError, TurnRole, TurnView};

/// Times a respondent reply with a bad tool call is discarded and asked for again, per
/// turn, before the attempt is rejected.
const MAX_TOOL_REASKS: u32 = 2;

/// A dialog as the turns left it.
pub(super) struct Conversed {
    /// The messages, first user message first.
    pub(super) dialog: Vec<Message>,
    /// Whether a reply stopped at the token limit.
    pub(super) truncated: bool,
    /// Why the dialog stopped early and must not be kept (a bad tool call).
    pub(super) rejection: Option<Rejection>,
    /// The respondent's prompt at the last turn (a modifier may rewrite it for each
    /// follow-up question): what the row reports the assistant saw.
    pub(super) prompt: ModifiedPrompt,
}

/// Which hook a completion calls.
#[derive(Clone, Copy)]
enum Hook<'a> {
    /// Before the completion.
    Before,
    /// After the correspondent wrote this.
    AfterText(&'a str),
    /// After the respondent replied this.
    AfterReply(&'a Message),
}

/// One assistant turn: its tool rounds and its final reply.
#[derive(Default)]
struct Answer {
    /// The assistant's tool calls with their results, then its reply.
    messages: Vec<Message>,
    /// Whether a reply stopped at the token limit.
    truncated: bool,
    /// Set when the turn ended on a tool call that cannot be kept.
    rejection: Option<Rejection>,
}

impl Answer {
    /// The turn so far, ended on a tool call that cannot be kept.
    fn rejected(self, cause: &'static str, detail: String) -> Answer {
        Answer {
            rejection: Some(Rejection { cause, detail }),
            ..self
        }
    }
}

impl Dialog<'_> {
    /// Alternates respondent and correspondent for `turns` assistant replies, starting
    /// from the instruction as the first user message. Before each follow-up answer the
    /// modifier may rewrite the respondent's prompt for the new question; `feedback` (a
    /// regeneration's note) always follows it.
    pub(super) async fn converse(
        &mut self,
        instruction: &Instruction,
        prompt: &ModifiedPrompt,
        feedback: &str,
        turns: u32,
    ) -> Result<Conversed, DialogError> {
        let mut conversed = Conversed {
            dialog: vec![Message::user(instruction.text.as_str())],
            truncated: false,
            rejection: None,
            prompt: prompt.clone(),
        };
        for turn in 1..=turns {
            let system = format!("{}{feedback}", conversed.prompt.system_prompt);
            let answer = self.respond(&system, &conversed.dialog).await?;
            conversed.truncated |= answer.truncated;
            conversed.dialog.extend(answer.messages);
            if answer.rejection.is_some() {
                conversed.rejection = answer.rejection;
                return Ok(conversed);
            }
            if turn == turns {
                break;
            }
            let text = self.follow_up(&conversed.dialog).await?;
            if let Some(modifier) = &self.run.modifier
                && let Some(next) = modifier
                    .follow_up(
                        &self.run.respondent_prompt,
                        instruction,
                        &conversed.prompt,
                        &text,
                    )
                    .await
                    .map_err(DialogError::Modifier)?
            {
                conversed.prompt = next;
            }
            conversed.dialog.push(Message::user(text));
        }
        Ok(conversed)
    }

    /// The simulated user's next message.
    pub(super) async fn follow_up(&mut self, dialog: &[Message]) -> Result<String, DialogError> {
        let run = self.run;
        let system = &run.correspondent_system;
        let role = TurnRole::Correspondent;
        self.hook(role, system, dialog, Hook::Before).await?;
        let request = correspondent_request(system, dialog, run.correspondent_sampling)
            .cache_key(cache_key(&run.run_id, "c", system));
        let reply = run
            .correspondent
            .chat(request)
            .await
            .map_err(DialogError::Correspondent)?;
        self.spent += Spent::one(reply.usage);
        let text = reply.message.content.trim();
        if text.is_empty() {
            return Err(DialogError::EmptyReply("correspondent"));
        }
        self.hook(role, system, dialog, Hook::AfterText(text))
            .await?;
        Ok(text.to_owned())
    }

    /// Asks the respondent to answer `dialog`. While it calls tools, each call is
    /// checked (a bad one is discarded and asked again, [`MAX_TOOL_REASKS`] times),
    /// answered by the executor, and the respondent asked again, for at most
    /// `max_rounds` rounds.
    async fn respond(&mut self, system: &str, dialog: &[Message]) -> Result<Answer, DialogError> {
        let run = self.run;
        let tools = &run.tools;
        let mut answer = Answer::default();
        let (mut rounds, mut reasks) = (0, 0);
        let mut note = String::new();
        loop {
            let so_far: Vec<Message> = dialog.iter().chain(&answer.messages).cloned().collect();
            let (reply, truncated) = self
                .ask_respondent(&format!("{system}{note}"), so_far)
                .await?;
            answer.truncated |= truncated;
            if reply.tool_calls.is_empty() {
                answer.messages.push(reply);
                return Ok(answer);
            }
            let called = match check_tool_calls(&tools.specs, &reply) {
                Ok(called) => called,
                Err(problem) if reasks >= MAX_TOOL_REASKS => {
                    return Ok(answer.rejected("invalid_tool_call", problem));
                }
                Err(problem) => {
                    reasks += 1;
                    self.counts.rejections.push("tool_call_reasked");
                    tracing::debug!(%problem, "bad tool call discarded; asking the respondent again");
                    note = format!(
                        "\n\nYour previous reply was discarded because of this tool call error: {problem}. Call only the tools offered, with arguments that match their parameters, or answer in text."
                    );
                    continue;
                }
            };
            note.clear();
            if rounds >= tools.max_rounds {
                let detail =
                    format!("the assistant still called tools after {rounds} rounds in one turn");
                return Ok(answer.rejected("too_many_tool_rounds", detail));
            }
            rounds += 1;
            self.call_tools(called, reply, dialog, &mut answer.messages)
                .await?;
        }
    }

    /// One respondent reply to `so_far`, as an assistant message, and whether it
    /// stopped at the token limit.
    async fn ask_respondent(
        &mut self,
        system: &str,
        so_far: Vec<Message>,
    ) -> Result<(Message, bool), DialogError> {
        let run = self.run;
        let role = TurnRole::Respondent;
        self.hook(role, system, &so_far, Hook::Before).await?;
        let request = respondent_request(system, &so_far, run.respondent_sampling)
            .tools(run.tools.specs.clone())
            .cache_key(cache_key(&run.run_id, "r", system));
        let reply = run
            .respondent
            .chat(request)
            .await
            .map_err(DialogError::Respondent)?;
        self.spent += Spent::one(reply.usage);
        let message = Message {
            role: Role::Assistant,
            ..reply.message
        };
        if message.content.trim().is_empty() && message.tool_calls.is_empty() {
            return Err(DialogError::EmptyReply("respondent"));
        }
        self.hook(role, system, &so_far, Hook::AfterReply(&message))
            .await?;
        Ok((message, reply.finish_reason == Some(FinishReason::Length)))
    }

    /// Calls the run's [`TurnHooks`](crate::TurnHooks), if any, around one completion
    /// of `role` over `messages`; a hook's error fails the attempt.
    async fn hook(
        &self,
        role: TurnRole,
        system: &str,
        messages: &[Message],
        when: Hook<'_>,
    ) -> Result<(), DialogError> {
        let Some(hooks) = &self.run.hooks else {
            return Ok(());
        };
        let users = messages.iter().filter(|m| m.role == Role::User).count() as u32;
        let id = row_id(&self.run.run_id, self.index);
        let view = TurnView {
            dialog_id: &id,
            index: self.index,
            role,
            // A follow-up opens the next turn; a reply belongs to the last question.
            turn: if role == TurnRole::Correspondent {
                users + 1
            } else {
                users.max(1)
            },
            system_prompt: system,
            messages,
        };
        let (stage, result): (&'static str, Result<(), HookError>) = match (role, when) {
            (TurnRole::Correspondent, Hook::Before) => (
                "before_correspondent",
                hooks.before_correspondent(&view).await,
            ),
            (TurnRole::Respondent, Hook::Before) => {
                ("before_respondent", hooks.before_respondent(&view).await)
            }
            (_, Hook::AfterText(text)) => (
                "after_correspondent",
                hooks.after_correspondent(&view, text).await,
            ),
            (_, Hook::AfterReply(reply)) => (
                "after_respondent",
                hooks.after_respondent(&view, reply).await,
            ),
        };
        result.map_err(|error| DialogError::Hook { stage, error })
    }

    /// Keeps the respondent's tool-calling `reply`, then each call's result from the
    /// executor, in `messages`.
    async fn call_tools(
        &mut self,
        called: Vec<&ToolSpec>,
        reply: Message,
        dialog: &[Message],
        messages: &mut Vec<Message>,
    ) -> Result<(), DialogError> {
        let Some(executor) = &self.run.tools.executor else {
            return Err(DialogError::Tool(StrategyError::Config(
                "tools are offered but nothing answers their calls".to_owned(),
            )));
        };
        let calls = reply.tool_calls.clone();
        messages.push(reply);
        for (tool, call) in called.into_iter().zip(calls) {
            let so_far: Vec<Message> = dialog.iter().chain(messages.iter()).cloned().collect();
            let output = executor
                .execute(tool, &call, &so_far)
                .await
                .map_err(DialogError::Tool)?;
            self.spent += output.spent();
            messages.push(Message::tool(call.id.clone(), output.content));
        }
        Ok(())
    }
}

/// The offered tool of each call in `reply`, or what is wrong with the first bad call.
fn check_tool_calls<'t>(
    specs: &'t [ToolSpec],
    reply: &Message,
) -> Result<Vec<&'t ToolSpec>, String> {
    reply
        .tool_calls
        .iter()
        .map(|call| validate_tool_call(specs, call).map(|(tool, _)| tool))
        .collect()
}

/// The prompt-cache key of a request: requests of one run and role with the same system
/// prompt (the respondent's carries its document) share a prefix, so the provider can
/// route them to the same cache. The prompt is hashed (stably, so a resumed run keeps
/// its keys) to keep the key short.
pub(super) fn cache_key(run_id: &str, role: &str, system: &str) -> String {
    format!(
        "{run_id}/{role}/{:016x}",
        afterimage_core::fnv1a(system.as_bytes())
    )
}

pub(super) fn respondent_request(
    system: &str,
    dialog: &[Message],
    sampling: Sampling,
) -> ChatRequest {
    let mut messages = Vec::with_capacity(dialog.len() + 1);
    messages.push(Message::system(system));
    messages.extend(dialog.iter().cloned());
    sampling.apply(ChatRequest::new(messages))
}

/// The dialog seen from the simulated user's side: its own messages are `assistant`,
/// the assistant's replies are `user`. A short opening note comes first because
/// chat APIs expect a conversation to open with a user turn.
fn correspondent_request(system: &str, dialog: &[Message], sampling: Sampling) -> ChatRequest {
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
    sampling.apply(ChatRequest::new(messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correspondent_sees_the_whole_dialog_from_the_user_side() {
        let dialog = vec![
            Message::user("first question"),
            Message::assistant("answer one"),
        ];
        let sampling = Sampling {
            temperature: 0.7,
            max_tokens: Some(64),
        };
        let request = correspondent_request("be a user", &dialog, sampling);
        assert_eq!(
            (request.temperature, request.max_tokens),
            (Some(0.7), Some(64))
        );
        let roles: Vec<Role> = request.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::System, Role::User, Role::Assistant, Role::User]
        );
        assert_eq!(request.messages[2].content, "first question");
        assert_eq!(request.messages[3].content, "answer one");
    }

    #[test]
    fn cache_keys_follow_the_run_the_role_and_the_system_prompt() {
        let doc_a = cache_key("run-1", "r", "You help. Document A");
        assert_eq!(doc_a, cache_key("run-1", "r", "You help. Document A"));
        assert!(doc_a.starts_with("run-1/r/"));
        assert_ne!(doc_a, cache_key("run-1", "r", "You help. Document B"));
        assert_ne!(doc_a, cache_key("run-1", "c", "You help. Document A"));
        assert_ne!(doc_a, cache_key("run-2", "r", "You help. Document A"));
    }
}
