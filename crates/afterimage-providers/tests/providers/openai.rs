//! `OpenAiCompatible` against a wiremock server speaking the Chat Completions format.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common::{KEY, SHORT_TIMEOUT, assert_hides_key};
use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, FinishReason, JsonSchema, Message, ProviderError, ToolCall,
    ToolSpec, Usage,
};
use afterimage_providers::{BuildError, OpenAiCompatible, StructuredOutput};
use serde_json::{Value, json};

use crate::shared::Fixture;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "gpt-4o-mini";

fn client(server: &MockServer) -> OpenAiCompatible {
    OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model(MODEL)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

fn completion(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
    })
}

fn hello() -> Value {
    completion(json!({"role": "assistant", "content": "Hello!"}), "stop")
}

async fn answer(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(template)
        .mount(server)
        .await;
}

/// The JSON body of the only request the server received.
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

async fn chat_error(server: &MockServer, template: ResponseTemplate) -> ProviderError {
    answer(server, template).await;
    let error = client(server)
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert_hides_key(&error);
    error
}

fn error_body(message: &str, kind: &str, code: Value) -> Value {
    json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
}

pub(crate) const FIXTURE: Fixture = Fixture {
    name: "openai",
    model: MODEL,
    base_path: "/v1",
    chat_path: "/chat/completions",
    probe_path: "/models",
    client: |base_url, timeout| {
        Arc::new(
            OpenAiCompatible::builder(base_url)
                .api_key(ApiKey::new(KEY))
                .model(MODEL)
                .timeout(timeout)
                .build()
                .unwrap(),
        )
    },
    debug: |base_url| {
        let client = OpenAiCompatible::builder(base_url)
            .api_key(KEY)
            .model(MODEL)
            .build()
            .unwrap();
        let builder = OpenAiCompatible::openai().api_key(KEY);
        (format!("{builder:?}"), format!("{client:?}"))
    },
    hello,
    error: |status, message| {
        let (kind, code) = match status {
            401 => ("invalid_request_error", json!("invalid_api_key")),
            404 => ("invalid_request_error", json!("model_not_found")),
            429 => ("requests", json!("rate_limit_exceeded")),
            500.. => ("server_error", Value::Null),
            _ => ("invalid_request_error", Value::Null),
        };
        error_body(message, kind, code)
    },
    server_statuses: &[500, 502, 503, 408],
    context_message: "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
    expected: "a chat completion",
    probe_ok: || json!({"object": "list", "data": []}),
    auth_headers: &[("authorization", "Bearer {KEY}")],
    parses_tool_arguments: false,
};

#[tokio::test]
async fn sends_the_chat_completions_wire_format() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let request = ChatRequest::new(vec![
        Message::system("You are terse."),
        Message::user("Weather in Paris?"),
        Message {
            tool_calls: vec![ToolCall::function(
                "call_a",
                "get_weather",
                r#"{"city":"Paris"}"#,
            )],
            ..Message::assistant("")
        },
        Message::tool("call_a", r#"{"temp":21}"#),
        Message::assistant("21 degrees.").with_reasoning("easy"),
        Message::user("Thanks"),
    ])
    .temperature(0.7)
    .max_tokens(100)
    .tools(vec![weather_tool()])
    .json_schema(schema());

    client(&server).chat(request).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let sent = &requests[0];
    assert_eq!(sent.url.path(), "/v1/chat/completions");
    assert_eq!(sent.url.query(), None);
    assert_eq!(sent.headers["authorization"], format!("Bearer {KEY}"));
    assert_eq!(sent.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "content": "{\"temp\":21}", "tool_call_id": "call_a"},
                {"role": "assistant", "content": "21 degrees."},
                {"role": "user", "content": "Thanks"}
            ],
            "temperature": 0.7,
            "max_tokens": 100,
            "tools": [{"type": "function", "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
            }}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "answer",
                "schema": {
                    "type": "object",
                    "properties": {"answer": {"type": "string"}},
                    "required": ["answer"],
                    "additionalProperties": false
                },
                "strict": true
            }}
        })
    );
}

#[tokio::test]
async fn a_bare_request_sends_only_model_and_messages_and_no_key() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = OpenAiCompatible::builder(format!("{}/v1/", server.uri()))
        .model("local-llama")
        .build()
        .unwrap();
    let mut request = ChatRequest::new(vec![Message::user("hi")]);
    request.model = Some("other-model".into());
    model.chat(request).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
    assert_eq!(requests[0].url.path(), "/v1/chat/completions");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(
        body,
        json!({"model": "other-model", "messages": [{"role": "user", "content": "hi"}]})
    );
}

#[tokio::test]
async fn json_object_mode_appends_the_schema_to_the_first_system_prompt() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = OpenAiCompatible::deepseek()
        .base_url(format!("{}/v1", server.uri()))
        .api_key(KEY)
        .model("deepseek-chat")
        .build()
        .unwrap();
    let request = ChatRequest::new(vec![
        Message::system("You grade answers."),
        Message::system("Be strict."),
        Message::user("Grade this."),
    ])
    .json_schema(schema());
    model.chat(request).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests[0].url.path(), "/v1/chat/completions");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    let expected_prompt = format!(
        "You grade answers.\n\nReply with a single JSON object and nothing else. It must match this JSON Schema:\n{}",
        schema().schema
    );
    assert_eq!(
        body,
        json!({
            "model": "deepseek-chat",
            "messages": [
                {"role": "system", "content": expected_prompt},
                {"role": "system", "content": "Be strict."},
                {"role": "user", "content": "Grade this."}
            ],
            "response_format": {"type": "json_object"}
        })
    );
}

#[tokio::test]
async fn json_object_mode_adds_a_system_prompt_when_there_is_none() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .model("m")
        .structured_output(StructuredOutput::JsonObject)
        .build()
        .unwrap();
    model
        .chat(ChatRequest::new(vec![Message::user("Go.")]).json_schema(schema()))
        .await
        .unwrap();

    let body = sent_body(&server).await;
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["role"], "system");
    let prompt = messages[0]["content"].as_str().unwrap();
    assert!(
        prompt.starts_with("Reply with a single JSON object"),
        "{prompt}"
    );
    assert!(prompt.ends_with(&schema().schema.to_string()), "{prompt}");
    assert_eq!(messages[1], json!({"role": "user", "content": "Go."}));
    assert_eq!(body["response_format"], json!({"type": "json_object"}));
}

#[tokio::test]
async fn prompt_only_mode_sends_no_response_format() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .model("m")
        .structured_output(StructuredOutput::PromptOnly)
        .build()
        .unwrap();
    model
        .chat(
            ChatRequest::new(vec![Message::system("S"), Message::user("Go.")])
                .json_schema(schema()),
        )
        .await
        .unwrap();

    let body = sent_body(&server).await;
    assert!(body.get("response_format").is_none(), "{body}");
    let prompt = body["messages"][0]["content"].as_str().unwrap();
    assert!(
        prompt.starts_with("S\n\nReply with a single JSON object"),
        "{prompt}"
    );
}

#[tokio::test]
async fn max_completion_tokens_replaces_max_tokens_when_asked() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .model("o3-mini")
        .max_completion_tokens(true)
        .build()
        .unwrap();
    model
        .chat(ChatRequest::new(vec![Message::user("hi")]).max_tokens(64))
        .await
        .unwrap();

    let body = sent_body(&server).await;
    assert_eq!(body["max_completion_tokens"], 64);
    assert!(body.get("max_tokens").is_none(), "{body}");
}

#[tokio::test]
async fn parses_content_reasoning_content_usage_and_finish_reason() {
    let server = MockServer::start().await;
    let body = completion(
        json!({"role": "assistant", "content": "42", "reasoning_content": "6 times 7"}),
        "length",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    assert_eq!(
        reply.message,
        Message::assistant("42").with_reasoning("6 times 7")
    );
    assert_eq!(reply.usage, Usage::new(12, 5));
    assert_eq!(reply.finish_reason, Some(FinishReason::Length));
    assert_eq!(reply.model, "gpt-4o-mini-2024-07-18");
}

#[tokio::test]
async fn reasoning_comes_from_the_first_non_empty_field() {
    for (message, expected) in [
        (
            json!({"content": "a", "reasoning_content": "", "reasoning": "from reasoning"}),
            Some("from reasoning"),
        ),
        (
            json!({"content": "a", "thinking": "from thinking"}),
            Some("from thinking"),
        ),
        (
            json!({"content": "a", "reasoning": {"effort": "high"}, "thinking": "text wins"}),
            Some("text wins"),
        ),
        (json!({"content": "a", "reasoning_content": null}), None),
    ] {
        let server = MockServer::start().await;
        answer(
            &server,
            ResponseTemplate::new(200).set_body_json(completion(message.clone(), "stop")),
        )
        .await;
        let reply = client(&server)
            .chat(ChatRequest::new(vec![Message::user("?")]))
            .await
            .unwrap();
        assert_eq!(reply.message.reasoning.as_deref(), expected, "{message}");
        assert_eq!(reply.message.content, "a");
    }
}

#[tokio::test]
async fn parses_tool_calls_with_null_content() {
    let server = MockServer::start().await;
    let body = completion(
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [
                {"id": "call_x1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}},
                {"type": "function", "function": {"name": "get_time", "arguments": {"tz": "CET"}}}
            ]
        }),
        "tool_calls",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]).tools(vec![weather_tool()]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "");
    assert_eq!(
        reply.message.tool_calls,
        vec![
            ToolCall::function("call_x1", "get_weather", r#"{"city":"Oslo"}"#),
            ToolCall::function("call_1", "get_time", r#"{"tz":"CET"}"#),
        ]
    );
    assert_eq!(reply.finish_reason, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn missing_usage_and_model_fall_back_to_defaults() {
    let server = MockServer::start().await;
    let body = json!({"choices": [{"message": {"content": [
        {"type": "text", "text": "Hel"}, {"type": "image_url", "image_url": {}}, {"type": "text", "text": "lo"}
    ]}, "finish_reason": "eos"}]});
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "Hello");
    assert_eq!(reply.usage, Usage::default());
    assert_eq!(reply.model, MODEL);
    assert_eq!(reply.finish_reason, Some(FinishReason::Other("eos".into())));
}

#[tokio::test]
async fn rate_limit_prefers_retry_after_ms() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after-ms", "250")
            .insert_header("retry-after", "7")
            .set_body_json(error_body("Slow down", "requests", Value::Null)),
    )
    .await;
    assert!(error.is_rate_limited(), "{error:?}");
    assert_eq!(error.retry_after(), Some(Duration::from_millis(250)));
}

#[tokio::test]
async fn rate_limit_reads_an_http_date() {
    let server = MockServer::start().await;
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let error = chat_error(
        &server,
        ResponseTemplate::new(429).insert_header("retry-after", at.as_str()),
    )
    .await;
    let after = error.retry_after().unwrap();
    // The date has one-second resolution and some time passes on the way.
    assert!(
        after > Duration::from_secs(27) && after <= Duration::from_secs(30),
        "{after:?}"
    );
}

#[tokio::test]
async fn rate_limit_without_a_hint_has_no_retry_after() {
    let server = MockServer::start().await;
    let error = chat_error(&server, ResponseTemplate::new(429)).await;
    assert!(error.is_rate_limited(), "{error:?}");
    assert_eq!(error.retry_after(), None);
}

#[tokio::test]
async fn insufficient_quota_is_quota_exhausted() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(429).set_body_json(error_body(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            json!("insufficient_quota"),
        )),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::QuotaExhausted { message } if message.starts_with("You exceeded your current quota")),
        "{error:?}"
    );
    assert!(!error.is_retryable());
    assert!(error.is_fatal());
}

#[tokio::test]
async fn forbidden_is_auth() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(403).set_body_json(error_body(
            "Project does not have access to model gpt-4o-mini",
            "invalid_request_error",
            json!("model_not_found"),
        )),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Auth { status: 403, message } if message == "Project does not have access to model gpt-4o-mini"),
        "{error:?}"
    );
}

#[tokio::test]
async fn unprocessable_entity_is_a_bad_request() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(422).set_body_json(json!({"detail": "messages: field required"})),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::BadRequest { status: 422, message } if message == "messages: field required"),
        "{error:?}"
    );
}

#[tokio::test]
async fn context_length_code_is_context_length_exceeded() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(400).set_body_json(error_body(
            "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens.",
            "invalid_request_error",
            json!("context_length_exceeded"),
        )),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::ContextLengthExceeded { message } if message.starts_with("This model's maximum context length is 128000")),
        "{error:?}"
    );
    assert_eq!(error.kind(), "context_length");
}

#[tokio::test]
async fn context_length_message_without_a_code_is_recognised() {
    // vLLM's shape: no `error` wrapper, numeric code.
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(400).set_body_json(json!({
            "object": "error",
            "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
            "type": "BadRequestError",
            "param": null,
            "code": 400
        })),
    )
    .await;
    assert_eq!(error.kind(), "context_length", "{error:?}");
}

#[tokio::test]
async fn service_unavailable_with_an_html_body_quotes_it() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(503).set_body_string("<html>upstream overloaded</html>"),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Server { status: 503, message }
            if message == "HTTP 503 Service Unavailable: <html>upstream overloaded</html>"),
        "{error:?}"
    );
}

#[tokio::test]
async fn the_timeout_also_holds_with_a_shared_client() {
    let server = MockServer::start().await;
    answer(
        &server,
        ResponseTemplate::new(200)
            .set_body_json(hello())
            .set_delay(Duration::from_secs(3)),
    )
    .await;
    let model = OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .model(MODEL)
        .timeout(SHORT_TIMEOUT)
        .client(reqwest::Client::new())
        .build()
        .unwrap();
    let error = model
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ProviderError::Timeout { after } if after == SHORT_TIMEOUT),
        "{error:?}"
    );
}

#[tokio::test]
async fn json_without_choices_is_a_malformed_response() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"id": "x", "object": "chat.completion"})),
    )
    .await;
    match &error {
        ProviderError::MalformedResponse { message, snippet } => {
            assert!(message.contains("missing field `choices`"), "{message}");
            assert_eq!(snippet, r#"{"id":"x","object":"chat.completion"}"#);
        }
        other => panic!("expected MalformedResponse, got {other:?}"),
    }
}

#[tokio::test]
async fn empty_choices_is_a_malformed_response() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"choices": []})),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::MalformedResponse { message, .. } if message == "the completion has no choices"),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_key_in_a_malformed_body_is_redacted() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(200).set_body_string(format!("oops {KEY}")),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::MalformedResponse { snippet, .. } if snippet == "oops [redacted]"),
        "{error:?}"
    );
}

#[tokio::test]
async fn probe_falls_back_to_a_completion_without_a_model_list() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    client(&server).probe().await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 2);
    let body: Value = serde_json::from_slice(&requests[1].body).unwrap();
    assert_eq!(body["max_tokens"], 1);
}

#[test]
fn presets_and_build_errors() {
    assert_eq!(
        OpenAiCompatible::openai().model("m").build().unwrap_err(),
        BuildError::MissingApiKey { provider: "OpenAI" }
    );
    assert_eq!(
        OpenAiCompatible::deepseek().model("m").build().unwrap_err(),
        BuildError::MissingApiKey {
            provider: "DeepSeek"
        }
    );
    assert_eq!(
        OpenAiCompatible::local().build().unwrap_err(),
        BuildError::MissingModel
    );
    let local = OpenAiCompatible::local().model("qwen").build().unwrap();
    assert_eq!(local.base_url(), "http://localhost:8000/v1");
    let router = OpenAiCompatible::openrouter()
        .api_key(KEY)
        .model("openai/gpt-4o-mini")
        .build()
        .unwrap();
    assert_eq!(router.base_url(), "https://openrouter.ai/api/v1");
    let error = OpenAiCompatible::builder("localhost:8000/v1")
        .model("m")
        .build()
        .unwrap_err();
    assert!(error.is_invalid_base_url(), "{error}");
}
