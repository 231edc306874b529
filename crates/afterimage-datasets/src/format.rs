//! The export formats: one row in, zero or more training records out.
//!
//! Records are typed structs rather than `json!` maps so keys come out in the order
//! the fine-tuning tools document them (serde_json sorts map keys).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use afterimage_core::{ConversationRow, Message, Role, ToolCall};
use serde::Serialize;

use crate::DatasetError;

/// A training-data format a row can be exported to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExportFormat {
    /// OpenAI chat fine-tuning: `{messages}`, tool calls and tool messages kept
    /// (`reasoning_content` is left out: the fine-tuning API does not take it).
    OpenAi,
    /// ShareGPT as axolotl and LLaMA-Factory read it: `{conversations: [{from, value}]}`.
    ShareGpt,
    /// Alpaca: `{instruction, input, output}`, the first exchange (or every one).
    Alpaca,
    /// LLaMA-Factory's Alpaca with history: `{instruction, input, output, history, system}`.
    LlamaFactory,
    /// The stored row, unchanged.
    Raw,
    /// Preference pairs from judged dialogs with the same first question (TRL's
    /// conversational `{prompt, chosen, rejected}`); see [`FormatOptions::min_score_gap`].
    Dpo,
}

impl ExportFormat {
    /// Every format, in the order `--list-formats` shows them.
    pub const ALL: [ExportFormat; 6] = [
        ExportFormat::OpenAi,
        ExportFormat::ShareGpt,
        ExportFormat::Alpaca,
        ExportFormat::LlamaFactory,
        ExportFormat::Raw,
        ExportFormat::Dpo,
    ];

    /// The name used on the command line and in file names.
    pub fn name(self) -> &'static str {
        match self {
            ExportFormat::OpenAi => "openai",
            ExportFormat::ShareGpt => "sharegpt",
            ExportFormat::Alpaca => "alpaca",
            ExportFormat::LlamaFactory => "llama_factory",
            ExportFormat::Raw => "raw",
            ExportFormat::Dpo => "dpo",
        }
    }

    /// One line saying what the format writes.
    pub fn description(self) -> &'static str {
        match self {
            ExportFormat::OpenAi => {
                "OpenAI chat fine-tuning {messages}; tool_calls and tool messages kept; skips rows without an assistant reply"
            }
            ExportFormat::ShareGpt => {
                "{conversations: [{from: human|gpt|system|function_call|observation, value}]} for axolotl and LLaMA-Factory"
            }
            ExportFormat::Alpaca => {
                "{instruction, input, output}: the first exchange, or one record per exchange with --split-turns; skips rows with tool calls"
            }
            ExportFormat::LlamaFactory => {
                "{instruction, input, output, history, system}: the last exchange with the earlier ones as history; skips rows with tool calls"
            }
            ExportFormat::Raw => "the stored row, unchanged",
            ExportFormat::Dpo => {
                "{prompt, chosen, rejected} message lists: per first question, the best against the worst final_score (gap --min-score-gap, 0.2); needs judged rows"
            }
        }
    }

    /// The format with this name (`messages` and `oumi`, upstream's names for the same
    /// `{messages}` shape, are accepted for `openai`).
    pub fn from_name(name: &str) -> Option<ExportFormat> {
        match name.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "openai" | "messages" | "oumi" => Some(ExportFormat::OpenAi),
            "sharegpt" => Some(ExportFormat::ShareGpt),
            "alpaca" => Some(ExportFormat::Alpaca),
            "llama_factory" | "llamafactory" => Some(ExportFormat::LlamaFactory),
            "raw" => Some(ExportFormat::Raw),
            "dpo" => Some(ExportFormat::Dpo),
            _ => None,
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ExportFormat {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExportFormat::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = ExportFormat::ALL.iter().map(|f| f.name()).collect();
            DatasetError::Invalid(format!(
                "unknown export format `{s}`; the formats are {}",
                names.join(", ")
            ))
        })
    }
}

/// Per-format choices.
#[derive(Debug, Clone, Default)]
pub struct FormatOptions {
    /// A system message to put first (replacing none of the row's own).
    pub system_prompt: Option<String>,
    /// Alpaca: one record per user/assistant exchange instead of the first only.
    pub split_turns: bool,
    /// DPO: the least score difference between the chosen and the rejected dialog
    /// (`None`: upstream's 0.2).
    pub min_score_gap: Option<f64>,
}

/// Why a row was left out of a format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SkipReason {
    /// The row has no assistant reply to learn from.
    NoAssistantReply,
    /// The format cannot express tool calls.
    ToolCalls,
    /// DPO: the row has no judge score.
    NoScore,
    /// DPO: no other scored row has the same first question, or the row scored
    /// between its group's best and worst.
    Unpaired,
    /// DPO: the group's best and worst scores are closer than the minimum gap.
    SmallGap,
}

impl SkipReason {
    /// A short human phrase.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoAssistantReply => "no assistant reply",
            SkipReason::ToolCalls => "tool calls the format cannot express",
            SkipReason::NoScore => "no final_score",
            SkipReason::Unpaired => {
                "no pair (alone with its first question, or neither best nor worst)"
            }
            SkipReason::SmallGap => "best and worst closer than the minimum score gap",
        }
    }
}

/// Converts one row to the records `format` writes for it, each as one line of JSON
/// with keys in the order the tools document (a whole row or nothing).
pub fn convert(
    format: ExportFormat,
    row: &ConversationRow,
    options: &FormatOptions,
) -> Result<Vec<String>, SkipReason> {
    let has_reply = row.conversations.iter().any(|m| {
        m.role == Role::Assistant && (!m.content.trim().is_empty() || !m.tool_calls.is_empty())
    });
    if format != ExportFormat::Raw && !has_reply {
        return Err(SkipReason::NoAssistantReply);
    }
    match format {
        ExportFormat::Raw => Ok(vec![to_json(row)]),
        ExportFormat::OpenAi => Ok(vec![to_json(&openai(row, options))]),
        ExportFormat::ShareGpt => Ok(vec![to_json(&sharegpt(row, options))]),
        ExportFormat::Alpaca => Ok(alpaca(row, options)?.iter().map(to_json).collect()),
        ExportFormat::LlamaFactory => Ok(vec![to_json(&llama_factory(row, options)?)]),
        // Pairs come from groups of rows (`export` builds them); one row is no pair.
        ExportFormat::Dpo => Err(SkipReason::Unpaired),
    }
}

fn to_json<T: Serialize>(record: &T) -> String {
    // Serialising these plain structs cannot fail (string keys, no custom impls).
    serde_json::to_string(record).unwrap_or_default()
}

fn has_tools(row: &ConversationRow) -> bool {
    row.conversations
        .iter()
        .any(|m| !m.tool_calls.is_empty() || m.role == Role::Tool)
}

fn system_text(row: &ConversationRow, options: &FormatOptions) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    if let Some(prompt) = options.system_prompt.as_deref() {
        parts.push(prompt);
    }
    parts.extend(
        row.conversations
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str()),
    );
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

// ---- openai ----

#[derive(Serialize)]
struct OpenAiRecord<'a> {
    messages: Vec<OpenAiMessage<'a>>,
}

#[derive(Serialize)]
struct OpenAiMessage<'a> {
    role: &'static str,
    /// `null` on an assistant message that only calls tools, as OpenAI sends it.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[ToolCall]>::is_empty")]
    tool_calls: &'a [ToolCall],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

fn openai<'a>(row: &'a ConversationRow, options: &'a FormatOptions) -> OpenAiRecord<'a> {
    let mut messages = Vec::with_capacity(row.conversations.len() + 1);
    if let Some(prompt) = options.system_prompt.as_deref() {
        messages.push(OpenAiMessage {
            role: "system",
            content: Some(prompt),
            tool_calls: &[],
            tool_call_id: None,
        });
    }
    for m in &row.conversations {
        let content =
            if m.role == Role::Assistant && !m.tool_calls.is_empty() && m.content.is_empty() {
                None
            } else {
                Some(m.content.as_str())
            };
        messages.push(OpenAiMessage {
            role: m.role.as_str(),
            content,
            tool_calls: &m.tool_calls,
            tool_call_id: m.tool_call_id.as_deref(),
        });
    }
    OpenAiRecord { messages }
}

// ---- sharegpt ----

#[derive(Serialize)]
struct ShareGptRecord {
    conversations: Vec<ShareGptTurn>,
}

#[derive(Serialize)]
struct ShareGptTurn {
    from: &'static str,
    value: String,
}

/// `{"name", "arguments"}` with the arguments as JSON (LLaMA-Factory's shape), or as a
/// string when the model wrote arguments that are not JSON. Valid arguments are
/// spliced in as written, so their key order survives.
fn call_json(call: &ToolCall) -> String {
    let arguments = call.function.arguments.trim();
    let arguments = if serde_json::from_str::<serde::de::IgnoredAny>(arguments).is_ok() {
        arguments.to_owned()
    } else {
        to_json(&arguments)
    };
    format!(
        "{{\"name\":{},\"arguments\":{arguments}}}",
        to_json(&call.function.name)
    )
}

fn sharegpt(row: &ConversationRow, options: &FormatOptions) -> ShareGptRecord {
    let mut turns: Vec<ShareGptTurn> = Vec::new();
    if let Some(system) = system_text(row, options) {
        turns.push(ShareGptTurn {
            from: "system",
            value: system,
        });
    }
    // Tool results that answer one assistant message are gathered into one
    // observation, since both readers expect human/observation and
    // gpt/function_call to alternate.
    let mut observations: Vec<&Message> = Vec::new();
    let flush = |observations: &mut Vec<&Message>, turns: &mut Vec<ShareGptTurn>| {
        let value = match observations.as_slice() {
            [] => return,
            [one] => one.content.clone(),
            many => to_json(&many.iter().map(|m| m.content.as_str()).collect::<Vec<_>>()),
        };
        turns.push(ShareGptTurn {
            from: "observation",
            value,
        });
        observations.clear();
    };
    for m in &row.conversations {
        if m.role == Role::Tool {
            observations.push(m);
            continue;
        }
        flush(&mut observations, &mut turns);
        let (from, value) = match m.role {
            Role::System => continue,
            Role::User => ("human", m.content.clone()),
            Role::Assistant if m.tool_calls.is_empty() => ("gpt", m.content.clone()),
            // The text an assistant says alongside a call ("Let me check") has no
            // place in this format: the call is the turn.
            Role::Assistant => {
                let calls: Vec<String> = m.tool_calls.iter().map(call_json).collect();
                let value = match calls.as_slice() {
                    [one] => one.clone(),
                    _ => format!("[{}]", calls.join(",")),
                };
                ("function_call", value)
            }
            Role::Tool => continue,
        };
        // Upstream merges consecutive messages of one speaker; so do we.
        match turns.last_mut() {
            Some(last) if last.from == from && matches!(from, "human" | "gpt") => {
                last.value.push_str("\n\n");
                last.value.push_str(&value);
            }
            _ => turns.push(ShareGptTurn { from, value }),
        }
    }
    flush(&mut observations, &mut turns);
    ShareGptRecord {
        conversations: turns,
    }
}

// ---- alpaca and llama_factory ----

#[derive(Serialize)]
struct AlpacaRecord<'a> {
    instruction: Cow<'a, str>,
    input: &'a str,
    output: &'a str,
}

#[derive(Serialize)]
struct LlamaFactoryRecord<'a> {
    instruction: Cow<'a, str>,
    input: &'a str,
    output: &'a str,
    history: Vec<(Cow<'a, str>, &'a str)>,
    system: String,
}

/// The (user, assistant) exchanges of a tool-free row. Consecutive user messages are
/// joined (as upstream merges them); a question with no reply (trailing) is left out.
fn exchanges(row: &ConversationRow) -> Vec<(Cow<'_, str>, &str)> {
    let mut pairs = Vec::new();
    let mut question: Option<Cow<'_, str>> = None;
    for m in &row.conversations {
        match m.role {
            Role::User => {
                question = Some(match question.take() {
                    Some(q) => Cow::Owned(format!("{q}\n\n{}", m.content)),
                    None => Cow::Borrowed(m.content.as_str()),
                });
            }
            Role::Assistant => {
                if let Some(q) = question.take() {
                    pairs.push((q, m.content.as_str()));
                }
            }
            Role::System | Role::Tool => {}
        }
    }
    pairs
}

fn alpaca<'a>(
    row: &'a ConversationRow,
    options: &FormatOptions,
) -> Result<Vec<AlpacaRecord<'a>>, SkipReason> {
    if has_tools(row) {
        return Err(SkipReason::ToolCalls);
    }
    let pairs = exchanges(row);
    if pairs.is_empty() {
        return Err(SkipReason::NoAssistantReply);
    }
    let take = if options.split_turns { pairs.len() } else { 1 };
    Ok(pairs
        .into_iter()
        .take(take)
        .map(|(instruction, output)| AlpacaRecord {
            instruction,
            input: &row.instruction_context,
            output,
        })
        .collect())
}

fn llama_factory<'a>(
    row: &'a ConversationRow,
    options: &FormatOptions,
) -> Result<LlamaFactoryRecord<'a>, SkipReason> {
    if has_tools(row) {
        return Err(SkipReason::ToolCalls);
    }
    let mut pairs = exchanges(row);
    let Some((instruction, output)) = pairs.pop() else {
        return Err(SkipReason::NoAssistantReply);
    };
    Ok(LlamaFactoryRecord {
        instruction,
        input: &row.instruction_context,
        output,
        history: pairs,
        system: system_text(row, options).unwrap_or_default(),
    })
}
