//! What the run spends on weak models: junk questions are discarded before a dialog
//! is paid for them, a judge that never answers readably stops the run, and each
//! role's sampling settings reach its requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatRequest, ChatResponse, ConversationRow, CriterionScore, Evaluation, Evaluator,
    FinishReason, GeneratedInstructions, Grade, InstructionGenerator, InstructionRequest,
    StrategyError, Verdict,
};
use afterimage_engine::{
    ConversationGenerator, ConversationGeneratorBuilder, EngineError, GenerateOptions,
    UnjudgedPolicy,
};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::DEFAULT_JUDGE_CRITERIA;

/// Hands out the same batch of questions on every call.
#[derive(Debug)]
struct Batches {
    batch: Vec<&'static str>,
    calls: AtomicUsize,
}

impl Batches {
    fn new(batch: &[&'static str]) -> Arc<Self> {
        Arc::new(Batches {
            batch: batch.to_vec(),
            calls: AtomicUsize::new(0),
        })
    }
}

#[async_trait::async_trait]
impl InstructionGenerator for Batches {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(GeneratedInstructions {
            // Numbered so that the good ones are no near duplicates of each other.
            instructions: self
                .batch
                .iter()
                .map(|q| q.replace("{n}", &call.to_string()))
                .collect(),
            context: "Router manual\nHold the reset button for ten seconds.".into(),
            requests: 1,
            ..Default::default()
        })
    }
}

/// Whether `request` is the judge's (the only one asking for a JSON shape here).
fn is_judge(request: &ChatRequest) -> bool {
    request.response_schema.is_some()
}

/// Answers every role; the judge's answers come from `judge`.
fn model(judge: fn(usize) -> String) -> Arc<ScriptedModel> {
    let judged = Arc::new(AtomicUsize::new(0));
    let said = Arc::new(AtomicUsize::new(0));
    Arc::new(ScriptedModel::new("tiny", move |request| {
        let (judged, said) = (Arc::clone(&judged), Arc::clone(&said));
        async move {
            if is_judge(&request) {
                return Ok(ChatResponse::text(judge(
                    judged.fetch_add(1, Ordering::SeqCst),
                )));
            }
            // Numbered, so an assistant never repeats its previous answer (a loop the
            // cheap checks reject).
            let n = said.fetch_add(1, Ordering::SeqCst);
            Ok(ChatResponse::text(format!(
                "Hold the reset button for {n} seconds, then wait."
            )))
        }
    }))
}

/// A judge answer scoring every default criterion `score`.
fn scores(score: f64) -> String {
    let criteria: serde_json::Map<String, serde_json::Value> = DEFAULT_JUDGE_CRITERIA
        .iter()
        .map(|name| {
            let verdict = serde_json::json!({"feedback": "fine", "score": score});
            ((*name).to_owned(), verdict)
        })
        .collect();
    serde_json::Value::Object(criteria).to_string()
}

fn builder(
    model: &Arc<ScriptedModel>,
    questions: Arc<dyn InstructionGenerator>,
    path: &std::path::Path,
) -> ConversationGeneratorBuilder {
    ConversationGenerator::builder()
        .respondent_prompt("You are a support agent.")
        .correspondent_prompt("You are a customer whose router keeps dropping.")
        .model(Arc::clone(model) as _)
        .instruction_generator(questions)
        .storage(Arc::new(JsonlStorage::new(path)))
}

fn options(n: u64) -> GenerateOptions {
    GenerateOptions::new()
        .num_dialogs(n)
        .fixed_turns(1)
        .max_concurrency(1)
}

fn rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn junk_questions_are_never_conversed_and_are_counted_by_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let questions = Batches::new(&[
        "first message",
        "text/plain;charset=UTF-8",
        "How do I reset router number {n}?",
        "Router manual",
    ]);
    let model = model(|_| scores(0.9));
    let report = builder(&model, questions, &path)
        .build()
        .unwrap()
        .generate(options(3))
        .await
        .unwrap();
    assert_eq!(report.rows_written, 3);
    // One respondent request per dialog (one turn, no judge): no junk was conversed.
    assert_eq!(model.calls(), 3);
    for request in model.requests() {
        let asked = &request.messages[1].content;
        assert!(asked.starts_with("How do I reset router"), "{asked}");
    }
    let rejected = |cause: &str| report.instructions_rejected.get(cause).copied();
    // Each of the 3 batches held a placeholder and a MIME type; the document's title
    // of the first two was drawn by the next dialog.
    assert_eq!(rejected("placeholder"), Some(3));
    assert_eq!(rejected("mime_type"), Some(3));
    assert_eq!(rejected("document_copy"), Some(2));
    assert_eq!(
        report.instructions_rejected_summary().as_deref(),
        Some("8 (mime_type 3, placeholder 3, document_copy 2)")
    );
    // The generator's requests are in the report; the dialogs never paid for junk.
    assert_eq!(report.requests, 3 + 3);
}

#[tokio::test]
async fn a_generator_of_only_junk_ends_the_run_with_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let questions = Batches::new(&["first message", "application/json", "https://x.org"]);
    let model = model(|_| scores(0.9));
    let err = builder(&model, Arc::clone(&questions) as _, &path)
        .build()
        .unwrap()
        .generate(options(5))
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, EngineError::RunFailed { .. }), "{message}");
    assert!(
        message.contains("10 questions in a row were no request"),
        "{message}"
    );
    assert!(message.contains("the last `first message`"), "{message}");
    assert!(message.contains("(placeholder)"), "{message}");
    assert!(
        message.contains("quality.instruction_checks: false"),
        "{message}"
    );
    assert!(!message.contains('\n'), "one line: {message}");
    assert_eq!(model.calls(), 0, "no dialog was paid for");
    let report = err.report().unwrap();
    assert_eq!(report.instructions_rejected.values().sum::<u64>(), 10);
    assert_eq!(questions.calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn without_the_checks_junk_is_conversed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|_| scores(0.9));
    let report = builder(&model, Batches::new(&["first message"]), &path)
        .instruction_checks(false)
        .build()
        .unwrap()
        .generate(options(2))
        .await
        .unwrap();
    assert_eq!(report.rows_written, 2);
    assert!(report.instructions_rejected.is_empty());
}

/// A run judged by `judge` (else the built-in judge on `model`), one attempt per
/// dialog.
async fn judged(
    model: &Arc<ScriptedModel>,
    judge: Option<Arc<dyn Evaluator>>,
    policy: Option<UnjudgedPolicy>,
    n: u64,
    path: &std::path::Path,
) -> Result<afterimage_engine::RunReport, EngineError> {
    let mut builder = builder(model, Batches::new(&["How do I reset router {n}?"]), path)
        .auto_improve(true)
        .evaluator_model_name("tiny-judge")
        .max_regenerations(0);
    if let Some(judge) = judge {
        builder = builder.evaluator(judge);
    }
    if let Some(policy) = policy {
        builder = builder.on_unjudged(policy);
    }
    builder.build().unwrap().generate(options(n)).await
}

/// A judge whose `k`-th verdict is `script(k)`: a score, or an unreadable answer.
struct ScriptedJudge {
    script: fn(usize) -> Option<f64>,
    calls: AtomicUsize,
}

impl ScriptedJudge {
    fn boxed(script: fn(usize) -> Option<f64>) -> Option<Arc<dyn Evaluator>> {
        Some(Arc::new(ScriptedJudge {
            script,
            calls: AtomicUsize::new(0),
        }))
    }
}

impl std::fmt::Debug for ScriptedJudge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedJudge")
    }
}

#[async_trait::async_trait]
impl Evaluator for ScriptedJudge {
    async fn evaluate(&self, _row: &ConversationRow) -> Result<Verdict, StrategyError> {
        match (self.script)(self.calls.fetch_add(1, Ordering::SeqCst)) {
            Some(score) => Ok(verdict(score)),
            None => Err(StrategyError::MalformedOutput {
                message: "asked twice, but no JSON; the answer starts: Looks good".into(),
            }),
        }
    }
}

fn prose(_: usize) -> String {
    "I think the dialog is fine and helpful overall.".to_owned()
}

#[tokio::test]
async fn a_judge_that_never_answers_readably_stops_the_run_and_keeps_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(prose);
    let err = judged(&model, None, None, 50, &path).await.unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("the judge (model tiny-judge) never answered in readable JSON"),
        "{message}"
    );
    assert!(
        message.contains("10 of its first 10 answers were unreadable"),
        "{message}"
    );
    assert!(
        message.contains("the last began `I think the dialog is fine"),
        "{message}"
    );
    assert!(message.contains("quality.on_unjudged: keep"), "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    // The nine dialogs before the tenth answer were kept (unjudged, as before).
    let report = err.report().unwrap();
    assert_eq!(report.rows_written, 9);
    assert_eq!(rows(&path).len(), 9);
    assert_eq!(report.unjudged, 10);
    assert_eq!(report.failures.get("judge: unreadable"), Some(&1));
}

#[tokio::test]
async fn keep_never_stops() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(prose);
    let report = judged(&model, None, Some(UnjudgedPolicy::Keep), 25, &path)
        .await
        .unwrap();
    assert_eq!(report.rows_written, 25);
    assert_eq!(report.unjudged, 25);
    assert!(rows(&path).iter().all(|r| r["final_score"].is_null()));
}

#[tokio::test]
async fn drop_never_stores_an_unjudged_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    // Every other verdict cannot be read.
    let judge = ScriptedJudge::boxed(|k| (k % 2 == 1).then_some(0.9));
    let model = model(prose);
    let report = judged(&model, judge, Some(UnjudgedPolicy::Drop), 4, &path)
        .await
        .unwrap();
    assert_eq!(report.rows_written, 4);
    assert_eq!(report.unjudged, 4);
    assert_eq!(report.failures.get("quality: rejected"), Some(&4));
    let written = rows(&path);
    assert_eq!(written.len(), 4);
    assert!(written.iter().all(|r| r["final_score"] == 0.9));
}

#[tokio::test]
async fn the_occasional_unreadable_answer_is_kept_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let judge = ScriptedJudge::boxed(|k| (k % 3 != 0).then_some(0.9));
    let model = model(prose);
    let report = judged(&model, judge, None, 12, &path).await.unwrap();
    assert_eq!(report.rows_written, 12);
    assert_eq!(report.unjudged, 4);
}

#[tokio::test]
async fn each_role_gets_its_temperature_and_token_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|_| scores(0.9));
    builder(&model, Batches::new(&["How do I reset router {n}?"]), &path)
        .auto_improve(true)
        .respondent_temperature(0.1)
        .respondent_max_tokens(300)
        .correspondent_temperature(1.1)
        .correspondent_max_tokens(60)
        .judge_temperature(0.0)
        .judge_max_tokens(900)
        .build()
        .unwrap()
        .generate(options(1).fixed_turns(2))
        .await
        .unwrap();
    let sampled = |starts: &str| -> Vec<(Option<f32>, Option<u32>)> {
        model
            .requests()
            .iter()
            .filter(|r| !is_judge(r) && r.messages[0].content.starts_with(starts))
            .map(|r| (r.temperature, r.max_tokens))
            .collect()
    };
    assert_eq!(
        sampled("You are a support agent."),
        [(Some(0.1), Some(300)); 2]
    );
    assert_eq!(sampled("You are a customer"), [(Some(1.1), Some(60))]);
    let judge: Vec<_> = model
        .requests()
        .iter()
        .filter(|r| is_judge(r))
        .map(|r| (r.temperature, r.max_tokens, r.model.clone()))
        .collect();
    assert_eq!(judge, [(Some(0.0), Some(900), None)]);
}

#[tokio::test]
async fn unset_roles_keep_the_defaults_and_bad_values_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|_| scores(0.9));
    let questions = || Batches::new(&["How do I reset router {n}?"]);
    builder(&model, questions(), &path)
        .build()
        .unwrap()
        .generate(options(1))
        .await
        .unwrap();
    let request = &model.requests()[0];
    assert_eq!((request.temperature, request.max_tokens), (Some(0.7), None));

    let err = builder(&model, questions(), &path)
        .respondent_temperature(3.0)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("respondent_temperature is 3"),
        "{err}"
    );
    let err = builder(&model, questions(), &path)
        .correspondent_max_tokens(0)
        .build()
        .unwrap_err();
    assert!(
        err.to_string().contains("correspondent_max_tokens is 0"),
        "{err}"
    );
    let err = builder(&model, questions(), &path)
        .auto_improve(true)
        .evaluator(Arc::new(Fixed))
        .judge_temperature(0.5)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("built-in judge"), "{err}");
}

/// A judge that always gives 0.9.
#[derive(Debug)]
struct Fixed;

#[async_trait::async_trait]
impl Evaluator for Fixed {
    async fn evaluate(&self, _row: &ConversationRow) -> Result<Verdict, StrategyError> {
        Ok(verdict(0.9))
    }
}

fn verdict(score: f64) -> Verdict {
    let mut criteria = std::collections::BTreeMap::new();
    criteria.insert(
        "coherence".to_owned(),
        CriterionScore {
            feedback: String::new(),
            score,
        },
    );
    Verdict {
        evaluation: Evaluation {
            criteria,
            overall_grade: Grade::from_score(score),
        },
        score,
        usage: Default::default(),
        requests: 1,
    }
}

#[tokio::test]
async fn a_reply_cut_at_the_token_limit_is_still_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let replies = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&replies);
    // The first respondent reply stops at the token limit; later ones finish.
    let model = Arc::new(ScriptedModel::new("cut", move |_request| {
        let counter = Arc::clone(&counter);
        async move {
            let mut reply = ChatResponse::text("Hold the reset button for");
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                reply.finish_reason = Some(FinishReason::Length);
            }
            Ok(reply)
        }
    }));
    let report = builder(&model, Batches::new(&["How do I reset router {n}?"]), &path)
        .auto_improve(true)
        .evaluator(Arc::new(Fixed))
        .respondent_max_tokens(5)
        .build()
        .unwrap()
        .generate(options(1))
        .await
        .unwrap();
    assert_eq!(report.rejections.get("truncated_reply"), Some(&1));
    assert_eq!(report.regenerations, 1);
}
