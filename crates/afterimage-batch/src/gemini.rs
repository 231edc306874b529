//! Gemini's batch mode: requests in the body of `:batchGenerateContent` (model in
//! the path, local key as display name), or, for a round whose inline body would pass
//! 10 MB, a JSONL file uploaded through the resumable Files API and named
//! by `input_config.file_name`. Results come inline in the finished operation or as
//! a `responsesFile` to download, under `response` or `metadata.output`. States come
//! spelled `BATCH_STATE_*` or `JOB_STATE_*`.

use afterimage_core::ProviderError;
use afterimage_providers::{Gemini, Provider, Transport, decode_chat_response};
use async_trait::async_trait;
use serde_json::{Value, json};

use crate::backend::BatchBackend;
use crate::openai::check_submission;
use crate::types::{
    BatchCounts, BatchError, BatchItem, BatchLimits, BatchPhase, BatchStatus, EndKind, IdRule,
    ItemOutcome, LineError, RemoteBatch,
};
use crate::wire::{
    Links, Page, by_id, count, delete_if_present, not_found_is_transient, parse, read_pages,
    status_outcome, string_at, to_bytes, unknown_id,
};

/// The largest round sent inline (the API takes 20 MB; big inline batches are the
/// ones reported unretrievable): beyond it the requests go in an uploaded file.
pub(crate) const INLINE_BYTES: usize = 10_000_000;

/// The most bytes of request lines in one batch: the Files API's 2 GB, less room
/// for the lines' keys.
const FILE_BYTES: usize = 2_000_000_000 - 1024 * 1024;

/// Where a finished operation keeps its results: the REST docs read `response`,
/// the SDK `metadata.output`.
const OUTPUTS: [&str; 2] = ["/response", "/metadata/output"];

/// Gemini's batch API (inline requests, or a file for big rounds), through a
/// [`Gemini`] client and its key.
#[derive(Debug, Clone)]
pub struct GeminiBatch {
    client: Gemini,
    links: Links,
    /// Rounds whose inline body would be larger go through an uploaded file.
    inline_bytes: usize,
}

impl GeminiBatch {
    /// A backend speaking through `client`: its base URL, key, timeouts and request
    /// body serialization.
    pub fn new(client: Gemini) -> Self {
        GeminiBatch {
            links: Links::new(client.transport()),
            client,
            inline_bytes: INLINE_BYTES,
        }
    }

    /// Sends rounds up to `bytes` of request lines inline, larger ones as an
    /// uploaded file, instead of 10 MB.
    pub fn max_inline_bytes(mut self, bytes: usize) -> Self {
        self.inline_bytes = bytes;
        self
    }

    /// Reads result files up to `bytes` instead of [`DEFAULT_MAX_RESULT_BYTES`](crate::DEFAULT_MAX_RESULT_BYTES).
    pub fn max_result_bytes(mut self, bytes: usize) -> Self {
        self.links.max_result_bytes(bytes);
        self
    }

    fn line(&self, item: &BatchItem) -> Result<Vec<u8>, BatchError> {
        let request = self.client.request_body(&item.request)?;
        to_bytes(&json!({"request": request, "metadata": {"key": item.custom_id}}))
    }

    /// `input_config` for `items`: inline requests, or an uploaded JSONL file of
    /// `{key, request}` lines when the inline body would pass the limit.
    async fn input_config(
        &self,
        local_key: &str,
        items: &[BatchItem],
    ) -> Result<Value, BatchError> {
        let mut requests = Vec::with_capacity(items.len());
        let mut bytes = 0;
        for item in items {
            let line = self.line(item)?;
            bytes += line.len() + 1;
            requests.push(parse(&String::from_utf8_lossy(&line), "a request")?);
        }
        if bytes <= self.inline_bytes {
            return Ok(json!({"requests": {"requests": requests}}));
        }
        let mut jsonl = Vec::with_capacity(bytes);
        for (item, mut line) in items.iter().zip(requests) {
            let request = line.get_mut("request").map(Value::take);
            jsonl.extend(to_bytes(
                &json!({"key": item.custom_id, "request": request}),
            )?);
            jsonl.push(b'\n');
        }
        let file = self.upload(local_key, jsonl).await?;
        Ok(json!({"file_name": file}))
    }

    /// Uploads `jsonl` through the resumable Files API; the file's name (`files/…`).
    async fn upload(&self, local_key: &str, jsonl: Vec<u8>) -> Result<String, BatchError> {
        let length = jsonl.len().to_string();
        let start = [
            ("X-Goog-Upload-Protocol", "resumable"),
            ("X-Goog-Upload-Command", "start"),
            ("X-Goog-Upload-Header-Content-Length", length.as_str()),
            ("X-Goog-Upload-Header-Content-Type", "application/jsonl"),
        ];
        let url = self.links.transport.prefixed_url("/upload", "/files");
        let body = to_bytes(&json!({"file": {"display_name": local_key}}))?;
        let started = self
            .links
            .transport
            .post_with_headers(&url, &start, "application/json", body)
            .await?;
        let Some(target) = started.header("x-goog-upload-url") else {
            return Err(BatchError::Malformed(
                "the upload start answered no x-goog-upload-url".into(),
            ));
        };
        let finish = [
            ("X-Goog-Upload-Command", "upload, finalize"),
            ("X-Goog-Upload-Offset", "0"),
        ];
        let done = self
            .links
            .transport
            .post_with_headers(target, &finish, "application/jsonl", jsonl)
            .await?;
        string_at(
            &parse(&done.body, "a file")?,
            "/file/name",
            "the uploaded file",
        )
    }

    /// The JSONL lines of a responses file.
    async fn download(&self, file: &str) -> Result<Vec<u8>, BatchError> {
        let url = self
            .links
            .transport
            .prefixed_url("/download", &format!("/{file}:download?alt=media"));
        let text = self
            .links
            .results
            .get(&url)
            .await
            .map_err(|e| not_found_is_transient(e, file))?;
        let mut raw = text.into_bytes();
        if !raw.is_empty() && !raw.ends_with(b"\n") {
            raw.push(b'\n');
        }
        Ok(raw)
    }

    /// One page of `GET /batches` from `token`. The order is not documented, so no
    /// page is judged too old.
    async fn list_page(&self, token: Option<String>) -> Result<Page, BatchError> {
        let path = match token {
            Some(token) => format!("/batches?pageSize=100&pageToken={token}"),
            None => "/batches?pageSize=100".to_owned(),
        };
        let list = parse(&self.links.transport.get(&path).await?, "a list of batches")?;
        Ok(Page {
            items: Page::items_at(&list, "/operations"),
            next: list
                .get("nextPageToken")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            oldest: None,
        })
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
            max_bytes: FILE_BYTES,
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
        let model = items[0].model.trim_start_matches("models/");
        let input_config = self.input_config(local_key, items).await?;
        let body = json!({"batch": {
            "display_name": local_key,
            "input_config": input_config,
        }});
        let path = format!("/models/{model}:batchGenerateContent");
        let text = self
            .links
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
        let operations = read_pages(|token| self.list_page(token)).await?;
        operations
            .iter()
            .filter(|op| display_name(op) == Some(local_key))
            .map(remote)
            .collect()
    }

    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError> {
        Ok(status(&self.get_batch(batch, &self.links.transport).await?))
    }

    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError> {
        let operation = self.get_batch(batch, &self.links.results).await?;
        if let Some(file) = output_at(&operation, "/responsesFile") {
            return self.download(file).await;
        }
        let responses = OUTPUTS
            .iter()
            .find_map(|p| {
                let pointer = format!("{p}/inlinedResponses/inlinedResponses");
                operation.pointer(&pointer).and_then(Value::as_array)
            })
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
            // The key comes back in the metadata (a file line: beside the response);
            // without it, the documented input order names the request.
            let key = ["/metadata/key", "/key"]
                .iter()
                .find_map(|p| value.pointer(p).and_then(Value::as_str));
            let id = match key {
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
        self.links
            .transport
            .post_empty(&format!("/{}:cancel", batch.id))
            .await
            .map(|_| ())
            .map_err(|e| not_found_is_transient(e, &batch.id))
    }

    async fn delete_files(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        let operation = self.get_batch(batch, &self.links.transport).await?;
        let input = [
            "/metadata/inputConfig/fileName",
            "/metadata/input_config/file_name",
        ]
        .iter()
        .find_map(|p| operation.pointer(p).and_then(Value::as_str));
        let output = output_at(&operation, "/responsesFile");
        for file in input.into_iter().chain(output) {
            delete_if_present(&self.links.transport, &format!("/{file}")).await?;
        }
        Ok(())
    }
}

/// A string under the operation's output, read where either the docs or the SDK
/// put it.
fn output_at<'a>(operation: &'a Value, field: &str) -> Option<&'a str> {
    OUTPUTS.iter().find_map(|p| {
        operation
            .pointer(&format!("{p}{field}"))
            .and_then(Value::as_str)
    })
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
