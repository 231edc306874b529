//! `Anthropic` against a wiremock server speaking the Messages API format.

use std::sync::Arc;
use std::time::Duration;

use crate::common::KEY;
use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, FinishReason, JsonSchema, Message, ToolCall, ToolSpec, Usage,
};
use afterimage_providers::{ANTHROPIC_BASE_URL, Anthropic, AnthropicBuilder, BuildError};
use serde_json::{Value, json};

use crate::shared::Fixture;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "claude-sonnet-4-5";
const MESSAGES: &str = "/v1/messages";

fn builder(server: &MockServer) -> AnthropicBuilder {
    Anthropic::builder()
        .base_url(format!("{}/v1", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model(MODEL)
        .timeout(Duration::from_secs(5))
}

fn client(server: &MockServer) -> Anthropic {
    builder(server).build().unwrap()
}

fn reply(content: Value, stop_reason: &str) -> Value {
    json!({
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": null,
        "usage": {"input_tokens": 20, "output_tokens": 8}
    })
}

fn hello() -> Value {
    reply(json!([{"type": "text", "text": "Hello!"}]), "end_turn")
}

async fn answer(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(MESSAGES))
        .respond_with(template)
        .mount(server)
        .await;
}

async fn sent_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    serde_json::from_slice(&requests[0].body).unwrap()
}

fn schema() -> JsonSchema {
    JsonSchema::new(
        "answer",
        json!({
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": false
        }),
    )
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }
}

fn anthropic_error(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_01"})
}

pub(crate) const FIXTURE: Fixture = Fixture {
    name: "anthropic",
    model: MODEL,
    base_path: "/v1",
    chat_path: "/messages",
    probe_path: "/models",
    client: |base_url, timeout| {
        Arc::new(
            Anthropic::builder()
                .base_url(base_url)
                .api_key(ApiKey::new(KEY))
                .model(MODEL)
                .timeout(timeout)
                .build()
                .unwrap(),
        )
    },
    debug: |base_url| {
        let builder = Anthropic::builder()
            .base_url(base_url)
            .api_key(KEY)
            .model(MODEL);
        let client = builder.clone().build().unwrap();
        (format!("{builder:?}"), format!("{client:?}"))
    },
    hello,
    error: |status, message| {
        let kind = match status {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            529 => "overloaded_error",
            500.. => "api_error",
            _ => "invalid_request_error",
        };
        anthropic_error(kind, message)
    },
    server_statuses: &[500, 529],
    context_message: "prompt is too long: 210000 tokens > 200000 maximum",
    expected: "a Messages API response",
    probe_ok: || {
        json!({
            "data": [{"type": "model", "id": MODEL, "display_name": "Claude Sonnet 4.5"}],
            "has_more": false
        })
    },
    auth_headers: &[("x-api-key", "{KEY}"), ("anthropic-version", "2023-06-01")],
    parses_tool_arguments: true,
};

#[tokio::test]
async fn sends_the_messages_wire_format() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let request = ChatRequest::new(vec![
        Message::system("You are terse."),
        Message::user("Weather in Paris and Rome?"),
        Message::user("Quickly."),
        Message {
            tool_calls: vec![
                ToolCall::function("toolu_0", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::function("toolu_1", "get_weather", r#"{"city":"Rome"}"#),
            ],
            ..Message::assistant("Checking.")
        },
        Message::tool("toolu_0", r#"{"temp":21}"#),
        Message::tool("toolu_1", "sunny"),
        Message::user("And?"),
        Message::assistant("21 and sunny.").with_reasoning("not sent back"),
        Message::system("Answer in English."),
        Message::user("Thanks"),
    ])
    .temperature(0.2)
    .max_tokens(256)
    .tools(vec![weather_tool()]);

    client(&server).chat(request).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let sent = &requests[0];
    assert_eq!(sent.url.path(), MESSAGES);
    assert_eq!(sent.url.query(), None, "the key must not travel in the URL");
    assert!(!sent.url.as_str().contains(KEY));
    assert_eq!(sent.headers["x-api-key"], KEY);
    assert_eq!(sent.headers["anthropic-version"], "2023-06-01");
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": MODEL,
            "max_tokens": 256,
            "system": "You are terse.\n\nAnswer in English.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Rome?"},
                    {"type": "text", "text": "Quickly."}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_0", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_0", "content": "{\"temp\":21}"},
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                    {"type": "text", "text": "And?"}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "21 and sunny."}]},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
            ],
            "temperature": 0.2,
            "tools": [{
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
            }]
        })
    );
}

#[tokio::test]
async fn a_bare_request_gets_the_default_max_tokens() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let mut request = ChatRequest::new(vec![Message::user("hi"), Message::assistant("")]);
    request.model = Some("claude-haiku-4-5".into());
    client(&server).chat(request).await.unwrap();

    assert_eq!(
        sent_body(&server).await,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 4096,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        })
    );
}

#[tokio::test]
async fn the_version_and_default_max_tokens_can_be_changed() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = builder(&server)
        .version("2099-01-01")
        .max_tokens_default(1000)
        .build()
        .unwrap();
    model
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].headers["anthropic-version"], "2099-01-01");
    assert_eq!(sent_body(&server).await["max_tokens"], 1000);
}

#[tokio::test]
async fn a_schema_is_asked_for_with_a_forced_tool() {
    let server = MockServer::start().await;
    let body = reply(
        json!([
            {"type": "text", "text": "Here it is."},
            {"type": "tool_use", "id": "toolu_9", "name": "answer", "input": {"answer": "42"}}
        ]),
        "tool_use",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;
    let request = ChatRequest::new(vec![Message::user("Go.")])
        .tools(vec![weather_tool()])
        .json_schema(schema());

    let reply = client(&server).chat(request).await.unwrap();

    let sent = sent_body(&server).await;
    assert_eq!(
        sent["tools"],
        json!([
            {
                "name": "get_weather",
                "description": "Current weather in a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}
            },
            {
                "name": "answer",
                "description": "Give your answer by calling this tool; its input is the answer.",
                "input_schema": schema().schema
            }
        ])
    );
    assert_eq!(
        sent["tool_choice"],
        json!({"type": "tool", "name": "answer"})
    );
    let parsed: Value = serde_json::from_str(&reply.message.content).unwrap();
    assert_eq!(parsed, json!({"answer": "42"}));
    assert!(reply.message.tool_calls.is_empty());
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
}

#[tokio::test]
async fn parses_text_thinking_usage_stop_reason_and_model() {
    let server = MockServer::start().await;
    let mut body = reply(
        json!([
            {"type": "thinking", "thinking": "Let me think. ", "signature": "c2ln"},
            {"type": "redacted_thinking", "data": "xyz"},
            {"type": "thinking", "thinking": "Six times seven.", "signature": "c2ln"},
            {"type": "text", "text": "The answer "},
            {"type": "text", "text": "is 42."}
        ]),
        "end_turn",
    );
    body["usage"] = json!({
        "input_tokens": 20,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 38
    });
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    assert_eq!(
        reply.message,
        Message::assistant("The answer is 42.").with_reasoning("Let me think. Six times seven.")
    );
    assert_eq!(reply.usage, Usage::new(125, 38).cached(100).cache_writes(5));
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
    assert_eq!(reply.model, "claude-sonnet-4-5-20250929");
}

#[tokio::test]
async fn parses_tool_use() {
    let server = MockServer::start().await;
    let body = reply(
        json!([
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_b", "name": "get_time", "input": {}}
        ]),
        "tool_use",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]).tools(vec![weather_tool()]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "Let me check.");
    assert_eq!(
        reply.message.tool_calls,
        vec![
            ToolCall::function("toolu_a", "get_weather", r#"{"city":"Oslo"}"#),
            ToolCall::function("toolu_b", "get_time", "{}"),
        ]
    );
    assert_eq!(reply.finish_reason, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn stop_reasons_map_onto_core() {
    for (raw, expected) in [
        ("max_tokens", FinishReason::Length),
        ("stop_sequence", FinishReason::Stop),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other("pause_turn".into())),
    ] {
        let server = MockServer::start().await;
        let body = json!({"content": [], "stop_reason": raw});
        answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;
        let reply = client(&server)
            .chat(ChatRequest::new(vec![Message::user("?")]))
            .await
            .unwrap();
        assert_eq!(reply.finish_reason, Some(expected), "{raw}");
        assert_eq!(reply.message.content, "");
        assert_eq!(reply.usage, Usage::default());
        assert_eq!(reply.model, MODEL);
    }
}

#[tokio::test]
async fn probe_falls_back_to_a_one_token_message() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    client(&server).probe().await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2, "GET /models (404), then POST /messages");
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["max_tokens"], 1);
}

#[test]
fn build_errors() {
    assert_eq!(
        Anthropic::builder().model(MODEL).build().unwrap_err(),
        BuildError::MissingApiKey {
            provider: "Anthropic"
        }
    );
    assert_eq!(
        Anthropic::builder().api_key(KEY).build().unwrap_err(),
        BuildError::MissingModel
    );
    assert!(matches!(
        Anthropic::builder()
            .api_key(KEY)
            .model(MODEL)
            .version("bad\nversion")
            .build()
            .unwrap_err(),
        BuildError::InvalidHeader {
            name: "anthropic-version",
            ..
        }
    ));
    let model = Anthropic::builder()
        .api_key(KEY)
        .model(MODEL)
        .build()
        .unwrap();
    assert_eq!(model.base_url(), ANTHROPIC_BASE_URL);
    // A proxy or mock server may need no key.
    assert!(
        Anthropic::builder()
            .base_url("http://localhost:9000/v1")
            .model(MODEL)
            .build()
            .is_ok()
    );
}

#[tokio::test]
async fn a_schema_answered_with_text_keeps_the_text() {
    let server = MockServer::start().await;
    let body = reply(
        json!([{"type": "text", "text": "{\"answer\": \"7\"}"}]),
        "end_turn",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;
    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("Go.")]).json_schema(schema()))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "{\"answer\": \"7\"}");
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
}
