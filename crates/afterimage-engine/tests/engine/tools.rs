//! The tool loop with scripted models: calls and results stored in OpenAI shape, bad
//! calls discarded and asked again, then rejected; a respondent that never stops
//! calling tools is cut off.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::testing::ScriptedModel;
use afterimage_core::{
    ChatRequest, ChatResponse, GeneratedInstructions, InstructionGenerator, InstructionRequest,
    Role, StrategyError, ToolCall, ToolSpec,
};
use afterimage_engine::{ConversationGenerator, GenerateOptions, RunReport};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::ToolHandlers;
use serde_json::{Value, json};

const RESPONDENT: &str = "You are a weather assistant.";
const CORRESPONDENT: &str = "You are a traveller.";

/// One fixed question per call.
#[derive(Debug)]
struct Ask;

#[async_trait::async_trait]
impl InstructionGenerator for Ask {
    async fn generate(
        &self,
        _request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let mut metadata = serde_json::Map::new();
        metadata.insert("tools".into(), json!(["get_weather"]));
        Ok(GeneratedInstructions {
            instructions: vec!["What is the weather in Paris?".into()],
            metadata,
            ..Default::default()
        })
    }
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 1},
                "unit": {"type": "string", "enum": ["c", "f"]}
            },
            "required": ["city"],
            "additionalProperties": false
        }),
    }
}

fn call(id: &str, name: &str, arguments: &str) -> ChatResponse {
    let mut response = ChatResponse::text("");
    response.message.tool_calls = vec![ToolCall::function(id, name, arguments)];
    response
}

fn system(request: &ChatRequest) -> &str {
    request
        .messages
        .first()
        .map(|m| m.content.as_str())
        .unwrap_or("")
}

/// Which role a request is for.
fn is_respondent(request: &ChatRequest) -> bool {
    system(request).starts_with(RESPONDENT)
}

/// A model that plays the correspondent plainly and the respondent with `respond`.
fn model<F>(respond: F) -> Arc<ScriptedModel>
where
    F: Fn(&ChatRequest) -> ChatResponse + Send + Sync + 'static,
{
    Arc::new(ScriptedModel::new("scripted", move |request| {
        let reply = if is_respondent(&request) {
            respond(&request)
        } else if system(&request).starts_with(CORRESPONDENT) {
            ChatResponse::text("And what about tomorrow in Rome?")
        } else {
            // The default simulator playing the tool.
            ChatResponse::text("Sure: {\"temp\": 21, \"sky\": \"clear\"}")
        };
        async move { Ok(reply) }
    }))
}

/// Calls the weather tool for a new user message; answers in text after a result.
fn well_behaved(request: &ChatRequest) -> ChatResponse {
    match request.messages.last().map(|m| m.role) {
        Some(Role::Tool) => ChatResponse::text("It is 21 degrees and clear."),
        _ => {
            let n = request.messages.len();
            call(&format!("call_{n}"), "get_weather", r#"{"city":"Paris"}"#)
        }
    }
}

fn handlers(calls: Arc<AtomicUsize>) -> Arc<ToolHandlers> {
    Arc::new(ToolHandlers::new().handler("get_weather", move |args| {
        calls.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"city": args["city"], "temp": 21}))
    }))
}

fn builder(model: Arc<ScriptedModel>, path: &std::path::Path) -> ConversationGenerator {
    builder_with(model, path, |b| b)
}

fn builder_with(
    model: Arc<ScriptedModel>,
    path: &std::path::Path,
    more: impl FnOnce(
        afterimage_engine::ConversationGeneratorBuilder,
    ) -> afterimage_engine::ConversationGeneratorBuilder,
) -> ConversationGenerator {
    more(
        ConversationGenerator::builder()
            .respondent_prompt(RESPONDENT)
            .correspondent_prompt(CORRESPONDENT)
            .model(model)
            .instruction_generator(Arc::new(Ask))
            .tools(vec![weather_tool()])
            .storage(Arc::new(JsonlStorage::new(path))),
    )
    .build()
    .unwrap()
}

fn rows(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs one dialog that must fail (no regeneration, no replacement).
async fn failing_run(generator: ConversationGenerator) -> RunReport {
    let err = generator
        .generate(
            GenerateOptions::new()
                .num_dialogs(1)
                .fixed_turns(1)
                .max_failures(0)
                .seed(3),
        )
        .await
        .unwrap_err();
    err.report().expect("a failed run has a report").clone()
}

#[tokio::test]
async fn calls_and_results_are_stored_in_openai_shape_and_hidden_from_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(well_behaved);
    let calls = Arc::new(AtomicUsize::new(0));
    let generator = builder_with(Arc::clone(&model), &path, |b| {
        b.tool_executor(handlers(Arc::clone(&calls)))
    });
    let report = generator
        .generate(GenerateOptions::new().num_dialogs(1).fixed_turns(2).seed(1))
        .await
        .unwrap();
    assert_eq!(report.rows_written, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    let row = &rows(&path)[0];
    let conversation = row["conversations"].as_array().unwrap();
    let roles: Vec<&str> = conversation
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        [
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
            "assistant",
            "tool",
            "assistant"
        ]
    );
    let asked = &conversation[1];
    assert_eq!(asked["content"], "");
    assert_eq!(
        asked["tool_calls"],
        json!([{"id": "call_2", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(conversation[2]["tool_call_id"], "call_2");
    assert_eq!(conversation[2]["content"], r#"{"city":"Paris","temp":21}"#);
    assert_eq!(conversation[3]["content"], "It is 21 degrees and clear.");
    assert!(conversation[3].get("tool_calls").is_none());
    assert_eq!(row["metadata"]["tools"], json!(["get_weather"]));

    let requests = model.requests();
    // Every respondent request offers the tool; the correspondent sees text only.
    for request in requests.iter().filter(|r| is_respondent(r)) {
        assert_eq!(request.tools, vec![weather_tool()]);
    }
    let correspondent: Vec<&ChatRequest> = requests.iter().filter(|r| !is_respondent(r)).collect();
    assert_eq!(correspondent.len(), 1);
    let seen = &correspondent[0].messages;
    assert!(
        seen.iter()
            .all(|m| m.role != Role::Tool && m.tool_calls.is_empty() && !m.content.is_empty())
    );
    assert_eq!(
        seen.last().map(|m| m.content.as_str()),
        Some("It is 21 degrees and clear.")
    );
    // The second assistant turn saw the first turn's call and result.
    let last = requests.iter().rfind(|r| is_respondent(r)).unwrap();
    assert_eq!(
        last.messages
            .iter()
            .filter(|m| m.role == Role::Tool)
            .count(),
        2
    );
}

#[tokio::test]
async fn the_default_simulator_answers_with_compact_json_on_the_respondent_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(well_behaved);
    let report = builder(Arc::clone(&model), &path)
        .generate(GenerateOptions::new().num_dialogs(1).fixed_turns(1).seed(1))
        .await
        .unwrap();
    let row = &rows(&path)[0];
    assert_eq!(
        row["conversations"][2]["content"],
        r#"{"sky":"clear","temp":21}"#
    );
    // Respondent twice, the simulator once, and the simulator's call is counted.
    assert_eq!(model.calls(), 3);
    assert_eq!(report.requests, 3);
    let simulated = model
        .requests()
        .into_iter()
        .find(|r| !is_respondent(r))
        .unwrap();
    assert!(simulated.response_schema.is_some());
    assert!(simulated.tools.is_empty());
    let shown: String = simulated
        .messages
        .iter()
        .map(|m| m.content.clone())
        .collect();
    assert!(shown.contains("get_weather"), "{shown}");
    assert!(shown.contains(r#"{"city":"Paris"}"#), "{shown}");
}

#[tokio::test]
async fn a_bad_call_is_discarded_and_the_good_retry_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let tries = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&tries);
    let model = model(move |request| {
        if request.messages.last().map(|m| m.role) == Some(Role::Tool) {
            return ChatResponse::text("It is 21 degrees.");
        }
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            call("bad", "get_weather", r#"{"city":"Paris","unit":"kelvin"}"#)
        } else {
            // The re-ask is told what was wrong.
            assert!(system(request).contains("kelvin"), "{}", system(request));
            call("good", "get_weather", r#"{"city":"Paris","unit":"c"}"#)
        }
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let report = builder_with(model, &path, |b| b.tool_executor(handlers(calls)))
        .generate(GenerateOptions::new().num_dialogs(1).fixed_turns(1).seed(1))
        .await
        .unwrap();
    assert_eq!(report.rejections.get("tool_call_reasked"), Some(&1));
    let row = &rows(&path)[0];
    let text = row["conversations"].to_string();
    assert!(!text.contains("kelvin"), "{text}");
    assert_eq!(row["conversations"][1]["tool_calls"][0]["id"], "good");
    assert_eq!(row["conversations"][2]["tool_call_id"], "good");
}

#[tokio::test]
async fn an_unknown_tool_is_asked_again_then_rejected_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|_| call("c1", "get_stock_price", r#"{"symbol":"ACME"}"#));
    let calls = Arc::new(AtomicUsize::new(0));
    let generator = builder_with(Arc::clone(&model), &path, |b| {
        b.tool_executor(handlers(Arc::clone(&calls)))
            .max_regenerations(1)
    });
    let report = failing_run(generator).await;
    assert!(rows(&path).is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Two attempts, each: one reply and two re-asks.
    assert_eq!(model.calls(), 6);
    assert_eq!(report.rejections.get("tool_call_reasked"), Some(&4));
    assert_eq!(report.rejections.get("invalid_tool_call"), Some(&2));
    assert_eq!(report.failures.get("quality: rejected"), Some(&1));
}

#[tokio::test]
async fn arguments_that_break_the_schema_are_rejected_and_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|_| call("c1", "get_weather", r#"{"town":"Paris"}"#));
    let calls = Arc::new(AtomicUsize::new(0));
    let generator = builder_with(Arc::clone(&model), &path, |b| {
        b.tool_executor(handlers(Arc::clone(&calls)))
            .max_regenerations(0)
    });
    let report = failing_run(generator).await;
    assert!(rows(&path).is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(model.calls(), 3);
    assert_eq!(report.rejections.get("invalid_tool_call"), Some(&1));
}

#[tokio::test]
async fn a_respondent_that_never_stops_calling_tools_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let model = model(|request| {
        let n = request.messages.len();
        call(&format!("call_{n}"), "get_weather", r#"{"city":"Oslo"}"#)
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let generator = builder_with(Arc::clone(&model), &path, |b| {
        b.tool_executor(handlers(Arc::clone(&calls)))
            .max_tool_rounds(3)
            .max_regenerations(0)
    });
    let report = failing_run(generator).await;
    assert!(rows(&path).is_empty());
    // Three rounds answered, the fourth request's calls refused.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(model.calls(), 4);
    assert_eq!(report.rejections.get("too_many_tool_rounds"), Some(&1));
    assert_eq!(report.requests, 4);
}

#[tokio::test]
async fn a_failing_handler_fails_the_dialog_with_a_tool_cause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let executor = ToolHandlers::new().handler("get_weather", |_| Err("station offline".into()));
    let generator = builder_with(model(well_behaved), &path, |b| {
        b.tool_executor(Arc::new(executor))
    });
    let report = failing_run(generator).await;
    assert!(rows(&path).is_empty());
    assert_eq!(report.failures.get("tool: tool"), Some(&1));
}
