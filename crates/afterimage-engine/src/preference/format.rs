//! A preference pair and the training formats it is written in.

use std::fmt;

use afterimage_core::{Message, Role, Usage};
use serde_json::{Value, json};

use super::PairStrategy;

/// One kept preference pair: the shared conversation, every scored candidate answer,
/// and which of them are chosen and rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    /// `<run_id>-<index>`, stable across `--resume`.
    pub id: String,
    /// The assistant's system prompt (after the modifier: documents, retrieved chunks).
    pub system_prompt: String,
    /// The conversation the candidates answer, ending with a user message: the first
    /// question alone, or a simulated dialog with `multi_turn`.
    pub history: Vec<Message>,
    /// Every candidate, in the order they were asked.
    pub candidates: Vec<Candidate>,
    /// Index of the chosen (highest-scoring) candidate.
    pub chosen: usize,
    /// Index of the rejected (lowest-scoring) candidate.
    pub rejected: usize,
    /// How the candidates were made different.
    pub strategy: PairStrategy,
    /// The primary (respondent) model.
    pub model: String,
    /// The documents the question was about.
    pub context_ids: Vec<String>,
    /// The persona that asked, if any.
    pub persona: Option<String>,
    /// Model requests the pair took (question, prefix, candidates, judge).
    pub requests: u32,
    /// Tokens the pair took.
    pub usage: Usage,
}

/// One candidate answer and its score.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// The variant that produced it (`temperature_0.1`, `enhanced`, `secondary_model`...).
    pub label: String,
    /// The model that wrote it.
    pub model: String,
    /// The temperature it was asked at.
    pub temperature: f32,
    /// The answer.
    pub text: String,
    /// The judge's overall score, 0 to 1.
    pub score: f64,
}

impl PreferencePair {
    /// The chosen candidate.
    pub fn chosen(&self) -> &Candidate {
        &self.candidates[self.chosen.min(self.candidates.len().saturating_sub(1))]
    }

    /// The rejected candidate.
    pub fn rejected(&self) -> &Candidate {
        &self.candidates[self.rejected.min(self.candidates.len().saturating_sub(1))]
    }

    /// Chosen score minus rejected score.
    pub fn gap(&self) -> f64 {
        self.chosen().score - self.rejected().score
    }

    /// The whole pair, every candidate's answer included (the log's line).
    pub fn to_json(&self) -> Value {
        let candidates: Vec<Value> = self
            .candidates
            .iter()
            .map(|c| {
                json!({"label": c.label, "model": c.model, "temperature": c.temperature, "score": c.score, "response": c.text})
            })
            .collect();
        json!({
            "id": self.id,
            "system_prompt": self.system_prompt,
            "history": self.history.iter().map(message).collect::<Vec<_>>(),
            "candidates": candidates,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "metadata": self.metadata(),
        })
    }

    /// The last user message: what the candidates answer.
    fn question(&self) -> &str {
        self.history
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str())
    }

    /// What every format carries besides its own columns.
    fn metadata(&self) -> Value {
        let (chosen, rejected) = (self.chosen(), self.rejected());
        let scores: Vec<Value> = self
            .candidates
            .iter()
            .map(|c| {
                json!({"label": c.label, "model": c.model, "temperature": c.temperature, "score": c.score})
            })
            .collect();
        json!({
            "strategy": self.strategy.name(),
            "model": self.model,
            "chosen_label": chosen.label,
            "rejected_label": rejected.label,
            "chosen_model": chosen.model,
            "rejected_model": rejected.model,
            "chosen_score": chosen.score,
            "rejected_score": rejected.score,
            "score_gap": round(self.gap()),
            "scores": scores,
            "context_id": self.context_ids.first(),
            "context_ids": self.context_ids,
            "persona": self.persona,
            "turns": self.history.iter().filter(|m| m.role == Role::User).count(),
            "requests": self.requests,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
        })
    }
}

/// The shape pairs are written in (in a config: `dpo`, `chat_dpo`, `ultrafeedback`,
/// `anthropic_hh`, `orpo`). Every row also has `id` and `metadata`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PairFormat {
    /// `{prompt, chosen, rejected}` as text, TRL's standard preference format; a
    /// multi-turn prompt is the dialog as `User:` / `Assistant:` paragraphs.
    #[default]
    Dpo,
    /// `{prompt, chosen, rejected}` as message lists, TRL's conversational format: the
    /// prompt holds the system message and the whole dialog before the last answer.
    ChatDpo,
    /// UltraFeedback-binarized columns: `prompt`, `chosen` and `rejected` as whole
    /// dialogs, `score_chosen`, `score_rejected`; plus `instruction` and every
    /// candidate in `completions` (whole responses, score, label).
    Ultrafeedback,
    /// Anthropic HH-RLHF: `chosen` and `rejected` as `\n\nHuman: ...\n\nAssistant: ...`
    /// transcripts of the whole dialog.
    AnthropicHh,
    /// `dpo` plus `chosen_score` and `rejected_score`.
    Orpo,
}

impl PairFormat {
    /// Every format, in the order the docs list them.
    pub const ALL: [PairFormat; 5] = [
        PairFormat::Dpo,
        PairFormat::ChatDpo,
        PairFormat::Ultrafeedback,
        PairFormat::AnthropicHh,
        PairFormat::Orpo,
    ];

    /// The name a config or flag uses.
    pub fn name(self) -> &'static str {
        match self {
            PairFormat::Dpo => "dpo",
            PairFormat::ChatDpo => "chat_dpo",
            PairFormat::Ultrafeedback => "ultrafeedback",
            PairFormat::AnthropicHh => "anthropic_hh",
            PairFormat::Orpo => "orpo",
        }
    }

    /// The format named `name`, if any.
    pub fn from_name(name: &str) -> Option<PairFormat> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// `pair` as one row of this format, with `id` and `metadata`.
    pub fn row(self, pair: &PreferencePair) -> Value {
        let mut row = match self {
            PairFormat::Dpo => dpo(pair),
            PairFormat::Orpo => {
                let mut row = dpo(pair);
                row["chosen_score"] = json!(pair.chosen().score);
                row["rejected_score"] = json!(pair.rejected().score);
                row
            }
            PairFormat::ChatDpo => json!({
                "prompt": prompt_messages(pair),
                "chosen": [assistant(&pair.chosen().text)],
                "rejected": [assistant(&pair.rejected().text)],
            }),
            PairFormat::Ultrafeedback => ultrafeedback(pair),
            PairFormat::AnthropicHh => json!({
                "chosen": hh(pair, &pair.chosen().text),
                "rejected": hh(pair, &pair.rejected().text),
            }),
        };
        row["id"] = json!(pair.id);
        row["metadata"] = pair.metadata();
        row
    }
}

impl fmt::Display for PairFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn dpo(pair: &PreferencePair) -> Value {
    let prompt = if pair.history.len() == 1 {
        pair.question().to_owned()
    } else {
        transcript(&pair.history, "User", "Assistant")
    };
    json!({
        "prompt": prompt,
        "chosen": pair.chosen().text,
        "rejected": pair.rejected().text,
    })
}

fn ultrafeedback(pair: &PreferencePair) -> Value {
    let dialog = |answer: &str| {
        let mut messages: Vec<Value> = pair.history.iter().map(message).collect();
        messages.push(assistant(answer));
        messages
    };
    let completions: Vec<Value> = pair
        .candidates
        .iter()
        .map(|c| json!({"response": c.text, "score": c.score, "label": c.label, "model": c.model}))
        .collect();
    json!({
        "prompt": pair.question(),
        "instruction": pair.question(),
        "chosen": dialog(&pair.chosen().text),
        "rejected": dialog(&pair.rejected().text),
        "score_chosen": pair.chosen().score,
        "score_rejected": pair.rejected().score,
        "completions": completions,
    })
}

/// The system message, then the dialog before the answer.
fn prompt_messages(pair: &PreferencePair) -> Vec<Value> {
    let mut messages = Vec::with_capacity(pair.history.len() + 1);
    if !pair.system_prompt.trim().is_empty() {
        messages.push(json!({"role": "system", "content": pair.system_prompt}));
    }
    messages.extend(pair.history.iter().map(message));
    messages
}

fn message(m: &Message) -> Value {
    let role = match m.role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    };
    json!({"role": role, "content": m.content})
}

fn assistant(text: &str) -> Value {
    json!({"role": "assistant", "content": text})
}

/// The dialog and then `answer` as HH-RLHF text: each turn after a blank line.
fn hh(pair: &PreferencePair, answer: &str) -> String {
    let mut out = String::new();
    for m in pair.history.iter().filter(|m| m.role != Role::Tool) {
        let who = if m.role == Role::User {
            "Human"
        } else {
            "Assistant"
        };
        out.push_str(&format!("\n\n{who}: {}", m.content.trim()));
    }
    out.push_str(&format!("\n\nAssistant: {}", answer.trim()));
    out
}

/// The dialog as `User:` / `Assistant:` paragraphs.
fn transcript(history: &[Message], user: &str, assistant: &str) -> String {
    history
        .iter()
        .filter(|m| m.role == Role::User || m.role == Role::Assistant)
        .map(|m| {
            let who = if m.role == Role::User {
                user
            } else {
                assistant
            };
            format!("{who}: {}", m.content.trim())
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

/// Three decimals: enough for a gap, short in a file.
pub(crate) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(history: Vec<Message>) -> PreferencePair {
        let candidate = |label: &str, text: &str, score| Candidate {
            label: label.to_owned(),
            model: "m".to_owned(),
            temperature: 0.5,
            text: text.to_owned(),
            score,
        };
        PreferencePair {
            id: "run-000001".to_owned(),
            system_prompt: "You help.".to_owned(),
            history,
            candidates: vec![candidate("a", "good", 0.9), candidate("b", "bad", 0.4)],
            chosen: 0,
            rejected: 1,
            strategy: PairStrategy::Prompt,
            model: "m".to_owned(),
            context_ids: vec!["doc".to_owned()],
            persona: None,
            requests: 5,
            usage: Usage::default(),
        }
    }

    #[test]
    fn every_format_has_its_columns_an_id_and_metadata() {
        let p = pair(vec![Message::user("q?")]);
        let columns = |f: PairFormat| -> Vec<String> {
            let row = f.row(&p);
            let mut keys: Vec<String> = row.as_object().unwrap().keys().cloned().collect();
            keys.sort();
            keys
        };
        assert_eq!(
            columns(PairFormat::Dpo),
            ["chosen", "id", "metadata", "prompt", "rejected"]
        );
        assert_eq!(
            columns(PairFormat::Orpo),
            [
                "chosen",
                "chosen_score",
                "id",
                "metadata",
                "prompt",
                "rejected",
                "rejected_score"
            ]
        );
        let dpo = PairFormat::Dpo.row(&p);
        assert_eq!(dpo["prompt"], "q?");
        assert_eq!(dpo["chosen"], "good");
        assert_eq!(dpo["metadata"]["score_gap"], 0.5);
        assert_eq!(dpo["metadata"]["chosen_label"], "a");
        let chat = PairFormat::ChatDpo.row(&p);
        assert_eq!(chat["prompt"][0]["role"], "system");
        assert_eq!(chat["rejected"][0]["content"], "bad");
        let hh = PairFormat::AnthropicHh.row(&p);
        assert_eq!(hh["chosen"], "\n\nHuman: q?\n\nAssistant: good");
        let uf = PairFormat::Ultrafeedback.row(&p);
        assert_eq!(uf["completions"][1]["response"], "bad");
        assert_eq!(uf["chosen"][1]["content"], "good");
        assert_eq!(uf["score_rejected"], 0.4);
    }

    #[test]
    fn a_multi_turn_prompt_keeps_the_whole_dialog() {
        let p = pair(vec![
            Message::user("one"),
            Message::assistant("two"),
            Message::user("three"),
        ]);
        assert_eq!(
            PairFormat::Dpo.row(&p)["prompt"],
            "User: one\n\nAssistant: two\n\nUser: three"
        );
        assert_eq!(PairFormat::ChatDpo.row(&p)["prompt"][3]["content"], "three");
        assert_eq!(PairFormat::Dpo.row(&p)["metadata"]["turns"], 2);
        assert_eq!(
            PairFormat::from_name("anthropic_hh"),
            Some(PairFormat::AnthropicHh)
        );
    }
}
