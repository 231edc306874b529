//! The stored conversation row, in Python afterimage's shape plus our additions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Message, Usage};

/// One generated dialog, as stored.
///
/// Field order is Python afterimage's (`conversations`, `metadata`,
/// `instruction_context`, `response_context`, `persona`, then `evaluation` and
/// `final_score` when judged), so existing downstream scripts keep working; `id` is ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRow {
    /// The messages, starting with the user's first question and alternating.
    pub conversations: Vec<Message>,
    /// Where the dialog came from.
    #[serde(default)]
    pub metadata: RowMetadata,
    /// The document text the question was drawn from (`""` when none).
    #[serde(default)]
    pub instruction_context: String,
    /// What the respondent was given to answer from (`null` without a modifier).
    #[serde(default)]
    pub response_context: Option<String>,
    /// The persona that asked, when personas were used.
    #[serde(default)]
    pub persona: Option<String>,
    /// The judge's verdict, when the dialog was judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// The judge's overall score in 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_score: Option<f64>,
    /// Stable dialog id: the run id and the dialog's index (`<run>-<index>`).
    #[serde(default)]
    pub id: String,
}

/// The row's `metadata` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RowMetadata {
    /// The first sampled document's id.
    #[serde(default)]
    pub context_id: Option<String>,
    /// Every sampled document's id.
    #[serde(default)]
    pub context_ids: Vec<String>,
    /// The persona's text, when personas were used.
    #[serde(default)]
    pub persona_name: Option<String>,
    /// The persona's layer (0 = drawn from the document).
    #[serde(default)]
    pub persona_generation_depth: Option<u32>,
    /// What instruction generators and prompt modifiers added (for example `retrieval`).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// How the dialog was made: models, tokens, attempts, timings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<GenerationInfo>,
}

/// `metadata.generation`: the record of how one dialog was produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationInfo {
    /// The run this dialog belongs to.
    pub run_id: String,
    /// Its index within the run.
    pub index: u64,
    /// The model that played the assistant.
    pub respondent_model: String,
    /// The model that played the user.
    pub correspondent_model: String,
    /// Assistant replies in the dialog.
    pub turns: u32,
    /// Every generation of the dialog, in order: the last kept one is the row (or
    /// the best one, when none passed the judge).
    #[serde(default, deserialize_with = "attempts_or_count")]
    pub attempts: Vec<AttemptInfo>,
    /// Model requests spent on this dialog (instruction share included).
    pub requests: u32,
    /// Tokens spent on this dialog.
    pub usage: Usage,
    /// When it finished, in milliseconds since the Unix epoch.
    pub finished_at_ms: u64,
    /// Wall time from start to stored, in milliseconds.
    pub elapsed_ms: u64,
    /// The seed that drove this dialog's random choices.
    pub seed: u64,
}

/// The largest plain attempt count a row may hold: far above any regeneration budget,
/// far below what would take memory (a count becomes that many records).
const MAX_ATTEMPT_COUNT: u32 = 1024;

/// Reads `attempts` as a list, or as the plain count earlier versions wrote.
fn attempts_or_count<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<AttemptInfo>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Attempts {
        List(Vec<AttemptInfo>),
        Count(u32),
    }
    Ok(match Attempts::deserialize(deserializer)? {
        Attempts::List(list) => list,
        Attempts::Count(n) if n <= MAX_ATTEMPT_COUNT => {
            vec![AttemptInfo::default(); n as usize]
        }
        // The fuzzer's find: a 4-byte number in a row file took gigabytes.
        Attempts::Count(n) => {
            return Err(serde::de::Error::custom(format!(
                "`attempts` is {n}, more than any run makes (at most {MAX_ATTEMPT_COUNT})"
            )));
        }
    })
}

/// One generation attempt of a dialog: what the checks and the judge said, and what it
/// cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    /// The judge's overall score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The grade of that score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grade: Option<Grade>,
    /// Tokens the attempt spent (dialog and judge).
    pub usage: Usage,
    /// Model requests the attempt made.
    pub requests: u32,
    /// The cheap check that rejected it, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected: Option<String>,
    /// Why the judge could not grade it, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge_error: Option<String>,
}

/// A judge's verdict on a dialog, as Python afterimage stores it:
/// one `{feedback, score}` per criterion and an `overall_grade`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Per-criterion scores (`coherence`, `factuality`, `grounding`, `helpfulness`,
    /// `relevance`, ...).
    #[serde(flatten)]
    pub criteria: BTreeMap<String, CriterionScore>,
    /// The grade band of the overall score.
    pub overall_grade: Grade,
}

/// One criterion's score and the judge's reason for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CriterionScore {
    /// Why the score is what it is.
    pub feedback: String,
    /// 0 (worst) to 1 (best).
    pub score: f64,
}

/// Grade bands of an overall score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grade {
    /// >= 0.88
    Perfect,
    /// >= 0.72
    Good,
    /// >= 0.52
    NeedsImprovement,
    /// >= 0.32
    Bad,
    /// below 0.32
    NotAcceptable,
}

impl Grade {
    /// The band a score falls in (Python afterimage's thresholds).
    pub fn from_score(score: f64) -> Grade {
        match score {
            s if s >= 0.88 => Grade::Perfect,
            s if s >= 0.72 => Grade::Good,
            s if s >= 0.52 => Grade::NeedsImprovement,
            s if s >= 0.32 => Grade::Bad,
            _ => Grade::NotAcceptable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_follow_python_order() {
        let row = ConversationRow {
            conversations: vec![Message::user("q"), Message::assistant("a")],
            metadata: RowMetadata {
                context_id: Some("d1".into()),
                context_ids: vec!["d1".into()],
                ..Default::default()
            },
            instruction_context: "doc".into(),
            response_context: Some("doc".into()),
            persona: None,
            evaluation: None,
            final_score: None,
            id: "run-0".into(),
        };
        let line = serde_json::to_string(&row).unwrap();
        assert_eq!(
            line,
            r#"{"conversations":[{"role":"user","content":"q","reasoning_content":null},{"role":"assistant","content":"a","reasoning_content":null}],"metadata":{"context_id":"d1","context_ids":["d1"],"persona_name":null,"persona_generation_depth":null},"instruction_context":"doc","response_context":"doc","persona":null,"id":"run-0"}"#
        );
        let back: ConversationRow = serde_json::from_str(&line).unwrap();
        assert_eq!(back, row);
    }

    #[test]
    fn a_plain_attempt_count_is_read_within_bounds() {
        let generation = |attempts: &str| {
            format!(
                r#"{{"run_id":"r","index":0,"respondent_model":"m","correspondent_model":"m","turns":1,"attempts":{attempts},"requests":1,"usage":{{"input_tokens":1,"output_tokens":1}},"finished_at_ms":0,"elapsed_ms":0,"seed":0}}"#
            )
        };
        let info: GenerationInfo = serde_json::from_str(&generation("3")).unwrap();
        assert_eq!(info.attempts.len(), 3);
        // A regression from the fuzzer: this count once allocated gigabytes.
        let err = serde_json::from_str::<GenerationInfo>(&generation("69684203")).unwrap_err();
        assert!(err.to_string().contains("more than any run makes"), "{err}");
    }

    #[test]
    fn reads_a_python_row_with_evaluation() {
        let line = r#"{"conversations":[{"role":"user","content":"q","reasoning_content":null}],"metadata":{"context_id":null,"context_ids":[],"persona_name":null,"persona_generation_depth":null,"retrieval":{"hits":[]}},"instruction_context":"","response_context":null,"persona":null,"evaluation":{"coherence":{"feedback":"ok","score":1.0},"overall_grade":"good"},"final_score":0.76}"#;
        let row: ConversationRow = serde_json::from_str(line).unwrap();
        assert_eq!(row.final_score, Some(0.76));
        assert!(row.metadata.extra.contains_key("retrieval"));
        assert_eq!(row.evaluation.unwrap().overall_grade, Grade::Good);
    }

    #[test]
    fn grade_bands() {
        assert_eq!(Grade::from_score(0.9), Grade::Perfect);
        assert_eq!(Grade::from_score(0.72), Grade::Good);
        assert_eq!(Grade::from_score(0.6), Grade::NeedsImprovement);
        assert_eq!(Grade::from_score(0.4), Grade::Bad);
        assert_eq!(Grade::from_score(0.1), Grade::NotAcceptable);
    }
}
