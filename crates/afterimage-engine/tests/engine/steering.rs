//! Steering over HTTP: a wiremock OpenAI-compatible server whose question writer
//! knows only three questions. The requests it receives carry the question type and,
//! once questions repeat, the questions already asked and a higher temperature; the run
//! ends cleanly when the questions run out (or fails, with `OnExhausted::Fail`), and
//! the near duplicates on the way never count as failed dialogs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use afterimage_core::{ApiKey, ChatModel};
use afterimage_engine::{
    ConversationGenerator, EngineError, GenerateOptions, OnExhausted, RunReport, SteeringConfig,
};
use afterimage_providers::OpenAiCompatible;
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{
    ContextualInstructionGenerator, DEFAULT_QUESTION_TYPES, InMemoryDocumentProvider,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const QUESTIONS: [&str; 3] = [
    "How do I reset the router to factory settings?",
    "Why does the status light blink orange after an update?",
    "Which cable goes into the WAN port of the router?",
];

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn is_instruction_request(body: &Value) -> bool {
    body.get("response_format").is_some()
}

/// Writes the same three questions every time; answers each dialog differently.
async fn server() -> MockServer {
    let server = MockServer::start().await;
    let answers = Arc::new(AtomicUsize::new(0));
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |request: &Request| {
            let body = body(request);
            let content = if is_instruction_request(&body) {
                json!({ "instructions": QUESTIONS }).to_string()
            } else {
                let n = answers.fetch_add(1, Ordering::SeqCst);
                format!("Unplug it, wait {n} seconds and plug it back in.")
            };
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            }))
        })
        .mount(&server)
        .await;
    server
}

fn model(server: &MockServer) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAiCompatible::builder(format!("{}/v1", server.uri()))
            .api_key(ApiKey::new("sk-test"))
            .model("gpt-4o-mini")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

async fn run(
    server: &MockServer,
    out: &std::path::Path,
    options: GenerateOptions,
) -> Result<RunReport, EngineError> {
    let model = model(server);
    let documents = Arc::new(InMemoryDocumentProvider::new([
        "The router resets when its button is held for ten seconds. An orange light means a firmware update is running.",
    ]));
    ConversationGenerator::builder()
        .respondent_prompt("You are the support assistant of a router maker.")
        .correspondent_prompt("You are a customer whose internet is down.")
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(ContextualInstructionGenerator::new(
            model, documents,
        )))
        .dedup_questions(true)
        .storage(Arc::new(JsonlStorage::new(out)))
        .build()
        .unwrap()
        .generate(
            options
                .num_dialogs(10)
                .fixed_turns(1)
                .max_concurrency(1)
                .max_failures(0)
                .seed(7),
        )
        .await
}

async fn instruction_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(body)
        .filter(is_instruction_request)
        .collect()
}

fn user_message(body: &Value) -> String {
    body["messages"][1]["content"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn requests_carry_the_type_and_what_to_avoid_and_running_out_ends_the_run() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let report = run(&server, &out, GenerateOptions::new()).await.unwrap();

    assert_eq!(report.rows_written, 3, "{}", report.stop_reason);
    assert!(
        report.stop_reason.starts_with("questions ran out: "),
        "{}",
        report.stop_reason
    );
    assert!(
        report.stop_reason.contains("add documents"),
        "{}",
        report.stop_reason
    );
    // Dialogs that met only near duplicates were replaced, never counted as failed
    // (the budget here is 0).
    assert_eq!(report.dialogs_failed, 0, "{:?}", report.failures);
    assert!(
        report.rejections["duplicate_question"] >= 24,
        "{:?}",
        report.rejections
    );

    let bodies = instruction_bodies(&server).await;
    let names: Vec<&str> = DEFAULT_QUESTION_TYPES.iter().map(|(n, _)| *n).collect();
    // Every request names a question type.
    assert!(
        bodies
            .iter()
            .all(|b| user_message(b).contains("# Kind of message"))
    );
    // The first knows of nothing asked; once questions repeat, the questions asked
    // already are listed, and the temperature rises above the writer's 0.7, within
    // the default bound of 1.0.
    assert!(!user_message(&bodies[0]).contains("# Already asked"));
    let last = user_message(bodies.last().unwrap());
    assert!(last.contains("# Already asked"), "{last}");
    assert!(
        QUESTIONS.iter().all(|q| last.contains(&format!("- {q}"))),
        "{last}"
    );
    let temperature = |b: &Value| b["temperature"].as_f64().unwrap();
    assert!((temperature(&bodies[0]) - 0.7).abs() < 1e-6);
    let hottest = bodies.iter().map(temperature).fold(0.0, f64::max);
    assert!(hottest > 0.8 && hottest <= 1.0 + 1e-6, "{hottest}");

    // Each row records the type its question was asked for, as named in its request.
    let rows: Vec<Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let first_request = user_message(&bodies[0]);
    for row in &rows {
        let kind = row["metadata"]["question_type"].as_str().unwrap();
        assert!(names.contains(&kind), "{kind}");
        assert!(
            first_request.contains(&format!("(type: {kind})")),
            "{first_request}"
        );
    }
}

#[tokio::test]
async fn on_exhausted_fail_names_the_rows_missing() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let error = run(
        &server,
        &out,
        GenerateOptions::new().on_exhausted(OnExhausted::Fail),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with("run stopped with 3 of 10 rows (7 missing; generation.on_exhausted: fail): questions ran out"),
        "{message}"
    );
    assert_eq!(error.report().unwrap().rows_written, 3);
}

#[tokio::test]
async fn without_steering_requests_are_as_before_and_running_out_still_ends_cleanly() {
    let server = server().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let report = run(
        &server,
        &out,
        GenerateOptions::new().steering(SteeringConfig::off()),
    )
    .await
    .unwrap();
    assert_eq!(report.rows_written, 3);
    assert!(
        report
            .stop_reason
            .contains("turn steering on (instructions.steering: true)"),
        "{}",
        report.stop_reason
    );
    let bodies = instruction_bodies(&server).await;
    assert!(bodies.iter().all(|b| {
        let message = user_message(b);
        !message.contains("# Kind of message") && !message.contains("# Already asked")
    }));
    assert!(
        bodies
            .iter()
            .all(|b| (b["temperature"].as_f64().unwrap() - 0.7).abs() < 1e-6)
    );
}
