//! `Endpoint::build` and `EmbeddingEndpoint::build` against a wiremock server: the
//! production stack answers, rotates keys, and shares its client and gauge.

use std::time::Duration;

use afterimage_core::{ChatRequest, Message};
use afterimage_providers::{
    BuildError, EmbeddingEndpoint, Endpoint, Provider, SharedParts, key_fingerprint,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn openai_server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "choices": [{"message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2}
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn one_key_builds_a_throttled_retried_client_without_a_pool() {
    let server = openai_server().await;
    let stack = Endpoint::new(Provider::Openai, "gpt-4o-mini")
        .base_url(format!("{}/v1", server.uri()))
        .api_key("sk-one")
        .build()
        .unwrap();
    let reply = stack
        .model()
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(reply.message.content, "Hello!");
    assert!(stack.key_pool().is_none());
    assert!(stack.key_stats().is_empty());
    assert_eq!(stack.throttle_stats().decreases, 0);
    assert_eq!(stack.model().model_id(), "gpt-4o-mini");
}

#[tokio::test]
async fn several_keys_share_one_client_and_one_gauge() {
    let server = openai_server().await;
    let endpoint = Endpoint::new(Provider::Openai, "gpt-4o-mini")
        .base_url(format!("{}/v1", server.uri()))
        .api_key("sk-one")
        .api_key("sk-two")
        .max_retries(0);
    let shared = SharedParts::new(endpoint.http_client(4).unwrap());
    let respondent = endpoint.build_with(&shared).unwrap();
    let judge = endpoint.build_with(&shared).unwrap();
    for _ in 0..4 {
        respondent
            .model()
            .chat(ChatRequest::new(vec![Message::user("hi")]))
            .await
            .unwrap();
    }
    let stats = respondent.key_stats();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats.iter().map(|k| k.requests).sum::<u64>(), 4);
    assert!(stats.iter().all(|k| k.requests > 0), "{stats:?}");
    assert_eq!(stats[0].key, key_fingerprint(&"sk-one".into()));
    let _parked = respondent.parked().park();
    assert_eq!(judge.parked().now(), 1, "one gauge across stacks");
    assert!(!format!("{respondent:?}").contains("sk-one"));
}

#[tokio::test]
async fn build_errors_are_typed() {
    let error = Endpoint::new(Provider::Openai, "gpt-4o-mini")
        .build()
        .unwrap_err();
    assert_eq!(error, BuildError::MissingApiKey { provider: "OpenAI" });
    let error = Endpoint::new(Provider::Local, " ").build().unwrap_err();
    assert_eq!(error, BuildError::MissingModel);
    let error = EmbeddingEndpoint::new(Provider::Anthropic, "any")
        .build()
        .err()
        .unwrap();
    assert_eq!(
        error,
        BuildError::NoEmbeddings {
            provider: "anthropic"
        }
    );
}

#[tokio::test]
async fn the_embedding_endpoint_uses_the_provider_format_and_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(
            "/v1beta/models/gemini-embedding-001:batchEmbedContents",
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "embeddings": [{"values": [1.0, 0.0]}, {"values": [0.0, 1.0]}]
        })))
        .mount(&server)
        .await;
    let endpoint = EmbeddingEndpoint::new(Provider::Gemini, "gemini-embedding-001")
        .base_url(format!("{}/v1beta", server.uri()))
        .api_key("g-key");
    assert_eq!(endpoint.texts_per_request(), 100);
    assert_eq!(endpoint.clone().batch_size(7).texts_per_request(), 7);
    let local = EmbeddingEndpoint::new(Provider::Local, "nomic");
    assert_eq!(local.texts_per_request(), 96);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let embedder = endpoint.build_with(&SharedParts::new(client)).unwrap();
    let vectors = embedder
        .embed(&["a".to_owned(), "b".to_owned()])
        .await
        .unwrap();
    assert_eq!(vectors, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
}
