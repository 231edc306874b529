//! The three batch backends against wiremock servers speaking each provider's
//! documented batch wire format, in one test binary; splitting beside them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod against_mock;
mod anthropic;
mod batcher;
mod crash;
mod gemini;
mod journal;
mod mock_edges;
mod openai;
mod resume;
mod split;

use afterimage_batch::{BatchItem, ItemOutcome};
use afterimage_core::{ChatRequest, Message};
use serde_json::Value;
use wiremock::MockServer;

/// A one-question item.
pub fn item(id: &str, model: &str, text: &str) -> BatchItem {
    let request = ChatRequest::new(vec![Message::system("Be brief."), Message::user(text)])
        .temperature(0.5)
        .max_tokens(64);
    BatchItem::new(id, model, request)
}

/// The JSON bodies the server received on `path` for `method`.
pub async fn bodies(server: &MockServer, method: &str, path: &str) -> Vec<Vec<u8>> {
    server
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == method && r.url.path() == path)
        .map(|r| r.body)
        .collect()
}

/// The outcome of `id` in `results`.
pub fn outcome<'a>(results: &'a [(String, ItemOutcome)], id: &str) -> &'a ItemOutcome {
    &results
        .iter()
        .find(|(i, _)| i == id)
        .unwrap_or_else(|| panic!("no result for {id}"))
        .1
}

/// Whether the outcome is retryable / permanent / ok, for short asserts.
pub fn kind(outcome: &ItemOutcome) -> &'static str {
    match outcome {
        ItemOutcome::Ok(_) => "ok",
        ItemOutcome::Retryable(_) => "retryable",
        ItemOutcome::Permanent(_) => "permanent",
        ItemOutcome::Fatal(_) => "fatal",
    }
}

/// Parses JSON bytes.
pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}
