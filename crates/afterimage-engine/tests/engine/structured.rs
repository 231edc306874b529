//! `StructuredGenerator` against the project's mock server over real HTTP: exact
//! counts at concurrency, invalid outputs asked again once with the problems and then
//! replaced, rows in upstream's shape.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, ChatResponse, GeneratedInstructions, InstructionGenerator,
    InstructionRequest, JsonSchema, ProviderError, StrategyError,
};
use afterimage_engine::{ConversationGenerator, EngineError, GenerateOptions, StructuredGenerator};
use afterimage_mock::{MockConfig, MockServer};
use afterimage_providers::OpenAiCompatible;
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{
    ContextualInstructionGenerator, InMemoryDocumentProvider, WithContextRespondentPromptModifier,
    validate_arguments,
};
use serde_json::json;

fn schema() -> JsonSchema {
    JsonSchema::new(
        "faq_entry",
        json!({
            "type": "object",
            "properties": {
                "title": {"type": "string"},
                "answer": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["title", "answer", "tags"],
            "additionalProperties": false,
        }),
    )
}

fn client(server: &MockServer) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAiCompatible::builder(server.openai_base_url())
            .api_key(ApiKey::new("sk-test"))
            .model("mock-model")
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    )
}

/// Keeps every request it passes on.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ChatModel>,
    requests: Mutex<Vec<ChatRequest>>,
}

#[async_trait::async_trait]
impl ChatModel for Recording {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.requests.lock().unwrap().push(request.clone());
        self.inner.chat(request).await
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
}

#[derive(Debug)]
struct OneQuestion;

#[async_trait::async_trait]
impl InstructionGenerator for OneQuestion {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        Ok(GeneratedInstructions {
            instructions: vec!["Write the FAQ entry about password resets.".to_owned()],
            ..Default::default()
        })
    }
}

fn read_rows(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_n_valid_rows_at_concurrency_with_invalid_outputs_replaced() {
    let config = MockConfig::default()
        .with_latency(Duration::from_millis(5))
        .with_schema_violation_rate(0.5)
        .with_seed(3);
    let server = MockServer::start(config).await.unwrap();
    let model = client(&server);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faq.jsonl");
    let docs = Arc::new(InMemoryDocumentProvider::new([
        "Error 503 means the service is unavailable. Retry after 5 minutes.",
        "To reset your password, click 'Forgot Password' on the login screen.",
    ]));
    let generator = StructuredGenerator::builder()
        .schema(schema())
        .respondent_prompt("You write FAQ entries for a support site.")
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(ContextualInstructionGenerator::new(model, docs)))
        .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()))
        .output(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap();
    let report = generator
        .generate(
            GenerateOptions::new()
                .num_dialogs(20)
                .max_concurrency(4)
                .max_failures(50),
        )
        .await
        .unwrap();

    let rows = read_rows(&path);
    assert_eq!(rows.len(), 20);
    assert_eq!(report.rows_written, 20);
    let ids: HashSet<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 20, "ids are distinct");
    // Upstream's fields, then the id (written as a JSON value, so keys are sorted).
    for row in &rows {
        let keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "context",
                "id",
                "instruction",
                "metadata",
                "output",
                "persona"
            ],
            "{row}"
        );
    }
    for row in &rows {
        validate_arguments(&schema().schema, &row["output"]).unwrap();
        assert!(!row["instruction"].as_str().unwrap().is_empty());
        assert!(row["context"].as_str().is_some_and(|c| !c.is_empty()));
        assert_eq!(row["metadata"]["context_ids"].as_array().unwrap().len(), 1);
        let attempts = row["metadata"]["generation"]["attempts"].as_u64().unwrap();
        assert!((1..=2).contains(&attempts), "{row}");
    }
    // Half the answers break the schema: some rows were asked again, some failed
    // twice and were replaced, and the count still holds.
    let reasked = report
        .rejections
        .get("output_reasked")
        .copied()
        .unwrap_or(0);
    assert!(reasked > 0, "{report:?}");
    // A regeneration is a stored row's second ask; rows that failed twice were
    // re-asked too, but their asks are rejections only.
    let asked_twice = rows
        .iter()
        .filter(|r| r["metadata"]["generation"]["attempts"] == 2)
        .count() as u64;
    assert_eq!(report.regenerations, asked_twice, "{report:?}");
    assert!(report.regenerations <= reasked, "{report:?}");
    let failed = report.failures.get("output: invalid").copied().unwrap_or(0);
    assert_eq!(report.dialogs_failed, failed, "{report:?}");
    assert!(
        server.stats().max_in_flight > 1,
        "rows were made concurrently"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_output_is_asked_again_once_with_the_problems_then_fails() {
    let server = MockServer::start(MockConfig::default().with_schema_violation_rate(1.0))
        .await
        .unwrap();
    let model = Arc::new(Recording {
        inner: client(&server),
        requests: Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("faq.jsonl");
    let generator = StructuredGenerator::builder()
        .schema(schema())
        .respondent_prompt("You write FAQ entries.")
        .model(Arc::clone(&model) as _)
        .instruction_generator(Arc::new(OneQuestion))
        .output(Arc::new(JsonlStorage::new(&path)))
        .build()
        .unwrap();
    let error = generator
        .generate(
            GenerateOptions::new()
                .num_dialogs(2)
                .max_concurrency(1)
                .max_failures(2),
        )
        .await
        .unwrap_err();
    let EngineError::RunFailed { cause, report } = error else {
        panic!("expected a failed run");
    };
    assert!(cause.contains("more than the budget of 2"), "{cause}");
    assert!(
        cause.contains("missing required property `title`"),
        "{cause}"
    );
    assert_eq!(report.failures.get("output: invalid"), Some(&3));
    assert_eq!(report.rejections.get("output_reasked"), Some(&3));
    assert_eq!(report.rows_written, 0);

    // Each row: the ask, then the same conversation with the broken answer and the
    // problems found; never a third request.
    let requests = model.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 6);
    assert_eq!(report.requests, 6);
    for pair in requests.chunks(2) {
        let (first, again) = (&pair[0], &pair[1]);
        assert_eq!(first.messages.len(), 2);
        assert_eq!(first.response_schema.as_ref().unwrap().name, "faq_entry");
        assert_eq!(again.messages.len(), 4);
        assert_eq!(again.messages[..2], first.messages[..]);
        assert!(again.messages[2].content.starts_with('{'));
        let note = &again.messages[3].content;
        assert!(note.contains("missing required property `title`"), "{note}");
        assert!(again.response_schema.is_some());
    }
    // The run record says how it ended, for --resume and analyze.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("faq.jsonl.run.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"], "failed");
    assert_eq!(record["config"]["generator"], "structured");
    assert_eq!(record["failures"]["output: invalid"], 3);
}

#[tokio::test]
async fn a_broken_schema_or_an_output_holding_rows_is_refused() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let build = |schema: JsonSchema| {
        StructuredGenerator::builder()
            .schema(schema)
            .respondent_prompt("You write FAQ entries.")
            .model(client(&server))
            .instruction_generator(Arc::new(OneQuestion))
            .output(Arc::new(JsonlStorage::new(&path)))
            .build()
    };
    let broken = JsonSchema::new(
        "x",
        json!({"type": "object", "properties": {"a": {"type": "strng"}}}),
    );
    let error = build(broken).unwrap_err().to_string();
    assert!(error.contains("/properties/a/type"), "{error}");

    let generator = build(schema()).unwrap();
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(2))
        .await
        .unwrap();
    assert_eq!(report.rows_written, 2);
    let error = generator
        .generate(GenerateOptions::new().num_dialogs(2))
        .await
        .unwrap_err();
    assert!(
        error.is_config() && error.to_string().contains("--resume"),
        "{error}"
    );
    // Resuming a finished run writes nothing more.
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(2).resume(true))
        .await
        .unwrap();
    assert_eq!((report.rows_resumed, report.rows_written), (2, 0));
    assert_eq!(read_rows(&path).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_generator_resumes_the_others_run() {
    let server = MockServer::start(MockConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (dialogs_out, rows_out) = (
        dir.path().join("dialogs.jsonl"),
        dir.path().join("rows.jsonl"),
    );
    let dialogs = |path: &std::path::Path| {
        ConversationGenerator::builder()
            .respondent_prompt("You write FAQ entries.")
            .correspondent_prompt("You are a customer.")
            .model(client(&server))
            .instruction_generator(Arc::new(OneQuestion))
            .storage(Arc::new(JsonlStorage::new(path)))
            .build()
            .unwrap()
    };
    let options = || GenerateOptions::new().num_dialogs(2).fixed_turns(1);
    dialogs(&dialogs_out).generate(options()).await.unwrap();
    // The generator's own parts, rows to another output: one ledger for both runs.
    let generator = dialogs(&dialogs_out)
        .structured()
        .schema(schema())
        .output(Arc::new(JsonlStorage::new(&rows_out)))
        .build()
        .unwrap();
    generator.generate(options()).await.unwrap();
    assert_eq!(read_rows(&rows_out).len(), 2);

    let into_dialogs = dialogs(&dialogs_out)
        .structured()
        .schema(schema())
        .output(Arc::new(JsonlStorage::new(&dialogs_out)))
        .build()
        .unwrap()
        .generate(options().num_dialogs(3).resume(true))
        .await
        .unwrap_err();
    assert!(into_dialogs.is_config(), "{into_dialogs}");
    assert!(
        into_dialogs
            .to_string()
            .contains("holds a dialog run, not structured rows"),
        "{into_dialogs}"
    );
    let into_rows = dialogs(&rows_out)
        .generate(options().num_dialogs(3).resume(true))
        .await
        .unwrap_err();
    assert!(
        into_rows
            .to_string()
            .contains("holds structured rows, not dialogs"),
        "{into_rows}"
    );
    // Both outputs are as they were.
    assert_eq!(read_rows(&dialogs_out).len(), 2);
    assert_eq!(read_rows(&rows_out).len(), 2);
}
