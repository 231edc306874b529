//! Anthropic's Message Batches: one JSON body of `{custom_id, params}` requests on
//! `/messages/batches`, results streamed as JSON lines once the batch has ended.
//! Batches keep no metadata, so `find` matches on the request count.

use afterimage_core::ProviderError;
use afterimage_providers::{Anthropic, Provider, decode_chat_response, decode_error};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::backend::BatchBackend;
use crate::openai::check_submission;
use crate::types::{
    BatchCounts, BatchError, BatchItem, BatchLimits, BatchPhase, BatchStatus, EndKind, IdRule,
    ItemOutcome, RemoteBatch,
};
use crate::wire::{
    Links, Page, count, custom_id_lines, not_found_is_transient, parse, read_pages, string_at,
    to_bytes, unix_from_rfc3339,
};

/// Anthropic's Message Batches API, through an [`Anthropic`] client and its key.
#[derive(Debug, Clone)]
pub struct AnthropicBatch {
    client: Anthropic,
    links: Links,
}

impl AnthropicBatch {
    /// A backend speaking through `client`: its base URL, key, version header,
    /// timeouts and request body serialization.
    pub fn new(client: Anthropic) -> Self {
        AnthropicBatch {
            links: Links::new(client.transport()),
            client,
        }
    }

    /// Reads result files up to `bytes` instead of [`DEFAULT_MAX_RESULT_BYTES`](crate::DEFAULT_MAX_RESULT_BYTES).
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.links.max_result_bytes(bytes);
        self
    }

    fn line(&self, item: &BatchItem) -> Result<Vec<u8>, BatchError> {
        let params = self.client.request_body(&item.request)?;
        to_bytes(&json!({"custom_id": item.custom_id, "params": params}))
    }

    async fn get_batch(&self, batch: &RemoteBatch) -> Result<Value, BatchError> {
        let text = self
            .links
            .transport
            .get(&format!("/messages/batches/{}", batch.id))
            .await
            .map_err(|e| not_found_is_transient(e, &batch.id))?;
        parse(&text, "a message batch")
    }

    /// One page of `GET /messages/batches`, newest first, after the batch `after`.
    async fn list_page(&self, after: Option<String>) -> Result<Page, BatchError> {
        let path = match after {
            Some(id) => format!("/messages/batches?limit=1000&after_id={id}"),
            None => "/messages/batches?limit=1000".to_owned(),
        };
        let text = self.links.transport.get(&path).await?;
        let list = parse(&text, "a list of message batches")?;
        let items = Page::items_at(&list, "/data");
        let more = list.get("has_more").and_then(Value::as_bool) == Some(true);
        Ok(Page {
            oldest: items
                .last()
                .and_then(|b| b.get("created_at"))
                .and_then(Value::as_str)
                .and_then(unix_from_rfc3339),
            next: more
                .then(|| list.get("last_id").and_then(Value::as_str))
                .flatten()
                .map(str::to_owned),
            items,
        })
    }
}

#[async_trait]
impl BatchBackend for AnthropicBatch {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: 100_000,
            max_bytes: 256_000_000,
            one_model_per_batch: false,
            id_rule: IdRule::Alphanumeric64,
        }
    }

    fn key_fingerprint(&self) -> String {
        self.links.transport.key_fingerprint()
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
        let mut body = b"{\"requests\":[".to_vec();
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend(self.line(item)?);
        }
        body.extend(b"]}");
        let text = self
            .links
            .transport
            .post_bytes("/messages/batches", "application/json", body)
            .await?;
        let mut batch = remote(&parse(&text, "a message batch")?)?;
        batch.local_key = Some(local_key.to_owned());
        Ok(batch)
    }

    async fn find(
        &self,
        _local_key: &str,
        requests: usize,
    ) -> Result<Vec<RemoteBatch>, BatchError> {
        let data = read_pages(|after| self.list_page(after)).await?;
        let batches: Vec<RemoteBatch> = data.iter().map(remote).collect::<Result<_, _>>()?;
        Ok(batches
            .into_iter()
            .filter(|b| b.requests == Some(requests as u64))
            .collect())
    }

    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError> {
        Ok(status(&self.get_batch(batch).await?))
    }

    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError> {
        let path = format!("/messages/batches/{}/results", batch.id);
        let text = self
            .links
            .results
            .get(&path)
            .await
            .map_err(|e| not_found_is_transient(e, &batch.id))?;
        Ok(text.into_bytes())
    }

    fn parse_results(
        &self,
        raw: &[u8],
        submitted: &[BatchItem],
    ) -> Result<Vec<(String, ItemOutcome)>, BatchError> {
        custom_id_lines(raw, submitted, result_outcome)
    }

    async fn cancel(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        let path = format!("/messages/batches/{}/cancel", batch.id);
        self.links
            .transport
            .post_empty(&path)
            .await
            .map(|_| ())
            .map_err(|e| not_found_is_transient(e, &batch.id))
    }
}

fn remote(object: &Value) -> Result<RemoteBatch, BatchError> {
    let counts = object.get("request_counts");
    let requests = counts.map(|c| {
        [
            "/processing",
            "/succeeded",
            "/errored",
            "/canceled",
            "/expired",
        ]
        .iter()
        .map(|p| count(c, p))
        .sum()
    });
    Ok(RemoteBatch {
        id: string_at(object, "/id", "a message batch")?,
        local_key: None,
        requests,
    })
}

fn status(object: &Value) -> BatchStatus {
    let raw_state = object
        .get("processing_status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let cancelled = object
        .get("cancel_initiated_at")
        .is_some_and(|v| !v.is_null());
    let phase = match raw_state.as_str() {
        "in_progress" => BatchPhase::Running,
        "canceling" => BatchPhase::Cancelling,
        "ended" if cancelled => BatchPhase::Ended(EndKind::Cancelled),
        "ended" => BatchPhase::Ended(EndKind::Completed),
        other => {
            tracing::warn!(
                state = other,
                "unknown Anthropic batch state; treated as pending"
            );
            BatchPhase::Queued
        }
    };
    let counts = object
        .get("request_counts")
        .filter(|c| c.is_object())
        .map(|c| {
            let failed = ["/errored", "/canceled", "/expired"]
                .iter()
                .map(|p| count(c, p))
                .sum();
            let (succeeded, pending) = (count(c, "/succeeded"), count(c, "/processing"));
            BatchCounts {
                total: succeeded + failed + pending,
                succeeded,
                failed,
                pending,
            }
        });
    BatchStatus {
        phase,
        raw_state,
        counts,
        errors: Vec::new(),
    }
}

/// One result line's outcome.
fn result_outcome(value: &Value, item: &BatchItem) -> ItemOutcome {
    let kind = value
        .pointer("/result/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    match kind {
        "succeeded" => {
            let message = value
                .pointer("/result/message")
                .map(Value::to_string)
                .unwrap_or_default();
            match decode_chat_response(Provider::Anthropic, &item.request, message.as_bytes()) {
                Ok(reply) => ItemOutcome::Ok(Box::new(reply)),
                Err(error) => ItemOutcome::from_error(&error),
            }
        }
        "errored" => errored(value, item),
        "canceled" | "expired" => {
            ItemOutcome::Retryable(format!("the request was {kind} before it ran"))
        }
        other => ItemOutcome::Retryable(format!("unknown result type `{other}`")),
    }
}

/// An `errored` line: its error type says whether another round could succeed, or
/// whether no request of the run can (no credit, a refused key).
fn errored(value: &Value, item: &BatchItem) -> ItemOutcome {
    let error = value
        .pointer("/result/error")
        .cloned()
        .unwrap_or(Value::Null);
    let kind = error
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = error
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let reason = format!("{kind}: {message}");
    let message = message.to_owned();
    match kind {
        "rate_limit_error" | "api_error" | "overloaded_error" | "timeout" | "timeout_error" => {
            ItemOutcome::Retryable(reason)
        }
        "billing_error" => ItemOutcome::Fatal(ProviderError::QuotaExhausted { message }),
        "invalid_request_error" if says_low_credit(&message) => {
            ItemOutcome::Fatal(ProviderError::QuotaExhausted { message })
        }
        "authentication_error" | "permission_error" => {
            let status = if kind == "authentication_error" {
                401
            } else {
                403
            };
            ItemOutcome::Fatal(ProviderError::Auth { status, message })
        }
        "invalid_request_error" | "not_found_error" => ItemOutcome::Permanent(reason),
        _ => ItemOutcome::from_error(&decode_error(
            Provider::Anthropic,
            &item.model,
            500,
            error.to_string().as_bytes(),
        )),
    }
}

/// Whether an `invalid_request_error` is the low-credit one: Anthropic reports an
/// exhausted balance that way ("Your credit balance is too low to access the
/// Anthropic API…").
fn says_low_credit(message: &str) -> bool {
    let message = message.to_lowercase();
    message.contains("credit balance") && message.contains("too low")
}
