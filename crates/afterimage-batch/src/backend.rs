//! The seam between the engine's batcher and a provider's batch API.

use async_trait::async_trait;

use crate::types::{BatchError, BatchItem, BatchLimits, BatchStatus, ItemOutcome, RemoteBatch};

/// One provider's batch API. Every call goes through the key of the client the
/// backend was built from: a batch is only visible to the key (project, workspace)
/// that created it, so the engine pins one backend per batch.
#[async_trait]
pub trait BatchBackend: Send + Sync {
    /// What one batch may hold.
    fn limits(&self) -> BatchLimits;

    /// A short, non-secret name of the key this backend calls with (never the key
    /// itself): the journal pins each batch to it, since only the creating key may
    /// poll, download or cancel a batch. Empty when the backend cannot tell.
    fn key_fingerprint(&self) -> String {
        String::new()
    }

    /// The serialized size of `item`'s line, as `submit` sends it (without newline);
    /// what [`split`](crate::split) measures.
    fn line_bytes(&self, item: &BatchItem) -> Result<usize, BatchError>;

    /// Creates a batch of `items`, tagged with `local_key` where the provider keeps a
    /// tag (OpenAI metadata `afterimage_key`, Gemini display name), so that a batch
    /// whose creation was never recorded can be found again. Not idempotent: look with
    /// [`find`](Self::find) before submitting again after a lost answer.
    async fn submit(&self, local_key: &str, items: &[BatchItem])
    -> Result<RemoteBatch, BatchError>;

    /// Batches that may be the one created for `local_key` with `requests` items:
    /// those tagged with the key, or for Anthropic (which keeps no tag) those holding
    /// exactly `requests` requests. Reads up to 10 pages of the provider's list,
    /// stopping early at batches older than the providers keep results (30 days).
    async fn find(&self, local_key: &str, requests: usize) -> Result<Vec<RemoteBatch>, BatchError>;

    /// The batch's phase and counts. An unknown state is pending (logged), never an
    /// error; a 404 is [`BatchError::NotYetVisible`], which the caller treats as
    /// transient just after creation and as a lost batch later.
    async fn poll(&self, batch: &RemoteBatch) -> Result<BatchStatus, BatchError>;

    /// The raw results of an ended batch, as JSON lines, to keep on disk before they
    /// are applied (OpenAI: the output file then the error file).
    async fn fetch_results(&self, batch: &RemoteBatch) -> Result<Vec<u8>, BatchError>;

    /// Each result line of `raw` as its id and outcome, decoded as the synchronous
    /// client decodes (usage, cached tokens). `submitted` are the batch's items, in
    /// submission order: their requests guide decoding. Lines for unknown ids are
    /// skipped with a warning; ids without a line are [`missing`](crate::missing).
    fn parse_results(
        &self,
        raw: &[u8],
        submitted: &[BatchItem],
    ) -> Result<Vec<(String, ItemOutcome)>, BatchError>;

    /// Asks the provider to cancel the batch; finished requests keep their results.
    async fn cancel(&self, batch: &RemoteBatch) -> Result<(), BatchError>;

    /// Deletes the files the batch left on the provider (OpenAI: its input, output
    /// and error files; Gemini: the uploaded input and the responses file), once its
    /// results are safe on disk. A file already gone counts as deleted. Anthropic
    /// keeps no files, hence the default: nothing to do.
    async fn delete_files(&self, batch: &RemoteBatch) -> Result<(), BatchError> {
        let _ = batch;
        Ok(())
    }
}
