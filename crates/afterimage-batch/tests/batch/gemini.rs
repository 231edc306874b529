//! Gemini's batch mode: the create body, both state spellings, inlined responses
//! and a responses file under either field, find by display name, cancel.

use afterimage_batch::{
    BatchBackend, BatchError, BatchPhase, EndKind, GeminiBatch, ItemOutcome, RemoteBatch, missing,
};
use afterimage_core::{ApiKey, ChatModel};
use afterimage_providers::Gemini;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{bodies, item, json, kind, outcome};

const MODEL: &str = "gemini-2.5-flash";

fn client(server: &MockServer) -> Gemini {
    Gemini::builder()
        .base_url(server.uri())
        .api_key(ApiKey::new("g-key"))
        .model(MODEL)
        .build()
        .unwrap()
}

fn operation(state: &str) -> Value {
    json!({"name": "batches/123", "metadata": {"@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch",
        "model": format!("models/{MODEL}"), "displayName": "run1-r1-0", "state": state,
        "createTime": "2025-01-01T00:00:00Z", "batchStats": {"requestCount": "4", "successfulRequestCount": "2",
        "failedRequestCount": "1", "pendingRequestCount": "1"}}, "done": false})
}

fn remote() -> RemoteBatch {
    RemoteBatch {
        id: "batches/123".into(),
        local_key: Some("run1-r1-0".into()),
        requests: Some(4),
    }
}

fn answer(text: &str) -> Value {
    json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
           "usageMetadata": {"promptTokenCount": 30, "candidatesTokenCount": 5, "cachedContentTokenCount": 20}})
}

#[tokio::test]
async fn submit_sends_inline_requests_keyed_and_named_after_the_local_key() {
    let server = MockServer::start().await;
    let sync_path = format!("/v1beta/models/{MODEL}:generateContent");
    Mock::given(method("POST"))
        .and(path(sync_path.as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer("ok")))
        .mount(&server)
        .await;
    let batch_path = format!("/v1beta/models/{MODEL}:batchGenerateContent");
    Mock::given(method("POST"))
        .and(path(batch_path.as_str()))
        .and(header("x-goog-api-key", "g-key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(operation("BATCH_STATE_PENDING")))
        .expect(1)
        .mount(&server)
        .await;
    let items = vec![item("d1-u-1", MODEL, "Hi"), item("d2-u-1", MODEL, "Bye")];
    client(&server)
        .chat(items[0].request.clone())
        .await
        .unwrap();
    let sync_body = json(&bodies(&server, "POST", &sync_path).await[0]);

    let batch = GeminiBatch::new(client(&server))
        .submit("run1-r1-0", &items)
        .await
        .unwrap();
    assert_eq!(batch, remote());
    let sent = json(&bodies(&server, "POST", &batch_path).await[0]);
    assert_eq!(sent["batch"]["display_name"], "run1-r1-0");
    let requests = sent["batch"]["input_config"]["requests"]["requests"]
        .as_array()
        .unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0]["metadata"]["key"], "d1-u-1");
    assert_eq!(requests[1]["metadata"]["key"], "d2-u-1");
    assert_eq!(requests[0]["request"], sync_body);
}

#[tokio::test]
async fn poll_reads_both_state_spellings_and_an_unknown_one_is_pending() {
    let server = MockServer::start().await;
    let backend = GeminiBatch::new(client(&server));
    let cases = [
        ("PENDING", BatchPhase::Queued),
        ("RUNNING", BatchPhase::Running),
        ("SUCCEEDED", BatchPhase::Ended(EndKind::Completed)),
        ("FAILED", BatchPhase::Ended(EndKind::Failed)),
        ("CANCELLED", BatchPhase::Ended(EndKind::Cancelled)),
        ("EXPIRED", BatchPhase::Ended(EndKind::Expired)),
    ];
    for (bare, phase) in cases {
        for state in [format!("BATCH_STATE_{bare}"), format!("JOB_STATE_{bare}")] {
            server.reset().await;
            Mock::given(method("GET"))
                .and(path("/v1beta/batches/123"))
                .respond_with(ResponseTemplate::new(200).set_body_json(operation(&state)))
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
                (4, 2, 1, 1)
            );
        }
    }
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1beta/batches/123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(operation("BATCH_STATE_PAUSED")))
        .mount(&server)
        .await;
    assert_eq!(
        backend.poll(&remote()).await.unwrap().phase,
        BatchPhase::Queued
    );
}

#[tokio::test]
async fn inlined_responses_under_either_field_are_matched_by_key() {
    for field in ["response", "metadata/output"] {
        let server = MockServer::start().await;
        let responses = json!({"inlinedResponses": {"inlinedResponses": [
            {"error": {"code": 429, "message": "Resource exhausted", "status": "RESOURCE_EXHAUSTED"}, "metadata": {"key": "d3"}},
            {"response": answer("two"), "metadata": {"key": "d2"}},
            {"error": {"code": 400, "message": "Invalid argument", "status": "INVALID_ARGUMENT"}, "metadata": {"key": "d4"}},
            {"error": {"code": 503, "message": "Unavailable", "status": "UNAVAILABLE"}, "metadata": {"key": "d5"}},
            {"response": answer("one"), "metadata": {"key": "d1"}},
        ]}});
        let mut done = operation("JOB_STATE_SUCCEEDED");
        done["done"] = json!(true);
        match field {
            "response" => done["response"] = responses,
            _ => done["metadata"]["output"] = responses,
        }
        Mock::given(method("GET"))
            .and(path("/v1beta/batches/123"))
            .respond_with(ResponseTemplate::new(200).set_body_json(done))
            .mount(&server)
            .await;
        let backend = GeminiBatch::new(client(&server));
        let submitted: Vec<_> = (1..=6)
            .map(|n| item(&format!("d{n}"), MODEL, "q"))
            .collect();
        let raw = backend.fetch_results(&remote()).await.unwrap();
        let results = backend.parse_results(&raw, &submitted).unwrap();
        let ItemOutcome::Ok(reply) = outcome(&results, "d1") else {
            panic!("d1 not ok")
        };
        assert_eq!(reply.message.content, "one");
        assert_eq!(
            (
                reply.usage.input_tokens,
                reply.usage.output_tokens,
                reply.usage.cached_input_tokens
            ),
            (30, 5, 20)
        );
        for (id, expected) in [
            ("d2", "ok"),
            ("d3", "retryable"),
            ("d4", "permanent"),
            ("d5", "retryable"),
        ] {
            assert_eq!(kind(outcome(&results, id)), expected, "{field} {id}");
        }
        let ids: Vec<String> = submitted.iter().map(|i| i.custom_id.clone()).collect();
        assert_eq!(missing(&ids, &results), ["d6"]);
    }
}

#[tokio::test]
async fn a_responses_file_under_either_field_is_downloaded_and_matched_by_key() {
    for field in ["response", "metadata/output"] {
        let server = MockServer::start().await;
        let mut done = operation("BATCH_STATE_SUCCEEDED");
        done["done"] = json!(true);
        let output = json!({"responsesFile": "files/out1"});
        match field {
            "response" => done["response"] = output,
            _ => done["metadata"]["output"] = output,
        }
        Mock::given(method("GET"))
            .and(path("/v1beta/batches/123"))
            .respond_with(ResponseTemplate::new(200).set_body_json(done))
            .mount(&server)
            .await;
        let lines = [
            json!({"key": "d2", "error": {"code": 400, "message": "Invalid argument", "status": "INVALID_ARGUMENT"}}),
            json!({"key": "d1", "response": answer("one")}),
        ]
        .map(|l| l.to_string())
        .join("\n");
        Mock::given(method("GET"))
            .and(path("/download/v1beta/files/out1:download"))
            .and(wiremock::matchers::query_param("alt", "media"))
            .and(header("x-goog-api-key", "g-key"))
            .respond_with(ResponseTemplate::new(200).set_body_string(lines))
            .expect(1)
            .mount(&server)
            .await;
        let backend = GeminiBatch::new(client(&server));
        let submitted: Vec<_> = (1..=3)
            .map(|n| item(&format!("d{n}"), MODEL, "q"))
            .collect();
        let raw = backend.fetch_results(&remote()).await.unwrap();
        let results = backend.parse_results(&raw, &submitted).unwrap();
        let ItemOutcome::Ok(reply) = outcome(&results, "d1") else {
            panic!("{field}: d1 not ok")
        };
        assert_eq!(reply.message.content, "one");
        assert_eq!(kind(outcome(&results, "d2")), "permanent", "{field}");
        let ids: Vec<String> = submitted.iter().map(|i| i.custom_id.clone()).collect();
        assert_eq!(missing(&ids, &results), ["d3"], "{field}");
    }
}

#[tokio::test]
async fn find_adopts_the_batch_by_display_name() {
    let server = MockServer::start().await;
    let mut other = operation("BATCH_STATE_RUNNING");
    other["name"] = json!("batches/99");
    other["metadata"]["displayName"] = json!("run1-r0-0");
    Mock::given(method("GET"))
        .and(path("/v1beta/batches"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"operations": [other, operation("BATCH_STATE_RUNNING")]})),
        )
        .mount(&server)
        .await;
    let found = GeminiBatch::new(client(&server))
        .find("run1-r1-0", 4)
        .await
        .unwrap();
    assert_eq!(found, [remote()]);
}

#[tokio::test]
async fn cancel_posts_to_the_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1beta/batches/123:cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .expect(1)
        .mount(&server)
        .await;
    GeminiBatch::new(client(&server))
        .cancel(&remote())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_create_refused_with_resource_exhausted_is_the_token_limit() {
    let server = MockServer::start().await;
    let batch_path = format!("/v1beta/models/{MODEL}:batchGenerateContent");
    Mock::given(method("POST"))
        .and(path(batch_path.as_str()))
        .respond_with(
            ResponseTemplate::new(429).set_body_json(json!({"error": {"code": 429,
            "message": "Enqueued tokens quota exceeded", "status": "RESOURCE_EXHAUSTED"}})),
        )
        .mount(&server)
        .await;
    let error = GeminiBatch::new(client(&server))
        .submit("k", &[item("a", MODEL, "q")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, BatchError::TokenLimitExceeded { .. }),
        "{error}"
    );
}
