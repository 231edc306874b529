//! Gemini's batch mode, inline: requests in the body of `:batchGenerateContent`
//! (model in the path, local key as display name), results inline in the finished
//! operation. States come spelled `BATCH_STATE_*` or `JOB_STATE_*`.

use afterimage_core::ProviderError;
use afterimage_providers::{Gemini, Provider, Transport, decode_chat_response};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::DEFAULT_MAX_RESULT_BYTES;
use crate::backend::BatchBackend;
use crate::openai::check_submission;
use crate::types::{
    BatchCounts, BatchError, BatchItem, BatchLimits, BatchPhase, BatchStatus, EndKind, IdRule,
    ItemOutcome, LineError, RemoteBatch,
};
use crate::wire::{
    by_id, count, not_found_is_transient, parse, status_outcome, string_at, to_bytes, unknown_id,
};

/// Room left in the 20 MB inline limit for the envelope around the requests.
const INLINE_BYTES: usize = 20_000_000 - 64 * 1024;

/// Gemini's batch API (inline requests), through a [`Gemini`] client and its key.
#[derive(Debug, Clone)]
pub struct GeminiBatch {
    client: Gemini,
    transport: Transport,
    /// The same connection, reading result files up to their own limit.
    results: Transport,
}

impl GeminiBatch {
    /// A backend speaking through `client`: its base URL, key, timeouts and request
    /// body serialization.
    pub fn new(client: Gemini) -> Self {
        let transport = client.transport();
        let results = transport
            .clone()
            .max_response_bytes(DEFAULT_MAX_RESULT_BYTES);
        GeminiBatch {
            client,
            transport,
            results,
        }
    }

    /// Reads result files up to `bytes` instead of [`DEFAULT_MAX_RESULT_BYTES`].
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.results = self.transport.clone().max_response_bytes(bytes);
        self
    }

    fn line(&self, item: &BatchItem) -> Result<Vec<u8>, BatchError> {
        let request = self.client.request_body(&item.request)?;
        to_bytes(&json!({"request": request, "metadata": {"key": item.custom_id}}))
    }

    /// The batch's operation, read through `transport`: a finished one carries the
    /// inlined results.
    async fn get_batch(
        &self,
        batch: &RemoteBatch,
        transport: &Transport,
    ) -> Result<Value, BatchError> {
        let text = transport
            .get(&format!("/{}", batch.id))
            .await
            .map_err(|e| not_found_is_transient(e, &batch.id))?;
        parse(&text, "a batch operation")
    }
}

#[async_trait]
impl BatchBackend for GeminiBatch {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: 100_000,
            max_bytes: INLINE_BYTES,
            one_model_per_batch: true,
            id_rule: IdRule::Unique,
        }
    }

    fn line_bytes(&self, item: &BatchItem) -> Result<usize, BatchError> {
        Ok(self.line(item)?.len())
    }

    async fn submit(
        &self,
        local_key: &str,
        items: &[BatchItem],
    ) -> Result<RemoteBatch, BatchError> {
        check_submission(items, &self.limits())?;
        let model = items[0].model.trim_start_matches("models/");
        let mut requests = Vec::with_capacity(items.len());
        for item in items {
            requests.push(parse(
                &String::from_utf8_lossy(&self.line(item)?),
                "a request",
            )?);
        }
        let body = json!({"batch": {
            "display_name": local_key,
            "input_config": {"requests": {"requests": requests}},
        }});
        let path = format!("/models/{model}:batchGenerateContent");
        let text = self
            .transport
            .post_json(&path, &body)
            .await
            .map_err(queue_full)?;
        remote(&parse(&text, "a batch operation")?)
    }

    async fn find(
        &self,
        local_key: &str,
        _requests: usize,
    ) -> Result<Vec<RemoteBatch>, BatchError> {
        let text = self.transport.get("/batches?pageSize=100").await?;
        let list = parse(&text, "a list of batches")?;
        let operations = list
            .get("operations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        operations
            .iter()
            .filter(|op| display_name(op) == Some(local_key))
            .map(remote)
            .collect()
    }

    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError> {
        Ok(status(&self.get_batch(batch, &self.transport).await?))
    }

    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError> {
        let operation = self.get_batch(batch, &self.results).await?;
        let responses = [
            "/response/inlinedResponses/inlinedResponses",
            "/metadata/output/inlinedResponses/inlinedResponses",
        ]
        .iter()
        .find_map(|p| operation.pointer(p).and_then(Value::as_array))
        .cloned()
        .unwrap_or_default();
        let mut raw = Vec::new();
        for (index, response) in responses.into_iter().enumerate() {
            let mut line = response;
            if let Some(object) = line.as_object_mut() {
                object.insert("index".into(), json!(index));
            }
            raw.extend(to_bytes(&line)?);
            raw.push(b'\n');
        }
        Ok(raw)
    }

    fn parse_results(
        &self,
        raw: &[u8],
        submitted: &[BatchItem],
    ) -> Result<Vec<(String, ItemOutcome)>, BatchError> {
        let items = by_id(submitted);
        let mut outcomes = Vec::new();
        for line in String::from_utf8_lossy(raw)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            let value = parse(line, "an inlined response")?;
            // The key comes back in the metadata; without it, the documented input
            // order names the request.
            let id = match value.pointer("/metadata/key").and_then(Value::as_str) {
                Some(key) => key.to_owned(),
                None => {
                    let index = value
                        .get("index")
                        .and_then(Value::as_u64)
                        .unwrap_or(u64::MAX);
                    match usize::try_from(index).ok().and_then(|i| submitted.get(i)) {
                        Some(item) => item.custom_id.clone(),
                        None => continue,
                    }
                }
            };
            let Some(item) = items.get(id.as_str()) else {
                unknown_id(&id);
                continue;
            };
            outcomes.push((id, response_outcome(&value, item)));
        }
        Ok(outcomes)
    }

    async fn cancel(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        self.transport
            .post_empty(&format!("/{}:cancel", batch.id))
            .await
            .map(|_| ())
            .map_err(|e| not_found_is_transient(e, &batch.id))
    }
}

/// Gemini answers a create beyond the enqueued-token quota with 429
/// RESOURCE_EXHAUSTED: a smaller batch, once running ones finish, is the remedy.
fn queue_full(error: ProviderError) -> BatchError {
    match error {
        ProviderError::RateLimited { message, .. } => BatchError::TokenLimitExceeded { message },
        other => BatchError::Provider(other),
    }
}

fn display_name(operation: &Value) -> Option<&str> {
    ["/metadata/displayName", "/metadata/display_name"]
        .iter()
        .find_map(|p| operation.pointer(p).and_then(Value::as_str))
}

fn remote(operation: &Value) -> Result<RemoteBatch, BatchError> {
    let requests = operation
        .pointer("/metadata/batchStats/requestCount")
        .map(|_| count(operation, "/metadata/batchStats/requestCount"));
    Ok(RemoteBatch {
        id: string_at(operation, "/name", "a batch operation")?,
        local_key: display_name(operation).map(str::to_owned),
        requests,
    })
}

fn status(operation: &Value) -> BatchStatus {
    let raw_state = operation
        .pointer("/metadata/state")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let bare = raw_state
        .strip_prefix("BATCH_STATE_")
        .or_else(|| raw_state.strip_prefix("JOB_STATE_"))
        .unwrap_or(&raw_state);
    let phase = match bare {
        "PENDING" | "QUEUED" => BatchPhase::Queued,
        "RUNNING" => BatchPhase::Running,
        "CANCELLING" => BatchPhase::Cancelling,
        "SUCCEEDED" | "PARTIALLY_SUCCEEDED" => BatchPhase::Ended(EndKind::Completed),
        "FAILED" => BatchPhase::Ended(EndKind::Failed),
        "CANCELLED" => BatchPhase::Ended(EndKind::Cancelled),
        "EXPIRED" => BatchPhase::Ended(EndKind::Expired),
        other => {
            tracing::warn!(
                state = other,
                "unknown Gemini batch state; treated as pending"
            );
            BatchPhase::Queued
        }
    };
    let counts = operation
        .pointer("/metadata/batchStats")
        .map(|s| BatchCounts {
            total: count(s, "/requestCount"),
            succeeded: count(s, "/successfulRequestCount"),
            failed: count(s, "/failedRequestCount"),
            pending: count(s, "/pendingRequestCount"),
        });
    let errors = operation
        .get("error")
        .filter(|e| e.is_object())
        .map(|e| LineError {
            line: None,
            code: e.get("code").map(Value::to_string).unwrap_or_default(),
            message: e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
        })
        .into_iter()
        .collect();
    BatchStatus {
        phase,
        raw_state,
        counts,
        errors,
    }
}

/// One inlined response's outcome: a `response`, or an `error` status.
fn response_outcome(value: &Value, item: &BatchItem) -> ItemOutcome {
    if let Some(response) = value.get("response").filter(|r| r.is_object()) {
        let body = response.to_string();
        return match decode_chat_response(Provider::Gemini, &item.request, body.as_bytes()) {
            Ok(reply) => ItemOutcome::Ok(Box::new(reply)),
            Err(error) => ItemOutcome::from_error(&error),
        };
    }
    let error = value.get("error").cloned().unwrap_or(Value::Null);
    let code = error.get("code").and_then(Value::as_u64).unwrap_or(500);
    let status = u16::try_from(code).unwrap_or(500);
    let body = json!({"error": error}).to_string();
    status_outcome(Provider::Gemini, &item.model, status, body.as_bytes())
}
