//! `Gemini` against a wiremock server speaking the `generateContent` format.

use std::sync::Arc;
use std::time::Duration;

use crate::common::{KEY, assert_hides_key};
use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, FinishReason, JsonSchema, Message, ProviderError, ToolCall,
    ToolSpec, Usage,
};
use afterimage_providers::{BuildError, GEMINI_BASE_URL, Gemini, GeminiSchemaField};
use serde_json::{Value, json};

use crate::shared::Fixture;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "gemini-2.5-flash";
const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

fn builder(server: &MockServer) -> afterimage_providers::GeminiBuilder {
    Gemini::builder()
        .base_url(format!("{}/v1beta", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model(MODEL)
        .timeout(Duration::from_secs(5))
}

fn client(server: &MockServer) -> Gemini {
    builder(server).build().unwrap()
}

fn reply(parts: Value, finish_reason: &str) -> Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": parts},
            "finishReason": finish_reason,
            "index": 0
        }],
        "usageMetadata": {
            "promptTokenCount": 20,
            "candidatesTokenCount": 8,
            "thoughtsTokenCount": 30,
            "totalTokenCount": 58
        },
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "abc"
    })
}

fn hello() -> Value {
    reply(json!([{"text": "Hello!"}]), "STOP")
}

async fn answer(server: &MockServer, template: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(GENERATE))
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
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"answer": {"type": "string"}},
            "required": ["answer"],
            "additionalProperties": false
        }),
    )
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

fn google_error(code: u16, status: &str, message: &str, details: Value) -> Value {
    json!({"error": {"code": code, "message": message, "status": status, "details": details}})
}

pub(crate) const FIXTURE: Fixture = Fixture {
    name: "gemini",
    model: MODEL,
    base_path: "/v1beta",
    chat_path: "/models/gemini-2.5-flash:generateContent",
    probe_path: "/models/gemini-2.5-flash",
    client: |base_url, timeout| {
        Arc::new(
            Gemini::builder()
                .base_url(base_url)
                .api_key(ApiKey::new(KEY))
                .model(MODEL)
                .timeout(timeout)
                .build()
                .unwrap(),
        )
    },
    debug: |base_url| {
        let builder = Gemini::builder()
            .base_url(base_url)
            .api_key(KEY)
            .model(MODEL);
        let client = builder.clone().build().unwrap();
        (format!("{builder:?}"), format!("{client:?}"))
    },
    hello,
    error: |status, message| {
        let google = match status {
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "NOT_FOUND",
            429 => "RESOURCE_EXHAUSTED",
            500 => "INTERNAL",
            503 => "UNAVAILABLE",
            _ => "INVALID_ARGUMENT",
        };
        google_error(status, google, message, json!([]))
    },
    server_statuses: &[500, 503],
    context_message: "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576).",
    expected: "a generateContent response",
    probe_ok: || json!({"name": "models/gemini-2.5-flash", "inputTokenLimit": 1048576}),
    auth_headers: &[("x-goog-api-key", "{KEY}")],
    parses_tool_arguments: true,
};

#[tokio::test]
async fn sends_the_generate_content_wire_format() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let request = ChatRequest::new(vec![
        Message::system("You are terse."),
        Message::user("Weather in Paris and Rome?"),
        Message {
            tool_calls: vec![
                ToolCall::function("call_0", "get_weather", r#"{"city":"Paris"}"#),
                ToolCall::function("call_1", "get_weather", r#"{"city":"Rome"}"#),
            ],
            ..Message::assistant("Checking.")
        },
        Message::tool("call_0", r#"{"temp":21}"#),
        Message::tool("call_1", "sunny"),
        Message::assistant("21 and sunny.").with_reasoning("not sent back"),
        Message::system("Answer in English."),
        Message::user("Thanks"),
    ])
    .temperature(0.2)
    .max_tokens(256)
    .tools(vec![ToolSpec {
        name: "get_weather".into(),
        description: "Current weather in a city".into(),
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}}),
    }])
    .json_schema(schema());

    client(&server).chat(request).await.unwrap();

    let requests = server.received_requests().await.unwrap();
    let sent = &requests[0];
    assert_eq!(sent.url.path(), GENERATE);
    assert_eq!(sent.url.query(), None, "the key must not travel in the URL");
    assert!(!sent.url.as_str().contains(KEY));
    assert_eq!(sent.headers["x-goog-api-key"], KEY);
    assert!(sent.headers.get("authorization").is_none());
    assert_eq!(sent.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(
        body,
        json!({
            "systemInstruction": {"parts": [{"text": "You are terse.\n\nAnswer in English."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather in Paris and Rome?"}]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                     "thoughtSignature": "skip_thought_signature_validator"},
                    {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
                    {"functionResponse": {"name": "get_weather", "response": {"output": "sunny"}}}
                ]},
                {"role": "model", "parts": [{"text": "21 and sunny."}]},
                {"role": "user", "parts": [{"text": "Thanks"}]}
            ],
            "generationConfig": {
                "temperature": 0.2,
                "maxOutputTokens": 256,
                "responseMimeType": "application/json",
                "responseJsonSchema": schema().schema
            },
            "tools": [{"functionDeclarations": [{
                "name": "get_weather",
                "description": "Current weather in a city",
                "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}}
            }]}]
        })
    );
}

#[tokio::test]
async fn a_bare_request_sends_only_contents() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/models/gemini-2.0-flash:generateContent"))
        .respond_with(ResponseTemplate::new(200).set_body_json(hello()))
        .mount(&server)
        .await;
    let mut request = ChatRequest::new(vec![Message::user("hi")]);
    request.model = Some("models/gemini-2.0-flash".into());
    client(&server).chat(request).await.unwrap();

    assert_eq!(
        sent_body(&server).await,
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
}

#[tokio::test]
async fn the_openapi_schema_field_is_available_for_older_models() {
    let server = MockServer::start().await;
    answer(&server, ResponseTemplate::new(200).set_body_json(hello())).await;
    let model = builder(&server)
        .schema_field(GeminiSchemaField::ResponseSchema)
        .include_thoughts(true)
        .build()
        .unwrap();
    let tool = ToolSpec {
        name: "get_weather".into(),
        description: String::new(),
        parameters: schema().schema,
    };
    model
        .chat(
            ChatRequest::new(vec![Message::user("Go.")])
                .json_schema(schema())
                .tools(vec![tool]),
        )
        .await
        .unwrap();
    assert_eq!(
        sent_body(&server).await["tools"],
        json!([{"functionDeclarations": [{
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"]
            }
        }]}])
    );

    assert_eq!(
        sent_body(&server).await["generationConfig"],
        json!({
            "responseMimeType": "application/json",
            "responseSchema": {
                "type": "object",
                "properties": {"answer": {"type": "string"}},
                "required": ["answer"]
            },
            "thinkingConfig": {"includeThoughts": true}
        })
    );
}

#[tokio::test]
async fn parses_text_thoughts_usage_finish_reason_and_model_version() {
    let server = MockServer::start().await;
    let body = reply(
        json!([
            {"text": "Let me think. ", "thought": true},
            {"text": "Six times seven.", "thought": true},
            {"text": "The answer "},
            {"text": "is 42."}
        ]),
        "STOP",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    assert_eq!(
        reply.message,
        Message::assistant("The answer is 42.").with_reasoning("Let me think. Six times seven.")
    );
    assert_eq!(reply.usage, Usage::new(20, 38).reasoning(30));
    assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
    assert_eq!(reply.model, "gemini-2.5-flash-001");
}

#[tokio::test]
async fn parses_function_calls() {
    let server = MockServer::start().await;
    let body = reply(
        json!([
            {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}, "thoughtSignature": "c2ln"},
            {"functionCall": {"name": "get_time"}}
        ]),
        "STOP",
    );
    answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;

    let reply = client(&server)
        .chat(ChatRequest::new(vec![Message::user("?")]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "");
    assert_eq!(reply.message.reasoning, None);
    assert_eq!(
        reply.message.tool_calls,
        vec![
            ToolCall::function("call_0", "get_weather", r#"{"city":"Oslo"}"#),
            ToolCall::function("call_1", "get_time", "{}"),
        ]
    );
    assert_eq!(reply.finish_reason, Some(FinishReason::ToolCalls));
}

#[tokio::test]
async fn finish_reasons_map_onto_core() {
    for (raw, expected) in [
        ("MAX_TOKENS", FinishReason::Length),
        ("SAFETY", FinishReason::ContentFilter),
        ("RECITATION", FinishReason::ContentFilter),
        (
            "MALFORMED_FUNCTION_CALL",
            FinishReason::Other("MALFORMED_FUNCTION_CALL".into()),
        ),
    ] {
        let server = MockServer::start().await;
        // A safety stop may come with no content at all.
        let body = json!({"candidates": [{"finishReason": raw}], "modelVersion": "gemini-x"});
        answer(&server, ResponseTemplate::new(200).set_body_json(body)).await;
        let reply = client(&server)
            .chat(ChatRequest::new(vec![Message::user("?")]))
            .await
            .unwrap();
        assert_eq!(reply.finish_reason, Some(expected), "{raw}");
        assert_eq!(reply.message.content, "");
        assert_eq!(reply.usage, Usage::default());
    }
}

#[tokio::test]
async fn a_blocked_prompt_is_an_error_naming_the_reason() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": []},
            "usageMetadata": {"promptTokenCount": 9},
            "modelVersion": "gemini-2.5-flash"
        })),
    )
    .await;
    match &error {
        ProviderError::BadRequest { status, message } => {
            assert_eq!(*status, 200);
            assert!(message.contains("blockReason SAFETY"), "{message}");
        }
        other => panic!("expected BadRequest, got {other:?}"),
    }
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn no_candidates_without_a_block_reason_is_malformed() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({"modelVersion": "gemini-2.5-flash"})),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::MalformedResponse { message, snippet }
            if message == "the response has no candidates" && snippet == r#"{"modelVersion":"gemini-2.5-flash"}"#),
        "{error:?}"
    );
}

#[tokio::test]
async fn rate_limit_reads_retry_info() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(429).set_body_json(google_error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota, please check your plan and billing details.",
            json!([
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                 "violations": [{"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                                 "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                {"@type": "type.googleapis.com/google.rpc.Help", "links": []},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}
            ]),
        )),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::RateLimited { message, .. } if message.starts_with("You exceeded your current quota")),
        "{error:?}"
    );
    assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_retry_after_header_wins_over_retry_info() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "7")
            .set_body_json(google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Slow down",
                json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "30s"}]),
            )),
    )
    .await;
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn an_invalid_key_answered_with_400_is_auth() {
    let server = MockServer::start().await;
    let error = chat_error(
        &server,
        ResponseTemplate::new(400).set_body_json(google_error(
            400,
            "INVALID_ARGUMENT",
            "API key not valid. Please pass a valid API key.",
            json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            }]),
        )),
    )
    .await;
    assert!(
        matches!(&error, ProviderError::Auth { status: 400, message } if message == "API key not valid. Please pass a valid API key."),
        "{error:?}"
    );
    assert!(error.is_fatal());
}

#[tokio::test]
async fn probe_reports_an_unknown_model() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1beta/models/gemini-2.5-flash"))
        .respond_with(ResponseTemplate::new(404).set_body_json(google_error(
            404,
            "NOT_FOUND",
            "Model is not found: models/gemini-2.5-flash",
            json!([]),
        )))
        .mount(&server)
        .await;
    let error = client(&server).probe().await.unwrap_err();
    assert!(
        matches!(&error, ProviderError::ModelNotFound { model, .. } if model == MODEL),
        "{error:?}"
    );
}

#[test]
fn build_errors() {
    assert_eq!(
        Gemini::builder().model(MODEL).build().unwrap_err(),
        BuildError::MissingApiKey { provider: "Gemini" }
    );
    assert_eq!(
        Gemini::builder().api_key(KEY).build().unwrap_err(),
        BuildError::MissingModel
    );
    let model = Gemini::builder()
        .api_key(KEY)
        .model("models/gemini-2.5-pro")
        .build()
        .unwrap();
    assert_eq!(model.base_url(), GEMINI_BASE_URL);
    assert_eq!(model.model_id(), "gemini-2.5-pro");
    // A proxy or mock server may need no key.
    assert!(
        Gemini::builder()
            .base_url("http://localhost:9000/v1beta")
            .model(MODEL)
            .build()
            .is_ok()
    );
}
