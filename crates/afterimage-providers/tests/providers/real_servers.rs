//! Third-party servers' shapes, as their documentation and source show them: how
//! each rejects a JSON output mode it lacks (and how `Auto` steps down, once, for
//! every client of the endpoint), base URLs written as users write them, a 404 told
//! apart as a wrong path or a wrong model, and bounded response bodies.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use afterimage_core::{ChatModel, ChatRequest, JsonSchema, Message, ProviderError};
use afterimage_providers::{
    Anthropic, Endpoint, Gemini, GeminiEmbedder, OpenAiCompatible, Provider, StructuredOutput,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const MODEL: &str = "qwen2.5-7b-instruct";

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

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::system("Be brief."), Message::user("2+2?")])
        .json_schema(schema())
}

fn completion(content: &str) -> Value {
    json!({
        "choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2}
    })
}

fn body(request: &Request) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

/// The `response_format.type` a request sent (`None` without one).
fn format_type(body: &Value) -> Option<String> {
    body["response_format"]["type"].as_str().map(str::to_owned)
}

/// A server that answers `rejection` to the bodies `rejects` picks, and a JSON
/// answer to the rest.
struct Picky {
    rejects: fn(&Value) -> bool,
    rejection: ResponseTemplate,
    ok: Value,
}

impl Respond for Picky {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        if (self.rejects)(&body(request)) {
            self.rejection.clone()
        } else {
            ResponseTemplate::new(200).set_body_json(&self.ok)
        }
    }
}

async fn picky_openai(rejects: fn(&Value) -> bool, rejection: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(Picky {
            rejects,
            rejection,
            ok: completion(r#"{"answer": "4"}"#),
        })
        .mount(&server)
        .await;
    server
}

fn local(server: &MockServer, mode: StructuredOutput) -> OpenAiCompatible {
    OpenAiCompatible::local()
        .base_url(format!("{}/v1", server.uri()))
        .model(MODEL)
        .structured_output(mode)
        .build()
        .unwrap()
}

async fn sent(server: &MockServer) -> Vec<Value> {
    let requests = server.received_requests().await.unwrap();
    requests
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(body)
        .collect()
}

/// llama-cpp-python 0.3.x: pydantic refuses `json_schema` with a 500.
fn llama_cpp_python_500() -> ResponseTemplate {
    ResponseTemplate::new(500).set_body_json(json!({"detail": [{
        "type": "literal_error",
        "loc": ["body", "response_format", "type"],
        "msg": "Input should be 'text' or 'json_object'",
        "input": "json_schema",
        "ctx": {"expected": "'text' or 'json_object'"}
    }]}))
}

#[tokio::test]
async fn llama_cpp_python_steps_down_to_json_object_with_a_schema_and_stays_there() {
    let server = picky_openai(
        |b| format_type(b).as_deref() == Some("json_schema"),
        llama_cpp_python_500(),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    let reply = model.chat(ask()).await.unwrap();
    assert_eq!(reply.message.content, r#"{"answer": "4"}"#);
    model.chat(ask()).await.unwrap();
    let bodies = sent(&server).await;
    assert_eq!(bodies.len(), 3, "one rejection, then the new mode twice");
    assert_eq!(format_type(&bodies[0]).as_deref(), Some("json_schema"));
    for body in &bodies[1..] {
        assert_eq!(
            body["response_format"],
            json!({"type": "json_object", "schema": schema().schema})
        );
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(system.starts_with("Be brief.\n\nReply with a single JSON object"));
    }
    let state = model.structured_output();
    assert_eq!(state.mode(), StructuredOutput::JsonObjectSchema);
    let changes = state.changes();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].from, StructuredOutput::JsonSchema);
    assert_eq!(changes[0].to, StructuredOutput::JsonObjectSchema);
    assert!(
        changes[0].message.contains("response_format"),
        "{changes:?}"
    );
    assert!(changes[0].url.ends_with("/v1/chat/completions"));
}

#[tokio::test]
async fn fastapi_422_validation_errors_step_down_too() {
    let server = picky_openai(
        |b| format_type(b).as_deref() == Some("json_schema"),
        ResponseTemplate::new(422).set_body_json(json!({"detail": [{
            "type": "literal_error",
            "loc": ["body", "response_format", "type"],
            "msg": "Input should be 'text' or 'json_object'",
            "input": "json_schema"
        }]})),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    model.chat(ask()).await.unwrap();
    assert_eq!(
        model.structured_output().mode(),
        StructuredOutput::JsonObjectSchema
    );
}

#[tokio::test]
async fn a_step_down_is_not_a_failure_the_retry_layer_sees_and_every_key_follows() {
    let server = picky_openai(
        |b| format_type(b).as_deref() == Some("json_schema"),
        llama_cpp_python_500(),
    )
    .await;
    let stack = Endpoint::new(Provider::Local, MODEL)
        .base_url(format!("{}/v1", server.uri()))
        .api_key("key-one")
        .api_key("key-two")
        .build()
        .unwrap();
    for _ in 0..4 {
        stack.model().chat(ask()).await.unwrap();
    }
    let bodies = sent(&server).await;
    // One rejection for the endpoint, not one per key.
    assert_eq!(bodies.len(), 5);
    let modes: Vec<_> = bodies.iter().map(format_type).collect();
    assert_eq!(
        modes
            .iter()
            .filter(|m| m.as_deref() == Some("json_schema"))
            .count(),
        1
    );
    assert_eq!(
        stack.structured_output().mode(),
        StructuredOutput::JsonObjectSchema
    );
    assert_eq!(stack.throttle_stats().decreases, 0);
}

#[tokio::test]
async fn concurrent_rejections_step_down_once() {
    let server = picky_openai(
        |b| format_type(b).as_deref() == Some("json_schema"),
        llama_cpp_python_500(),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    let state = model.structured_output().clone();
    let model: Arc<dyn ChatModel> = Arc::new(model);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let model = Arc::clone(&model);
            tokio::spawn(async move { model.chat(ask()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(state.changes().len(), 1, "{:?}", state.changes());
    assert_eq!(state.mode(), StructuredOutput::JsonObjectSchema);
    let bodies = sent(&server).await;
    let in_new_mode = bodies
        .iter()
        .filter(|b| format_type(b).as_deref() == Some("json_object"))
        .count();
    assert_eq!(in_new_mode, 8, "every request ends in the new mode");
}

#[tokio::test]
async fn tgi_rejects_every_openai_format_and_ends_in_prompt_mode() {
    // TGI's Messages API knows only `{type: "json", value}` and `regex`.
    let server = picky_openai(
        |b| b.get("response_format").is_some(),
        ResponseTemplate::new(422).set_body_string(
            "Failed to deserialize the JSON body into the target type: response_format: unknown variant `json_object`, expected `json` or `regex` at line 1 column 400",
        ),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    model.chat(ask()).await.unwrap();
    let bodies = sent(&server).await;
    let modes: Vec<_> = bodies.iter().map(format_type).collect();
    assert_eq!(
        modes,
        vec![
            Some("json_schema".to_owned()),
            Some("json_object".to_owned()),
            Some("json_object".to_owned()),
            None
        ]
    );
    assert!(
        bodies[2]
            .get("response_format")
            .unwrap()
            .get("schema")
            .is_none()
    );
    let system = bodies[3]["messages"][0]["content"].as_str().unwrap();
    assert!(system.contains("\"answer\""), "{system}");
    assert_eq!(
        model.structured_output().mode(),
        StructuredOutput::PromptOnly
    );
    assert_eq!(model.structured_output().changes().len(), 3);
    // Requests without a schema never carried a format, and are not affected.
    model
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_server_rejecting_every_mode_ends_with_one_line_naming_the_fix() {
    let server = picky_openai(
        |_| true,
        ResponseTemplate::new(400).set_body_json(json!({
            "error": "'response_format' is not supported by this server"
        })),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    let error = model.chat(ask()).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Unsupported { .. }),
        "{error:?}"
    );
    assert!(error.is_fatal());
    let text = error.to_string();
    assert!(!text.contains('\n'), "{text}");
    assert!(text.contains("model.structured_output: prompt"), "{text}");
    assert!(text.contains("supports JSON output"), "{text}");
    assert!(
        text.contains(&format!("{}/v1/chat/completions", server.uri())),
        "{text}"
    );
    assert_eq!(sent(&server).await.len(), 4);
}

#[tokio::test]
async fn lm_studio_rejecting_an_explicit_json_object_names_the_fix() {
    let server = picky_openai(
        |b| format_type(b).as_deref() == Some("json_object"),
        ResponseTemplate::new(400).set_body_json(
            json!({"error": "'response_format.type' must be 'json_schema' or 'text'"}),
        ),
    )
    .await;
    let model = local(&server, StructuredOutput::JsonObject);
    let error = model.chat(ask()).await.unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, ProviderError::Unsupported { .. }),
        "{error:?}"
    );
    assert!(text.contains("model.structured_output: auto"), "{text}");
    assert!(text.contains("must be 'json_schema' or 'text'"), "{text}");
    assert_eq!(
        sent(&server).await.len(),
        1,
        "explicit modes never step down"
    );
    // Auto starts from json_schema, which LM Studio takes.
    let auto = local(&server, StructuredOutput::Auto);
    auto.chat(ask()).await.unwrap();
    assert!(auto.structured_output().changes().is_empty());
}

#[tokio::test]
async fn vllm_bad_schema_errors_are_not_confused_with_other_bad_requests() {
    // A 400 that names no part of structured output is an ordinary bad request.
    let server = picky_openai(
        |_| true,
        ResponseTemplate::new(400).set_body_json(json!({
            "object": "error",
            "message": "temperature must be in [0, 2]",
            "type": "BadRequestError",
            "code": 400
        })),
    )
    .await;
    let model = local(&server, StructuredOutput::Auto);
    let error = model.chat(ask()).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::BadRequest { status: 400, .. }),
        "{error:?}"
    );
    assert_eq!(sent(&server).await.len(), 1);
    assert!(model.structured_output().changes().is_empty());
}

#[tokio::test]
async fn explicit_modes_send_exactly_their_shape() {
    let server = picky_openai(|_| false, ResponseTemplate::new(500)).await;
    for mode in [
        StructuredOutput::JsonSchema,
        StructuredOutput::JsonObjectSchema,
        StructuredOutput::JsonObject,
        StructuredOutput::PromptOnly,
    ] {
        local(&server, mode).chat(ask()).await.unwrap();
    }
    let bodies = sent(&server).await;
    assert_eq!(bodies[0]["response_format"]["type"], "json_schema");
    assert_eq!(
        bodies[0]["response_format"]["json_schema"]["name"],
        "answer"
    );
    assert_eq!(bodies[0]["messages"][0]["content"], "Be brief.");
    assert_eq!(
        bodies[1]["response_format"],
        json!({"type": "json_object", "schema": schema().schema})
    );
    assert_eq!(bodies[2]["response_format"], json!({"type": "json_object"}));
    assert!(bodies[3].get("response_format").is_none());
    for body in &bodies[1..] {
        let system = body["messages"][0]["content"].as_str().unwrap();
        assert!(
            system.contains("Reply with a single JSON object"),
            "{system}"
        );
    }
}

#[tokio::test]
async fn deepseek_auto_starts_from_json_object() {
    let server = picky_openai(|_| false, ResponseTemplate::new(500)).await;
    let model = OpenAiCompatible::deepseek()
        .base_url(format!("{}/v1", server.uri()))
        .api_key("sk-x")
        .model("deepseek-chat")
        .build()
        .unwrap();
    model.chat(ask()).await.unwrap();
    assert_eq!(
        sent(&server).await[0]["response_format"],
        json!({"type": "json_object"})
    );
}

#[tokio::test]
async fn a_resumed_endpoint_starts_from_the_recorded_mode() {
    let server = picky_openai(|_| false, ResponseTemplate::new(500)).await;
    let mut endpoint =
        Endpoint::new(Provider::Local, MODEL).base_url(format!("{}/v1", server.uri()));
    endpoint.structured_output_start = Some(StructuredOutput::JsonObjectSchema);
    let stack = endpoint.build().unwrap();
    stack.model().chat(ask()).await.unwrap();
    assert_eq!(
        format_type(&sent(&server).await[0]).as_deref(),
        Some("json_object")
    );
    assert_eq!(
        stack.structured_output().mode(),
        StructuredOutput::JsonObjectSchema
    );
    assert!(stack.structured_output().is_auto());
}

const GENERATE: &str = "/v1beta/models/gemini-2.5-flash:generateContent";

fn gemini_reply(text: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}]})
}

#[tokio::test]
async fn gemini_steps_down_from_response_json_schema_to_response_schema() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GENERATE))
        .respond_with(Picky {
            rejects: |b| b["generationConfig"].get("responseJsonSchema").is_some(),
            rejection: ResponseTemplate::new(400).set_body_json(json!({"error": {
                "code": 400,
                "message": "Invalid JSON payload received. Unknown name \"responseJsonSchema\" at 'generation_config': Cannot find field.",
                "status": "INVALID_ARGUMENT"
            }})),
            ok: gemini_reply(r#"{"answer": "4"}"#),
        })
        .mount(&server)
        .await;
    let model = Gemini::builder()
        .base_url(server.uri())
        .model("gemini-2.5-flash")
        .build()
        .unwrap();
    model.chat(ask()).await.unwrap();
    model.chat(ask()).await.unwrap();
    let bodies = sent(&server).await;
    assert_eq!(bodies.len(), 3);
    let config = &bodies[2]["generationConfig"];
    assert_eq!(config["responseMimeType"], "application/json");
    assert!(config.get("responseJsonSchema").is_none());
    assert!(
        config["responseSchema"]
            .get("additionalProperties")
            .is_none()
    );
    assert_eq!(
        model.structured_output().mode(),
        StructuredOutput::JsonObjectSchema
    );
}

#[tokio::test]
async fn gemini_prompt_mode_sends_no_json_mode_and_puts_the_schema_in_the_instruction() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GENERATE))
        .respond_with(ResponseTemplate::new(200).set_body_json(gemini_reply("{}")))
        .mount(&server)
        .await;
    let model = Gemini::builder()
        .base_url(format!("{}/v1beta/", server.uri()))
        .model("gemini-2.5-flash")
        .structured_output(StructuredOutput::PromptOnly)
        .build()
        .unwrap();
    model.chat(ask()).await.unwrap();
    let body = &sent(&server).await[0];
    assert!(body.get("generationConfig").is_none(), "{body}");
    let system = body["systemInstruction"]["parts"][0]["text"]
        .as_str()
        .unwrap();
    assert!(
        system.starts_with("Be brief.\n\nReply with a single JSON object"),
        "{system}"
    );
}

#[tokio::test]
async fn anthropic_steps_down_from_a_forced_tool_to_the_prompt() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(Picky {
            rejects: |b| b.get("tool_choice").is_some(),
            rejection: ResponseTemplate::new(400).set_body_json(json!({
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "tool_choice: forced tool use is not supported by this gateway"}
            })),
            ok: json!({"content": [{"type": "text", "text": "{\"answer\": \"4\"}"}], "stop_reason": "end_turn"}),
        })
        .mount(&server)
        .await;
    let model = Anthropic::builder()
        .base_url(format!("{}/", server.uri()))
        .model("claude-sonnet-4-5")
        .build()
        .unwrap();
    let reply = model.chat(ask()).await.unwrap();
    assert_eq!(reply.message.content, r#"{"answer": "4"}"#);
    let bodies = sent(&server).await;
    assert_eq!(bodies.len(), 2);
    assert!(bodies[1].get("tools").is_none());
    assert!(bodies[1]["system"].as_str().unwrap().contains("\"answer\""));
    assert_eq!(
        model.structured_output().mode(),
        StructuredOutput::PromptOnly
    );
}

#[test]
fn gemini_and_anthropic_base_urls_get_their_version_unless_they_have_one() {
    let gemini = |url: &str| {
        Gemini::builder()
            .base_url(url)
            .model("m")
            .build()
            .unwrap()
            .base_url()
            .to_owned()
    };
    assert_eq!(gemini("http://host:4000"), "http://host:4000/v1beta");
    assert_eq!(gemini("http://host:4000/"), "http://host:4000/v1beta");
    assert_eq!(gemini("http://host:4000/v1beta"), "http://host:4000/v1beta");
    assert_eq!(
        gemini("http://host:4000/v1beta/"),
        "http://host:4000/v1beta"
    );
    assert_eq!(gemini("http://host:4000/v1"), "http://host:4000/v1");
    assert_eq!(
        gemini("http://host:4000/v1alpha"),
        "http://host:4000/v1alpha"
    );
    assert_eq!(gemini("http://gw/gemini"), "http://gw/gemini/v1beta");
    let anthropic = |url: &str| {
        Anthropic::builder()
            .base_url(url)
            .model("m")
            .build()
            .unwrap()
            .base_url()
            .to_owned()
    };
    assert_eq!(anthropic("http://host:4000"), "http://host:4000/v1");
    assert_eq!(anthropic("http://host:4000/"), "http://host:4000/v1");
    assert_eq!(anthropic("http://host:4000/v1"), "http://host:4000/v1");
    assert_eq!(anthropic("http://gw/anthropic"), "http://gw/anthropic/v1");
    assert_eq!(
        anthropic("http://gw/anthropic/v1/"),
        "http://gw/anthropic/v1"
    );
    // OpenAI-compatible servers disagree on a version (DeepSeek has none), so their
    // URLs stay as written.
    let openai = OpenAiCompatible::local()
        .base_url("http://host:4000")
        .model("m")
        .build()
        .unwrap();
    assert_eq!(openai.base_url(), "http://host:4000");
}

#[tokio::test]
async fn the_gemini_embedder_takes_a_root_url_too() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        ))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"embeddings": [{"values": [1.0]}]})),
        )
        .mount(&server)
        .await;
    let embedder = GeminiEmbedder::new("k", "gemini-embedding-001").base_url(server.uri());
    let vectors = afterimage_core::Embedder::embed(&embedder, &["a".to_owned()])
        .await
        .unwrap();
    assert_eq!(vectors, vec![vec![1.0]]);
}

#[test]
fn sdk_base_url_variables_are_read_through_the_lookup_given() {
    let env = |name: &str| match name {
        "OPENAI_BASE_URL" => Some("http://o:1/v1".to_owned()),
        "ANTHROPIC_BASE_URL" => Some("http://a:2".to_owned()),
        "GOOGLE_GEMINI_BASE_URL" => Some("  ".to_owned()),
        _ => None,
    };
    assert_eq!(
        Provider::Openai.base_url_from_env(env).as_deref(),
        Some("http://o:1/v1")
    );
    assert_eq!(
        Provider::Anthropic.base_url_from_env(env).as_deref(),
        Some("http://a:2")
    );
    assert_eq!(
        Provider::Gemini.base_url_from_env(env),
        None,
        "blank is unset"
    );
    assert_eq!(Provider::Local.base_url_from_env(env), None);
    assert_eq!(Provider::Deepseek.base_url_env(), None);
}

#[tokio::test]
async fn a_404_with_a_model_list_names_the_model_and_what_the_server_has() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"message": "no such model"}})),
        )
        .mount(&server)
        .await;
    let listed: Vec<Value> = (0..12)
        .map(|i| json!({"id": format!("model-{i}")}))
        .collect();
    Mock::given(method("GET"))
        .and(path("/v1/models"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list", "data": listed})),
        )
        .mount(&server)
        .await;
    let error = local(&server, StructuredOutput::Auto)
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, ProviderError::ModelNotFound { .. }),
        "{error:?}"
    );
    assert!(text.contains(&format!("`{MODEL}`")), "{text}");
    assert!(
        text.contains("`model-0`") && text.contains("`model-9`"),
        "{text}"
    );
    assert!(
        !text.contains("`model-10`") && text.contains("and 2 more"),
        "{text}"
    );
    assert!(text.contains("/v1/chat/completions"), "{text}");
}

#[tokio::test]
async fn a_404_where_nothing_lists_models_is_a_wrong_path_not_a_wrong_model() {
    // A gateway root without Anthropic behind it: 404 everywhere, no JSON.
    let server = MockServer::start().await;
    let model = Anthropic::builder()
        .base_url(format!("{}/wrong", server.uri()))
        .api_key("sk-ant-secret-key")
        .model("claude-x")
        .build()
        .unwrap();
    let error = model
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(
        matches!(error, ProviderError::EndpointNotFound { .. }),
        "{error:?}"
    );
    assert!(error.is_fatal());
    assert!(!text.contains("check the model name"), "{text}");
    assert!(
        text.contains(&format!("{}/wrong/v1/messages", server.uri())),
        "{text}"
    );
    assert!(text.contains("https://api.anthropic.com/v1"), "{text}");
    assert!(!text.contains("sk-ant-secret-key"), "{text}");
    let gets = server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(gets, 1, "the models are listed once");
}

#[tokio::test]
async fn a_gemini_probe_404_on_a_wrong_path_says_so() {
    let server = MockServer::start().await;
    let model = Gemini::builder()
        .base_url(format!("{}/api", server.uri()))
        .model("gemini-2.5-flash")
        .build()
        .unwrap();
    let error = model.probe().await.unwrap_err();
    assert!(
        matches!(error, ProviderError::EndpointNotFound { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("/api/v1beta/models/gemini-2.5-flash"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_over_the_limit_is_an_error_naming_the_limit_and_the_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_bytes(vec![b' '; 17 * 1024 * 1024]))
        .mount(&server)
        .await;
    let error = local(&server, StructuredOutput::Auto)
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap_err();
    let text = error.to_string();
    assert!(text.contains("16 MiB"), "{text}");
    assert!(text.contains("model.max_response_bytes"), "{text}");
    assert!(!error.is_retryable());
}

/// A server streaming a chunked body without end; returns its address and how many
/// bytes it managed to write before the client hung up.
async fn endless_server(error_status: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let written = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&written);
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = vec![0u8; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let status = if error_status {
            "500 Internal Server Error"
        } else {
            "200 OK"
        };
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let chunk = vec![b'x'; 64 * 1024];
        // Stops on its own at 256 MiB, so a client that reads everything fails the
        // test instead of hanging it.
        for _ in 0..4096 {
            let mut frame = format!("{:x}\r\n", chunk.len()).into_bytes();
            frame.extend_from_slice(&chunk);
            frame.extend_from_slice(b"\r\n");
            if socket.write_all(&frame).await.is_err() {
                return;
            }
            counter.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        let _ = socket.write_all(b"0\r\n\r\n").await;
    });
    (address, written)
}

#[tokio::test]
async fn a_streamed_body_stops_at_the_limit_without_being_read_whole() {
    for error_status in [false, true] {
        let (address, written) = endless_server(error_status).await;
        let model = OpenAiCompatible::local()
            .base_url(format!("{address}/v1"))
            .model(MODEL)
            .max_response_bytes(1024 * 1024)
            .build()
            .unwrap();
        let error = model
            .chat(ChatRequest::new(vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert!(error.to_string().contains("1 MiB"), "{error}");
        drop(model);
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let sent = written.load(Ordering::SeqCst);
        assert!(sent < 64 * 1024 * 1024, "the server wrote {sent} bytes");
    }
}

#[tokio::test]
async fn endpoint_generation_defaults_fill_in_and_cap() {
    let server = picky_openai(|_| false, ResponseTemplate::new(500)).await;
    let stack = Endpoint::new(Provider::Local, MODEL)
        .base_url(format!("{}/v1", server.uri()))
        .max_tokens(256)
        .temperature(0.3)
        .build()
        .unwrap();
    let model = stack.model();
    model
        .chat(ChatRequest::new(vec![Message::user("a")]))
        .await
        .unwrap();
    model
        .chat(
            ChatRequest::new(vec![Message::user("b")])
                .max_tokens(4096)
                .temperature(0.9),
        )
        .await
        .unwrap();
    model
        .chat(ChatRequest::new(vec![Message::user("c")]).max_tokens(64))
        .await
        .unwrap();
    let bodies = sent(&server).await;
    assert_eq!(bodies[0]["max_tokens"], 256);
    assert!((bodies[0]["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
    assert_eq!(
        bodies[1]["max_tokens"], 256,
        "a cap for requests asking more"
    );
    assert!((bodies[1]["temperature"].as_f64().unwrap() - 0.9).abs() < 1e-6);
    assert_eq!(bodies[2]["max_tokens"], 64);
}
