//! Anthropic's Message Batches: inline requests, states, result lines of every type,
//! find by request count, cancel.

use afterimage_batch::{
    AnthropicBatch, BatchBackend, BatchPhase, EndKind, ItemOutcome, RemoteBatch, missing,
};
use afterimage_core::{ApiKey, ChatModel};
use afterimage_providers::Anthropic;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{bodies, item, json, kind, outcome};

const MODEL: &str = "claude-sonnet-4-5";

fn client(server: &MockServer) -> Anthropic {
    Anthropic::builder()
        .base_url(server.uri())
        .api_key(ApiKey::new("sk-ant-test"))
        .model(MODEL)
        .build()
        .unwrap()
}

fn batch_object(status: &str, cancelled: bool) -> Value {
    json!({"id": "msgbatch_1", "type": "message_batch", "processing_status": status,
           "request_counts": {"processing": 1, "succeeded": 2, "errored": 1, "canceled": 0, "expired": 1},
           "ended_at": null, "created_at": "2024-09-24T18:37:24.100435Z",
           "expires_at": "2024-09-25T18:37:24.100435Z", "archived_at": null,
           "cancel_initiated_at": if cancelled { json!("2024-09-24T19:00:00Z") } else { Value::Null },
           "results_url": null})
}

fn remote() -> RemoteBatch {
    RemoteBatch {
        id: "msgbatch_1".into(),
        local_key: None,
        requests: Some(5),
    }
}

#[tokio::test]
async fn submit_sends_the_sync_params_under_each_custom_id() {
    let server = MockServer::start().await;
    let message = json!({"id": "msg", "type": "message", "role": "assistant", "model": MODEL,
        "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 1}});
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(message))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batches"))
        .and(header("x-api-key", "sk-ant-test"))
        .and(header("anthropic-version", "2023-06-01"))
        .respond_with(ResponseTemplate::new(200).set_body_json(batch_object("in_progress", false)))
        .expect(1)
        .mount(&server)
        .await;
    let items = vec![item("d1-u-1", MODEL, "Hi"), item("d2-u-1", MODEL, "Bye")];
    client(&server)
        .chat(items[0].request.clone())
        .await
        .unwrap();
    let sync_body = json(&bodies(&server, "POST", "/v1/messages").await[0]);

    let batch = AnthropicBatch::new(client(&server))
        .submit("run1-r1-0", &items)
        .await
        .unwrap();
    assert_eq!(batch.id, "msgbatch_1");
    assert_eq!(batch.local_key.as_deref(), Some("run1-r1-0"));
    let sent = json(&bodies(&server, "POST", "/v1/messages/batches").await[0]);
    let requests = sent["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["custom_id"], "d1-u-1");
    assert_eq!(requests[1]["custom_id"], "d2-u-1");
    assert_eq!(requests[0]["params"], sync_body);
}

#[tokio::test]
async fn poll_maps_every_state_and_an_unknown_one_is_pending() {
    let server = MockServer::start().await;
    let backend = AnthropicBatch::new(client(&server));
    let cases = [
        ("in_progress", false, BatchPhase::Running),
        ("canceling", true, BatchPhase::Cancelling),
        ("ended", false, BatchPhase::Ended(EndKind::Completed)),
        ("ended", true, BatchPhase::Ended(EndKind::Cancelled)),
        ("archiving", false, BatchPhase::Queued),
    ];
    for (state, cancelled, phase) in cases {
        server.reset().await;
        Mock::given(method("GET"))
            .and(path("/v1/messages/batches/msgbatch_1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(batch_object(state, cancelled)))
            .mount(&server)
            .await;
        let status = backend.poll(&remote()).await.unwrap();
        assert_eq!(status.phase, phase, "{state}");
        let counts = status.counts.unwrap();
        assert_eq!(
            (
                counts.total,
                counts.succeeded,
                counts.failed,
                counts.pending
            ),
            (5, 2, 2, 1)
        );
    }
}

#[tokio::test]
async fn every_result_type_is_sorted_and_matched_by_id() {
    let server = MockServer::start().await;
    let ok = |id: &str| {
        json!({"custom_id": id, "result": {"type": "succeeded", "message": {"id": "msg", "type": "message",
        "role": "assistant", "model": MODEL, "content": [{"type": "text", "text": format!("answer {id}")}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 3, "cache_read_input_tokens": 100}}}})
    };
    let errored = |id: &str, kind: &str| {
        json!({"custom_id": id, "result": {"type": "errored",
        "error": {"type": "error", "error": {"type": kind, "message": "it failed"}}}})
    };
    let lines = [
        errored("d3", "rate_limit_error"),
        ok("d2"),
        errored("d4", "overloaded_error"),
        errored("d5", "invalid_request_error"),
        json!({"custom_id": "d6", "result": {"type": "expired"}}),
        json!({"custom_id": "d7", "result": {"type": "canceled"}}),
        errored("d8", "api_error"),
        ok("d1"),
        errored("d10", "billing_error"),
        errored("d11", "authentication_error"),
        json!({"custom_id": "d12", "result": {"type": "errored", "error": {"type": "error",
            "error": {"type": "invalid_request_error",
                      "message": "Your credit balance is too low to access the Anthropic API."}}}}),
    ]
    .map(|l| l.to_string())
    .join("\n");
    Mock::given(method("GET"))
        .and(path("/v1/messages/batches/msgbatch_1/results"))
        .respond_with(ResponseTemplate::new(200).set_body_string(lines))
        .mount(&server)
        .await;
    let backend = AnthropicBatch::new(client(&server));
    let submitted: Vec<_> = (1..=12)
        .map(|n| item(&format!("d{n}"), MODEL, "q"))
        .collect();
    let raw = backend.fetch_results(&remote()).await.unwrap();
    let results = backend.parse_results(&raw, &submitted).unwrap();
    let ItemOutcome::Ok(reply) = outcome(&results, "d1") else {
        panic!("d1 not ok")
    };
    assert_eq!(reply.message.content, "answer d1");
    assert_eq!(reply.usage.output_tokens, 3);
    assert_eq!(reply.usage.cached_input_tokens, 100);
    assert_eq!(reply.usage.input_tokens, 110);
    for (id, expected) in [
        ("d2", "ok"),
        ("d3", "retryable"),
        ("d4", "retryable"),
        ("d5", "permanent"),
        ("d6", "retryable"),
        ("d7", "retryable"),
        ("d8", "retryable"),
        ("d10", "fatal"),
        ("d11", "fatal"),
        ("d12", "fatal"),
    ] {
        assert_eq!(kind(outcome(&results, id)), expected, "{id}");
    }
    let ids: Vec<String> = submitted.iter().map(|i| i.custom_id.clone()).collect();
    assert_eq!(missing(&ids, &results), ["d9"]);
}

#[tokio::test]
async fn find_offers_the_batches_of_the_intended_size() {
    let server = MockServer::start().await;
    let mut other = batch_object("in_progress", false);
    other["id"] = json!("msgbatch_0");
    other["request_counts"] =
        json!({"processing": 7, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0});
    Mock::given(method("GET"))
        .and(path("/v1/messages/batches"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": [other, batch_object("in_progress", false)],
            "has_more": false, "first_id": "msgbatch_0", "last_id": "msgbatch_1"})),
        )
        .mount(&server)
        .await;
    let found = AnthropicBatch::new(client(&server))
        .find("run1-r1-0", 5)
        .await
        .unwrap();
    assert_eq!(found, [remote()]);
}

#[tokio::test]
async fn cancel_posts_to_the_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages/batches/msgbatch_1/cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(batch_object("canceling", true)))
        .expect(1)
        .mount(&server)
        .await;
    AnthropicBatch::new(client(&server))
        .cancel(&remote())
        .await
        .unwrap();
}

#[tokio::test]
async fn ids_anthropic_refuses_are_caught_before_any_request() {
    let server = MockServer::start().await;
    let error = AnthropicBatch::new(client(&server))
        .submit("k", &[item("d1:t2.a", MODEL, "q")])
        .await
        .unwrap_err();
    assert!(error.to_string().contains("d1:t2.a"), "{error}");
    assert!(server.received_requests().await.unwrap().is_empty());
}
