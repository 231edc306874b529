//! The mock's Anthropic Messages format over real HTTP, through reqwest.

use afterimage_mock::{MockConfig, MockServer};
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{QUESTION, server};

fn messages_url(server: &MockServer) -> String {
    format!("{}/messages", server.anthropic_base_url())
}

async fn send(
    server: &MockServer,
    key: Option<&str>,
    body: &Value,
) -> (StatusCode, Option<String>, Value) {
    let mut request = reqwest::Client::new()
        .post(messages_url(server))
        .header("anthropic-version", "2023-06-01")
        .json(body);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

fn plain() -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 512,
        "system": "You are a helpful assistant.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
    })
}

#[tokio::test]
async fn plain_requests_get_a_text_message() {
    let server = server(MockConfig::default()).await;
    let (status, _, reply) = send(&server, None, &plain()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["type"], "message");
    assert_eq!(reply["role"], "assistant");
    assert_eq!(reply["model"], "claude-test");
    assert!(reply["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(reply["stop_reason"], "end_turn");
    let content = reply["content"].as_array().unwrap();
    assert_eq!(content.len(), 1);
    assert_eq!(content[0]["type"], "text");
    let text = content[0]["text"].as_str().unwrap();
    assert!(
        text.contains(QUESTION),
        "the answer quotes the user: {text}"
    );
    assert!(reply["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert!(reply["usage"]["output_tokens"].as_u64().unwrap() > 0);

    let (_, _, again) = send(&server, None, &plain()).await;
    assert_ne!(again["content"], reply["content"], "replies vary");
    assert_eq!(server.stats().messages, 2);
    assert_eq!(server.stats().chat_completions, 0);
}

#[tokio::test]
async fn thinking_requests_get_a_thinking_block() {
    let server = server(MockConfig::default()).await;
    let mut body = plain();
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let (_, _, reply) = send(&server, None, &body).await;
    assert_eq!(reply["content"][0]["type"], "thinking");
    assert!(!reply["content"][0]["thinking"].as_str().unwrap().is_empty());
    assert_eq!(reply["content"][1]["type"], "text");
}

fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "questions": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "topic": {"type": "string"}
        },
        "required": ["questions", "topic"],
        "additionalProperties": false
    })
}

fn forced() -> Value {
    json!({
        "model": "claude-test",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": "Write questions about key rotation."}],
        "tools": [
            {"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}},
            {"name": "questions", "description": "The answer.", "input_schema": schema()}
        ],
        "tool_choice": {"type": "tool", "name": "questions"},
    })
}

#[tokio::test]
async fn a_forced_tool_gets_input_filling_its_schema() {
    let server = server(MockConfig::default()).await;
    let (status, _, reply) = send(&server, None, &forced()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["stop_reason"], "tool_use");
    let block = &reply["content"][0];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "questions");
    assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
    let questions = block["input"]["questions"].as_array().unwrap();
    assert!(questions.len() >= 2, "{block}");
    assert!(questions.iter().all(Value::is_string));
    assert!(block["input"]["topic"].is_string());
    assert_eq!(block["input"].as_object().unwrap().len(), 2);
}

#[tokio::test]
async fn prose_instead_of_json_answers_a_forced_tool_with_text() {
    let server = server(MockConfig::default().with_prose_instead_of_json(true)).await;
    let (_, _, reply) = send(&server, None, &forced()).await;
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["content"][0]["type"], "text");
}

#[tokio::test]
async fn tools_are_called_then_answered() {
    let server = server(MockConfig::default()).await;
    let tools = json!([{"name": "get_weather", "input_schema": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]
    }}]);
    let mut body = json!({
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": tools,
    });
    let (_, _, reply) = send(&server, None, &body).await;
    assert_eq!(reply["stop_reason"], "tool_use");
    let call = reply["content"][0].clone();
    assert_eq!(call["name"], "get_weather");
    assert!(call["input"]["city"].is_string());

    body["messages"] = json!([
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [call.clone()]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "sunny"}]}
    ]);
    let (_, _, reply) = send(&server, None, &body).await;
    assert_eq!(reply["stop_reason"], "end_turn");
    assert_eq!(reply["content"][0]["type"], "text");

    body["tool_choice"] = json!({"type": "none"});
    body["messages"] = json!([{"role": "user", "content": "Weather in Paris?"}]);
    let (_, _, reply) = send(&server, None, &body).await;
    assert_eq!(reply["stop_reason"], "end_turn");
}

#[tokio::test]
async fn errors_come_in_anthropics_shape() {
    let server = server(MockConfig::default().with_error_rate(1.0)).await;
    let (status, _, body) = send(&server, None, &plain()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(body["error"]["message"].is_string());

    let config = MockConfig::default()
        .with_rate_limit_rate(1.0)
        .with_retry_after_secs(7);
    let server = self::server(config).await;
    let (status, retry_after, body) = send(&server, None, &plain()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(retry_after.as_deref(), Some("7"));
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(server.stats().rate_limited, 1);

    let server = self::server(MockConfig::default()).await;
    let (status, _, body) = send(&server, None, &json!({"messages": []})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
}

#[tokio::test]
async fn the_key_travels_in_x_api_key() {
    let server = server(MockConfig::default().with_require_key("sk-ant-test")).await;
    let (status, _, body) = send(&server, None, &plain()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["type"], "authentication_error");
    let (status, _, _) = send(&server, Some("sk-ant-test"), &plain()).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn anthropic_clients_get_anthropics_model_list() {
    let server = server(MockConfig::default()).await;
    let client = reqwest::Client::new();
    let list: Value = client
        .get(format!("{}/models", server.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["type"], "model");
    assert_eq!(list["data"][0]["id"], "mock-model");
    assert_eq!(list["has_more"], false);
    let model: Value = client
        .get(format!("{}/models/claude-x", server.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(model["id"], "claude-x");
    // Without the header, the same path is OpenAI's.
    let list: Value = reqwest::get(format!("{}/models", server.openai_base_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(server.stats().models, 3);
}
