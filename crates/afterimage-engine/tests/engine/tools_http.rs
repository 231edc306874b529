//! Whole tool-calling runs over HTTP: `ConversationGenerator` with a
//! `ToolCallingInstructionGenerator` through `OpenAiCompatible` and `Gemini`, against
//! wiremock servers speaking each wire format (a tool call, the result sent back, a
//! text answer), and the failure cases over OpenAI's format.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{ApiKey, ChatModel, ToolSpec};
use afterimage_engine::{ConversationGenerator, GenerateOptions, RunReport};
use afterimage_providers::{Gemini, OpenAiCompatible};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{ToolCallingInstructionGenerator, parse_tool_specs};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const RESPONDENT: &str = "You are a weather assistant.";
const CORRESPONDENT: &str = "You are a traveller planning a trip.";
const QUESTION: &str = "Is it warm enough in Paris today for a picnic? Celsius please.";
const ANSWER: &str = "It is 21 degrees and sunny in Paris: picnic weather.";
const GEMINI_PATH: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

/// What the respondent does when asked for a tool call.
#[derive(Debug, Clone, Copy)]
enum Respondent {
    /// Calls `get_weather` well, then answers in text after the result.
    Good,
    /// Calls a tool it was never offered.
    UnknownTool,
    /// Calls `get_weather` with an argument its schema forbids.
    BadArguments,
    /// Calls `get_weather` again after every result.
    Endless,
}

impl Respondent {
    /// The call's name and arguments, or `None` for the text answer.
    fn call(self, after_result: bool) -> Option<(&'static str, Value)> {
        match (self, after_result) {
            (Respondent::Good, true) => None,
            (Respondent::UnknownTool, _) => Some(("get_forecast", json!({"city": "Paris"}))),
            (Respondent::BadArguments, _) => {
                Some(("get_weather", json!({"city": "Paris", "unit": "kelvin"})))
            }
            _ => Some(("get_weather", json!({"city": "Paris", "unit": "c"}))),
        }
    }
}

fn tools() -> Vec<ToolSpec> {
    parse_tool_specs(&json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]}
                },
                "required": ["city"],
                "additionalProperties": false
            }
        }
    }]))
    .unwrap()
}

/// Which role a request plays, from its system prompt and whether tools are offered.
#[derive(Debug, PartialEq)]
enum Role {
    Instructions,
    Respondent,
    Correspondent,
    Simulator,
}

fn role(system: &str, has_tools: bool) -> Role {
    if has_tools {
        Role::Respondent
    } else if system.starts_with(CORRESPONDENT) {
        Role::Correspondent
    } else if system.contains("software tool") {
        Role::Simulator
    } else {
        Role::Instructions
    }
}

fn text_for(role: &Role) -> String {
    match role {
        Role::Instructions => json!({"instructions": [QUESTION]}).to_string(),
        Role::Correspondent => "Thanks!".to_owned(),
        Role::Simulator => r#"{"city": "Paris", "temp": 21, "sky": "sunny"}"#.to_owned(),
        Role::Respondent => ANSWER.to_owned(),
    }
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// An OpenAI Chat Completions server playing every role.
async fn openai_server(respondent: Respondent) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(move |request: &Request| {
            let body = body(request);
            let messages = body["messages"].as_array().unwrap();
            let system = messages[0]["content"].as_str().unwrap_or("");
            let role = role(system, body.get("tools").is_some());
            let after_result = messages.last().unwrap()["role"] == "tool";
            let (message, finish) = match (&role, respondent.call(after_result)) {
                (Role::Respondent, Some((name, arguments))) => (
                    json!({"role": "assistant", "content": null, "tool_calls": [{
                        "id": format!("call_{}", messages.len()),
                        "type": "function",
                        "function": {"name": name, "arguments": arguments.to_string()}
                    }]}),
                    "tool_calls",
                ),
                _ => (
                    json!({"role": "assistant", "content": text_for(&role)}),
                    "stop",
                ),
            };
            ResponseTemplate::new(200).set_body_json(json!({
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
            }))
        })
        .mount(&server)
        .await;
    server
}

/// A Gemini generateContent server playing every role.
async fn gemini_server(respondent: Respondent) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(move |request: &Request| {
            let body = body(request);
            let system = body["systemInstruction"]["parts"][0]["text"]
                .as_str()
                .unwrap_or("");
            let role = role(system, body.get("tools").is_some());
            let last = body["contents"].as_array().unwrap().last().unwrap().clone();
            let after_result = last["parts"][0].get("functionResponse").is_some();
            let parts = match (&role, respondent.call(after_result)) {
                (Role::Respondent, Some((name, arguments))) => {
                    json!([{"functionCall": {"name": name, "args": arguments}}])
                }
                _ => json!([{"text": text_for(&role)}]),
            };
            ResponseTemplate::new(200).set_body_json(json!({
                "candidates": [{
                    "content": {"role": "model", "parts": parts},
                    "finishReason": "STOP",
                    "index": 0
                }],
                "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5},
                "modelVersion": "gemini-2.5-flash"
            }))
        })
        .mount(&server)
        .await;
    server
}

fn openai(server: &MockServer) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAiCompatible::builder(format!("{}/v1", server.uri()))
            .api_key(ApiKey::new("sk-test"))
            .model("gpt-4o-mini")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

fn gemini(server: &MockServer) -> Arc<dyn ChatModel> {
    Arc::new(
        Gemini::builder()
            .base_url(format!("{}/v1beta", server.uri()))
            .api_key(ApiKey::new("test-key"))
            .model("gemini-2.5-flash")
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap(),
    )
}

fn generator(
    model: Arc<dyn ChatModel>,
    path: &std::path::Path,
    max_tool_rounds: u32,
) -> ConversationGenerator {
    ConversationGenerator::builder()
        .respondent_prompt(RESPONDENT)
        .correspondent_prompt(CORRESPONDENT)
        .model(Arc::clone(&model))
        .instruction_generator(Arc::new(
            ToolCallingInstructionGenerator::new(model, tools()).n_instructions(1),
        ))
        .tools(tools())
        .max_tool_rounds(max_tool_rounds)
        .max_regenerations(0)
        .storage(Arc::new(JsonlStorage::new(path)))
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

/// The bodies the server received that offered tools (the respondent's requests).
async fn respondent_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(body)
        .filter(|b| b.get("tools").is_some())
        .collect()
}

async fn run(
    generator: ConversationGenerator,
) -> Result<RunReport, afterimage_engine::EngineError> {
    generator
        .generate(
            GenerateOptions::new()
                .num_dialogs(1)
                .fixed_turns(1)
                .max_failures(0)
                .seed(11),
        )
        .await
}

/// The stored row: question, call, result, answer, in OpenAI message shape.
fn assert_stored_loop(row: &Value, call_id: &str) {
    let conversation = row["conversations"].as_array().unwrap();
    assert_eq!(conversation.len(), 4, "{conversation:?}");
    assert_eq!(conversation[0]["role"], "user");
    assert_eq!(conversation[0]["content"], QUESTION);
    assert_eq!(conversation[1]["role"], "assistant");
    let call = &conversation[1]["tool_calls"][0];
    assert_eq!(call["id"], call_id);
    assert_eq!(call["type"], "function");
    assert_eq!(call["function"]["name"], "get_weather");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, json!({"city": "Paris", "unit": "c"}));
    assert_eq!(conversation[2]["role"], "tool");
    assert_eq!(conversation[2]["tool_call_id"], call_id);
    assert_eq!(
        conversation[2]["content"],
        r#"{"city":"Paris","sky":"sunny","temp":21}"#
    );
    assert_eq!(conversation[3]["role"], "assistant");
    assert_eq!(conversation[3]["content"], ANSWER);
    assert_eq!(row["metadata"]["tools"], json!(["get_weather"]));
}

#[tokio::test]
async fn an_openai_tool_loop_is_stored_in_openai_shape() {
    let server = openai_server(Respondent::Good).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let report = run(generator(openai(&server), &out, 4)).await.unwrap();
    assert_eq!(report.rows_written, 1);
    assert_stored_loop(&rows(&out)[0], "call_2");

    let sent = respondent_bodies(&server).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0]["tools"],
        json!([{"type": "function", "function": {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "parameters": tools()[0].parameters
        }}])
    );
    let messages = sent[1]["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(messages[2]["role"], "assistant");
    assert_eq!(messages[2]["content"], Value::Null);
    assert_eq!(messages[2]["tool_calls"][0]["id"], "call_2");
    assert_eq!(
        messages[3],
        json!({"role": "tool", "tool_call_id": "call_2",
               "content": r#"{"city":"Paris","sky":"sunny","temp":21}"#})
    );
    // Instructions, two respondent turns, one simulated tool.
    assert_eq!(report.requests, 4);
}

#[tokio::test]
async fn a_gemini_tool_loop_is_stored_in_openai_shape() {
    let server = gemini_server(Respondent::Good).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let report = run(generator(gemini(&server), &out, 4)).await.unwrap();
    assert_eq!(report.rows_written, 1);
    assert_stored_loop(&rows(&out)[0], "call_0");

    let sent = respondent_bodies(&server).await;
    assert_eq!(sent.len(), 2);
    let declaration = &sent[0]["tools"][0]["functionDeclarations"][0];
    assert_eq!(declaration["name"], "get_weather");
    assert_eq!(declaration["parametersJsonSchema"], tools()[0].parameters);
    let contents = sent[1]["contents"].as_array().unwrap();
    assert_eq!(contents.len(), 3);
    assert_eq!(contents[1]["role"], "model");
    assert_eq!(
        contents[1]["parts"][0]["functionCall"]["args"],
        json!({"city": "Paris", "unit": "c"})
    );
    assert_eq!(
        contents[2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather",
               "response": {"city": "Paris", "sky": "sunny", "temp": 21}})
    );
}

async fn failing(respondent: Respondent, max_tool_rounds: u32) -> (RunReport, usize, usize) {
    let server = openai_server(respondent).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let err = run(generator(openai(&server), &out, max_tool_rounds))
        .await
        .unwrap_err();
    let report = err.report().expect("a failed run has a report").clone();
    assert_eq!(report.rows_written, 0);
    assert!(rows(&out).is_empty());
    assert_eq!(report.failures.get("quality: rejected"), Some(&1));
    let all = server.received_requests().await.unwrap().len();
    (report, respondent_bodies(&server).await.len(), all)
}

#[tokio::test]
async fn over_openai_an_unknown_tool_is_asked_again_then_rejected() {
    let (report, respondent, all) = failing(Respondent::UnknownTool, 4).await;
    assert_eq!(respondent, 3);
    assert_eq!(all, 4, "no tool was simulated");
    assert_eq!(report.rejections.get("tool_call_reasked"), Some(&2));
    assert_eq!(report.rejections.get("invalid_tool_call"), Some(&1));
}

#[tokio::test]
async fn over_openai_arguments_that_break_the_schema_are_rejected() {
    let (report, respondent, all) = failing(Respondent::BadArguments, 4).await;
    assert_eq!(respondent, 3);
    assert_eq!(all, 4, "no tool was simulated");
    assert_eq!(report.rejections.get("invalid_tool_call"), Some(&1));
}

#[tokio::test]
async fn over_openai_a_model_that_never_stops_calling_tools_is_cut_off() {
    let (report, respondent, all) = failing(Respondent::Endless, 2).await;
    // Two rounds answered (two simulated results), the third call refused.
    assert_eq!(respondent, 3);
    assert_eq!(all, 1 + 3 + 2);
    assert_eq!(report.rejections.get("too_many_tool_rounds"), Some(&1));
}
