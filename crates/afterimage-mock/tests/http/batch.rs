//! The three batch protocols over real HTTP: create, poll until ended, results, the
//! fault switches, key pinning, cancel and list.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use afterimage_mock::{MockConfig, MockServer};
use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};

const PHASE: Duration = Duration::from_millis(20);

async fn server(config: MockConfig) -> MockServer {
    MockServer::start(config.with_batch_phase(PHASE))
        .await
        .unwrap()
}

/// A server whose phases outlast a few requests on a loaded machine, so a cancel
/// sent at once lands before any line has run.
async fn slow_server(config: MockConfig) -> MockServer {
    MockServer::start(config.with_batch_phase(Duration::from_secs(1)))
        .await
        .unwrap()
}

/// Sends a request, returning the status and the body text.
async fn send(request: RequestBuilder) -> (StatusCode, String) {
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

fn json_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn lines(text: &str) -> Vec<Value> {
    text.lines().map(json_of).collect()
}

// ---- OpenAI ----

fn openai(method: reqwest::Method, server: &MockServer, path: &str, key: &str) -> RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", server.openai_base_url()))
        .bearer_auth(key)
}

fn openai_input(ids: &[String]) -> String {
    ids.iter()
        .map(|id| {
            let line = json!({
                "custom_id": id, "method": "POST", "url": "/v1/chat/completions",
                "body": {"model": "mock-model", "messages": [
                    {"role": "user", "content": format!("Question number {id}?")}]},
            });
            format!("{line}\n")
        })
        .collect()
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("d{i:04}-t01")).collect()
}

async fn upload(server: &MockServer, key: &str, content: &str) -> String {
    let boundary = "afterimage-test-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"round.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    let (status, text) = send(
        openai(reqwest::Method::POST, server, "/files", key)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let file = json_of(&text);
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["bytes"], content.len());
    file["id"].as_str().unwrap().to_string()
}

async fn openai_create(server: &MockServer, key: &str, ids: &[String], tag: &str) -> Value {
    let file_id = upload(server, key, &openai_input(ids)).await;
    let body = json!({
        "input_file_id": file_id, "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"afterimage_round": tag},
    });
    let (status, text) =
        send(openai(reqwest::Method::POST, server, "/batches", key).json(&body)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let batch = json_of(&text);
    assert_eq!(batch["status"], "validating");
    batch
}

async fn openai_poll(server: &MockServer, key: &str, id: &str) -> Value {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let (status, text) = send(openai(
            reqwest::Method::GET,
            server,
            &format!("/batches/{id}"),
            key,
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let batch = json_of(&text);
        let state = batch["status"].as_str().unwrap().to_string();
        if seen.last() != Some(&state) {
            seen.push(state.clone());
        }
        if ["completed", "failed", "expired", "cancelled"].contains(&state.as_str()) {
            return batch;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "stuck in {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn file_lines(server: &MockServer, key: &str, id: &Value) -> Vec<Value> {
    let Some(id) = id.as_str() else {
        return Vec::new();
    };
    let (status, text) = send(openai(
        reqwest::Method::GET,
        server,
        &format!("/files/{id}/content"),
        key,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    lines(&text)
}

fn by_id(lines: &[Value]) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for line in lines {
        let id = line["custom_id"].as_str().unwrap().to_string();
        assert!(
            map.insert(id, line.clone()).is_none(),
            "a custom_id answered twice"
        );
    }
    map
}

#[tokio::test]
async fn openai_batch_runs_every_line_once_in_the_chat_completion_shape() {
    let server = server(MockConfig::default()).await;
    let ids = ids(12);
    let created = openai_create(&server, "key-a", &ids, "round-1").await;
    let batch = openai_poll(&server, "key-a", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "completed");
    assert_eq!(
        batch["request_counts"],
        json!({"total": 12, "completed": 12, "failed": 0})
    );
    assert!(batch["error_file_id"].is_null());
    let output = file_lines(&server, "key-a", &batch["output_file_id"]).await;
    let answered = by_id(&output);
    assert_eq!(answered.keys().cloned().collect::<Vec<_>>(), ids);
    // Real batches return lines out of order.
    let order: Vec<&str> = output
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_ne!(order, ids.iter().map(String::as_str).collect::<Vec<_>>());
    for (id, line) in &answered {
        assert_eq!(line["response"]["status_code"], 200);
        let body = &line["response"]["body"];
        assert_eq!(body["object"], "chat.completion");
        let content = body["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(
            content.contains(&format!("Question number {id}")),
            "{content}"
        );
        assert!(line["error"].is_null());
    }
    assert!(server.batch_submissions().values().all(|&n| n == 1));
    assert_eq!(server.batch_submissions().len(), 12);
    assert_eq!(server.batches_created(), 1);
    assert_eq!(server.batch_requests_answered(), 12);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_list_pages_and_finds_a_batch_by_metadata() {
    let server = server(MockConfig::default()).await;
    let mut made = Vec::new();
    for tag in ["r1", "r2", "r3"] {
        made.push(openai_create(&server, "key-a", &ids(1), tag).await["id"].clone());
    }
    openai_create(&server, "key-b", &ids(1), "other").await;
    let (_, text) = send(openai(
        reqwest::Method::GET,
        &server,
        "/batches?limit=2",
        "key-a",
    ))
    .await;
    let page = json_of(&text);
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], made[2]);
    let after = page["last_id"].as_str().unwrap();
    let (_, text) = send(openai(
        reqwest::Method::GET,
        &server,
        &format!("/batches?after={after}&limit=2"),
        "key-a",
    ))
    .await;
    let rest = json_of(&text);
    assert_eq!(rest["has_more"], false);
    let data = rest["data"].as_array().unwrap();
    // Another key's batch is not listed.
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["metadata"]["afterimage_round"], "r1");
    assert_eq!(data[0]["id"], made[0]);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_line_faults_land_in_the_error_file_or_go_missing() {
    let config = MockConfig::default()
        .with_batch_retryable_rate(0.2)
        .with_batch_permanent_rate(0.2)
        .with_batch_missing_rate(0.2);
    let server = server(config).await;
    let ids = ids(60);
    let created = openai_create(&server, "k", &ids, "faults").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "completed");
    let output = by_id(&file_lines(&server, "k", &batch["output_file_id"]).await);
    let errors = by_id(&file_lines(&server, "k", &batch["error_file_id"]).await);
    assert!(output.keys().all(|id| !errors.contains_key(id)));
    let mut statuses = BTreeMap::new();
    for line in errors.values() {
        let status = line["response"]["status_code"].as_u64().unwrap();
        assert!(line["response"]["body"]["error"]["message"].is_string());
        *statuses.entry(status).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [400, 429, 500]
    );
    let missing = ids.len() - output.len() - errors.len();
    assert!(missing > 0 && !output.is_empty(), "{missing} missing");
    assert_eq!(batch["request_counts"]["failed"], errors.len());
    assert_eq!(server.batch_requests_answered(), output.len() as u64);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_validation_fails_the_whole_batch_with_line_numbers() {
    let server = server(MockConfig::default()).await;
    // A duplicate custom_id is a real validation error.
    let id = upload(&server, "k", &openai_input(&["a".into(), "a".into()])).await;
    let body = json!({"input_file_id": id, "endpoint": "/v1/chat/completions", "completion_window": "24h"});
    let (_, text) = send(openai(reqwest::Method::POST, &server, "/batches", "k").json(&body)).await;
    let batch = openai_poll(&server, "k", json_of(&text)["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["errors"]["data"][0]["code"], "duplicate_custom_id");
    assert_eq!(batch["errors"]["data"][0]["line"], 2);
    assert!(batch["output_file_id"].is_null());

    let server = self::server(MockConfig::default().with_batch_validation_failure_rate(1.0)).await;
    let created = openai_create(&server, "k", &ids(3), "x").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["errors"]["data"][0]["line"], 1);
    assert_eq!(server.batch_requests_answered(), 0);
    server.shutdown().await;
}

#[tokio::test]
async fn openai_expiry_keeps_the_finished_half() {
    let server = server(MockConfig::default().with_batch_expiry_rate(1.0)).await;
    let ids = ids(10);
    let created = openai_create(&server, "k", &ids, "x").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "expired");
    let output = by_id(&file_lines(&server, "k", &batch["output_file_id"]).await);
    let errors = by_id(&file_lines(&server, "k", &batch["error_file_id"]).await);
    assert_eq!((output.len(), errors.len()), (5, 5));
    for line in errors.values() {
        assert!(line["response"].is_null());
        assert_eq!(line["error"]["code"], "batch_expired");
    }
    assert_eq!(
        batch["request_counts"],
        json!({"total": 10, "completed": 5, "failed": 5})
    );
    server.shutdown().await;
}

#[tokio::test]
async fn openai_cancel_reports_unrun_lines_and_another_key_gets_404() {
    let server = slow_server(MockConfig::default()).await;
    let created = openai_create(&server, "key-a", &ids(4), "x").await;
    let id = created["id"].as_str().unwrap();
    for path in [
        format!("/batches/{id}"),
        format!(
            "/files/{}/content",
            created["input_file_id"].as_str().unwrap()
        ),
    ] {
        let (status, text) = send(openai(reqwest::Method::GET, &server, &path, "key-b")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
        assert!(json_of(&text)["error"]["message"].is_string());
    }
    let (status, _) = send(openai(
        reqwest::Method::POST,
        &server,
        &format!("/batches/{id}/cancel"),
        "key-b",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = send(openai(
        reqwest::Method::POST,
        &server,
        &format!("/batches/{id}/cancel"),
        "key-a",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&text)["status"], "cancelling");
    let batch = openai_poll(&server, "key-a", id).await;
    assert_eq!(batch["status"], "cancelled");
    let errors = file_lines(&server, "key-a", &batch["error_file_id"]).await;
    assert_eq!(errors.len(), 4);
    assert!(
        errors
            .iter()
            .all(|l| l["error"]["code"] == "batch_cancelled")
    );
    let (status, _) = send(openai(
        reqwest::Method::POST,
        &server,
        &format!("/batches/{id}/cancel"),
        "key-a",
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

// ---- Anthropic ----

fn anthropic(
    method: reqwest::Method,
    server: &MockServer,
    path: &str,
    key: &str,
) -> RequestBuilder {
    reqwest::Client::new()
        .request(
            method,
            format!("{}/messages/batches{path}", server.anthropic_base_url()),
        )
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
}

async fn anthropic_create(server: &MockServer, key: &str, ids: &[String]) -> Value {
    let requests: Vec<Value> = ids
        .iter()
        .map(|id| {
            json!({"custom_id": id, "params": {
            "model": "claude-mock", "max_tokens": 256,
            "messages": [{"role": "user", "content": format!("Question number {id}?")}]}})
        })
        .collect();
    let (status, text) = send(
        anthropic(reqwest::Method::POST, server, "", key).json(&json!({"requests": requests})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    json_of(&text)
}

async fn anthropic_poll(server: &MockServer, key: &str, id: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, text) = send(anthropic(
            reqwest::Method::GET,
            server,
            &format!("/{id}"),
            key,
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let batch = json_of(&text);
        if batch["processing_status"] == "ended" {
            return batch;
        }
        // Counts other than `processing` stay 0 until the batch has ended.
        assert_eq!(batch["request_counts"]["succeeded"], 0);
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

async fn anthropic_results(server: &MockServer, key: &str, id: &str) -> BTreeMap<String, Value> {
    let (status, text) = send(anthropic(
        reqwest::Method::GET,
        server,
        &format!("/{id}/results"),
        key,
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    by_id(&lines(&text))
}

#[tokio::test]
async fn anthropic_batch_ends_with_every_message_once() {
    let server = server(MockConfig::default()).await;
    let ids = ids(8);
    let created = anthropic_create(&server, "key-a", &ids).await;
    assert_eq!(created["processing_status"], "in_progress");
    assert_eq!(created["request_counts"]["processing"], 8);
    assert!(created["results_url"].is_null());
    let id = created["id"].as_str().unwrap();
    // Another key sees nothing.
    let (status, text) = send(anthropic(
        reqwest::Method::GET,
        &server,
        &format!("/{id}"),
        "key-b",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&text)["error"]["type"], "not_found_error");
    let batch = anthropic_poll(&server, "key-a", id).await;
    assert_eq!(
        batch["request_counts"],
        json!({"processing": 0, "succeeded": 8, "errored": 0, "canceled": 0, "expired": 0})
    );
    assert!(
        batch["results_url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/v1/messages/batches/{id}/results"))
    );
    let (status, _) = send(anthropic(
        reqwest::Method::GET,
        &server,
        &format!("/{id}/results"),
        "key-b",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let results = anthropic_results(&server, "key-a", id).await;
    assert_eq!(results.keys().cloned().collect::<Vec<_>>(), ids);
    for (id, line) in &results {
        assert_eq!(line["result"]["type"], "succeeded");
        let message = &line["result"]["message"];
        assert_eq!(message["type"], "message");
        assert!(
            message["content"][0]["text"]
                .as_str()
                .unwrap()
                .contains(id.as_str())
        );
    }
    assert_eq!(server.batch_requests_answered(), 8);
    server.shutdown().await;
}

#[tokio::test]
async fn anthropic_rejects_bad_ids_and_reports_faults_expiry_and_cancel() {
    let server = slow_server(MockConfig::default()).await;
    let bad = json!({"requests": [{"custom_id": "has:colon", "params": {}}]});
    let (status, text) = send(anthropic(reqwest::Method::POST, &server, "", "k").json(&bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(json_of(&text)["error"]["type"], "invalid_request_error");
    // Cancel at once: nothing ran, every line is `canceled`.
    let created = anthropic_create(&server, "k", &ids(3)).await;
    let id = created["id"].as_str().unwrap();
    let (_, text) = send(anthropic(
        reqwest::Method::POST,
        &server,
        &format!("/{id}/cancel"),
        "k",
    ))
    .await;
    assert_eq!(json_of(&text)["processing_status"], "canceling");
    let batch = anthropic_poll(&server, "k", id).await;
    assert_eq!(batch["request_counts"]["canceled"], 3);
    let results = anthropic_results(&server, "k", id).await;
    assert!(results.values().all(|l| l["result"]["type"] == "canceled"));

    let config = MockConfig::default()
        .with_batch_retryable_rate(0.3)
        .with_batch_permanent_rate(0.3);
    let server = self::server(config).await;
    let created = anthropic_create(&server, "k", &ids(40)).await;
    let id = created["id"].as_str().unwrap();
    anthropic_poll(&server, "k", id).await;
    let mut kinds = BTreeMap::new();
    for line in anthropic_results(&server, "k", id).await.values() {
        let kind = match line["result"]["type"].as_str().unwrap() {
            "errored" => line["result"]["error"]["error"]["type"].as_str().unwrap(),
            other => other,
        };
        *kinds.entry(kind.to_string()).or_insert(0) += 1;
    }
    let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "invalid_request_error",
            "overloaded_error",
            "rate_limit_error",
            "succeeded"
        ]
    );

    let server = self::server(MockConfig::default().with_batch_expiry_rate(1.0)).await;
    let created = anthropic_create(&server, "k", &ids(6)).await;
    let batch = anthropic_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["request_counts"]["expired"], 3);
    assert_eq!(batch["request_counts"]["succeeded"], 3);
    server.shutdown().await;
}

// ---- Gemini ----

fn gemini(method: reqwest::Method, server: &MockServer, path: &str, key: &str) -> RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", server.gemini_base_url()))
        .header("x-goog-api-key", key)
}

async fn gemini_create(server: &MockServer, key: &str, ids: &[String], name: &str) -> Value {
    let requests: Vec<Value> = ids
        .iter()
        .map(|id| json!({
            "request": {"contents": [{"role": "user", "parts": [{"text": format!("Question number {id}?")}]}]},
            "metadata": {"key": id}}))
        .collect();
    let body = json!({"batch": {"display_name": name, "input_config": {"requests": {"requests": requests}}}});
    let (status, text) = send(
        gemini(
            reqwest::Method::POST,
            server,
            "/models/gemini-mock:batchGenerateContent",
            key,
        )
        .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    json_of(&text)
}

async fn gemini_poll(server: &MockServer, key: &str, name: &str) -> Value {
    let start = Instant::now();
    loop {
        let (status, text) = send(gemini(
            reqwest::Method::GET,
            server,
            &format!("/{name}"),
            key,
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let op = json_of(&text);
        if op["done"] == true {
            return op;
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
}

fn inlined(op: &Value) -> BTreeMap<String, Value> {
    let results = op["metadata"]["output"]["inlinedResponses"]["inlinedResponses"]
        .as_array()
        .unwrap();
    assert_eq!(
        &op["response"]["inlinedResponses"]["inlinedResponses"],
        &Value::from(results.clone())
    );
    let mut map = BTreeMap::new();
    for r in results {
        let key = r["metadata"]["key"].as_str().unwrap().to_string();
        assert!(map.insert(key, r.clone()).is_none(), "a key answered twice");
    }
    map
}

#[tokio::test]
async fn gemini_batch_succeeds_inline_and_is_found_by_display_name() {
    let server = server(MockConfig::default()).await;
    let ids = ids(6);
    let created = gemini_create(&server, "key-a", &ids, "afterimage-run-7-round-1").await;
    assert_eq!(created["metadata"]["state"], "BATCH_STATE_PENDING");
    let name = created["name"].as_str().unwrap();
    assert!(name.starts_with("batches/"));
    let (status, _) = send(gemini(
        reqwest::Method::GET,
        &server,
        &format!("/{name}"),
        "key-b",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let op = gemini_poll(&server, "key-a", name).await;
    assert_eq!(op["metadata"]["state"], "BATCH_STATE_SUCCEEDED");
    assert_eq!(op["metadata"]["batchStats"]["successfulRequestCount"], "6");
    let results = inlined(&op);
    assert_eq!(results.keys().cloned().collect::<Vec<_>>(), ids);
    for (id, r) in &results {
        let text = r["response"]["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert!(text.contains(id.as_str()), "{text}");
    }
    gemini_create(&server, "key-a", &ids[..1], "afterimage-run-7-round-2").await;
    let (_, text) = send(gemini(
        reqwest::Method::GET,
        &server,
        "/batches?pageSize=1",
        "key-a",
    ))
    .await;
    let page = json_of(&text);
    assert_eq!(
        page["operations"][0]["metadata"]["displayName"],
        "afterimage-run-7-round-1"
    );
    let token = page["nextPageToken"].as_str().unwrap();
    let (_, text) = send(gemini(
        reqwest::Method::GET,
        &server,
        &format!("/batches?pageSize=1&pageToken={token}"),
        "key-a",
    ))
    .await;
    let page = json_of(&text);
    assert_eq!(
        page["operations"][0]["metadata"]["displayName"],
        "afterimage-run-7-round-2"
    );
    assert!(page.get("nextPageToken").is_none());
    assert_eq!(server.batch_submissions()[&ids[0]], 2);
    server.shutdown().await;
}

#[tokio::test]
async fn gemini_faults_job_states_cancel_and_failure() {
    let config = MockConfig::default()
        .with_gemini_job_states(true)
        .with_batch_retryable_rate(0.3)
        .with_batch_permanent_rate(0.3);
    let server = server(config).await;
    let created = gemini_create(&server, "k", &ids(40), "faults").await;
    let op = gemini_poll(&server, "k", created["name"].as_str().unwrap()).await;
    assert_eq!(op["metadata"]["state"], "JOB_STATE_SUCCEEDED");
    let mut codes = BTreeMap::new();
    for r in inlined(&op).values() {
        let code = r["error"]["code"].as_u64().unwrap_or(200);
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(
        codes.keys().copied().collect::<Vec<_>>(),
        [200, 400, 429, 500]
    );
    assert_eq!(
        op["metadata"]["batchStats"]["failedRequestCount"],
        (40 - codes[&200]).to_string()
    );

    let server = slow_server(MockConfig::default().with_gemini_job_states(true)).await;
    let created = gemini_create(&server, "k", &ids(3), "cancel me").await;
    let name = created["name"].as_str().unwrap();
    let (status, text) = send(gemini(
        reqwest::Method::POST,
        &server,
        &format!("/{name}:cancel"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let op = gemini_poll(&server, "k", name).await;
    assert_eq!(op["metadata"]["state"], "JOB_STATE_CANCELLED");
    assert!(inlined(&op).is_empty());

    let server = self::server(MockConfig::default().with_batch_validation_failure_rate(1.0)).await;
    let created = gemini_create(&server, "k", &ids(2), "bad").await;
    let op = gemini_poll(&server, "k", created["name"].as_str().unwrap()).await;
    assert_eq!(op["metadata"]["state"], "BATCH_STATE_FAILED");
    assert!(op["error"]["message"].is_string());
    server.shutdown().await;
}

// ---- Limits and whole-batch faults ----

#[tokio::test]
async fn a_low_request_limit_fails_or_refuses_big_batches_on_each_protocol() {
    let server = server(MockConfig::default().with_batch_max_requests(3)).await;
    let created = openai_create(&server, "k", &ids(4), "big").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["errors"]["data"][0]["code"], "too_many_requests");
    let created = openai_create(&server, "k", &ids(3), "fits").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "completed");

    let requests: Vec<Value> = ids(4)
        .iter()
        .map(|id| json!({"custom_id": id, "params": {"model": "m", "max_tokens": 8, "messages": []}}))
        .collect();
    let (status, text) = send(
        anthropic(reqwest::Method::POST, &server, "", "k").json(&json!({"requests": requests})),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3")
    );

    let requests: Vec<Value> = ids(4)
        .iter()
        .map(|id| json!({"request": {"contents": []}, "metadata": {"key": id}}))
        .collect();
    let body = json!({"batch": {"input_config": {"requests": {"requests": requests}}}});
    let (status, _) = send(
        gemini(
            reqwest::Method::POST,
            &server,
            "/models/g:batchGenerateContent",
            "k",
        )
        .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    server.shutdown().await;
}

#[tokio::test]
async fn token_limit_exceeded_fails_an_openai_batch() {
    let server = server(MockConfig::default().with_batch_token_limit_rate(1.0)).await;
    let created = openai_create(&server, "k", &ids(2), "x").await;
    let batch = openai_poll(&server, "k", created["id"].as_str().unwrap()).await;
    assert_eq!(batch["status"], "failed");
    assert_eq!(batch["errors"]["data"][0]["code"], "token_limit_exceeded");
    // Requests were still submitted, once each.
    assert_eq!(server.batch_submissions().values().sum::<u64>(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn a_batch_just_created_can_be_not_found_yet_but_listed() {
    let config = MockConfig::default().with_batch_hidden_for(Duration::from_secs(3600));
    let server = server(config).await;
    let created = openai_create(&server, "k", &ids(1), "fresh").await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = send(openai(
        reqwest::Method::GET,
        &server,
        &format!("/batches/{id}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, text) = send(openai(reqwest::Method::GET, &server, "/batches", "k")).await;
    assert_eq!(json_of(&text)["data"][0]["id"], id);
    server.shutdown().await;
}

#[tokio::test]
async fn gemini_file_batch_uploads_resumably_and_answers_in_a_responses_file() {
    let server = server(MockConfig::default()).await;
    let ids = ids(5);
    let content: String = ids
        .iter()
        .map(|id| {
            let line = json!({"key": id, "request": {"contents": [
                {"role": "user", "parts": [{"text": format!("Question number {id}?")}]}]}});
            format!("{line}\n")
        })
        .collect();
    let start = reqwest::Client::new()
        .post(format!("{}/upload/v1beta/files", server.base_url()))
        .header("x-goog-api-key", "key-a")
        .header("X-Goog-Upload-Protocol", "resumable")
        .header("X-Goog-Upload-Command", "start")
        .json(&json!({"file": {"display_name": "round-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), StatusCode::OK);
    let url = start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_string();
    let (status, text) = send(
        reqwest::Client::new()
            .post(url)
            .header("x-goog-api-key", "key-a")
            .header("X-Goog-Upload-Command", "upload, finalize")
            .header("X-Goog-Upload-Offset", "0")
            .body(content.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let file = json_of(&text)["file"].clone();
    assert_eq!(file["sizeBytes"], content.len().to_string());
    let body = json!({"batch": {"display_name": "file-round",
        "input_config": {"file_name": file["name"]}}});
    let (status, text) = send(
        gemini(
            reqwest::Method::POST,
            &server,
            "/models/gemini-mock:batchGenerateContent",
            "key-a",
        )
        .json(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let op = gemini_poll(&server, "key-a", json_of(&text)["name"].as_str().unwrap()).await;
    assert_eq!(op["metadata"]["state"], "BATCH_STATE_SUCCEEDED");
    let responses = op["metadata"]["output"]["responsesFile"].as_str().unwrap();
    assert_eq!(op["response"]["responsesFile"], responses);
    let download = |key: &'static str| {
        reqwest::Client::new()
            .get(format!(
                "{}/download/v1beta/{responses}:download?alt=media",
                server.base_url()
            ))
            .header("x-goog-api-key", key)
    };
    let (status, _) = send(download("key-b")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = send(download("key-a")).await;
    assert_eq!(status, StatusCode::OK);
    let mut keys: Vec<String> = lines(&text)
        .iter()
        .map(|line| {
            let key = line["key"].as_str().unwrap();
            let answer = line["response"]["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap();
            assert!(answer.contains(key), "{answer}");
            key.to_string()
        })
        .collect();
    keys.sort();
    assert_eq!(keys, ids);
    assert_eq!(server.batch_requests_answered(), 5);
    server.shutdown().await;
}

#[tokio::test]
async fn deletes_remove_files_and_ended_batches_only() {
    // Phases long enough that the delete sent at once finds the batch still running.
    let server = slow_server(MockConfig::default()).await;
    let created = openai_create(&server, "k", &ids(1), "x").await;
    let file = created["input_file_id"].as_str().unwrap();
    let (status, _) = send(openai(
        reqwest::Method::DELETE,
        &server,
        &format!("/files/{file}"),
        "other",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = send(openai(
        reqwest::Method::DELETE,
        &server,
        &format!("/files/{file}"),
        "k",
    ))
    .await;
    assert_eq!(
        (status, json_of(&text)["deleted"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, _) = send(openai(
        reqwest::Method::GET,
        &server,
        &format!("/files/{file}/content"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let created = anthropic_create(&server, "k", &ids(1)).await;
    let id = created["id"].as_str().unwrap();
    let (status, _) = send(anthropic(
        reqwest::Method::DELETE,
        &server,
        &format!("/{id}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "still processing");
    anthropic_poll(&server, "k", id).await;
    let (status, text) = send(anthropic(
        reqwest::Method::DELETE,
        &server,
        &format!("/{id}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(json_of(&text)["type"], "message_batch_deleted");
    let (status, _) = send(anthropic(
        reqwest::Method::GET,
        &server,
        &format!("/{id}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let created = gemini_create(&server, "k", &ids(1), "x").await;
    let name = created["name"].as_str().unwrap();
    let (status, _) = send(gemini(
        reqwest::Method::DELETE,
        &server,
        &format!("/{name}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send(gemini(
        reqwest::Method::GET,
        &server,
        &format!("/{name}"),
        "k",
    ))
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.shutdown().await;
}

#[tokio::test]
async fn batch_routes_need_the_required_key_and_check_openai_metadata() {
    let server = server(MockConfig::default().with_require_key("secret")).await;
    let (status, text) = send(openai(reqwest::Method::GET, &server, "/batches", "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(json_of(&text)["error"]["message"].is_string());
    let (status, _) = send(anthropic(reqwest::Method::GET, &server, "", "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let file = upload(&server, "secret", &openai_input(&ids(1))).await;
    let long = "v".repeat(513);
    let body = json!({"input_file_id": file, "endpoint": "/v1/chat/completions",
        "completion_window": "24h", "metadata": {"round": long}});
    let (status, text) =
        send(openai(reqwest::Method::POST, &server, "/batches", "secret").json(&body)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        json_of(&text)["error"]["message"]
            .as_str()
            .unwrap()
            .contains("512")
    );
    assert_eq!(server.batches_created(), 0);
    server.shutdown().await;
}
