//! The RAG respondent prompt modifier: the assistant answers from retrieved passages.

use std::collections::HashSet;
use std::sync::Arc;

use afterimage_core::{
    Instruction, ModifiedPrompt, RespondentPromptModifier, Retrieved, Retriever, StrategyError,
};
use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::prompts::{DEFAULT_RAG_RESPONDENT_TEMPLATE, NO_RETRIEVED_CONTEXT, RETRIEVED_HEADING};
use crate::documents::CONTEXT_SEPARATOR;
use crate::template::fill;

/// The row metadata key holding what was retrieved.
const METADATA_KEY: &str = "retrieval";

/// Gives the respondent the passages a [`Retriever`] finds for the user's question.
///
/// The first question is always looked up; with [`per_turn`](Self::per_turn) every
/// follow-up question is too, and passages not seen yet are added to the context. The
/// row's `response_context` is exactly the context in the assistant's latest system
/// prompt, and `metadata["retrieval"]` records `{"retriever", "top_k", "queries",
/// "hits": [{"id", "score", "turn"}]}` (turn 1 is the first question; a follow-up's
/// hits are recorded even when their passages were already in the context).
///
/// ```
/// use std::sync::Arc;
///
/// use afterimage_core::{Document, GeneratedInstructions, Instruction, RespondentPromptModifier};
/// use afterimage_strategies::{Bm25Retriever, WithRagRespondentPromptModifier};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), afterimage_core::StrategyError> {
/// let retriever = Bm25Retriever::new(vec![
///     Document::with_id("refunds", "Refunds reach the original card within 30 days."),
///     Document::with_id("shipping", "Shipping takes two business days."),
/// ])?;
/// let modifier = WithRagRespondentPromptModifier::new(Arc::new(retriever)).top_k(1);
/// let question = Instruction::split(GeneratedInstructions {
///     instructions: vec!["When will my refund arrive?".into()],
///     ..GeneratedInstructions::default()
/// })
/// .remove(0);
/// let prompt = modifier.modify("You are a support agent.", &question).await?;
/// assert_eq!(
///     prompt.response_context.as_deref(),
///     Some("Refunds reach the original card within 30 days.")
/// );
/// assert_eq!(prompt.metadata["retrieval"]["hits"][0]["id"], "refunds");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct WithRagRespondentPromptModifier {
    retriever: Arc<dyn Retriever>,
    top_k: usize,
    min_score: Option<f64>,
    per_turn: bool,
    include_instruction_context: bool,
    template: String,
}

impl WithRagRespondentPromptModifier {
    /// Retrieves with `retriever`: top 3, no score floor, the first question only, the
    /// passages alone, [`DEFAULT_RAG_RESPONDENT_TEMPLATE`](crate::DEFAULT_RAG_RESPONDENT_TEMPLATE).
    pub fn new(retriever: Arc<dyn Retriever>) -> Self {
        WithRagRespondentPromptModifier {
            retriever,
            top_k: 3,
            min_score: None,
            per_turn: false,
            include_instruction_context: false,
            template: DEFAULT_RAG_RESPONDENT_TEMPLATE.to_owned(),
        }
    }

    /// How many passages to retrieve per question (default 3).
    pub fn top_k(mut self, top_k: usize) -> Self {
        self.top_k = top_k;
        self
    }

    /// Drops passages scoring below `min_score` (default: none dropped).
    pub fn min_score(mut self, min_score: f64) -> Self {
        self.min_score = Some(min_score);
        self
    }

    /// Also retrieves for every follow-up question (default false: the first only).
    pub fn per_turn(mut self, yes: bool) -> Self {
        self.per_turn = yes;
        self
    }

    /// Puts the question's own context (the sampled documents) before the passages
    /// (default false: the passages alone).
    pub fn include_instruction_context(mut self, yes: bool) -> Self {
        self.include_instruction_context = yes;
        self
    }

    /// Another template: `{prompt}` becomes the base respondent prompt and `{context}`
    /// the passages. A template without `{context}` makes every dialog fail with a
    /// configuration error, since it would silently drop the passages.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = template.into();
        self
    }

    /// The system prompt for `base` and `context`, as the modifier builds it.
    pub fn render(&self, base: &str, context: &str) -> String {
        fill(&self.template, &[("prompt", base), ("context", context)])
    }

    fn check_template(&self) -> Result<(), StrategyError> {
        if self.template.contains("{context}") {
            Ok(())
        } else {
            Err(StrategyError::Config(
                "the RAG respondent prompt template has no {context} placeholder".to_owned(),
            ))
        }
    }

    /// Passages for `query`: at most `top_k`, above the floor, each id once.
    async fn lookup(&self, query: &str) -> Result<Vec<Retrieved>, StrategyError> {
        if self.top_k == 0 {
            return Ok(Vec::new());
        }
        let mut hits = self.retriever.retrieve(query, self.top_k).await?;
        let mut seen = HashSet::new();
        hits.retain(|hit| {
            self.min_score.is_none_or(|floor| hit.score >= floor) && seen.insert(hit.id.clone())
        });
        hits.truncate(self.top_k);
        Ok(hits)
    }

    /// What comes before the passages: the question's own context and a heading, when
    /// asked for.
    fn prefix(&self, instruction: &Instruction) -> String {
        let own = instruction.source.context.trim();
        if self.include_instruction_context && !own.is_empty() {
            format!("{own}\n\n{RETRIEVED_HEADING}\n")
        } else {
            String::new()
        }
    }

    fn hit_records(hits: &[Retrieved], turn: u64) -> impl Iterator<Item = Value> + '_ {
        hits.iter()
            .map(move |hit| json!({"id": hit.id, "score": hit.score, "turn": turn}))
    }
}

/// The passages part of a context: the texts joined, or a plain note when empty.
fn passages(texts: &[&str]) -> String {
    if texts.is_empty() {
        NO_RETRIEVED_CONTEXT.to_owned()
    } else {
        texts.join(CONTEXT_SEPARATOR)
    }
}

#[async_trait]
impl RespondentPromptModifier for WithRagRespondentPromptModifier {
    async fn modify(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, StrategyError> {
        self.check_template()?;
        let hits = self.lookup(&instruction.text).await?;
        let texts: Vec<&str> = hits.iter().map(|h| h.text.as_str()).collect();
        let context = format!("{}{}", self.prefix(instruction), passages(&texts));
        let mut metadata = Map::new();
        metadata.insert(
            METADATA_KEY.to_owned(),
            json!({
                "retriever": self.retriever.name(),
                "top_k": self.top_k,
                "queries": 1,
                "hits": Self::hit_records(&hits, 1).collect::<Vec<_>>(),
            }),
        );
        Ok(ModifiedPrompt {
            system_prompt: self.render(respondent_prompt, &context),
            response_context: Some(context),
            metadata,
        })
    }

    async fn follow_up(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
        current: &ModifiedPrompt,
        question: &str,
    ) -> Result<Option<ModifiedPrompt>, StrategyError> {
        if !self.per_turn {
            return Ok(None);
        }
        self.check_template()?;
        let mut metadata = current.metadata.clone();
        let mut retrieval = match metadata.remove(METADATA_KEY) {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut records = match retrieval.remove("hits") {
            Some(Value::Array(records)) => records,
            _ => Vec::new(),
        };
        let present: HashSet<String> = records
            .iter()
            .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let turn = retrieval
            .get("queries")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            + 1;

        let hits = self.lookup(question).await?;
        let prefix = self.prefix(instruction);
        let current_context = current.response_context.as_deref().unwrap_or_default();
        let earlier = current_context
            .strip_prefix(prefix.as_str())
            .unwrap_or(current_context);
        let mut texts: Vec<&str> = Vec::new();
        if !earlier.is_empty() && earlier != NO_RETRIEVED_CONTEXT {
            texts.push(earlier);
        }
        texts.extend(
            hits.iter()
                .filter(|h| !present.contains(&h.id))
                .map(|h| h.text.as_str()),
        );
        let context = format!("{prefix}{}", passages(&texts));

        records.extend(Self::hit_records(&hits, turn));
        retrieval.insert("retriever".to_owned(), json!(self.retriever.name()));
        retrieval.insert("top_k".to_owned(), json!(self.top_k));
        retrieval.insert("queries".to_owned(), json!(turn));
        retrieval.insert("hits".to_owned(), Value::Array(records));
        metadata.insert(METADATA_KEY.to_owned(), Value::Object(retrieval));
        Ok(Some(ModifiedPrompt {
            system_prompt: self.render(respondent_prompt, &context),
            response_context: Some(context),
            metadata,
        }))
    }
}
