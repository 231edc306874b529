//! Usage as each provider bills it (cached, written and reasoning tokens, in the
//! documented wire shapes), and the prompt caching hints the clients send.

use std::time::Duration;

use afterimage_core::{ApiKey, ChatModel, ChatRequest, Message, ToolCall, Usage};
use afterimage_providers::{
    Anthropic, AnthropicBuilder, Endpoint, Gemini, OpenAiCompatible, Provider, SharedParts,
};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::KEY;

/// Answers every POST with `body`.
async fn server_answering(body: Value) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(body))
        .mount(&server)
        .await;
    server
}

async fn sent_body(server: &MockServer) -> Value {
    let requests = server.received_requests().await.unwrap();
    serde_json::from_slice(&requests.last().unwrap().body).unwrap()
}

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::user("?")])
}

fn openai_completion(usage: Value) -> Value {
    json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-5-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                     "finish_reason": "stop"}],
        "usage": usage
    })
}

fn openai_builder(server: &MockServer) -> afterimage_providers::OpenAiCompatibleBuilder {
    OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model("gpt-5-mini")
        .timeout(Duration::from_secs(5))
}

async fn openai_usage(usage: Value) -> Usage {
    let server = server_answering(openai_completion(usage)).await;
    let client = openai_builder(&server).build().unwrap();
    client.chat(ask()).await.unwrap().usage
}

#[tokio::test]
async fn openai_cached_and_reasoning_tokens_are_parts_of_the_totals() {
    let usage = openai_usage(json!({
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "total_tokens": 2306,
        "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 192, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        }
    }))
    .await;
    assert_eq!(usage, Usage::new(2006, 300).cached(1920).reasoning(192));
    assert_eq!(usage.uncached_input_tokens(), 86);
}

#[tokio::test]
async fn deepseek_cache_hits_are_cached_tokens() {
    let usage = openai_usage(json!({
        "prompt_tokens": 1500,
        "completion_tokens": 40,
        "total_tokens": 1540,
        "prompt_cache_hit_tokens": 1280,
        "prompt_cache_miss_tokens": 220,
        "completion_tokens_details": {"reasoning_tokens": 25}
    }))
    .await;
    assert_eq!(usage, Usage::new(1500, 40).cached(1280).reasoning(25));
    // Without `prompt_tokens`, the prompt is the hits plus the misses.
    let usage = openai_usage(json!({
        "completion_tokens": 5, "prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36
    }))
    .await;
    assert_eq!(usage, Usage::new(100, 5).cached(64));
}

#[tokio::test]
async fn odd_usage_values_cost_their_detail_never_the_reply() {
    for (usage, expected) in [
        (json!({}), Usage::default()),
        (json!("n/a"), Usage::default()),
        (
            json!({"prompt_tokens": "12", "completion_tokens": 4.0,
                   "prompt_tokens_details": null, "completion_tokens_details": "none"}),
            Usage::new(12, 4),
        ),
        (
            json!({"prompt_tokens": -5, "completion_tokens": 3,
                   "prompt_tokens_details": {"cached_tokens": 99}}),
            Usage::new(0, 3),
        ),
        (
            json!({"prompt_tokens": 10, "completion_tokens": 3,
                   "prompt_tokens_details": {"cached_tokens": 99},
                   "completion_tokens_details": {"reasoning_tokens": 7}}),
            Usage::new(10, 3).cached(10).reasoning(3),
        ),
    ] {
        assert_eq!(openai_usage(usage.clone()).await, expected, "{usage}");
    }
}

#[tokio::test]
async fn openai_sends_the_cache_key_only_where_asked_or_to_openai_itself() {
    let server = server_answering(openai_completion(json!({}))).await;
    let keyed = ask().cache_key("run-1/respondent");

    let local = openai_builder(&server).build().unwrap();
    local.chat(keyed.clone()).await.unwrap();
    assert!(sent_body(&server).await.get("prompt_cache_key").is_none());

    let asked = openai_builder(&server)
        .prompt_cache_key(true)
        .build()
        .unwrap();
    asked.chat(keyed).await.unwrap();
    assert_eq!(
        sent_body(&server).await["prompt_cache_key"],
        "run-1/respondent"
    );

    asked.chat(ask()).await.unwrap();
    assert!(sent_body(&server).await.get("prompt_cache_key").is_none());
}

fn anthropic_reply(usage: Value) -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "ok"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": usage
    })
}

fn anthropic_builder(server: &MockServer, model: &str) -> AnthropicBuilder {
    Anthropic::builder()
        .base_url(format!("{}/v1", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model(model)
        .timeout(Duration::from_secs(5))
}

#[tokio::test]
async fn anthropic_cache_reads_and_writes_join_the_input() {
    let server = server_answering(anthropic_reply(json!({
        "input_tokens": 50,
        "cache_creation_input_tokens": 248,
        "cache_read_input_tokens": 100000,
        "cache_creation": {"ephemeral_5m_input_tokens": 248, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 503,
        "service_tier": "standard"
    })))
    .await;
    let client = anthropic_builder(&server, "claude-sonnet-4-5")
        .build()
        .unwrap();
    let usage = client.chat(ask()).await.unwrap().usage;
    assert_eq!(
        usage,
        Usage::new(100_298, 503).cached(100_000).cache_writes(248)
    );
    assert_eq!(usage.uncached_input_tokens(), 50);
}

/// A system prompt of about `tokens` tokens by the client's estimate.
fn long_text(tokens: usize) -> String {
    "word ".repeat(tokens * 4 / 5)
}

fn dialog(system: String) -> ChatRequest {
    ChatRequest::new(vec![
        Message::system(system),
        Message::user("What does the document say?"),
        Message {
            tool_calls: vec![ToolCall::function("t1", "lookup", r#"{"q":"refunds"}"#)],
            ..Message::assistant("Let me look.")
        },
        Message::tool("t1", "Refunds take five days."),
        Message::user("And returns?"),
    ])
    // A dialog's next turn shares this history.
    .cache_key("run/r/doc")
}

const EPHEMERAL: &str = r#"{"type":"ephemeral"}"#;

fn cache_control(block: &Value) -> String {
    block["cache_control"].to_string()
}

#[tokio::test]
async fn anthropic_marks_the_system_prompt_and_the_last_message_when_long() {
    let server = server_answering(anthropic_reply(json!({}))).await;
    let client = anthropic_builder(&server, "claude-sonnet-4-5")
        .build()
        .unwrap();
    client.chat(dialog(long_text(1100))).await.unwrap();

    let body = sent_body(&server).await;
    let system = body["system"].as_array().expect("system as blocks");
    assert_eq!(system.len(), 1);
    assert_eq!(system[0]["type"], "text");
    assert_eq!(cache_control(&system[0]), EPHEMERAL);
    let messages = body["messages"].as_array().unwrap();
    let last = messages.last().unwrap()["content"].as_array().unwrap();
    assert_eq!(cache_control(last.last().unwrap()), EPHEMERAL);
    // Only those two: the breakpoints before them are found by looking back.
    let marks = body.to_string().matches("cache_control").count();
    assert_eq!(marks, 2, "{body}");
}

#[tokio::test]
async fn anthropic_leaves_the_history_of_a_one_off_request_unmarked() {
    let server = server_answering(anthropic_reply(json!({}))).await;
    let client = anthropic_builder(&server, "claude-sonnet-4-5")
        .build()
        .unwrap();
    let mut one_off = dialog(long_text(1100));
    one_off.cache_key = None;
    client.chat(one_off).await.unwrap();

    let body = sent_body(&server).await;
    assert_eq!(cache_control(&body["system"][0]), EPHEMERAL);
    assert_eq!(
        body.to_string().matches("cache_control").count(),
        1,
        "{body}"
    );
}

#[tokio::test]
async fn anthropic_marks_a_long_history_even_after_a_short_system_prompt() {
    let server = server_answering(anthropic_reply(json!({}))).await;
    let client = anthropic_builder(&server, "claude-sonnet-4-5")
        .build()
        .unwrap();
    let mut request = dialog("Be brief.".into());
    request.messages.insert(1, Message::user(long_text(1100)));
    client.chat(request).await.unwrap();

    let body = sent_body(&server).await;
    assert_eq!(body["system"], "Be brief.");
    assert_eq!(body.to_string().matches("cache_control").count(), 1);
}

#[tokio::test]
async fn anthropic_leaves_short_prompts_and_disabled_clients_unmarked() {
    let server = server_answering(anthropic_reply(json!({}))).await;
    // Long enough for Sonnet, too short for Haiku's minimum of 2048 tokens.
    let haiku = anthropic_builder(&server, "claude-3-5-haiku-latest")
        .build()
        .unwrap();
    haiku.chat(dialog(long_text(1100))).await.unwrap();
    let body = sent_body(&server).await;
    assert!(body["system"].is_string(), "{body}");
    assert!(!body.to_string().contains("cache_control"), "{body}");

    let off = anthropic_builder(&server, "claude-sonnet-4-5")
        .prompt_caching(false)
        .build()
        .unwrap();
    off.chat(dialog(long_text(3000))).await.unwrap();
    assert!(
        !sent_body(&server)
            .await
            .to_string()
            .contains("cache_control")
    );
}

#[tokio::test]
async fn an_endpoint_with_caching_off_sends_no_hints_to_either_api() {
    let server = server_answering(anthropic_reply(json!({}))).await;
    for on in [true, false] {
        let stack = Endpoint::new(Provider::Anthropic, "claude-sonnet-4-5")
            .base_url(format!("{}/v1", server.uri()))
            .api_key(KEY)
            .max_retries(0)
            .prompt_caching(on)
            .build()
            .unwrap();
        stack.model().chat(dialog(long_text(1100))).await.unwrap();
        let body = sent_body(&server).await.to_string();
        assert_eq!(body.contains("cache_control"), on, "{body}");
    }

    // OpenAI's own host, resolved to the mock: the client's default sends the key
    // there, so only the endpoint's switch can withhold it.
    let server = server_answering(openai_completion(json!({}))).await;
    let client = reqwest::Client::builder()
        .resolve("api.openai.com", *server.address())
        .build()
        .unwrap();
    let base_url = format!("http://api.openai.com:{}/v1", server.address().port());
    for on in [true, false] {
        let stack = Endpoint::new(Provider::Openai, "gpt-4o-mini")
            .base_url(&base_url)
            .api_key(KEY)
            .max_retries(0)
            .prompt_caching(on)
            .build_with(&SharedParts::new(client.clone()))
            .unwrap();
        let keyed = ask().cache_key("run-1/respondent");
        stack.model().chat(keyed).await.unwrap();
        let body = sent_body(&server).await;
        assert_eq!(body.get("prompt_cache_key").is_some(), on, "{body}");
    }
}

#[tokio::test]
async fn gemini_cached_content_and_thoughts_are_parts_of_the_totals() {
    let server = server_answering(json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "ok"}]},
                        "finishReason": "STOP", "index": 0}],
        "usageMetadata": {
            "promptTokenCount": 2100,
            "candidatesTokenCount": 40,
            "thoughtsTokenCount": 300,
            "cachedContentTokenCount": 2048,
            "totalTokenCount": 2440,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": 2100}],
            "cacheTokensDetails": [{"modality": "TEXT", "tokenCount": 2048}]
        },
        "modelVersion": "gemini-2.5-flash"
    }))
    .await;
    let client = Gemini::builder()
        .base_url(format!("{}/v1beta", server.uri()))
        .api_key(ApiKey::new(KEY))
        .model("gemini-2.5-flash")
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let usage = client.chat(ask()).await.unwrap().usage;
    assert_eq!(usage, Usage::new(2100, 340).cached(2048).reasoning(300));
}
