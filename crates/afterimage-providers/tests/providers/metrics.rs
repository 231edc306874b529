//! The request metrics against a wiremock server speaking OpenAI's format: each HTTP
//! request is counted once, by provider and outcome, and a 429 waited out by `Retry`
//! is a rate-limit wait. The registry is the process's, shared with the other tests
//! of this binary, so the test reads how the counters moved, under a provider label
//! (`openrouter`) only it sends requests with.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{ChatModel, ChatRequest, Message, Metrics};
use afterimage_providers::{OpenAiCompatible, Retry, RetryPolicy};
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

fn counter(name: &str, labels: &[(&str, &str)]) -> f64 {
    Metrics::global().counter(name, "", labels).get()
}

fn requests(status: &str) -> f64 {
    counter(
        "afterimage_requests_total",
        &[("provider", "openrouter"), ("status", status)],
    )
}

#[tokio::test]
async fn requests_are_counted_by_provider_and_outcome() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after-ms", "10")
                .set_body_json(json!({"error": {"message": "slow down"}})),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "c1", "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
        })))
        .mount(&server)
        .await;
    let client = OpenAiCompatible::openrouter()
        .base_url(format!("{}/v1", server.uri()))
        .api_key("k")
        .model("m")
        .build()
        .unwrap();
    let model = Retry::new(
        Arc::new(client) as Arc<dyn ChatModel>,
        RetryPolicy {
            max_retries: 3,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(5),
            max_retry_after: Duration::from_secs(1),
        },
    );
    let (ok, limited) = (requests("ok"), requests("rate_limited"));
    let waits = counter("afterimage_rate_limit_waits_total", &[("source", "server")]);
    model
        .chat(ChatRequest::new(vec![Message::user("hi")]))
        .await
        .unwrap();
    assert_eq!(requests("ok") - ok, 1.0);
    assert_eq!(requests("rate_limited") - limited, 2.0);
    // Other tests of this binary may wait out 429s too: at least ours are counted.
    let waited = counter("afterimage_rate_limit_waits_total", &[("source", "server")]) - waits;
    assert!(waited >= 2.0, "{waited}");
    let in_flight = Metrics::global()
        .gauge(
            "afterimage_requests_in_flight",
            "",
            &[("provider", "openrouter")],
        )
        .get();
    assert_eq!(in_flight, 0.0, "every request gave its place back");
}
