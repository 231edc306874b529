//! The LLM judge against a scripted model.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatResponse, ConversationRow, CriterionScore, Evaluator, Grade, Message, ProviderError, Role,
    RowMetadata, StrategyError,
};
use afterimage_strategies::{DEFAULT_JUDGE_CRITERIA, LlmJudge};
use serde_json::json;

/// A model that gives these answers in order (the last one repeats).
fn answering(answers: &[&str]) -> Arc<ScriptedModel> {
    let answers: Vec<String> = answers.iter().map(|a| (*a).to_owned()).collect();
    let next = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedModel::new("scripted", move |_request| {
        let i = next.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
        let answer = answers[i].clone();
        async move { Ok(ChatResponse::text(answer)) }
    }))
}

fn row(instruction_context: &str, response_context: Option<&str>) -> ConversationRow {
    ConversationRow {
        conversations: vec![
            Message::user("How often should I oil my chain?"),
            Message::assistant("Every 300 km.").with_reasoning("The context says 300 km."),
            Message::user("And in the rain?"),
            Message::assistant("More often: after every wet ride."),
        ],
        metadata: RowMetadata::default(),
        instruction_context: instruction_context.to_owned(),
        response_context: response_context.map(str::to_owned),
        persona: None,
        evaluation: None,
        final_score: None,
        id: "run-0".to_owned(),
    }
}

const TRANSCRIPT: &str = "# Conversation\n1. User: How often should I oil my chain?\n\n2. Assistant: Every 300 km.\n\n3. User: And in the rain?\n\n4. Assistant: More often: after every wet ride.";

/// An answer with these five scores, in `DEFAULT_JUDGE_CRITERIA` order.
fn answer(scores: [f64; 5]) -> String {
    let entries: serde_json::Map<String, serde_json::Value> = DEFAULT_JUDGE_CRITERIA
        .iter()
        .zip(scores)
        .map(|(name, score)| {
            (
                (*name).to_owned(),
                json!({"feedback": format!("{name} note"), "score": score}),
            )
        })
        .collect();
    serde_json::Value::Object(entries).to_string()
}

fn expected_criteria(scores: [f64; 5]) -> BTreeMap<String, CriterionScore> {
    DEFAULT_JUDGE_CRITERIA
        .iter()
        .zip(scores)
        .map(|(name, score)| {
            (
                (*name).to_owned(),
                CriterionScore {
                    feedback: format!("{name} note"),
                    score,
                },
            )
        })
        .collect()
}

#[tokio::test]
async fn request_carries_schema_context_and_transcript_in_order() {
    let model = answering(&[&answer([1.0; 5])]);
    LlmJudge::new(model.clone())
        .evaluate(&row(
            "Chains need oil every 300 km.",
            Some("Oil chains every 300 km, and after rain."),
        ))
        .await
        .unwrap();

    let requests = model.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    assert_eq!(sent.temperature, Some(0.2));
    assert_eq!(sent.model, None);
    assert!(sent.tools.is_empty());

    let schema = sent.response_schema.as_ref().unwrap();
    assert_eq!(schema.name, "dialog_evaluation");
    assert!(schema.strict);
    let entry = json!({
        "type": "object",
        "properties": {
            "feedback": {"type": "string"},
            "score": {"type": "number", "minimum": 0, "maximum": 1}
        },
        "required": ["feedback", "score"],
        "additionalProperties": false
    });
    assert_eq!(
        schema.schema,
        json!({
            "type": "object",
            "properties": {
                "coherence": entry,
                "factuality": entry,
                "grounding": entry,
                "helpfulness": entry,
                "relevance": entry
            },
            "required": ["coherence", "factuality", "grounding", "helpfulness", "relevance"],
            "additionalProperties": false
        })
    );

    assert_eq!(sent.messages.len(), 2);
    assert_eq!(sent.messages[0].role, Role::System);
    let system = &sent.messages[0].content;
    for name in DEFAULT_JUDGE_CRITERIA {
        assert_eq!(
            system.matches(&format!("\n- {name}: ")).count(),
            1,
            "{name}"
        );
        assert_eq!(
            system
                .matches(&format!("  \"{name}\": {{\"feedback\": "))
                .count(),
            1,
            "{name}"
        );
    }
    assert!(system.contains("never earns a free 1"));
    assert!(!system.contains("{criteria}") && !system.contains("{shape}"));

    assert_eq!(sent.messages[1].role, Role::User);
    assert_eq!(
        sent.messages[1].content,
        format!(
            "# Material the user's questions were drawn from\n<instruction_context>\nChains need oil every 300 km.\n</instruction_context>\n\n# Material the assistant was given\n<response_context>\nOil chains every 300 km, and after rain.\n</response_context>\n\n{TRANSCRIPT}"
        )
    );
}

#[tokio::test]
async fn one_shared_context_is_shown_once() {
    let model = answering(&[&answer([1.0; 5])]);
    LlmJudge::new(model.clone())
        .evaluate(&row("Chains need oil.", Some("Chains need oil.")))
        .await
        .unwrap();
    assert_eq!(
        model.requests()[0].messages[1].content,
        format!(
            "# Material\nThe user's questions were drawn from this material, and the assistant was given it to answer from.\n<context>\nChains need oil.\n</context>\n\n{TRANSCRIPT}"
        )
    );
}

#[tokio::test]
async fn without_context_grounding_is_left_out_not_scored() {
    for response_context in [None, Some(""), Some("  \n")] {
        // The model scores all five; only four are asked for and kept.
        let model = answering(&[&answer([1.0, 1.0, 0.0, 0.5, 0.5])]);
        let verdict = LlmJudge::new(model.clone())
            .evaluate(&row("", response_context))
            .await
            .unwrap();
        let request = &model.requests()[0];
        assert_eq!(
            request.messages[1].content,
            format!(
                "# Material the assistant was given\nNone: the assistant answered from its own knowledge.\n\n{TRANSCRIPT}"
            )
        );
        let schema = &request.response_schema.as_ref().unwrap().schema;
        assert_eq!(
            schema["required"],
            json!(["coherence", "factuality", "helpfulness", "relevance"])
        );
        assert!(!request.messages[0].content.contains("- grounding:"));
        assert!(!verdict.evaluation.criteria.contains_key("grounding"));
        assert_eq!(verdict.score, 0.75);
    }
}

#[tokio::test]
async fn a_user_criterion_weights_and_min_aggregation() {
    let scores = json!({
        "coherence": {"feedback": "ok", "score": 1.0},
        "factuality": {"feedback": "ok", "score": 1.0},
        "grounding": {"feedback": "ok", "score": 1.0},
        "helpfulness": {"feedback": "ok", "score": 1.0},
        "relevance": {"feedback": "ok", "score": 1.0},
        "brevity": {"feedback": "long", "score": 0.2}
    })
    .to_string();
    let model = answering(&[&scores]);
    let judge = LlmJudge::new(model.clone())
        .criterion("brevity", "answers are short and to the point.")
        .weight("brevity", 5.0)
        .aggregation(afterimage_strategies::Aggregation::WeightedMean);
    let verdict = judge.evaluate(&row("ctx", Some("ctx"))).await.unwrap();
    assert!(
        model.requests()[0].messages[0]
            .content
            .contains("\n- brevity: answers are short and to the point.")
    );
    // (5 * 1.0 + 5 * 0.2) / 10
    assert_eq!(verdict.score, 0.6);
    let model = answering(&[&scores]);
    let verdict = LlmJudge::new(model)
        .criterion("brevity", "answers are short.")
        .aggregation(afterimage_strategies::Aggregation::Min)
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    assert_eq!(verdict.score, 0.2);
    assert_eq!(verdict.evaluation.overall_grade, Grade::NotAcceptable);
}

/// Embeds every text as the same vector, so every similarity is 1.
#[derive(Debug)]
struct LengthEmbedder;

#[async_trait::async_trait]
impl afterimage_core::Embedder for LengthEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
    }
}

#[tokio::test]
async fn an_embedder_adds_the_similarity_metrics() {
    let model = answering(&[&answer([1.0; 5])]);
    let verdict = LlmJudge::new(model)
        .embedder(Arc::new(LengthEmbedder))
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    for name in [
        "embedding_coherence",
        "embedding_grounding",
        "embedding_relevance",
    ] {
        assert_eq!(verdict.evaluation.criteria[name].score, 1.0, "{name}");
    }
    assert_eq!(verdict.evaluation.criteria.len(), 8);
    // Without a context only the question/answer similarity applies.
    let model = answering(&[&answer([1.0; 5])]);
    let verdict = LlmJudge::new(model)
        .embedder(Arc::new(LengthEmbedder))
        .evaluate(&row("", None))
        .await
        .unwrap();
    assert!(
        verdict
            .evaluation
            .criteria
            .contains_key("embedding_coherence")
    );
    assert!(
        !verdict
            .evaluation
            .criteria
            .contains_key("embedding_grounding")
    );
}

#[tokio::test]
async fn fenced_answer_gives_exact_mean_and_grade() {
    let scores = [1.0, 1.0, 0.8, 0.6, 0.6];
    let model = answering(&[&format!(
        "Here is my evaluation:\n```json\n{}\n```\nThanks.",
        answer(scores)
    )]);
    let verdict = LlmJudge::new(model.clone())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    assert_eq!(model.calls(), 1);
    assert_eq!(verdict.score, 0.8);
    assert_eq!(verdict.evaluation.overall_grade, Grade::Good);
    assert_eq!(verdict.evaluation.criteria, expected_criteria(scores));
}

#[tokio::test]
async fn out_of_range_scores_are_clamped() {
    let model = answering(&[&answer([1.5, -0.25, 0.5, 2.0, 0.0])]);
    let verdict = LlmJudge::new(model)
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    assert_eq!(
        verdict.evaluation.criteria,
        expected_criteria([1.0, 0.0, 0.5, 1.0, 0.0])
    );
    assert_eq!(verdict.score, 0.5);
    assert_eq!(verdict.evaluation.overall_grade, Grade::Bad);
}

#[tokio::test]
async fn a_missing_criterion_is_asked_again_once() {
    let incomplete = r#"{"coherence": {"feedback": "ok", "score": 1}, "factuality": {"feedback": "ok", "score": 1}, "grounding": {"feedback": "ok", "score": 1}, "helpfulness": {"feedback": "ok", "score": 1}}"#;
    let scores = [0.9, 0.9, 0.9, 0.9, 0.4];
    let model = answering(&[incomplete, &answer(scores)]);
    let verdict = LlmJudge::new(model.clone())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    assert_eq!(model.calls(), 2);
    assert_eq!(verdict.evaluation.criteria, expected_criteria(scores));
    assert_eq!(verdict.score, 0.8);
    assert_eq!(verdict.evaluation.overall_grade, Grade::Good);

    let requests = model.requests();
    let (first, second) = (&requests[0], &requests[1]);
    assert_eq!(second.messages.len(), 4);
    assert_eq!(second.messages[..2], first.messages[..]);
    assert_eq!(second.messages[2], Message::assistant(incomplete));
    assert_eq!(second.messages[3].role, Role::User);
    assert!(
        second.messages[3].content.starts_with(
            "That answer could not be used: it has no entry for relevance. Reply again with JSON only, with an entry for each of coherence, factuality, grounding, helpfulness, relevance,"
        ),
        "{}",
        second.messages[3].content
    );
    assert!(
        second.messages[3].content.ends_with(
            "  \"relevance\": {\"feedback\": \"one or two sentences\", \"score\": <number from 0 to 1>}\n}"
        )
    );
    assert_eq!(second.response_schema, first.response_schema);
    assert_eq!(second.temperature, Some(0.2));
}

#[tokio::test]
async fn a_non_numeric_score_is_asked_again_once() {
    let first = answer([1.0; 5]).replace("\"score\":1.0", "\"score\":\"excellent\"");
    assert_eq!(first.matches("excellent").count(), 5);
    let model = answering(&[&first, &answer([0.5; 5])]);
    let verdict = LlmJudge::new(model.clone())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    assert_eq!(model.calls(), 2);
    assert_eq!(verdict.score, 0.5);
    assert!(model.requests()[1].messages[3].content.starts_with(
        "That answer could not be used: the score of coherence, factuality, grounding, helpfulness, relevance is not a number."
    ));
}

#[tokio::test]
async fn prose_twice_is_malformed_after_exactly_two_calls() {
    let model = answering(&[
        "The conversation looks good to me overall.",
        "Sorry, I would rather describe it in words: it is fine.",
    ]);
    let err = LlmJudge::new(model.clone())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap_err();
    assert_eq!(model.calls(), 2);
    let StrategyError::MalformedOutput { message } = &err else {
        panic!("expected MalformedOutput, got {err:?}");
    };
    assert_eq!(
        message,
        "asked twice for scores on coherence, factuality, grounding, helpfulness, relevance, but it holds no JSON object of criterion scores; the answer starts: Sorry, I would rather describe it in words: it is fine."
    );
}

#[tokio::test]
async fn a_provider_error_propagates() {
    let model = Arc::new(ScriptedModel::new("down", |_request| async {
        Err(ProviderError::Server {
            status: 503,
            message: "overloaded".to_owned(),
        })
    }));
    let err = LlmJudge::new(model.clone())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap_err();
    assert_eq!(model.calls(), 1);
    assert!(
        matches!(
            &err,
            StrategyError::Provider(ProviderError::Server { status: 503, message }) if message == "overloaded"
        ),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "server error (HTTP 503): overloaded");
}

#[tokio::test]
async fn model_name_and_temperature_reach_the_request() {
    let model = answering(&[&answer([1.0; 5])]);
    LlmJudge::new(model.clone())
        .model_name(Some("judge-x".to_owned()))
        .temperature(0.0)
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap();
    let sent = &model.requests()[0];
    assert_eq!(sent.model.as_deref(), Some("judge-x"));
    assert_eq!(sent.temperature, Some(0.0));
}

#[tokio::test]
async fn custom_criteria_shape_the_schema_and_the_mean() {
    let model = answering(&[
        r#"{"helpfulness": {"feedback": "clear", "score": 0.9}, "Politeness": {"feedback": "curt", "score": 0.4}, "extra": {"feedback": "ignored", "score": 0}}"#,
    ]);
    let judge = LlmJudge::new(model.clone()).criteria(["helpfulness", "politeness"]);
    assert_eq!(judge.criteria_names(), ["helpfulness", "politeness"]);
    let verdict = judge.evaluate(&row("ctx", Some("ctx"))).await.unwrap();
    assert_eq!(model.calls(), 1);
    assert_eq!(
        verdict.evaluation.criteria,
        BTreeMap::from([
            (
                "helpfulness".to_owned(),
                CriterionScore {
                    feedback: "clear".to_owned(),
                    score: 0.9
                }
            ),
            (
                "politeness".to_owned(),
                CriterionScore {
                    feedback: "curt".to_owned(),
                    score: 0.4
                }
            ),
        ])
    );
    assert_eq!(verdict.score, 0.65);
    assert_eq!(verdict.evaluation.overall_grade, Grade::NeedsImprovement);

    let sent = &model.requests()[0];
    let schema = &sent.response_schema.as_ref().unwrap().schema;
    assert_eq!(schema["required"], json!(["helpfulness", "politeness"]));
    assert_eq!(
        schema["properties"].as_object().unwrap().len(),
        2,
        "{schema}"
    );
    let system = &sent.messages[0].content;
    assert!(
        system.contains(
            "\n- politeness: judge the conversation on politeness, in the usual sense.\n"
        )
    );
    assert!(!system.contains("- coherence:"));
}

#[tokio::test]
async fn no_criteria_is_a_config_error_without_a_call() {
    let model = answering(&["{}"]);
    let err = LlmJudge::new(model.clone())
        .criteria(Vec::<String>::new())
        .evaluate(&row("ctx", Some("ctx")))
        .await
        .unwrap_err();
    assert_eq!(model.calls(), 0);
    assert_eq!(
        err.to_string(),
        "invalid configuration: the judge has no criterion that applies to this dialog"
    );
}
