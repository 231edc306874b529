//! `OpenAiEmbedder` and `GeminiEmbedder` against wiremock servers speaking the OpenAI
//! `/embeddings` and Gemini `batchEmbedContents` formats. (The embedding retriever over
//! them is tested from the workspace root's `tests/rag.rs`.)

use std::sync::Arc;
use std::time::Duration;

use crate::common::{KEY, SHORT_TIMEOUT, assert_hides_key, dead_url};
use afterimage_core::{Embedder, Ledger, ProviderError, Usage};
use afterimage_providers::{GeminiEmbedder, OpenAiEmbedder, RetryEmbedder, RetryPolicy};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const OPENAI_MODEL: &str = "text-embedding-3-small";
const GEMINI_MODEL: &str = "gemini-embedding-001";
const GEMINI_PATH: &str = "/v1beta/models/gemini-embedding-001:batchEmbedContents";

fn openai(server: &MockServer) -> OpenAiEmbedder {
    OpenAiEmbedder::new(KEY, OPENAI_MODEL)
        .base_url(format!("{}/v1", server.uri()))
        .timeout(Duration::from_secs(5))
}

fn gemini(server: &MockServer) -> GeminiEmbedder {
    GeminiEmbedder::new(KEY, format!("models/{GEMINI_MODEL}"))
        .base_url(format!("{}/v1beta", server.uri()))
}

fn texts(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("text {i}")).collect()
}

/// The vector a test server gives a text: `[i, 1]` for `text {i}`, and for other texts
/// one axis per keyword.
fn vector(text: &str) -> Vec<f32> {
    if let Some(i) = text
        .strip_prefix("text ")
        .and_then(|n| n.parse::<f32>().ok())
    {
        return vec![i, 1.0];
    }
    ["refund", "ship"]
        .iter()
        .map(|k| if text.contains(k) { 1.0 } else { 0.0 })
        .collect()
}

/// Answers OpenAI embeddings requests from their inputs, listing `data` backwards to
/// check that clients order by `index`.
struct OpenAiEcho;

impl Respond for OpenAiEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let mut data: Vec<Value> = body["input"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                json!({"object": "embedding", "index": i, "embedding": vector(t.as_str().unwrap())})
            })
            .collect();
        data.reverse();
        ResponseTemplate::new(200).set_body_json(json!({
            "object": "list",
            "data": data,
            "model": OPENAI_MODEL,
            "usage": {"prompt_tokens": 8, "total_tokens": 8}
        }))
    }
}

/// Answers Gemini `batchEmbedContents` requests from their texts.
struct GeminiEcho;

impl Respond for GeminiEcho {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap();
        let embeddings: Vec<Value> = body["requests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| json!({"values": vector(r["content"]["parts"][0]["text"].as_str().unwrap())}))
            .collect();
        ResponseTemplate::new(200).set_body_json(json!({"embeddings": embeddings}))
    }
}

async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn openai_wire_format_and_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .respond_with(OpenAiEcho)
        .mount(&server)
        .await;
    let vectors = openai(&server).embed(&texts(3)).await.unwrap();
    assert_eq!(vectors, [vec![0.0, 1.0], vec![1.0, 1.0], vec![2.0, 1.0]]);
    assert_eq!(
        bodies(&server).await,
        [json!({"model": OPENAI_MODEL, "input": ["text 0", "text 1", "text 2"]})]
    );
    // Nothing to embed sends nothing.
    assert!(openai(&server).embed(&[]).await.unwrap().is_empty());
    assert_eq!(bodies(&server).await.len(), 1);
}

#[tokio::test]
async fn openai_batches_keep_their_order() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(OpenAiEcho)
        .mount(&server)
        .await;
    let vectors = openai(&server).embed(&texts(250)).await.unwrap();
    let firsts: Vec<f32> = vectors.iter().map(|v| v[0]).collect();
    let expected: Vec<f32> = (0..250).map(|i| i as f32).collect();
    assert_eq!(firsts, expected);
    let sizes: Vec<usize> = bodies(&server)
        .await
        .iter()
        .map(|b| b["input"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [96, 96, 58]);

    let vectors = openai(&server)
        .batch_size(100)
        .embed(&texts(201))
        .await
        .unwrap();
    assert_eq!(vectors.len(), 201);
    assert_eq!(vectors[200], [200.0, 1.0]);
    assert_eq!(bodies(&server).await.len(), 3 + 3);
}

#[tokio::test]
async fn billed_tokens_reach_the_ledger() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(OpenAiEcho)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(GeminiEcho)
        .mount(&server)
        .await;
    // Three requests of the OpenAI format, each billed 8 prompt tokens by the server.
    let (vectors, usage) = openai(&server)
        .batch_size(2)
        .embed_billed(&texts(5))
        .await
        .unwrap();
    assert_eq!(vectors.len(), 5);
    assert_eq!(usage, Usage::new(24, 0));
    // batchEmbedContents bills no tokens it reports.
    let (_, usage) = gemini(&server).embed_billed(&texts(2)).await.unwrap();
    assert_eq!(usage, Usage::default());

    let ledger = Ledger::new();
    let metered = ledger.meter_embedder(
        Arc::new(RetryEmbedder::new(
            Arc::new(openai(&server).batch_size(2)),
            RetryPolicy::default(),
        )),
        OPENAI_MODEL,
    );
    assert_eq!(metered.embed(&texts(4)).await.unwrap().len(), 4);
    let spent = ledger.book().model_total(OPENAI_MODEL);
    assert_eq!(spent.usage, Usage::new(16, 0), "{spent:?}");
}

#[tokio::test]
async fn gemini_wire_format_and_batches() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .and(header("x-goog-api-key", KEY))
        .respond_with(GeminiEcho)
        .mount(&server)
        .await;
    let embedder = gemini(&server);
    assert_eq!(embedder.model(), GEMINI_MODEL);
    let vectors = embedder.embed(&texts(2)).await.unwrap();
    assert_eq!(vectors, [vec![0.0, 1.0], vec![1.0, 1.0]]);
    let request = |text: &str| json!({"model": "models/gemini-embedding-001", "content": {"parts": [{"text": text}]}});
    assert_eq!(
        bodies(&server).await,
        [json!({"requests": [request("text 0"), request("text 1")]})]
    );
    // The key travels in the header only, never in the URL.
    let received = server.received_requests().await.unwrap();
    assert!(!received[0].url.as_str().contains(KEY));

    let vectors = embedder.embed(&texts(250)).await.unwrap();
    assert_eq!(vectors[249], [249.0, 1.0]);
    let sizes: Vec<usize> = bodies(&server)
        .await
        .iter()
        .skip(1)
        .map(|b| b["requests"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
}

#[tokio::test]
async fn http_failures_map_onto_provider_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "7")
                .set_body_json(
                    json!({"error": {"message": "Slow down", "code": "rate_limit_exceeded"}}),
                ),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(401).set_body_json(
            json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}}),
        ))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let embedder = openai(&server);
    let error = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(error.is_rate_limited(), "{error}");
    assert_eq!(error.retry_after(), Some(Duration::from_secs(7)));
    let error = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(error.is_auth(), "{error}");
    assert_hides_key(&error);
    let error = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::Server { status: 503, .. }),
        "{error}"
    );
    let shown = format!("{embedder:?} {:?}", gemini(&server));
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn broken_answers_are_malformed_responses() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(200).set_body_string("{\"data\": [oops"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [{"index": 0, "embedding": [1.0]}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(GEMINI_PATH))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"embeddings": [{"values": [1.0]}]})),
        )
        .mount(&server)
        .await;
    let error = openai(&server).embed(&texts(2)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::MalformedResponse { .. }),
        "{error}"
    );
    let error = openai(&server).embed(&texts(2)).await.unwrap_err();
    assert!(
        matches!(error, ProviderError::MalformedResponse { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("asked for 2 embeddings, got 1"),
        "{error}"
    );
    let error = gemini(&server).embed(&texts(3)).await.unwrap_err();
    assert!(
        error.to_string().contains("asked for 3 embeddings, got 1"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_settings_and_dead_servers_are_reported() {
    let embedder = OpenAiEmbedder::new(KEY, OPENAI_MODEL).base_url("not a url");
    assert!(embedder.check().unwrap_err().is_invalid_base_url());
    let error = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(!error.is_retryable(), "{error}");
    assert!(
        OpenAiEmbedder::new(KEY, " ")
            .check()
            .unwrap_err()
            .is_missing_setting()
    );

    let error = OpenAiEmbedder::new(KEY, OPENAI_MODEL)
        .base_url(dead_url("/v1"))
        .timeout(SHORT_TIMEOUT)
        .embed(&texts(1))
        .await
        .unwrap_err();
    assert!(error.is_unreachable(), "{error}");
    assert_hides_key(&error);
}

#[tokio::test]
async fn retry_embedder_waits_out_a_429_and_a_503_but_not_a_401() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "0")
                .set_body_json(json!({"error": {"message": "Slow down"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(OpenAiEcho)
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/embeddings"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {"message": "no"}})))
        .mount(&server)
        .await;
    let policy = RetryPolicy {
        base: Duration::from_millis(1),
        ..RetryPolicy::default()
    };
    let embedder = RetryEmbedder::new(Arc::new(openai(&server)), policy);
    let vectors = embedder.embed(&texts(2)).await.unwrap();
    assert_eq!(vectors, [vector("text 0"), vector("text 1")]);
    assert_eq!(embedder.retries(), 2);
    // Retrying cannot cure a rejected key: one request, no retry.
    let error = embedder.embed(&texts(1)).await.unwrap_err();
    assert!(error.is_auth(), "{error}");
    assert_eq!(embedder.retries(), 2);
    assert_eq!(server.received_requests().await.unwrap().len(), 4);
}
