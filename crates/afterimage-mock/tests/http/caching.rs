//! The mock's prompt cache: cached tokens reported in each wire format, and the stats
//! counting every token served.

use afterimage_mock::{MockConfig, MockServer};
use serde_json::{Value, json};

use super::{chat_url, gemini_url, post, server, words};

/// A system prompt of 90 words: 120 tokens by the mock's estimate.
fn document() -> String {
    "refunds take five days after approval ".repeat(15)
}

fn small_cache() -> MockConfig {
    MockConfig::default().with_prompt_cache_min_tokens(100)
}

fn tokens(words: u64) -> u64 {
    words * 4 / 3
}

fn openai_body(model: &str, question: &str) -> Value {
    json!({
        "model": model,
        "messages": [
            {"role": "system", "content": document()},
            {"role": "user", "content": question},
        ],
    })
}

#[tokio::test]
async fn openai_reports_a_shared_prefix_as_cached_the_second_time() {
    let server = server(small_cache()).await;
    let (_, first) = post(
        &chat_url(&server),
        &openai_body("gpt-test", "What about refunds?"),
    )
    .await;
    assert_eq!(first["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    let (_, second) = post(&chat_url(&server), &openai_body("gpt-test", "And returns?")).await;
    let usage = &second["usage"];
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], tokens(90));
    assert_eq!(usage["prompt_tokens"], tokens(90 + words("And returns?")));
    assert!(usage.get("prompt_cache_hit_tokens").is_none());
    // Another model has a cache of its own.
    let (_, other) = post(
        &chat_url(&server),
        &openai_body("gpt-other", "And returns?"),
    )
    .await;
    assert_eq!(other["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[tokio::test]
async fn deepseek_models_also_get_hit_and_miss_counts() {
    let server = server(small_cache()).await;
    post(
        &chat_url(&server),
        &openai_body("deepseek-chat", "What about refunds?"),
    )
    .await;
    let (_, reply) = post(
        &chat_url(&server),
        &openai_body("deepseek-chat", "And returns?"),
    )
    .await;
    let usage = &reply["usage"];
    let prompt = usage["prompt_tokens"].as_u64().unwrap();
    assert_eq!(usage["prompt_cache_hit_tokens"], tokens(90));
    assert_eq!(usage["prompt_cache_miss_tokens"], prompt - tokens(90));
}

#[tokio::test]
async fn prefixes_below_the_minimum_and_servers_without_a_cache_report_none() {
    for config in [
        MockConfig::default(),
        small_cache().with_prompt_cache(false),
    ] {
        let server = server(config).await;
        post(
            &chat_url(&server),
            &openai_body("gpt-test", "What about refunds?"),
        )
        .await;
        let (_, reply) = post(&chat_url(&server), &openai_body("gpt-test", "And returns?")).await;
        assert_eq!(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
        assert_eq!(server.stats().cached_input_tokens, 0);
    }
}

fn gemini_body(question: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": document()}]},
        "contents": [{"role": "user", "parts": [{"text": question}]}],
    })
}

#[tokio::test]
async fn gemini_reports_cached_content_tokens() {
    let server = server(small_cache()).await;
    let url = gemini_url(&server, "gemini-test");
    let (_, first) = post(&url, &gemini_body("What about refunds?")).await;
    assert!(
        first["usageMetadata"]
            .get("cachedContentTokenCount")
            .is_none()
    );
    let (_, second) = post(&url, &gemini_body("And returns?")).await;
    assert_eq!(
        second["usageMetadata"]["cachedContentTokenCount"],
        tokens(90)
    );
}

fn anthropic_body(question: &str, marked: bool) -> Value {
    let mut system = json!({"type": "text", "text": document()});
    let mut last = json!({"type": "text", "text": question});
    if marked {
        system["cache_control"] = json!({"type": "ephemeral"});
        last["cache_control"] = json!({"type": "ephemeral"});
    }
    json!({
        "model": "claude-test",
        "max_tokens": 256,
        "system": [system],
        "messages": [{"role": "user", "content": [last]}],
    })
}

async fn anthropic_usage(server: &MockServer, body: &Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/messages", server.anthropic_base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(body)
        .send()
        .await
        .unwrap();
    let reply: Value = response.json().await.unwrap();
    reply["usage"].clone()
}

#[tokio::test]
async fn anthropic_writes_marked_prefixes_then_reads_them() {
    let server = server(small_cache()).await;
    let question = "What about refunds?";
    let prompt = tokens(90 + words(question));

    let first = anthropic_usage(&server, &anthropic_body(question, true)).await;
    assert_eq!(first["cache_read_input_tokens"], 0);
    assert_eq!(first["cache_creation_input_tokens"], prompt);
    assert_eq!(first["input_tokens"], 0);

    let again = anthropic_usage(&server, &anthropic_body(question, true)).await;
    assert_eq!(again["cache_read_input_tokens"], prompt);
    assert_eq!(again["cache_creation_input_tokens"], 0);

    // A new question reads the system prompt and writes the rest, up to its mark.
    let other = "And returns?";
    let next = anthropic_usage(&server, &anthropic_body(other, true)).await;
    assert_eq!(next["cache_read_input_tokens"], tokens(90));
    assert_eq!(
        next["cache_creation_input_tokens"],
        tokens(90 + words(other)) - tokens(90)
    );
}

#[tokio::test]
async fn anthropic_caches_nothing_unmarked() {
    let server = server(small_cache()).await;
    for _ in 0..2 {
        let usage = anthropic_usage(&server, &anthropic_body("Refunds?", false)).await;
        assert_eq!(usage["cache_read_input_tokens"], 0);
        assert_eq!(usage["cache_creation_input_tokens"], 0);
        assert_eq!(usage["input_tokens"], tokens(90 + 1));
    }
}

#[tokio::test]
async fn stats_count_every_token_served_as_clients_bill_it() {
    let server = server(small_cache()).await;
    let mut expected = (0, 0, 0, 0);
    for question in ["What about refunds?", "And returns?"] {
        let (_, reply) = post(&chat_url(&server), &openai_body("gpt-test", question)).await;
        let usage = &reply["usage"];
        expected.0 += usage["prompt_tokens"].as_u64().unwrap();
        expected.1 += usage["completion_tokens"].as_u64().unwrap();
        expected.2 += usage["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap();
    }
    for _ in 0..2 {
        let usage = anthropic_usage(&server, &anthropic_body("Refunds?", true)).await;
        let (read, written) = (
            usage["cache_read_input_tokens"].as_u64().unwrap(),
            usage["cache_creation_input_tokens"].as_u64().unwrap(),
        );
        expected.0 += usage["input_tokens"].as_u64().unwrap() + read + written;
        expected.1 += usage["output_tokens"].as_u64().unwrap();
        expected.2 += read;
        expected.3 += written;
    }
    let stats = server.stats();
    assert_eq!(
        (
            stats.input_tokens,
            stats.output_tokens,
            stats.cached_input_tokens,
            stats.cache_write_tokens
        ),
        expected
    );
    assert!(stats.cached_input_tokens > 0 && stats.cache_write_tokens > 0);
    assert!(stats.to_string().contains("tokens in"), "{stats}");
    server.reset_stats();
    assert_eq!(server.stats().input_tokens, 0);
}
