//! OpenAI's Batch API: file upload then batch create, states, result and error
//! files, validation failures, the enqueued-token limit, find, cancel.

use afterimage_batch::{
    BatchBackend, BatchError, BatchPhase, EndKind, OpenAiBatch, RemoteBatch, line_errors_to_ids,
    missing,
};
use afterimage_core::{ApiKey, ChatModel};
use afterimage_providers::OpenAiCompatible;
use serde_json::{Value, json};
use wiremock::matchers::{body_partial_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::{bodies, item, json, kind, outcome};

fn client(server: &MockServer) -> OpenAiCompatible {
    OpenAiCompatible::builder(format!("{}/v1", server.uri()))
        .api_key(ApiKey::new("sk-batch-test"))
        .model("gpt-4o-mini")
        .build()
        .unwrap()
}

fn batch_object(status: &str) -> Value {
    json!({"id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions",
           "input_file_id": "file-in", "completion_window": "24h", "status": status,
           "created_at": 1_700_000_000, "metadata": {"afterimage_key": "run1-r1-0"},
           "request_counts": {"total": 3, "completed": 1, "failed": 1}})
}

fn remote() -> RemoteBatch {
    RemoteBatch {
        id: "batch_1".into(),
        local_key: Some("run1-r1-0".into()),
        requests: Some(3),
    }
}

/// The JSONL part of a multipart upload.
fn jsonl_lines(upload: &[u8]) -> Vec<Value> {
    let text = String::from_utf8_lossy(upload);
    text.lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn submit_uploads_the_sync_bodies_then_creates_the_batch_with_its_key() {
    let server = MockServer::start().await;
    let completion = json!({"choices": [{"message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                            "usage": {"prompt_tokens": 5, "completion_tokens": 1}});
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/files"))
        .and(header("authorization", "Bearer sk-batch-test"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"id": "file-in", "object": "file", "purpose": "batch"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).and(path("/v1/batches"))
        .and(body_partial_json(json!({"input_file_id": "file-in", "endpoint": "/v1/chat/completions",
                                      "completion_window": "24h", "metadata": {"afterimage_key": "run1-r1-0"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(batch_object("validating")))
        .expect(1).mount(&server).await;
    let items = vec![
        item("d1-u-1", "gpt-4o-mini", "Hi"),
        item("d2-u-1", "gpt-4o-mini", "Bye"),
    ];
    // The synchronous client's own body for the first request, to compare with.
    client(&server)
        .chat(items[0].request.clone())
        .await
        .unwrap();
    let sync_body = json(&bodies(&server, "POST", "/v1/chat/completions").await[0]);

    let batch = OpenAiBatch::new(client(&server))
        .submit("run1-r1-0", &items)
        .await
        .unwrap();
    assert_eq!(batch, remote());
    let upload = &bodies(&server, "POST", "/v1/files").await[0];
    let text = String::from_utf8_lossy(upload);
    assert!(text.contains("name=\"purpose\"\r\n\r\nbatch\r\n"), "{text}");
    let lines = jsonl_lines(upload);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1-u-1", "d2-u-1"]);
    assert_eq!(lines[0]["method"], "POST");
    assert_eq!(lines[0]["url"], "/v1/chat/completions");
    assert_eq!(lines[0]["body"], sync_body);
}

#[tokio::test]
async fn a_batch_of_two_models_is_refused_before_any_request() {
    let server = MockServer::start().await;
    let items = vec![item("a", "gpt-4o-mini", "Hi"), item("b", "gpt-4o", "Hi")];
    let error = OpenAiBatch::new(client(&server))
        .submit("k", &items)
        .await
        .unwrap_err();
    assert!(
        matches!(error, BatchError::Invalid(ref m) if m.contains("one model")),
        "{error}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_create_over_the_enqueued_token_limit_is_its_own_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/files"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "file-in"})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/batches"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"error": {"code": "token_limit_exceeded",
            "message": "Enqueued token limit reached for gpt-4o-mini in organization org-x."}})),
        )
        .mount(&server)
        .await;
    let error = OpenAiBatch::new(client(&server))
        .submit("k", &[item("a", "gpt-4o-mini", "Hi")])
        .await
        .unwrap_err();
    assert!(
        matches!(error, BatchError::TokenLimitExceeded { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn poll_maps_every_documented_state_and_an_unknown_one_is_pending() {
    let server = MockServer::start().await;
    let backend = OpenAiBatch::new(client(&server));
    let cases = [
        ("validating", BatchPhase::Queued),
        ("in_progress", BatchPhase::Running),
        ("finalizing", BatchPhase::Finalizing),
        ("cancelling", BatchPhase::Cancelling),
        ("completed", BatchPhase::Ended(EndKind::Completed)),
        ("failed", BatchPhase::Ended(EndKind::Failed)),
        ("expired", BatchPhase::Ended(EndKind::Expired)),
        ("cancelled", BatchPhase::Ended(EndKind::Cancelled)),
        ("paused_for_maintenance", BatchPhase::Queued),
    ];
    for (state, phase) in cases {
        server.reset().await;
        Mock::given(method("GET"))
            .and(path("/v1/batches/batch_1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(batch_object(state)))
            .mount(&server)
            .await;
        let status = backend.poll(&remote()).await.unwrap();
        assert_eq!(status.phase, phase, "{state}");
        assert_eq!(status.raw_state, state);
        let counts = status.counts.unwrap();
        assert_eq!(
            (
                counts.total,
                counts.succeeded,
                counts.failed,
                counts.pending
            ),
            (3, 1, 1, 1)
        );
    }
}

#[tokio::test]
async fn a_404_on_poll_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/batches/batch_1"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"error": {"message": "No batch found with id 'batch_1'."}})),
        )
        .mount(&server)
        .await;
    let error = OpenAiBatch::new(client(&server))
        .poll(&remote())
        .await
        .unwrap_err();
    assert!(
        matches!(error, BatchError::NotYetVisible { ref id } if id == "batch_1"),
        "{error}"
    );
}

#[tokio::test]
async fn results_from_both_files_are_matched_by_id_whatever_their_order() {
    let server = MockServer::start().await;
    let mut object = batch_object("completed");
    object["output_file_id"] = json!("file-out");
    object["error_file_id"] = json!("file-err");
    Mock::given(method("GET"))
        .and(path("/v1/batches/batch_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(object))
        .mount(&server)
        .await;
    let ok = |id: &str, text: &str, cached: u64| {
        json!({"id": "r", "custom_id": id, "error": null, "response": {"status_code": 200, "request_id": "q",
        "body": {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 20, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": cached}}}}})
    };
    let failed = |id: &str, status: u16, body: Value| {
        json!({"id": "r", "custom_id": id, "error": null,
        "response": {"status_code": status, "request_id": "q", "body": body}})
    };
    let output = [ok("d3", "three", 0), ok("d1", "one", 16)]
        .map(|l| l.to_string())
        .join("\n");
    let errors = [
        failed("d4", 429, json!({"error": {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"}})),
        failed("d5", 500, json!({"error": {"message": "The server had an error", "type": "server_error"}})),
        failed("d6", 400, json!({"error": {"message": "Invalid 'messages'", "type": "invalid_request_error"}})),
        json!({"id": "r", "custom_id": "d7", "response": null, "error": {"code": "batch_expired",
               "message": "This request could not be executed before the completion window expired."}}),
        json!({"id": "r", "custom_id": "stranger", "response": null, "error": {"code": "batch_expired", "message": "x"}}),
    ].map(|l| l.to_string()).join("\n");
    Mock::given(method("GET"))
        .and(path("/v1/files/file-out/content"))
        .respond_with(ResponseTemplate::new(200).set_body_string(output))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/files/file-err/content"))
        .respond_with(ResponseTemplate::new(200).set_body_string(errors))
        .mount(&server)
        .await;
    let backend = OpenAiBatch::new(client(&server));
    let submitted: Vec<_> = ["d1", "d2", "d3", "d4", "d5", "d6", "d7"]
        .iter()
        .map(|id| item(id, "gpt-4o-mini", "q"))
        .collect();

    let raw = backend.fetch_results(&remote()).await.unwrap();
    let results = backend.parse_results(&raw, &submitted).unwrap();
    assert_eq!(results.len(), 6, "the stranger's line is skipped");
    let afterimage_batch::ItemOutcome::Ok(reply) = outcome(&results, "d1") else {
        panic!("d1 not ok")
    };
    assert_eq!(reply.message.content, "one");
    assert_eq!(
        (
            reply.usage.input_tokens,
            reply.usage.output_tokens,
            reply.usage.cached_input_tokens
        ),
        (20, 4, 16)
    );
    assert_eq!(kind(outcome(&results, "d3")), "ok");
    assert_eq!(kind(outcome(&results, "d4")), "retryable");
    assert_eq!(kind(outcome(&results, "d5")), "retryable");
    assert_eq!(kind(outcome(&results, "d6")), "permanent");
    assert_eq!(kind(outcome(&results, "d7")), "retryable");
    let ids: Vec<String> = submitted.iter().map(|i| i.custom_id.clone()).collect();
    assert_eq!(missing(&ids, &results), ["d2"]);
}

#[tokio::test]
async fn a_batch_failed_at_validation_maps_its_lines_to_ids() {
    let server = MockServer::start().await;
    let mut object = batch_object("failed");
    object["errors"] = json!({"object": "list", "data": [
        {"code": "invalid_request", "line": 2, "message": "Missing 'messages'", "param": "body.messages"},
        {"code": "too_many_requests", "line": null, "message": "the file is too large"}]});
    Mock::given(method("GET"))
        .and(path("/v1/batches/batch_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(object))
        .mount(&server)
        .await;
    let status = OpenAiBatch::new(client(&server))
        .poll(&remote())
        .await
        .unwrap();
    assert_eq!(status.phase, BatchPhase::Ended(EndKind::Failed));
    assert!(!status.token_limit_exceeded());
    let ids = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
    let (mapped, whole) = line_errors_to_ids(&ids, &status.errors);
    assert_eq!(mapped.len(), 1);
    assert_eq!(mapped[0].0, "b");
    assert_eq!(kind(&mapped[0].1), "permanent");
    assert_eq!(whole.len(), 1);
    assert_eq!(whole[0].code, "too_many_requests");
}

#[tokio::test]
async fn a_batch_failed_for_enqueued_tokens_says_so() {
    let server = MockServer::start().await;
    let mut object = batch_object("failed");
    object["errors"] = json!({"data": [{"code": "token_limit_exceeded", "line": null,
        "message": "The number of enqueued tokens has surpassed the configured limit."}]});
    Mock::given(method("GET"))
        .and(path("/v1/batches/batch_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(object))
        .mount(&server)
        .await;
    let status = OpenAiBatch::new(client(&server))
        .poll(&remote())
        .await
        .unwrap();
    assert!(status.token_limit_exceeded());
}

#[tokio::test]
async fn find_adopts_the_batch_whose_metadata_carries_the_key() {
    let server = MockServer::start().await;
    let mut other = batch_object("in_progress");
    other["id"] = json!("batch_0");
    other["metadata"] = json!({"afterimage_key": "run1-r0-0"});
    let untagged = json!({"id": "batch_x", "status": "completed", "metadata": null});
    Mock::given(method("GET"))
        .and(path("/v1/batches"))
        .and(query_param("limit", "100"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"object": "list",
            "data": [other, batch_object("in_progress"), untagged], "has_more": false})),
        )
        .mount(&server)
        .await;
    let found = OpenAiBatch::new(client(&server))
        .find("run1-r1-0", 3)
        .await
        .unwrap();
    assert_eq!(found, [remote()]);
}

#[tokio::test]
async fn cancel_posts_to_the_batch() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/batches/batch_1/cancel"))
        .respond_with(ResponseTemplate::new(200).set_body_json(batch_object("cancelling")))
        .expect(1)
        .mount(&server)
        .await;
    OpenAiBatch::new(client(&server))
        .cancel(&remote())
        .await
        .unwrap();
}

#[tokio::test]
async fn result_files_are_read_past_the_chat_limit_up_to_their_own() {
    let server = MockServer::start().await;
    let mut object = batch_object("completed");
    object["output_file_id"] = json!("file-out");
    Mock::given(method("GET"))
        .and(path("/v1/batches/batch_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(object))
        .mount(&server)
        .await;
    let big = format!(
        "{}\n",
        json!({"custom_id": "x", "response": null, "error": {"code": "batch_expired", "message": "x".repeat(8000)}})
    );
    Mock::given(method("GET"))
        .and(path("/v1/files/file-out/content"))
        .respond_with(ResponseTemplate::new(200).set_body_string(big.clone()))
        .mount(&server)
        .await;
    let small = || {
        OpenAiCompatible::builder(format!("{}/v1", server.uri()))
            .api_key(ApiKey::new("sk-batch-test"))
            .model("gpt-4o-mini")
            .max_response_bytes(2048)
            .build()
            .unwrap()
    };
    let raw = OpenAiBatch::new(small())
        .fetch_results(&remote())
        .await
        .unwrap();
    assert_eq!(raw, big.as_bytes());
    let error = OpenAiBatch::new(small())
        .max_result_bytes(4096)
        .fetch_results(&remote())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("larger than"), "{error}");
}

#[test]
fn debug_output_never_shows_the_key() {
    let client = OpenAiCompatible::builder("http://127.0.0.1:9/v1")
        .api_key(ApiKey::new("sk-batch-secret-123"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    let shown = format!("{:?}", OpenAiBatch::new(client));
    assert!(!shown.contains("sk-batch-secret-123"), "{shown}");
    assert!(shown.contains("127.0.0.1:9"), "{shown}");
}
