//! Retry middleware and the key pool against wiremock servers speaking OpenAI's format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use afterimage_core::{ApiKey, ChatModel, ChatRequest, Message, ProviderError};
use afterimage_providers::{KeyPool, OpenAiCompatible, Retry, RetryPolicy, key_fingerprint};
use serde_json::json;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn ok_body(text: &str) -> serde_json::Value {
    json!({
        "id": "c1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
    })
}

fn error_body(message: &str) -> serde_json::Value {
    json!({"error": {"message": message, "type": "x"}})
}

fn client(server: &MockServer, key: &str) -> Arc<dyn ChatModel> {
    Arc::new(
        OpenAiCompatible::builder(format!("{}/v1", server.uri()))
            .api_key(key)
            .model("m")
            .timeout(Duration::from_millis(500))
            .build()
            .unwrap(),
    )
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
        max_retry_after: Duration::from_secs(2),
    }
}

fn ask() -> ChatRequest {
    ChatRequest::new(vec![Message::user("hi")])
}

#[tokio::test]
async fn retries_429_with_retry_after_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after-ms", "300")
                .set_body_json(error_body("slow down")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("fine")))
        .mount(&server)
        .await;
    let model = Retry::new(client(&server, "k1"), fast());
    let started = Instant::now();
    let reply = model.chat(ask()).await.unwrap();
    assert_eq!(reply.message.content, "fine");
    assert_eq!(model.retries(), 1);
    // The server's 300 ms is a floor, though the policy's own backoff is 5-20 ms.
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn retries_5xx_529_and_timeouts_but_gives_up_at_the_bound() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(error_body("busy")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(529).set_body_json(error_body("overloaded")))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("finally")))
        .mount(&server)
        .await;
    let model = Retry::new(client(&server, "k1"), fast());
    assert_eq!(model.chat(ask()).await.unwrap().message.content, "finally");
    assert_eq!(model.retries(), 3);

    // A server that never recovers: 1 try + 3 retries, then its error.
    let broken = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500).set_body_json(error_body("down")))
        .mount(&broken)
        .await;
    let model = Retry::new(client(&broken, "k1"), fast());
    let err = model.chat(ask()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Server { status: 500, .. }),
        "{err}"
    );
    assert_eq!(broken.received_requests().await.unwrap().len(), 4);
}

#[tokio::test]
async fn never_retries_what_cannot_succeed() {
    for (status, body) in [
        (400, error_body("bad field")),
        (401, error_body("bad key")),
        (404, error_body("no such model")),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(status).set_body_json(body))
            .mount(&server)
            .await;
        let model = Retry::new(client(&server, "k1"), fast());
        model.chat(ask()).await.unwrap_err();
        assert_eq!(model.retries(), 0, "status {status}");
        // A 404 also lists the models once (a GET), to tell a wrong path from a wrong
        // model; the chat request itself is sent once.
        let posts = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .filter(|r| r.method.as_str() == "POST")
            .count();
        assert_eq!(posts, 1, "status {status}");
    }
}

async fn pool_server() -> MockServer {
    let server = MockServer::start().await;
    // key-b is revoked; key-c is rate limited once, for 200 ms.
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer key-b"))
        .respond_with(ResponseTemplate::new(401).set_body_json(error_body("revoked key key-b")))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(header("authorization", "Bearer key-c"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after-ms", "200")
                .set_body_json(error_body("slow down")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("ok")))
        .mount(&server)
        .await;
    server
}

fn key_pool(server: &MockServer, keys: &[&str]) -> KeyPool {
    KeyPool::new(
        keys.iter()
            .map(|k| (ApiKey::new(*k), client(server, k)))
            .collect(),
    )
}

#[tokio::test]
async fn a_revoked_key_is_retired_and_the_others_carry_on() {
    let server = pool_server().await;
    let pool = key_pool(&server, &["key-a", "key-b", "key-c"]);
    for _ in 0..12 {
        assert_eq!(pool.chat(ask()).await.unwrap().message.content, "ok");
    }
    let stats = pool.stats();
    let b = stats
        .iter()
        .find(|s| s.key == key_fingerprint(&ApiKey::new("key-b")))
        .unwrap();
    assert!(b.retired);
    assert_eq!(b.requests, 1, "a retired key is not tried again");
    let c = stats
        .iter()
        .find(|s| s.key == key_fingerprint(&ApiKey::new("key-c")))
        .unwrap();
    assert_eq!(c.rate_limited, 1);
    assert!(!c.retired);
    let successes: u64 = stats
        .iter()
        .map(|s| s.requests - s.rate_limited)
        .sum::<u64>()
        - 1;
    assert_eq!(successes, 12);
    assert_eq!(stats.iter().map(|s| s.output_tokens).sum::<u64>(), 36);
    // Reports name keys by fingerprint only.
    let shown = format!("{stats:?} {pool:?}");
    assert!(
        !shown.contains("key-a") && !shown.contains("key-b"),
        "{shown}"
    );
}

#[tokio::test]
async fn all_keys_revoked_fails_at_once_with_a_clear_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(401).set_body_json(error_body("revoked")))
        .mount(&server)
        .await;
    let pool = key_pool(&server, &["key-x", "key-y"]);
    let err = pool.chat(ask()).await.unwrap_err();
    assert!(err.is_auth() && err.is_fatal());
    assert!(
        err.to_string().contains("all 2 API keys were refused"),
        "{err}"
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // Later requests do not touch the network.
    pool.chat(ask()).await.unwrap_err();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
}

#[tokio::test]
async fn when_every_key_cools_down_requests_wait_for_the_first() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after-ms", "250")
                .set_body_json(error_body("slow down")),
        )
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("ok")))
        .mount(&server)
        .await;
    let pool = key_pool(&server, &["key-1", "key-2"]);
    let started = Instant::now();
    assert_eq!(pool.chat(ask()).await.unwrap().message.content, "ok");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(server.received_requests().await.unwrap().len(), 3);

    // With a short patience, the pool hands a rate-limit error to the caller instead.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "60")
                .set_body_json(error_body("slow down")),
        )
        .mount(&server)
        .await;
    let pool = key_pool(&server, &["key-1"]).max_wait(Duration::from_secs(1));
    let err = pool.chat(ask()).await.unwrap_err();
    assert!(err.is_rate_limited(), "{err}");
    assert!(err.retry_after().unwrap() > Duration::from_secs(50));
}

fn throttled(
    server: &MockServer,
    config: afterimage_providers::ThrottleConfig,
) -> Arc<afterimage_providers::Throttle> {
    Arc::new(afterimage_providers::Throttle::new(
        client(server, "k1"),
        config,
    ))
}

#[tokio::test]
async fn a_burst_of_429s_halves_the_requests_in_flight_then_recovers() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body("slow down")))
        .up_to_n_times(20)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(ok_body("ok"))
                .set_delay(Duration::from_millis(20)),
        )
        .mount(&server)
        .await;
    let throttle = throttled(
        &server,
        afterimage_providers::ThrottleConfig {
            max_concurrency: 8,
            ..Default::default()
        },
    );
    let model = Arc::new(Retry::new(throttle.clone(), fast()));
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let model = Arc::clone(&model);
        tasks.push(tokio::spawn(async move { model.chat(ask()).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().message.content, "ok");
    }
    let stats = throttle.stats();
    assert!(stats.decreases >= 1, "{stats:?}");
    assert!(stats.lowest_limit <= 4, "{stats:?}");
    assert!(
        stats.concurrency_limit > stats.lowest_limit,
        "it climbs back: {stats:?}"
    );
}

#[tokio::test]
async fn the_circuit_opens_when_only_failures_come_back() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).set_body_json(error_body("down")))
        .mount(&server)
        .await;
    let throttle = throttled(
        &server,
        afterimage_providers::ThrottleConfig {
            max_concurrency: 4,
            breaker_after: Some(Duration::from_millis(150)),
            ..Default::default()
        },
    );
    let model = Retry::new(
        throttle,
        RetryPolicy {
            max_retries: 100,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(40),
            max_retry_after: Duration::from_secs(1),
        },
    );
    let started = Instant::now();
    let err = model.chat(ask()).await.unwrap_err();
    assert!(matches!(err, ProviderError::CircuitOpen { .. }), "{err}");
    assert!(err.is_fatal());
    assert!(
        err.to_string().contains("stopping instead of stalling"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_requests_per_minute_limit_paces_after_the_burst() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("ok")))
        .mount(&server)
        .await;
    let throttle = throttled(
        &server,
        afterimage_providers::ThrottleConfig {
            max_concurrency: 4,
            requests_per_minute: Some(60),
            ..Default::default()
        },
    );
    let started = Instant::now();
    for _ in 0..62 {
        throttle.chat(ask()).await.unwrap();
    }
    // A minute's worth goes at once; the next two wait about a second each.
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(throttle.stats().paced, 2);
}

#[tokio::test]
async fn a_spent_window_in_the_rate_limit_headers_pauses_the_next_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(ok_body("ok"))
                .insert_header("x-ratelimit-remaining-requests", "0")
                .insert_header("x-ratelimit-reset-requests", "400ms"),
        )
        .mount(&server)
        .await;
    let throttle = throttled(&server, afterimage_providers::ThrottleConfig::default());
    let first = throttle.chat(ask()).await.unwrap();
    let hint = first.rate_limit.unwrap();
    assert_eq!(hint.remaining_requests, Some(0));
    assert_eq!(hint.reset_requests, Some(Duration::from_millis(400)));
    let started = Instant::now();
    throttle.chat(ask()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(380),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(throttle.stats().paced, 1);
}

#[tokio::test]
async fn an_odd_429_does_not_lower_the_limit() {
    let server = MockServer::start().await;
    // One 429 in the first answers, then clean ones: the retry absorbs it.
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(429).set_body_json(error_body("slow down")))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("ok")))
        .mount(&server)
        .await;
    let throttle = throttled(
        &server,
        afterimage_providers::ThrottleConfig {
            max_concurrency: 8,
            ..Default::default()
        },
    );
    let model = Retry::new(throttle.clone(), fast());
    for _ in 0..20 {
        model.chat(ask()).await.unwrap();
    }
    assert_eq!(throttle.stats().decreases, 0);
    assert_eq!(throttle.stats().concurrency_limit, 8);
}

#[tokio::test]
async fn a_request_waiting_out_retry_after_counts_as_parked() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "1")
                .set_body_json(error_body("slow down")),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(ok_body("fine")))
        .mount(&server)
        .await;
    let gauge = afterimage_core::ParkedRequests::new();
    let model = Arc::new(Retry::new(client(&server, "k"), fast()).parked(gauge.clone()));
    let call = tokio::spawn({
        let model = Arc::clone(&model);
        async move {
            model
                .chat(ChatRequest::new(vec![Message::user("hi")]))
                .await
        }
    });
    // Half-way through the one-second wait, the request is parked.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gauge.now(), 1);
    let reply = call.await.unwrap().unwrap();
    assert_eq!(reply.message.content, "fine");
    assert_eq!(gauge.now(), 0);
}
