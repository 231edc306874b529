//! Helpers the three backends share: reading JSON answers, counts and error statuses.

use std::collections::HashMap;

use afterimage_core::ProviderError;
use afterimage_providers::{Provider, decode_error};
use serde_json::Value;

use crate::types::{BatchError, BatchItem, ItemOutcome};

/// `text` as JSON, or a [`BatchError::Malformed`] naming `what` was expected.
pub(crate) fn parse(text: &str, what: &str) -> Result<Value, BatchError> {
    serde_json::from_str(text).map_err(|e| BatchError::Malformed(format!("expected {what}: {e}")))
}

/// `value` serialized, for request bodies built here.
pub(crate) fn to_bytes(value: &Value) -> Result<Vec<u8>, BatchError> {
    serde_json::to_vec(value).map_err(|e| BatchError::Invalid(format!("cannot serialize: {e}")))
}

/// A string field, or a malformed-answer error.
pub(crate) fn string_at(value: &Value, pointer: &str, what: &str) -> Result<String, BatchError> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| BatchError::Malformed(format!("{what} has no `{pointer}`")))
}

/// A count that may be a number or (proto JSON int64) a string; absent is 0.
pub(crate) fn count(value: &Value, pointer: &str) -> u64 {
    match value.pointer(pointer) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

/// A 404 as the error the caller retries shortly; others as they came.
pub(crate) fn not_found_is_transient(error: ProviderError, id: &str) -> BatchError {
    match error {
        ProviderError::ModelNotFound { .. } | ProviderError::EndpointNotFound { .. } => {
            BatchError::NotYetVisible { id: id.to_owned() }
        }
        other => BatchError::Provider(other),
    }
}

/// The submitted items by id.
pub(crate) fn by_id(submitted: &[BatchItem]) -> HashMap<&str, &BatchItem> {
    submitted
        .iter()
        .map(|i| (i.custom_id.as_str(), i))
        .collect()
}

/// The outcome of a request that failed with HTTP `status` and `body`, as the
/// provider's synchronous client would have classified it.
pub(crate) fn status_outcome(
    provider: Provider,
    model: &str,
    status: u16,
    body: &[u8],
) -> ItemOutcome {
    ItemOutcome::from_error(&decode_error(provider, model, status, body))
}

/// Logs a result line whose id was never submitted in this batch.
pub(crate) fn unknown_id(id: &str) {
    tracing::warn!(
        custom_id = id,
        "batch result for an id this batch did not submit; skipped"
    );
}

/// Parses result lines that name their request under `/custom_id` (OpenAI and
/// Anthropic), each matched to what was submitted and judged by `outcome`; a line
/// naming no submitted request is logged and skipped.
pub(crate) fn custom_id_lines(
    raw: &[u8],
    submitted: &[BatchItem],
    outcome: fn(&Value, &BatchItem) -> ItemOutcome,
) -> Result<Vec<(String, ItemOutcome)>, BatchError> {
    let items = by_id(submitted);
    let mut outcomes = Vec::new();
    for line in String::from_utf8_lossy(raw)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let value = parse(line, "a batch result line")?;
        let id = string_at(&value, "/custom_id", "a result line")?;
        let Some(item) = items.get(id.as_str()) else {
            unknown_id(&id);
            continue;
        };
        outcomes.push((id, outcome(&value, item)));
    }
    Ok(outcomes)
}
