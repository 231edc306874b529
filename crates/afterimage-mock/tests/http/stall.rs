//! Stalling the batch protocols at one point: a request there hangs (and is counted)
//! until the stall ends, then goes on; other points are served meanwhile.

use std::future::Future;
use std::time::Duration;

use afterimage_mock::{BatchStall, MockConfig, MockServer};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

async fn server() -> MockServer {
    let config = MockConfig::default().with_batch_phase(Duration::from_millis(5));
    MockServer::start(config).await.unwrap()
}

fn openai(server: &MockServer, method: Method, path: &str) -> RequestBuilder {
    reqwest::Client::new()
        .request(method, format!("{}{path}", server.openai_base_url()))
        .bearer_auth("key-a")
}

/// Sends in the background, answering the status and the JSON body.
fn spawn(request: RequestBuilder) -> JoinHandle<(StatusCode, Value)> {
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    })
}

/// Waits (bounded) until `ready` holds.
async fn until(what: &str, mut ready: impl FnMut() -> bool) {
    for _ in 0..2000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw: {what}");
}

/// Whether `task` is still running after the server had time to answer it.
async fn still_hangs<T>(task: &JoinHandle<T>) -> bool {
    tokio::time::sleep(Duration::from_millis(100)).await;
    !task.is_finished()
}

async fn finish<T: Send + 'static>(
    task: impl Future<Output = Result<T, tokio::task::JoinError>>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("released request still hangs")
        .unwrap()
}

fn upload(server: &MockServer) -> RequestBuilder {
    let boundary = "stall-boundary";
    let line = json!({"custom_id": "d1-t1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "mock-model", "messages": [{"role": "user", "content": "Hi?"}]}});
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"r.jsonl\"\r\n\
         Content-Type: application/jsonl\r\n\r\n{line}\n\r\n--{boundary}--\r\n"
    );
    openai(server, Method::POST, "/files")
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
}

fn create(server: &MockServer, file_id: &str) -> RequestBuilder {
    openai(server, Method::POST, "/batches").json(&json!({
        "input_file_id": file_id, "endpoint": "/v1/chat/completions", "completion_window": "24h",
    }))
}

/// Stalls `point`, sends `request`, checks it hangs and is counted, then releases it:
/// a read goes on (200), a write held before it changed anything is refused (503).
async fn hangs_until_unstalled(
    server: &MockServer,
    point: BatchStall,
    request: RequestBuilder,
) -> Value {
    server.stall_batches(point);
    let task = spawn(request);
    until("a stalled request", || server.batch_stalled() == 1).await;
    assert!(still_hangs(&task).await, "{point:?} did not hang");
    server.unstall_batches();
    let (status, body) = finish(task).await;
    let expected = match point {
        BatchStall::Upload | BatchStall::CreateBefore => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    assert_eq!(status, expected, "{point:?}: {body}");
    until("no stalled request", || server.batch_stalled() == 0).await;
    body
}

#[tokio::test]
async fn each_openai_point_hangs_until_unstalled_then_goes_on() {
    let server = server().await;
    hangs_until_unstalled(&server, BatchStall::Upload, upload(&server)).await;
    let (status, file) = finish(spawn(upload(&server))).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    let file_id = file["id"].as_str().unwrap();

    hangs_until_unstalled(&server, BatchStall::CreateBefore, create(&server, file_id)).await;
    assert_eq!(
        server.batches_created(),
        0,
        "a create released from before the batch existed made one"
    );
    // Stalled after, the create makes the batch and then hangs.
    server.stall_batches(BatchStall::CreateAfter);
    let after = spawn(create(&server, file_id));
    until("the batch created", || server.batches_created() == 1).await;
    until("create stalled after", || server.batch_stalled() == 1).await;
    assert!(still_hangs(&after).await);
    server.unstall_batches();
    let (status, created) = finish(after).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(server.batches_created(), 1);
    let id = created["id"].as_str().unwrap().to_string();

    let get = openai(&server, Method::GET, &format!("/batches/{id}"));
    let mut polled = hangs_until_unstalled(&server, BatchStall::Poll, get).await;
    while polled["status"] != "completed" {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let response = openai(&server, Method::GET, &format!("/batches/{id}")).send();
        polled = response.await.unwrap().json().await.unwrap();
    }
    let output = polled["output_file_id"].as_str().unwrap();
    server.stall_batches(BatchStall::Results);
    // Polls go on while results are stalled.
    let (status, _) = finish(spawn(openai(
        &server,
        Method::GET,
        &format!("/batches/{id}"),
    )))
    .await;
    assert_eq!(status, StatusCode::OK);
    let content = spawn(openai(
        &server,
        Method::GET,
        &format!("/files/{output}/content"),
    ));
    until("results stalled", || server.batch_stalled() == 1).await;
    assert!(still_hangs(&content).await);
    server.unstall_batches();
    let (status, _) = finish(content).await;
    assert_eq!(status, StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test]
async fn a_killed_client_stops_counting_and_shutdown_does_not_wait_for_a_stall() {
    let server = server().await;
    server.stall_batches(BatchStall::Upload);
    let killed = spawn(upload(&server));
    until("upload stalled", || server.batch_stalled() == 1).await;
    killed.abort();
    until("the dropped request uncounted", || {
        server.batch_stalled() == 0
    })
    .await;
    let _left_hanging = spawn(upload(&server));
    until("upload stalled again", || server.batch_stalled() == 1).await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown waited for a stalled request");
}

#[tokio::test]
async fn gemini_upload_stalls_at_finalize_and_anthropic_create_after_the_batch_exists() {
    let server = server().await;
    server.stall_batches(BatchStall::Upload);
    let start = reqwest::Client::new()
        .post(format!("{}/upload/v1beta/files", server.base_url()))
        .header("x-goog-api-key", "key-a")
        .header("X-Goog-Upload-Command", "start")
        .json(&json!({"file": {"display_name": "r"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        start.status(),
        StatusCode::OK,
        "the start step must not stall"
    );
    let url = start.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap()
        .to_string();
    let finalize = reqwest::Client::new()
        .post(url)
        .header("x-goog-api-key", "key-a")
        .header("X-Goog-Upload-Command", "upload, finalize")
        .body("{\"key\":\"d1\",\"request\":{\"contents\":[]}}\n");
    let refused = hangs_until_unstalled(&server, BatchStall::Upload, finalize).await;
    assert!(refused["file"].is_null(), "{refused}");

    server.stall_batches(BatchStall::CreateAfter);
    let body = json!({"requests": [{"custom_id": "d1-t1", "params": {"model": "claude-mock",
        "max_tokens": 16, "messages": [{"role": "user", "content": "Hi?"}]}}]});
    let create = reqwest::Client::new()
        .post(format!("{}/messages/batches", server.anthropic_base_url()))
        .header("x-api-key", "key-a")
        .header("anthropic-version", "2023-06-01")
        .json(&body);
    let task = spawn(create);
    until("anthropic create stalled", || server.batch_stalled() == 1).await;
    assert_eq!(server.batches_created(), 1);
    assert_eq!(server.batch_submissions().get("d1-t1"), Some(&1));
    server.unstall_batches();
    let (status, batch) = finish(task).await;
    assert_eq!(status, StatusCode::OK, "{batch}");
    server.shutdown().await;
}
