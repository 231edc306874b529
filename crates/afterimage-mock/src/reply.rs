//! What to answer, independent of the wire format: the conversation as (role, text)
//! pairs in, a text or a tool call out.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde_json::{Value, json};

use crate::schema_fill::{embedded_object, fill, fill_like, is_schema_like};
use crate::steered::{Steered, asked_count};
use crate::text::{
    Rng, TextGen, approx_tokens, collect_keywords, contains_ci, plays_user, requested_tag,
    word_count, writes_prompt,
};

/// The model id reported when a request names none, and the one each format's
/// model list shows.
pub(crate) const DEFAULT_MODEL: &str = "mock-model";

/// The `text` of a content part or block (all three formats call it that).
pub(crate) fn text_of(part: &Value) -> Option<&str> {
    part.get("text").and_then(Value::as_str)
}

/// Who wrote a piece of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    System,
    User,
    Assistant,
    Tool,
}

/// The conversation as text pieces borrowed from the parsed request body.
#[derive(Debug, Default)]
pub(crate) struct Prompt<'a> {
    parts: Vec<(Role, &'a str)>,
    /// Role of the last non-system message, even when it carried no text (a tool call).
    pub(crate) last_role: Option<Role>,
    /// Prompt cache breakpoints (Anthropic's `cache_control`), as counts of the parts
    /// before them.
    marks: Vec<usize>,
}

impl<'a> Prompt<'a> {
    /// Records a piece of text said by `role`.
    pub(crate) fn push(&mut self, role: Role, text: &'a str) {
        self.parts.push((role, text));
    }

    /// Records that a message by `role` happened (text or not).
    pub(crate) fn saw(&mut self, role: Role) {
        if role != Role::System {
            self.last_role = Some(role);
        }
    }

    /// Records an OpenAI-style `content`: a string or an array of `{type, text}` parts.
    pub(crate) fn push_content(&mut self, role: Role, content: Option<&'a Value>) {
        match content {
            Some(Value::String(s)) => self.push(role, s),
            Some(Value::Array(parts)) => {
                for text in parts.iter().filter_map(text_of) {
                    self.push(role, text);
                }
            }
            _ => {}
        }
    }

    /// True when the last turn returned a tool's result: the reply then answers in text,
    /// so a dialog goes call -> result -> answer.
    pub(crate) fn answers_tool_result(&self) -> bool {
        self.last_role == Some(Role::Tool)
    }

    fn texts(&self, role: Role) -> impl DoubleEndedIterator<Item = &'a str> + '_ {
        self.parts
            .iter()
            .filter(move |(r, _)| *r == role)
            .map(|(_, t)| *t)
    }

    fn last_text(&self, role: Role) -> Option<&'a str> {
        self.texts(role).rev().find(|t| !t.trim().is_empty())
    }

    fn last_turn_text(&self) -> Option<&'a str> {
        self.parts
            .iter()
            .rev()
            .find(|(r, t)| *r != Role::System && !t.trim().is_empty())
            .map(|(_, t)| *t)
    }

    /// Marks a prompt cache breakpoint after the parts pushed so far.
    pub(crate) fn mark(&mut self) {
        self.marks.push(self.parts.len());
    }

    /// Whether a breakpoint follows the first `parts` parts.
    pub(crate) fn is_marked(&self, parts: usize) -> bool {
        self.marks.contains(&parts)
    }

    /// Each prefix that ends after a part: how many parts, its tokens by the mock's
    /// estimate, and a hash of `scope` and the parts' roles and texts.
    pub(crate) fn prefixes<'s>(
        &'s self,
        scope: &'s str,
    ) -> impl Iterator<Item = (usize, u64, u64)> + 's {
        let mut hasher = DefaultHasher::new();
        scope.hash(&mut hasher);
        let mut words = 0;
        self.parts.iter().enumerate().map(move |(i, (role, text))| {
            (*role as u8, *text).hash(&mut hasher);
            words += word_count(text);
            (i + 1, approx_tokens(words), hasher.finish())
        })
    }

    /// Whitespace-separated words across the whole prompt.
    pub(crate) fn word_count(&self) -> usize {
        self.parts.iter().map(|(_, t)| word_count(t)).sum()
    }

    /// Keywords to build text from. With a `focus` text that offers a few, only those
    /// (an answer should be about the question); otherwise the turns newest first, then
    /// the system prompt. Longest first: long words are more often the topic's nouns.
    fn keywords(&self, focus: Option<&'a str>) -> Vec<&'a str> {
        const ENOUGH: usize = 3;
        const KEEP: usize = 24;
        let mut out = Vec::new();
        if let Some(text) = focus {
            collect_keywords(text, &mut out);
        }
        if out.len() < ENOUGH {
            for (role, text) in self.parts.iter().rev() {
                if *role != Role::System {
                    collect_keywords(text, &mut out);
                }
            }
            for text in self.texts(Role::System) {
                collect_keywords(text, &mut out);
            }
        }
        out.sort_by_key(|w| std::cmp::Reverse(w.len()));
        out.truncate(KEEP);
        out
    }
}

/// The kind of content the request asks for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Want<'a> {
    /// Free text.
    Text,
    /// JSON valid against this schema.
    Schema(&'a Value),
    /// Some JSON object, shape unspecified by the API (OpenAI `json_object`).
    AnyJson,
}

impl<'a> Want<'a> {
    /// JSON valid against `schema`, or any JSON object when the request names none.
    pub(crate) fn schema_or_any(schema: Option<&'a Value>) -> Self {
        schema.map_or(Want::AnyJson, Want::Schema)
    }
}

/// A tool the mock decided to call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ToolPick<'a> {
    /// The function's name.
    pub(crate) name: &'a str,
    /// Its parameters' JSON Schema, when declared.
    pub(crate) parameters: Option<&'a Value>,
}

/// The declared tool called `name` when there is one, else a random one. Every format
/// declares a tool's name in its `name` field.
pub(crate) fn named_or_random<'v>(
    tools: &[&'v Value],
    name: Option<&str>,
    rng: &mut Rng,
) -> Option<&'v Value> {
    name.and_then(|name| tools.iter().copied().find(|t| name_of(t) == Some(name)))
        .or_else(|| tools.get(rng.below(tools.len())).copied())
}

/// A declared tool's `name`.
pub(crate) fn name_of(tool: &Value) -> Option<&str> {
    tool.get("name").and_then(Value::as_str)
}

/// The mock's answer, before it is put into a wire format.
#[derive(Debug)]
pub(crate) enum Reply {
    /// A message.
    Text {
        content: String,
        reasoning: Option<String>,
    },
    /// A function call with JSON arguments.
    ToolCall { name: String, arguments: Value },
}

impl Reply {
    /// Whitespace-separated words the model "wrote" (for token counts).
    pub(crate) fn word_count(&self) -> usize {
        match self {
            Reply::Text { content, reasoning } => {
                word_count(content) + reasoning.as_deref().map_or(0, word_count)
            }
            Reply::ToolCall { arguments, .. } => word_count(&arguments.to_string()),
        }
    }

    /// Words of the reasoning alone.
    pub(crate) fn reasoning_word_count(&self) -> usize {
        match self {
            Reply::Text {
                reasoning: Some(reasoning),
                ..
            } => word_count(reasoning),
            _ => 0,
        }
    }
}

/// Everything that shapes one answer.
#[derive(Debug)]
pub(crate) struct Ask<'a> {
    pub(crate) prompt: &'a Prompt<'a>,
    pub(crate) want: Want<'a>,
    pub(crate) tool: Option<ToolPick<'a>>,
    pub(crate) thinking: bool,
    pub(crate) prose_instead_of_json: bool,
    /// Answer a JSON-schema request with JSON that breaks the schema.
    pub(crate) break_schema: bool,
    /// The sampling temperature asked for: at 0.85 and above, about two answers in three are
    /// one terse sentence, as a careless model's might be.
    pub(crate) temperature: Option<f64>,
}

/// Reasoning models by name, as served by DeepSeek and friends.
pub(crate) fn is_thinking_model(model: &str) -> bool {
    ["reasoner", "thinking", "r1"]
        .iter()
        .any(|p| contains_ci(model, p))
}

/// Answers `ask`, varied by request number `n` and its random stream `rng`.
pub(crate) fn answer(ask: &Ask<'_>, rng: Rng, n: u64) -> Reply {
    let prompt = ask.prompt;
    let plays_user = plays_user(prompt.texts(Role::System));
    let last_user = prompt.last_text(Role::User);
    // A simulated user reacts to whatever was said last; an assistant to the user.
    let focus = if plays_user {
        prompt.last_turn_text()
    } else {
        last_user
    };
    // Structured output (questions about a document, judge feedback) draws on the whole
    // prompt; free text on the message it answers.
    let structured =
        ask.tool.is_some() || (!ask.prose_instead_of_json && !matches!(ask.want, Want::Text));
    let keywords = prompt.keywords(if structured { None } else { focus });
    let mut text = TextGen::new(keywords, rng, n);
    // A steered instruction request is answered from the document's pool of questions.
    let steered = structured
        .then_some(last_user)
        .flatten()
        .and_then(Steered::read)
        .map(|steered| steered.reply(asked_count(prompt.texts(Role::System)), &mut text.rng));
    // The judge rates what the transcript's assistant said last: a terse answer
    // scores low, so preference pairs see real gaps.
    text.low_scores = structured && last_user.is_some_and(judges_a_terse_answer);

    if let Some(tool) = ask.tool {
        return call(tool, steered, &mut text);
    }

    if let Some(content) = steered.filter(|_| !ask.prose_instead_of_json) {
        return Reply::Text {
            content,
            reasoning: ask.thinking.then(|| text.reasoning()),
        };
    }
    let json = if ask.prose_instead_of_json {
        None
    } else {
        match ask.want {
            Want::Text => None,
            Want::Schema(schema) if ask.break_schema => {
                Some(broken(fill(schema, &mut text), schema))
            }
            Want::Schema(schema) => Some(fill(schema, &mut text)),
            Want::AnyJson => Some(any_json(prompt, &mut text, last_user)),
        }
    };
    let content = match json {
        Some(value) => value.to_string(),
        None => {
            let reply = if writes_prompt(prompt.texts(Role::System)) {
                text.user_system_prompt()
            } else if plays_user {
                text.follow_up()
            } else if terse(prompt, ask.temperature, &mut text) {
                text.sentence(0)
            } else {
                text.answer(last_user)
            };
            match prompt.texts(Role::System).find_map(requested_tag) {
                Some(tag) => format!("<{tag}>{reply}</{tag}>"),
                None => reply,
            }
        }
    };
    Reply::Text {
        content,
        reasoning: ask.thinking.then(|| text.reasoning()),
    }
}

/// `value` made invalid for `schema` the way models get it wrong: its first required
/// property left out, else a list where an object was asked for.
fn broken(mut value: Value, schema: &Value) -> Value {
    let first_required = schema
        .pointer("/required/0")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (first_required, value.as_object_mut()) {
        (Some(name), Some(object)) => {
            object.remove(&name);
            value
        }
        _ => Value::Array(vec![value]),
    }
}

/// A call of `tool`: the steered questions when it is asked for instructions (an
/// Anthropic schema comes as a forced tool), else arguments valid against its schema.
fn call(tool: ToolPick<'_>, steered: Option<String>, text: &mut TextGen<'_>) -> Reply {
    let asks_instructions = tool
        .parameters
        .is_some_and(|p| p.pointer("/properties/instructions").is_some());
    let arguments = steered
        .filter(|_| asks_instructions)
        .and_then(|json| serde_json::from_str(&json).ok())
        .unwrap_or_else(|| {
            tool.parameters
                .map_or_else(|| json!({}), |schema| fill(schema, text))
        });
    Reply::ToolCall {
        name: tool.name.to_string(),
        arguments,
    }
}

/// Whether the assistant answers in one short sentence: its system prompt asks for
/// that, or a high temperature made it careless (about two times in three).
fn terse(prompt: &Prompt<'_>, temperature: Option<f64>, text: &mut TextGen<'_>) -> bool {
    if prompt
        .texts(Role::System)
        .any(|s| contains_ci(s, "one short sentence"))
    {
        return true;
    }
    temperature.is_some_and(|t| t >= 0.85) && text.rng.next_f64() < 0.65
}

/// Whether `request` is a judge's transcript (`N. Assistant: ...` lines) whose last
/// assistant turn has fewer than 15 words.
fn judges_a_terse_answer(request: &str) -> bool {
    let Some(at) = request.rfind(". Assistant:") else {
        return false;
    };
    let answer = &request[at + ". Assistant:".len()..];
    word_count(answer) < 15
}

/// JSON without an API-level schema: follow a schema or example written into the
/// prompt (system messages first, then user messages newest first), else a generic object.
fn any_json(prompt: &Prompt<'_>, text: &mut TextGen<'_>, last_user: Option<&str>) -> Value {
    let found = prompt
        .texts(Role::System)
        .chain(prompt.texts(Role::User).rev())
        .find_map(embedded_object);
    match found {
        Some(schema) if is_schema_like(&schema) => fill(&schema, text),
        Some(example) => fill_like(&example, text),
        None => json!({ "response": text.answer(last_user) }),
    }
}
