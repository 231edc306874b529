//! OpenAI's Batch API (and OpenAI-compatible servers that serve it): the JSONL is
//! uploaded to `/files`, a batch created on `/batches` with the local key in its
//! metadata, results read from the output and error files.

use afterimage_core::ProviderError;
use afterimage_providers::{OpenAiCompatible, Provider, decode_chat_response};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::backend::BatchBackend;
use crate::split::check_ids;
use crate::types::{
    BatchCounts, BatchError, BatchItem, BatchLimits, BatchPhase, BatchStatus, EndKind, IdRule,
    ItemOutcome, LineError, RemoteBatch, TOKEN_LIMIT_CODE,
};
use crate::wire::{
    Links, Page, count, custom_id_lines, delete_if_present, not_found_is_transient, parse,
    read_pages, status_outcome, string_at, to_bytes,
};

/// The metadata key that carries the local batch key.
pub const OPENAI_KEY_METADATA: &str = "afterimage_key";
const ENDPOINT: &str = "/v1/chat/completions";
const BOUNDARY: &str = "afterimage-batch-upload-7f3c9a";

/// OpenAI's Batch API at the base URL of an [`OpenAiCompatible`] client, with its key.
#[derive(Debug, Clone)]
pub struct OpenAiBatch {
    client: OpenAiCompatible,
    links: Links,
}

impl OpenAiBatch {
    /// A backend speaking through `client`: its base URL, key, timeouts and request
    /// body serialization.
    pub fn new(client: OpenAiCompatible) -> Self {
        OpenAiBatch {
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
        let body = self.client.request_body(&item.request)?;
        to_bytes(
            &json!({"custom_id": item.custom_id, "method": "POST", "url": ENDPOINT, "body": body}),
        )
    }

    async fn upload(&self, local_key: &str, jsonl: Vec<u8>) -> Result<String, BatchError> {
        let mut body = format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{local_key}.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n"
        )
        .into_bytes();
        body.extend(jsonl);
        body.extend(format!("\r\n--{BOUNDARY}--\r\n").into_bytes());
        let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
        let text = self
            .links
            .transport
            .post_bytes("/files", &content_type, body)
            .await?;
        string_at(&parse(&text, "a file object")?, "/id", "the uploaded file")
    }
}

#[async_trait]
impl BatchBackend for OpenAiBatch {
    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_requests: 50_000,
            max_bytes: 200_000_000,
            one_model_per_batch: true,
            id_rule: IdRule::Unique,
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
        let mut jsonl = Vec::new();
        for item in items {
            jsonl.extend(self.line(item)?);
            jsonl.push(b'\n');
        }
        let file_id = self.upload(local_key, jsonl).await?;
        let create = json!({
            "input_file_id": file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": {OPENAI_KEY_METADATA: local_key},
        });
        let text = self
            .links
            .transport
            .post_json("/batches", &create)
            .await
            .map_err(token_limit)?;
        remote(&parse(&text, "a batch object")?)
    }

    async fn find(
        &self,
        local_key: &str,
        _requests: usize,
    ) -> Result<Vec<RemoteBatch>, BatchError> {
        let batches = read_pages(|after| self.list_page(after)).await?;
        batches
            .iter()
            .filter(|b| {
                b.pointer("/metadata/afterimage_key")
                    .and_then(Value::as_str)
                    == Some(local_key)
            })
            .map(remote)
            .collect()
    }

    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError> {
        let object = self.get_batch(batch).await?;
        Ok(status(&object))
    }

    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError> {
        let object = self.get_batch(batch).await?;
        let mut raw = Vec::new();
        for field in ["output_file_id", "error_file_id"] {
            if let Some(file) = object.get(field).and_then(Value::as_str) {
                let text = self
                    .links
                    .results
                    .get(&format!("/files/{file}/content"))
                    .await?;
                raw.extend(text.into_bytes());
                if !raw.ends_with(b"\n") {
                    raw.push(b'\n');
                }
            }
        }
        Ok(raw)
    }

    fn parse_results(
        &self,
        raw: &[u8],
        submitted: &[BatchItem],
    ) -> Result<Vec<(String, ItemOutcome)>, BatchError> {
        custom_id_lines(raw, submitted, line_outcome)
    }

    async fn cancel(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        let path = format!("/batches/{}/cancel", batch.id);
        self.links
            .transport
            .post_empty(&path)
            .await
            .map(|_| ())
            .map_err(|e| not_found_is_transient(e, &batch.id))
    }

    async fn delete_files(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        let object = self.get_batch(batch).await?;
        for field in ["input_file_id", "output_file_id", "error_file_id"] {
            if let Some(file) = object.get(field).and_then(Value::as_str) {
                delete_if_present(&self.links.transport, &format!("/files/{file}")).await?;
            }
        }
        Ok(())
    }
}

impl OpenAiBatch {
    /// One page of `GET /batches`, newest first, after the batch id `after`.
    async fn list_page(&self, after: Option<String>) -> Result<Page, BatchError> {
        let path = match after {
            Some(id) => format!("/batches?limit=100&after={id}"),
            None => "/batches?limit=100".to_owned(),
        };
        let list = parse(&self.links.transport.get(&path).await?, "a list of batches")?;
        let items = Page::items_at(&list, "/data");
        let more = list.get("has_more").and_then(Value::as_bool) == Some(true);
        Ok(Page {
            oldest: items
                .last()
                .and_then(|b| b.get("created_at"))
                .and_then(Value::as_u64),
            next: more
                .then(|| list.get("last_id").and_then(Value::as_str))
                .flatten()
                .map(str::to_owned),
            items,
        })
    }

    async fn get_batch(&self, batch: &RemoteBatch) -> Result<Value, BatchError> {
        let text = self
            .links
            .transport
            .get(&format!("/batches/{}", batch.id))
            .await
            .map_err(|e| not_found_is_transient(e, &batch.id))?;
        parse(&text, "a batch object")
    }
}

/// Non-empty, one model, ids the provider accepts.
pub(crate) fn check_submission(
    items: &[BatchItem],
    limits: &BatchLimits,
) -> Result<(), BatchError> {
    let Some(first) = items.first() else {
        return Err(BatchError::Invalid(
            "a batch needs at least one request".into(),
        ));
    };
    if limits.one_model_per_batch && items.iter().any(|i| i.model != first.model) {
        return Err(BatchError::Invalid(format!(
            "a batch holds one model, and these requests name `{}` and others; cut them with `split`",
            first.model
        )));
    }
    check_ids(items, limits)
}

/// A create refused for the enqueued-token limit, as its own error.
fn token_limit(error: ProviderError) -> BatchError {
    let message = error.to_string();
    if message.contains(TOKEN_LIMIT_CODE) || message.to_lowercase().contains("enqueued token") {
        BatchError::TokenLimitExceeded { message }
    } else {
        BatchError::Provider(error)
    }
}

fn remote(object: &Value) -> Result<RemoteBatch, BatchError> {
    Ok(RemoteBatch {
        id: string_at(object, "/id", "a batch object")?,
        local_key: object
            .pointer("/metadata/afterimage_key")
            .and_then(Value::as_str)
            .map(str::to_owned),
        requests: object
            .pointer("/request_counts/total")
            .and_then(Value::as_u64),
    })
}

fn status(object: &Value) -> BatchStatus {
    let raw_state = object
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let phase = match raw_state.as_str() {
        "validating" => BatchPhase::Queued,
        "in_progress" => BatchPhase::Running,
        "finalizing" => BatchPhase::Finalizing,
        "cancelling" => BatchPhase::Cancelling,
        "completed" => BatchPhase::Ended(EndKind::Completed),
        "failed" => BatchPhase::Ended(EndKind::Failed),
        "expired" => BatchPhase::Ended(EndKind::Expired),
        "cancelled" => BatchPhase::Ended(EndKind::Cancelled),
        other => {
            tracing::warn!(
                state = other,
                "unknown OpenAI batch state; treated as pending"
            );
            BatchPhase::Queued
        }
    };
    let counts = object
        .get("request_counts")
        .filter(|c| c.is_object())
        .map(|c| {
            let total = count(c, "/total");
            let (succeeded, failed) = (count(c, "/completed"), count(c, "/failed"));
            BatchCounts {
                total,
                succeeded,
                failed,
                pending: total.saturating_sub(succeeded + failed),
            }
        });
    let errors = object
        .pointer("/errors/data")
        .and_then(Value::as_array)
        .map(|data| data.iter().map(line_error).collect())
        .unwrap_or_default();
    BatchStatus {
        phase,
        raw_state,
        counts,
        errors,
    }
}

fn line_error(error: &Value) -> LineError {
    let text = |field: &str| {
        error
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    LineError {
        line: error.get("line").and_then(Value::as_u64),
        code: text("code"),
        message: text("message"),
    }
}

/// An output or error line's outcome.
fn line_outcome(value: &Value, item: &BatchItem) -> ItemOutcome {
    let response = value.get("response").filter(|r| r.is_object());
    if let Some(response) = response {
        let status = response
            .get("status_code")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let body = response
            .get("body")
            .map(Value::to_string)
            .unwrap_or_default();
        let status = u16::try_from(status).unwrap_or(0);
        if (200..300).contains(&status) {
            return match decode_chat_response(Provider::Openai, &item.request, body.as_bytes()) {
                Ok(reply) => ItemOutcome::Ok(Box::new(reply)),
                Err(error) => ItemOutcome::from_error(&error),
            };
        }
        return status_outcome(Provider::Openai, &item.model, status, body.as_bytes());
    }
    let code = value
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = value
        .pointer("/error/message")
        .and_then(Value::as_str)
        .unwrap_or("");
    let reason = format!("{code}: {message}");
    // Errors without an HTTP status are the batch's (expiry, cancellation, a server
    // fault); only a request found invalid would fail again.
    if code.contains("invalid") {
        ItemOutcome::Permanent(reason)
    } else {
        ItemOutcome::Retryable(reason)
    }
}
