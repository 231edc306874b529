//! The backends against the mock at the edges a crash-safe run leans on: the key's
//! fingerprint, a call hanging where the mock stalls it, `find` over several list
//! pages, Gemini's file input and output, file cleanup, and an account out of credit
//! arriving as a fatal outcome.

use std::time::Duration;

use afterimage_batch::{
    AnthropicBatch, BatchBackend, BatchItem, GeminiBatch, ItemOutcome, OpenAiBatch, missing,
};
use afterimage_core::{ApiKey, ProviderError};
use afterimage_mock::{BatchStall, MockConfig, MockServer};
use afterimage_providers::{Anthropic, Gemini, OpenAiCompatible};

use crate::against_mock::{ids, items, quick, run_to_end};
use crate::{item, kind};

const GPT: &str = "gpt-4o-mini";
const CLAUDE: &str = "claude-sonnet-4-5";
const GEMINI: &str = "gemini-2.5-flash";

async fn mock(config: MockConfig) -> MockServer {
    MockServer::start(quick(config)).await.unwrap()
}

fn openai(server: &MockServer, key: &str) -> OpenAiBatch {
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new(key))
        .model(GPT)
        .build()
        .unwrap();
    OpenAiBatch::new(client)
}

fn anthropic(server: &MockServer, key: &str) -> AnthropicBatch {
    let client = Anthropic::builder()
        .base_url(server.anthropic_base_url())
        .api_key(ApiKey::new(key))
        .model(CLAUDE)
        .build()
        .unwrap();
    AnthropicBatch::new(client)
}

fn gemini(server: &MockServer, key: &str) -> GeminiBatch {
    let client = Gemini::builder()
        .base_url(server.gemini_base_url())
        .api_key(ApiKey::new(key))
        .model(GEMINI)
        .build()
        .unwrap();
    GeminiBatch::new(client)
}

/// Waits (bounded) until `ready` holds.
async fn until(what: &str, ready: impl Fn() -> bool) {
    for _ in 0..2000 {
        if ready() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("never saw: {what}");
}

#[tokio::test]
async fn each_backend_names_its_key_by_fingerprint_only() {
    let server = mock(MockConfig::default()).await;
    let key = "sk-secret-fingerprint-1";
    let expected = ApiKey::new(key).fingerprint();
    let backends: [Box<dyn BatchBackend>; 3] = [
        Box::new(openai(&server, key)),
        Box::new(anthropic(&server, key)),
        Box::new(gemini(&server, key)),
    ];
    for backend in &backends {
        let fingerprint = backend.key_fingerprint();
        assert_eq!(fingerprint, expected);
        assert!(!fingerprint.contains("secret"));
    }
    assert_ne!(
        openai(&server, "sk-other").key_fingerprint(),
        expected,
        "two keys, one name"
    );
    assert!(!format!("{:?}", openai(&server, key)).contains("secret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_stalled_after_the_batch_exists_hangs_and_find_adopts_the_batch() {
    let server = mock(MockConfig::default()).await;
    let backend = openai(&server, "sk-a");
    server.stall_batches(BatchStall::CreateAfter);
    let items = items(GPT);
    let submit = {
        let (backend, items) = (backend.clone(), items.clone());
        tokio::spawn(async move { backend.submit("run1-r0-0", &items).await })
    };
    until("the create hanging", || server.batch_stalled() == 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!submit.is_finished(), "the create answered while stalled");
    assert_eq!(server.batches_created(), 1);
    // What a resumed run does when the create's answer never came.
    let found = backend.find("run1-r0-0", items.len()).await.unwrap();
    assert_eq!(found.len(), 1);
    server.unstall_batches();
    let created = submit.await.unwrap().unwrap();
    assert_eq!(created.id, found[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_and_downloads_hang_while_stalled_then_answer() {
    let server = mock(MockConfig::default()).await;
    let backend = anthropic(&server, "sk-ant-a");
    let items = items(CLAUDE);
    let batch = backend.submit("run1-r0-0", &items).await.unwrap();
    for point in [BatchStall::Poll, BatchStall::Results] {
        server.stall_batches(point);
        let call = {
            let (backend, batch) = (backend.clone(), batch.clone());
            tokio::spawn(async move {
                match point {
                    BatchStall::Poll => backend.poll(&batch).await.map(|_| ()),
                    _ => backend.fetch_results(&batch).await.map(|_| ()),
                }
            })
        };
        until("the call hanging", || server.batch_stalled() == 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!call.is_finished(), "{point:?} answered while stalled");
        server.unstall_batches();
        // Results are asked for before the batch ends: an error, but an answer.
        let _ = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("still hanging after unstall");
    }
    let results = finish(&backend, &batch, &items).await;
    assert_eq!(results.len(), items.len());
}

/// Polls an already submitted batch to its end and parses its results.
async fn finish(
    backend: &dyn BatchBackend,
    batch: &afterimage_batch::RemoteBatch,
    items: &[BatchItem],
) -> Vec<(String, ItemOutcome)> {
    loop {
        let status = backend.poll(batch).await.unwrap();
        if status.phase.is_ended() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let raw = backend.fetch_results(batch).await.unwrap();
    backend.parse_results(&raw, items).unwrap()
}

/// Creates `n` one-request batches tagged `key-0` (oldest) to `key-{n-1}`; the
/// oldest holds three requests, so Anthropic's find (by size) can tell it apart.
async fn many_batches(backend: &dyn BatchBackend, model: &str, n: usize) {
    for k in 0..n {
        let size = if k == 0 { 3 } else { 1 };
        let batch: Vec<BatchItem> = (0..size)
            .map(|i| item(&format!("b{k}-r{i}"), model, "Hello?"))
            .collect();
        backend.submit(&format!("key-{k}"), &batch).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_reads_past_the_first_page_on_each_protocol() {
    let server = mock(MockConfig::default().with_batch_list_page(2)).await;
    let n = 7;
    let openai = openai(&server, "sk-a");
    many_batches(&openai, GPT, n).await;
    for k in [0, n - 1] {
        let found = openai.find(&format!("key-{k}"), 1).await.unwrap();
        assert_eq!(found.len(), 1, "key-{k}");
        assert_eq!(
            found[0].local_key.as_deref(),
            Some(format!("key-{k}").as_str())
        );
    }
    let gemini = gemini(&server, "g-a");
    many_batches(&gemini, GEMINI, n).await;
    for k in [0, n - 1] {
        let found = gemini.find(&format!("key-{k}"), 1).await.unwrap();
        assert_eq!(found.len(), 1, "gemini key-{k}");
    }
    let anthropic = anthropic(&server, "sk-ant-a");
    many_batches(&anthropic, CLAUDE, n).await;
    assert_eq!(anthropic.find("any", 3).await.unwrap().len(), 1);
    assert_eq!(anthropic.find("any", 1).await.unwrap().len(), n - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_stops_after_ten_pages() {
    let server = mock(MockConfig::default().with_batch_list_page(1)).await;
    let backend = openai(&server, "sk-a");
    many_batches(&backend, GPT, 11).await;
    // Newest first, one per page: key-1 is on page 10, key-0 on page 11.
    assert_eq!(backend.find("key-1", 1).await.unwrap().len(), 1);
    assert!(backend.find("key-0", 3).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_gemini_round_goes_up_as_a_file_and_comes_back_as_one() {
    let server = mock(MockConfig::default()).await;
    let backend = gemini(&server, "g-a").max_inline_bytes(100);
    let items = items(GEMINI);
    let (_, batch, results) = run_to_end(&backend, &items).await;
    assert_eq!(results.len(), items.len());
    assert!(missing(&ids(&items), &results).is_empty());
    for (id, outcome) in &results {
        assert_eq!(kind(outcome), "ok", "{id}");
    }
    assert!(server.batch_submissions().values().all(|&n| n == 1));
    // Both files existed: the uploaded input and the responses file.
    backend.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 2);
    assert!(
        backend.fetch_results(&batch).await.is_err(),
        "results still there"
    );
    // Deleting again finds nothing left and is no error.
    backend.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_gemini_round_leaves_no_file() {
    let server = mock(MockConfig::default()).await;
    let backend = gemini(&server, "g-a");
    let items = items(GEMINI);
    let (_, batch, results) = run_to_end(&backend, &items).await;
    assert_eq!(results.len(), items.len());
    backend.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_deletes_its_input_output_and_error_files() {
    let config = MockConfig::default().with_batch_permanent_rate(0.5);
    let server = mock(config).await;
    let backend = openai(&server, "sk-a");
    let items = items(GPT);
    let (_, batch, results) = run_to_end(&backend, &items).await;
    let permanent = results.iter().filter(|(_, o)| kind(o) == "permanent");
    assert!(permanent.count() > 0, "no error file to delete");
    backend.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 3);
    assert!(
        backend.fetch_results(&batch).await.is_err(),
        "results still there"
    );
    backend.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 3);
    // Anthropic keeps no files: nothing to delete, nothing counted.
    let anthropic = anthropic(&server, "sk-ant-a");
    let claude_items = crate::against_mock::items(CLAUDE);
    let (_, batch, _) = run_to_end(&anthropic, &claude_items).await;
    anthropic.delete_files(&batch).await.unwrap();
    assert_eq!(server.files_deleted(), 3);
}

/// The outcomes of a run whose account pays for 4 lines, by kind.
async fn out_of_credit(backend: &dyn BatchBackend, model: &str) -> Vec<ItemOutcome> {
    let items = items(model);
    let (_, _, results) = run_to_end(backend, &items).await;
    assert_eq!(results.len(), items.len());
    let ok = results.iter().filter(|(_, o)| kind(o) == "ok").count();
    assert_eq!(ok, 4, "the credit paid for 4 lines");
    results
        .into_iter()
        .map(|(_, o)| o)
        .filter(|o| kind(o) != "ok")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_balance_is_fatal_on_anthropic_and_openai() {
    let server = mock(MockConfig::default().with_batch_credit(4)).await;
    for outcome in out_of_credit(&anthropic(&server, "sk-ant-a"), CLAUDE).await {
        let ItemOutcome::Fatal(error) = outcome else {
            panic!("not fatal: {}", kind(&outcome));
        };
        assert!(
            matches!(error, ProviderError::QuotaExhausted { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("credit balance is too low"),
            "{error}"
        );
        assert!(error.is_fatal() && !error.is_retryable());
    }
    let server = mock(MockConfig::default().with_batch_credit(4)).await;
    for outcome in out_of_credit(&openai(&server, "sk-a"), GPT).await {
        let ItemOutcome::Fatal(error) = outcome else {
            panic!("not fatal: {}", kind(&outcome));
        };
        assert!(
            matches!(error, ProviderError::QuotaExhausted { .. }),
            "{error}"
        );
    }
}
