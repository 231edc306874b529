//! Helpers the three backends share: reading JSON answers, counts and error statuses.

use std::collections::HashMap;

use afterimage_core::ProviderError;
use afterimage_providers::{Provider, Transport, decode_error};
use serde_json::Value;

use crate::types::{BatchError, BatchItem, ItemOutcome};

/// A backend's connection (borrowed from its chat client), and the same connection
/// reading result files up to their own limit: chat answers are capped far lower.
#[derive(Debug, Clone)]
pub(crate) struct Links {
    pub(crate) transport: Transport,
    pub(crate) results: Transport,
}

impl Links {
    /// `transport`, with results read up to [`DEFAULT_MAX_RESULT_BYTES`](crate::DEFAULT_MAX_RESULT_BYTES).
    pub(crate) fn new(transport: Transport) -> Self {
        let results = transport
            .clone()
            .max_response_bytes(crate::DEFAULT_MAX_RESULT_BYTES);
        Links { transport, results }
    }

    /// Results read up to `bytes` instead.
    pub(crate) fn max_result_bytes(&mut self, bytes: usize) {
        self.results = self.transport.clone().max_response_bytes(bytes);
    }
}

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

/// The most list pages [`crate::BatchBackend::find`] reads.
pub(crate) const FIND_PAGES: usize = 10;

/// Batches older than this are not looked through by `find`: the providers keep
/// results about a month (OpenAI 30 days, Anthropic 29, Gemini files 48 hours).
pub(crate) const FIND_MAX_AGE_SECS: u64 = 30 * 86_400;

/// One page of a provider's batch list.
#[derive(Debug, Default)]
pub(crate) struct Page {
    /// The batch objects on it.
    pub(crate) items: Vec<Value>,
    /// The cursor of the next page, when there is one.
    pub(crate) next: Option<String>,
    /// Unix seconds of the oldest batch on it, when the provider says.
    pub(crate) oldest: Option<u64>,
}

impl Page {
    /// The array at `pointer` of `list` as the page's items.
    pub(crate) fn items_at(list: &Value, pointer: &str) -> Vec<Value> {
        list.pointer(pointer)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

/// The batch objects of up to [`FIND_PAGES`] pages, fetched by `fetch` from a
/// cursor (`None`: the first page), stopping at the last page or at one whose
/// oldest batch is older than [`FIND_MAX_AGE_SECS`].
pub(crate) async fn read_pages<F, Fut>(mut fetch: F) -> Result<Vec<Value>, BatchError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<Page, BatchError>>,
{
    let cutoff = unix_now().saturating_sub(FIND_MAX_AGE_SECS);
    let (mut items, mut cursor) = (Vec::new(), None);
    for _ in 0..FIND_PAGES {
        let page = fetch(cursor).await?;
        items.extend(page.items);
        let too_old = page.oldest.is_some_and(|t| t < cutoff);
        match page.next {
            Some(next) if !too_old => cursor = Some(next),
            _ => break,
        }
    }
    Ok(items)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds of an RFC 3339 UTC time (`2024-09-24T18:37:24.100435Z`); `None` if
/// it is not one (offsets other than `Z` are read as UTC, near enough for paging).
pub(crate) fn unix_from_rfc3339(text: &str) -> Option<u64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if !(1..=12).contains(&month) || text.get(10..11) != Some("T") {
        return None;
    }
    // Civil date to days since 1970-01-01, by eras of 400 years.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).ok()
}

/// DELETEs `path`; a file already gone (404) is as good as deleted.
pub(crate) async fn delete_if_present(
    transport: &afterimage_providers::Transport,
    path: &str,
) -> Result<(), BatchError> {
    match transport.delete(path).await {
        Ok(_) => Ok(()),
        Err(ProviderError::ModelNotFound { .. } | ProviderError::EndpointNotFound { .. }) => Ok(()),
        Err(other) => Err(BatchError::Provider(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(unix_from_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_from_rfc3339("2024-09-24T18:37:24.100435Z"),
            Some(1_727_203_044)
        );
        assert_eq!(unix_from_rfc3339("2000-03-01T00:00:00Z"), Some(951_868_800));
        assert_eq!(unix_from_rfc3339("yesterday"), None);
    }

    /// Pages numbered from 0, each one batch; `age(n)` says how old page `n` is.
    async fn pages_read(age: fn(u64) -> Option<u64>) -> Vec<Value> {
        read_pages(|cursor: Option<String>| async move {
            let n: u64 = cursor.map_or(0, |c| c.parse().unwrap());
            Ok(Page {
                items: vec![Value::from(n)],
                next: Some((n + 1).to_string()),
                oldest: age(n).map(|secs| unix_now() - secs),
            })
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn pages_stop_at_the_bound_or_at_batches_too_old_to_matter() {
        assert_eq!(pages_read(|_| None).await.len(), FIND_PAGES);
        let read = pages_read(|n| Some(n * 10 * 86_400)).await;
        // Page 4 is 40 days old: read, and the last one read.
        assert_eq!(read, (0..=4).map(Value::from).collect::<Vec<_>>());
    }
}
