//! An LLM judge: one structured-JSON model call scores a finished dialog on several
//! criteria.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use afterimage_core::{
    ChatModel, ChatRequest, ConversationRow, CriterionScore, Embedder, Evaluation, Evaluator,
    Grade, JsonSchema, Message, Role, StrategyError, Usage, Verdict, parse_lenient, snippet,
};
use async_trait::async_trait;
use serde::de::{Deserialize, Deserializer, Error as _};
use serde_json::{Map, Value, json};

use super::prompts::{
    DEFAULT_JUDGE_CRITERIA, DEFAULT_JUDGE_PROMPT, JUDGE_CORRECTION, JUDGE_CRITERION_DESCRIPTIONS,
};
use crate::template::fill;

/// Scores a dialog with one model call: a score in 0..=1 and a short feedback per
/// criterion, and their mean as the overall score.
///
/// The default criteria are [`DEFAULT_JUDGE_CRITERIA`]. The model sees the row's
/// `instruction_context` and `response_context` (when present) and the dialog as a
/// numbered transcript, and must answer with JSON matching a strict schema. An answer
/// that lacks a criterion or a numeric score gets one more chance; then the judge
/// fails with [`StrategyError::MalformedOutput`].
///
/// A criterion that does not apply is left out rather than scored: `grounding` when the
/// assistant was given no context. With an [`Embedder`](Self::embedder), three cosine
/// similarities join the criteria (`embedding_coherence`: question and answer;
/// `embedding_grounding`: context and answer; `embedding_relevance`: context and
/// question; the last two only with a context).
///
/// The [`Verdict`] carries the tokens and requests the judge spent, retry included.
pub struct LlmJudge {
    model: Arc<dyn ChatModel>,
    model_name: Option<String>,
    temperature: f32,
    max_tokens: Option<u32>,
    criteria: Vec<String>,
    descriptions: BTreeMap<String, String>,
    weights: BTreeMap<String, f64>,
    aggregation: Aggregation,
    embedder: Option<Arc<dyn Embedder>>,
    system_prompt: String,
}

/// How criterion scores combine into the overall score (in a config: `mean`, `min` or
/// `weighted_mean`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    /// The plain mean (the Python library's default).
    #[default]
    Mean,
    /// The lowest score: one bad criterion fails the dialog.
    Min,
    /// The mean weighted by [`LlmJudge::weight`] (1 for criteria without a weight).
    WeightedMean,
}

impl LlmJudge {
    /// A judge asking `model` with its default model name, at temperature 0.2, on the
    /// default criteria.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        LlmJudge {
            model,
            model_name: None,
            temperature: 0.2,
            max_tokens: None,
            criteria: DEFAULT_JUDGE_CRITERIA.map(str::to_owned).to_vec(),
            descriptions: BTreeMap::new(),
            weights: BTreeMap::new(),
            aggregation: Aggregation::Mean,
            embedder: None,
            system_prompt: DEFAULT_JUDGE_PROMPT.to_owned(),
        }
    }

    /// Adds a criterion of the user's own, with the explanation the judge is given
    /// (or replaces the explanation of an existing one).
    pub fn criterion(mut self, name: impl Into<String>, description: impl Into<String>) -> Self {
        let name = name.into().trim().to_owned();
        if name.is_empty() {
            return self;
        }
        if !self.criteria.iter().any(|c| c.eq_ignore_ascii_case(&name)) {
            self.criteria.push(name.clone());
        }
        self.descriptions
            .insert(name.to_lowercase(), description.into());
        self
    }

    /// The weight of a criterion in [`Aggregation::WeightedMean`] (default 1).
    pub fn weight(mut self, name: impl Into<String>, weight: f64) -> Self {
        self.weights
            .insert(name.into().to_lowercase(), weight.max(0.0));
        self
    }

    /// How scores combine (default: the mean).
    pub fn aggregation(mut self, aggregation: Aggregation) -> Self {
        self.aggregation = aggregation;
        self
    }

    /// Adds the embedding similarities to the scores.
    pub fn embedder(mut self, embedder: Arc<dyn Embedder>) -> Self {
        self.embedder = Some(embedder);
        self
    }

    /// The model name sent with each request (`None`: the client's default), so one
    /// client can judge with another model than it generates with.
    pub fn model_name(mut self, model_name: Option<String>) -> Self {
        self.model_name = model_name;
        self
    }

    /// Sampling temperature (default 0.2).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// Most tokens per answer (default: the endpoint's). Leave room for the JSON of
    /// every criterion: an answer cut short cannot be read.
    pub fn max_tokens(mut self, max_tokens: Option<u32>) -> Self {
        self.max_tokens = max_tokens;
        self
    }

    /// Replaces the criteria (trimmed; blanks and case-insensitive repeats dropped).
    ///
    /// The default criteria keep their built-in explanations; any other name is shown
    /// to the model as is, to be judged in its usual sense. At least one is needed.
    pub fn criteria<I, S>(mut self, criteria: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut kept: Vec<String> = Vec::new();
        for name in criteria {
            let name: String = name.into();
            let name = name.trim();
            if !name.is_empty() && !kept.iter().any(|k| k.eq_ignore_ascii_case(name)) {
                kept.push(name.to_owned());
            }
        }
        self.criteria = kept;
        self
    }

    /// Replaces the system prompt; `{criteria}` in it becomes one line per criterion
    /// and `{shape}` the JSON answer expected.
    pub fn system_prompt_template(mut self, template: impl Into<String>) -> Self {
        self.system_prompt = template.into();
        self
    }

    /// The criteria scored, in the order the model sees them.
    pub fn criteria_names(&self) -> &[String] {
        &self.criteria
    }

    fn request(&self, messages: Vec<Message>, criteria: &[String]) -> ChatRequest {
        let mut request = ChatRequest::new(messages)
            .temperature(self.temperature)
            .json_schema(judge_schema(criteria));
        request.model = self.model_name.clone();
        request.max_tokens = self.max_tokens;
        request
    }

    fn system_message(&self, criteria: &[String]) -> String {
        let lines: String = criteria
            .iter()
            .map(|name| format!("- {name}: {}", self.describe(name)))
            .collect::<Vec<_>>()
            .join("\n");
        fill(
            &self.system_prompt,
            &[("criteria", &lines), ("shape", &answer_shape(criteria))],
        )
    }

    /// The user's explanation of a criterion, the built-in one, or a generic one.
    fn describe(&self, name: &str) -> String {
        self.descriptions
            .get(&name.to_lowercase())
            .cloned()
            .unwrap_or_else(|| describe(name))
    }

    /// The criteria that apply to `row`: grounding needs a context to be grounded in.
    fn applicable(&self, row: &ConversationRow) -> Vec<String> {
        let has_context = row
            .response_context
            .as_deref()
            .is_some_and(|c| !c.trim().is_empty());
        self.criteria
            .iter()
            .filter(|name| has_context || !name.eq_ignore_ascii_case("grounding"))
            .cloned()
            .collect()
    }

    /// The embedding similarities of `row`, as extra criteria.
    async fn embedding_scores(
        &self,
        embedder: &dyn Embedder,
        row: &ConversationRow,
    ) -> Result<BTreeMap<String, CriterionScore>, StrategyError> {
        let questions: Vec<&str> = by_role(row, Role::User);
        let answers: Vec<&str> = by_role(row, Role::Assistant);
        let context = row.response_context.as_deref().map(str::trim).unwrap_or("");
        let mut texts: Vec<String> = Vec::new();
        texts.extend(questions.iter().map(|t| t.to_string()));
        texts.extend(answers.iter().map(|t| t.to_string()));
        if !context.is_empty() {
            texts.push(context.to_owned());
        }
        let vectors = embedder.embed(&texts).await?;
        if vectors.len() != texts.len() {
            return Err(StrategyError::MalformedOutput {
                message: format!(
                    "the embedder returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                ),
            });
        }
        let (q, rest) = vectors.split_at(questions.len());
        let (a, c) = rest.split_at(answers.len());
        let mut out = BTreeMap::new();
        let mut put = |name: &str, what: &str, pairs: Vec<f64>| {
            if !pairs.is_empty() {
                let score = (pairs.iter().sum::<f64>() / pairs.len() as f64).clamp(0.0, 1.0);
                out.insert(
                    name.to_owned(),
                    CriterionScore {
                        feedback: format!("mean cosine similarity of {what}"),
                        score,
                    },
                );
            }
        };
        put(
            "embedding_coherence",
            "each question and its answer",
            q.iter().zip(a).map(|(q, a)| cosine(q, a)).collect(),
        );
        if let Some(context) = c.first() {
            put(
                "embedding_grounding",
                "the context and each answer",
                a.iter().map(|a| cosine(context, a)).collect(),
            );
            put(
                "embedding_relevance",
                "the context and each question",
                q.iter().map(|q| cosine(context, q)).collect(),
            );
        }
        Ok(out)
    }

    fn verdict(
        &self,
        mut criteria: BTreeMap<String, CriterionScore>,
        extra: BTreeMap<String, CriterionScore>,
        usage: Usage,
        requests: u32,
    ) -> Verdict {
        criteria.extend(extra);
        let score = aggregate(self.aggregation, &self.weights, &criteria);
        Verdict {
            evaluation: Evaluation {
                criteria,
                overall_grade: Grade::from_score(score),
            },
            score,
            usage,
            requests,
        }
    }
}

impl std::fmt::Debug for LlmJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not derived: the system prompt is long, and a `Debug` line should stay short.
        f.debug_struct("LlmJudge")
            .field("model", &self.model.model_id())
            .field("model_name", &self.model_name)
            .field("temperature", &self.temperature)
            .field("max_tokens", &self.max_tokens)
            .field("criteria", &self.criteria)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Evaluator for LlmJudge {
    fn model_name(&self) -> Option<&str> {
        Some(
            self.model_name
                .as_deref()
                .unwrap_or_else(|| self.model.model_id()),
        )
    }

    async fn evaluate(&self, row: &ConversationRow) -> Result<Verdict, StrategyError> {
        let criteria = self.applicable(row);
        if criteria.is_empty() {
            return Err(StrategyError::Config(
                "the judge has no criterion that applies to this dialog".to_owned(),
            ));
        }
        let extra = match &self.embedder {
            Some(embedder) => self.embedding_scores(embedder.as_ref(), row).await?,
            None => BTreeMap::new(),
        };
        let mut messages = vec![
            Message::system(self.system_message(&criteria)),
            Message::user(judge_user_message(row)),
        ];
        let first = self
            .model
            .chat(self.request(messages.clone(), &criteria))
            .await?;
        let mut usage = first.usage;
        let answer = first.message.content;
        let problem = match read_scores(&answer, &criteria) {
            Ok(scores) => return Ok(self.verdict(scores, extra, usage, 1)),
            Err(problem) => problem,
        };
        tracing::debug!(
            %problem,
            answer = %snippet(&answer, 200),
            "judge answer unusable; asking once more"
        );
        messages.push(Message::assistant(answer));
        messages.push(Message::user(fill(
            JUDGE_CORRECTION,
            &[
                ("problem", &problem),
                ("names", &criteria.join(", ")),
                ("shape", &answer_shape(&criteria)),
            ],
        )));
        let second = self.model.chat(self.request(messages, &criteria)).await?;
        usage += second.usage;
        let answer = second.message.content;
        match read_scores(&answer, &criteria) {
            Ok(scores) => Ok(self.verdict(scores, extra, usage, 2)),
            Err(problem) => Err(StrategyError::MalformedOutput {
                message: format!(
                    "asked twice for scores on {}, but {problem}; the answer starts: {}",
                    criteria.join(", "),
                    snippet(answer.trim(), 200)
                ),
            }),
        }
    }
}

/// The overall score of `criteria` under `aggregation` (`weights` by lowercase name).
fn aggregate(
    aggregation: Aggregation,
    weights: &BTreeMap<String, f64>,
    criteria: &BTreeMap<String, CriterionScore>,
) -> f64 {
    let scores = || criteria.values().map(|c| c.score);
    let value = match aggregation {
        Aggregation::Mean => scores().sum::<f64>() / criteria.len().max(1) as f64,
        Aggregation::Min => scores().fold(1.0, f64::min),
        Aggregation::WeightedMean => {
            let weight = |name: &String| weights.get(&name.to_lowercase()).copied().unwrap_or(1.0);
            let total: f64 = criteria.keys().map(weight).sum();
            if total <= 0.0 {
                0.0
            } else {
                criteria
                    .iter()
                    .map(|(name, c)| c.score * weight(name))
                    .sum::<f64>()
                    / total
            }
        }
    };
    // Summing floats drifts in the last bits (three 0.7s average to 0.6999999999999998),
    // which could drop a dialog scored exactly on a band's edge into the band below.
    (value * 1e9).round() / 1e9
}

fn by_role(row: &ConversationRow, role: Role) -> Vec<&str> {
    row.conversations
        .iter()
        .filter(|m| m.role == role && !m.content.trim().is_empty())
        .map(|m| m.content.as_str())
        .collect()
}

/// Cosine similarity, 0 for a zero vector or mismatched lengths.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The built-in explanation of a default criterion, or a generic one.
fn describe(name: &str) -> String {
    JUDGE_CRITERION_DESCRIPTIONS
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(name))
        .map(|(_, description)| (*description).to_owned())
        .unwrap_or_else(|| format!("judge the conversation on {name}, in the usual sense."))
}

/// The structured-output schema: one required `{feedback, score}` object per criterion.
fn judge_schema(criteria: &[String]) -> JsonSchema {
    // Feedback comes before the score so that a model writing in order reasons first.
    let entry = json!({
        "type": "object",
        "properties": {
            "feedback": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["feedback", "score"],
        "additionalProperties": false
    });
    let properties: Map<String, Value> = criteria
        .iter()
        .map(|name| (name.clone(), entry.clone()))
        .collect();
    JsonSchema::new(
        "dialog_evaluation",
        json!({
            "type": "object",
            "properties": properties,
            "required": criteria,
            "additionalProperties": false
        }),
    )
}

/// The answer's shape as the prompts show it, one criterion per line.
fn answer_shape(criteria: &[String]) -> String {
    let lines: Vec<String> = criteria
        .iter()
        .map(|name| {
            // Through serde_json so that a custom name with quotes stays a valid key. The
            // score is a placeholder, not a number, so that no model copies it as a score.
            let key = Value::String(name.clone());
            format!(
                "  {key}: {{\"feedback\": \"one or two sentences\", \"score\": <number from 0 to 1>}}"
            )
        })
        .collect();
    format!("{{\n{}\n}}", lines.join(",\n"))
}

/// The judge's user message: the contexts that exist, then the numbered transcript.
fn judge_user_message(row: &ConversationRow) -> String {
    let instruction = row.instruction_context.trim();
    let response = row.response_context.as_deref().map(str::trim).unwrap_or("");
    let mut out = String::new();
    if !instruction.is_empty() && instruction == response {
        // The usual case (a context modifier passes the question's documents on):
        // showing the same text twice would double the prompt for nothing.
        out.push_str(
            "# Material\nThe user's questions were drawn from this material, and the assistant was given it to answer from.\n<context>\n",
        );
        out.push_str(instruction);
        out.push_str("\n</context>\n\n");
    } else {
        if !instruction.is_empty() {
            out.push_str(
                "# Material the user's questions were drawn from\n<instruction_context>\n",
            );
            out.push_str(instruction);
            out.push_str("\n</instruction_context>\n\n");
        }
        if response.is_empty() {
            out.push_str(
                "# Material the assistant was given\nNone: the assistant answered from its own knowledge.\n\n",
            );
        } else {
            out.push_str("# Material the assistant was given\n<response_context>\n");
            out.push_str(response);
            out.push_str("\n</response_context>\n\n");
        }
    }
    out.push_str("# Conversation\n");
    out.push_str(&transcript(&row.conversations));
    out
}

/// The dialog as numbered `User:` / `Assistant:` lines, blank-line separated.
///
/// Reasoning text is left out: the user never saw it, and it is not what is graded.
fn transcript(messages: &[Message]) -> String {
    if messages.is_empty() {
        return "(no messages)".to_owned();
    }
    let mut out = String::new();
    for (i, message) in messages.iter().enumerate() {
        if i > 0 {
            out.push_str("\n\n");
        }
        let label = match message.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool result",
            Role::System => "System",
        };
        let content = message.content.trim();
        let _ = write!(out, "{}. {label}:", i + 1);
        if !content.is_empty() {
            let _ = write!(out, " {content}");
        }
        for call in &message.tool_calls {
            let _ = write!(
                out,
                " [calls tool `{}` with {}]",
                call.function.name, call.function.arguments
            );
        }
        if content.is_empty() && message.tool_calls.is_empty() {
            out.push_str(" (empty message)");
        }
    }
    out
}

/// An object that looks like a judge answer: at least one value is an object with a
/// `score`.
///
/// Deserializing rejects every other value, so [`parse_lenient`] moves past a stray
/// `{}` in prose, or a wrapper such as `{"evaluation": {...}}`, to the scores inside.
#[derive(Debug)]
struct ScoreObject(Map<String, Value>);

impl<'de> Deserialize<'de> for ScoreObject {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        match value {
            Value::Object(map)
                if map
                    .values()
                    .any(|v| v.as_object().is_some_and(|o| o.contains_key("score"))) =>
            {
                Ok(ScoreObject(map))
            }
            _ => Err(D::Error::custom("not an object of criterion scores")),
        }
    }
}

/// A finite number, or a string holding one (some models quote numbers).
fn number(value: &Value) -> Option<f64> {
    let n = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    n.is_finite().then_some(n)
}

/// One score per criterion (clamped to 0..=1), or what is wrong with the answer.
fn read_scores(
    answer: &str,
    criteria: &[String],
) -> Result<BTreeMap<String, CriterionScore>, String> {
    let ScoreObject(map) = parse_lenient::<ScoreObject>(answer)
        .map_err(|_| "it holds no JSON object of criterion scores".to_owned())?;
    let mut scores = BTreeMap::new();
    let mut missing = Vec::new();
    let mut not_numbers = Vec::new();
    for name in criteria {
        // Keys are matched without regard to case: "Coherence" is still coherence.
        let entry = map
            .get(name)
            .or_else(|| {
                map.iter()
                    .find(|(key, _)| key.trim().eq_ignore_ascii_case(name))
                    .map(|(_, v)| v)
            })
            .and_then(Value::as_object);
        let Some(entry) = entry else {
            missing.push(name.as_str());
            continue;
        };
        let Some(score) = entry.get("score").and_then(number) else {
            not_numbers.push(name.as_str());
            continue;
        };
        let feedback = entry
            .get("feedback")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim()
            .to_owned();
        scores.insert(
            name.clone(),
            CriterionScore {
                feedback,
                score: score.clamp(0.0, 1.0),
            },
        );
    }
    let mut problems = Vec::new();
    if !missing.is_empty() {
        problems.push(format!("it has no entry for {}", missing.join(", ")));
    }
    if !not_numbers.is_empty() {
        problems.push(format!(
            "the score of {} is not a number",
            not_numbers.join(", ")
        ));
    }
    if problems.is_empty() {
        Ok(scores)
    } else {
        Err(problems.join(", and "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scores_are_read_clamped_and_matched_without_case() {
        let got = read_scores(
            r#"{"evaluation": {"Coherence": {"feedback": " ok ", "score": 1.4}, "grounding": {"score": "-0.2"}}}"#,
            &names(&["coherence", "grounding"]),
        )
        .unwrap();
        assert_eq!(got["coherence"].score, 1.0);
        assert_eq!(got["coherence"].feedback, "ok");
        assert_eq!(got["grounding"].score, 0.0);
        assert_eq!(got["grounding"].feedback, "");
    }

    #[test]
    fn problems_name_the_criteria() {
        let criteria = names(&["coherence", "factuality", "grounding"]);
        assert_eq!(
            read_scores(
                r#"{"coherence": {"feedback": "", "score": "high"}, "factuality": {"score": null}}"#,
                &criteria
            )
            .unwrap_err(),
            "it has no entry for grounding, and the score of coherence, factuality is not a number"
        );
        assert_eq!(
            read_scores("Looks fine {} to me.", &criteria).unwrap_err(),
            "it holds no JSON object of criterion scores"
        );
    }

    #[test]
    fn aggregation_is_exact_on_band_edges() {
        let scores = |values: &[f64]| -> BTreeMap<String, CriterionScore> {
            values
                .iter()
                .enumerate()
                .map(|(i, &score)| {
                    let feedback = String::new();
                    (format!("c{i}"), CriterionScore { feedback, score })
                })
                .collect()
        };
        let none = BTreeMap::new();
        let mean = |values: &[f64]| aggregate(Aggregation::Mean, &none, &scores(values));
        assert_eq!(mean(&[0.7; 3]), 0.7);
        assert_eq!(mean(&[0.72; 6]), 0.72);
        assert_eq!(Grade::from_score(mean(&[0.72; 6])), Grade::Good);
        assert_eq!(mean(&[0.88; 5]), 0.88);
        assert_eq!(mean(&[1.0, 0.0, 0.0]), 0.333333333);
        assert_eq!(
            aggregate(Aggregation::Min, &none, &scores(&[0.9, 0.4, 1.0])),
            0.4
        );
        let weights = BTreeMap::from([("c0".to_owned(), 3.0)]);
        // (3 * 1.0 + 0.0) / 4
        assert_eq!(
            aggregate(Aggregation::WeightedMean, &weights, &scores(&[1.0, 0.0])),
            0.75
        );
    }

    #[test]
    fn cosine_handles_zero_and_mismatched_vectors() {
        assert_eq!(cosine(&[1.0, 0.0], &[1.0, 0.0]), 1.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn transcript_numbers_messages_and_shows_tool_calls() {
        let call = afterimage_core::ToolCall::function("c1", "lookup", r#"{"q":"x"}"#);
        let mut asks = Message::assistant("");
        asks.tool_calls.push(call);
        let messages = vec![
            Message::user(" Hi? "),
            asks,
            Message::tool("c1", "found"),
            Message::assistant("Yes.").with_reasoning("hidden"),
        ];
        assert_eq!(
            transcript(&messages),
            "1. User: Hi?\n\n2. Assistant: [calls tool `lookup` with {\"q\":\"x\"}]\n\n3. Tool result: found\n\n4. Assistant: Yes."
        );
        assert_eq!(transcript(&[]), "(no messages)");
    }

    #[test]
    fn shape_and_prompt_list_every_criterion() {
        let judge = LlmJudge::new(Arc::new(afterimage_core::testing::ScriptedModel::new(
            "m",
            |_| async { Ok(afterimage_core::ChatResponse::text("")) },
        )))
        .criteria(["coherence", " Politeness ", "COHERENCE", ""]);
        assert_eq!(judge.criteria_names(), ["coherence", "Politeness"]);
        assert_eq!(
            answer_shape(judge.criteria_names()),
            "{\n  \"coherence\": {\"feedback\": \"one or two sentences\", \"score\": <number from 0 to 1>},\n  \"Politeness\": {\"feedback\": \"one or two sentences\", \"score\": <number from 0 to 1>}\n}"
        );
        let system = judge.system_message(judge.criteria_names());
        assert!(system.contains("\n- coherence: the conversation hangs together."));
        assert!(system.contains(
            "\n- Politeness: judge the conversation on Politeness, in the usual sense.\n"
        ));
        assert!(!system.contains("{criteria}") && !system.contains("{shape}"));
    }
}
