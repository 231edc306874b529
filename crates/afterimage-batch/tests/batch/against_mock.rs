//! The three backends against the project's mock, which speaks the same batch
//! protocols from its own side: what one writes the other reads, end to end (submit,
//! poll to the end, fetch, parse), with every id answered once, and line faults
//! arriving as the outcome classes the engine acts on.

use std::time::Duration;

use afterimage_batch::{
    AnthropicBatch, BatchBackend, BatchItem, BatchPhase, EndKind, GeminiBatch, ItemOutcome,
    OpenAiBatch, RemoteBatch, missing,
};
use afterimage_core::ApiKey;
use afterimage_mock::{MockConfig, MockServer};
use afterimage_providers::{Anthropic, Gemini, OpenAiCompatible};

use crate::{item, kind};

const N: usize = 12;

pub(crate) fn items(model: &str) -> Vec<BatchItem> {
    (0..N)
        .map(|i| item(&format!("run1-d{i}-t0"), model, &format!("Question {i}?")))
        .collect()
}

pub(crate) fn quick(config: MockConfig) -> MockConfig {
    config
        .with_batch_phase(Duration::from_millis(50))
        .with_seed(7)
}

/// Polls until the batch ends, then fetches and parses its results.
pub(crate) async fn run_to_end(
    backend: &dyn BatchBackend,
    items: &[BatchItem],
) -> (EndKind, RemoteBatch, Vec<(String, ItemOutcome)>) {
    let batch = backend.submit("run1-r0-0", items).await.unwrap();
    let end = loop {
        match backend.poll(&batch).await {
            Ok(status) => {
                if let BatchPhase::Ended(end) = status.phase {
                    break end;
                }
            }
            // A batch may be invisible for a moment right after create.
            Err(afterimage_batch::BatchError::NotYetVisible { .. }) => {}
            Err(e) => panic!("poll: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let raw = backend.fetch_results(&batch).await.unwrap();
    let results = backend.parse_results(&raw, items).unwrap();
    (end, batch, results)
}

pub(crate) fn ids(items: &[BatchItem]) -> Vec<String> {
    items.iter().map(|i| i.custom_id.clone()).collect()
}

async fn every_id_answered_once(server: &MockServer, backend: &dyn BatchBackend, model: &str) {
    let items = items(model);
    let (end, _, results) = run_to_end(backend, &items).await;
    assert_eq!(end, EndKind::Completed);
    assert_eq!(results.len(), N);
    assert!(missing(&ids(&items), &results).is_empty());
    for (id, outcome) in &results {
        let ItemOutcome::Ok(response) = outcome else {
            panic!("{id}: {}", kind(outcome));
        };
        assert!(
            !response.message.content.is_empty(),
            "{id} has an empty answer"
        );
        assert!(response.usage.output_tokens > 0, "{id} billed no output");
    }
    let submissions = server.batch_submissions();
    assert_eq!(submissions.len(), N);
    assert!(submissions.values().all(|&n| n == 1), "{submissions:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_backend_and_mock_agree() {
    let server = MockServer::start(quick(MockConfig::default()))
        .await
        .unwrap();
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new("sk-mock"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    every_id_answered_once(&server, &OpenAiBatch::new(client), "gpt-4o-mini").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_backend_and_mock_agree() {
    let server = MockServer::start(quick(MockConfig::default()))
        .await
        .unwrap();
    let client = Anthropic::builder()
        .base_url(server.anthropic_base_url())
        .api_key(ApiKey::new("sk-ant-mock"))
        .model("claude-sonnet-4-5")
        .build()
        .unwrap();
    every_id_answered_once(&server, &AnthropicBatch::new(client), "claude-sonnet-4-5").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_backend_and_mock_agree() {
    let server = MockServer::start(quick(MockConfig::default()))
        .await
        .unwrap();
    let client = Gemini::builder()
        .base_url(server.gemini_base_url())
        .api_key(ApiKey::new("g-mock"))
        .model("gemini-2.5-flash")
        .build()
        .unwrap();
    every_id_answered_once(&server, &GeminiBatch::new(client), "gemini-2.5-flash").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn line_faults_reach_the_engine_as_outcome_classes() {
    let config = MockConfig::default()
        .with_batch_retryable_rate(0.25)
        .with_batch_permanent_rate(0.25)
        .with_batch_missing_rate(0.2);
    let server = MockServer::start(quick(config)).await.unwrap();
    let client = OpenAiCompatible::builder(server.openai_base_url())
        .api_key(ApiKey::new("sk-mock"))
        .model("gpt-4o-mini")
        .build()
        .unwrap();
    let backend = OpenAiBatch::new(client);
    let items: Vec<BatchItem> = (0..60)
        .map(|i| item(&format!("run1-d{i}-t0"), "gpt-4o-mini", "Why?"))
        .collect();
    let (_, _, results) = run_to_end(&backend, &items).await;
    let count = |k: &str| results.iter().filter(|(_, o)| kind(o) == k).count();
    let absent = missing(&ids(&items), &results).len();
    assert!(count("ok") > 0 && count("retryable") > 0 && count("permanent") > 0 && absent > 0);
    assert_eq!(
        count("ok") + count("retryable") + count("permanent") + absent,
        60
    );
}
