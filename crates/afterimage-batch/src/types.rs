//! The vocabulary every batch backend shares: what is submitted, a batch's phase and
//! counts, one request's normalized outcome, the limits, and the errors.

use afterimage_core::{ChatRequest, ChatResponse, ProviderError};

/// One request of a batch: its id, its model and the engine's own request.
#[derive(Debug, Clone)]
pub struct BatchItem {
    /// The request's id in the batch (`custom_id`, Gemini's `key`), unique per batch.
    pub custom_id: String,
    /// The model that answers it.
    pub model: String,
    /// The request, as a synchronous call would send it.
    pub request: ChatRequest,
}

impl BatchItem {
    /// An item; `request.model` is set to `model` so the body names it.
    pub fn new(
        custom_id: impl Into<String>,
        model: impl Into<String>,
        request: ChatRequest,
    ) -> Self {
        let model = model.into();
        let mut request = request;
        request.model = Some(model.clone());
        BatchItem {
            custom_id: custom_id.into(),
            model,
            request,
        }
    }
}

/// Which `custom_id`s a provider accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdRule {
    /// Any non-empty string, unique within the batch (OpenAI, Gemini).
    Unique,
    /// 1 to 64 of `[A-Za-z0-9_-]`, unique within the batch (Anthropic).
    Alphanumeric64,
}

impl IdRule {
    /// Whether `id` passes the rule (uniqueness aside).
    pub fn accepts(self, id: &str) -> bool {
        match self {
            IdRule::Unique => !id.is_empty(),
            IdRule::Alphanumeric64 => {
                (1..=64).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            }
        }
    }
}

/// What one provider batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// The most requests in one batch.
    pub max_requests: usize,
    /// The most bytes of serialized request lines (newlines included) in one batch.
    pub max_bytes: usize,
    /// Whether all requests of a batch must name the same model.
    pub one_model_per_batch: bool,
    /// Which ids the provider accepts.
    pub id_rule: IdRule,
}

/// A batch the provider created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteBatch {
    /// The provider's id (`batch_…`, `msgbatch_…`, `batches/…`).
    pub id: String,
    /// The local key sent with it (OpenAI metadata, Gemini display name); Anthropic
    /// keeps none, so a found Anthropic batch has `None`.
    pub local_key: Option<String>,
    /// How many requests it holds, when the provider says.
    pub requests: Option<u64>,
}

/// How a batch that ended, ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndKind {
    /// Processing finished; each request has its own outcome.
    Completed,
    /// The batch as a whole failed (validation, enqueued-token limit).
    Failed,
    /// The window passed; finished requests keep their results.
    Expired,
    /// Cancelled; finished requests keep their results.
    Cancelled,
}

/// A batch's phase, the same for every provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchPhase {
    /// Accepted, not started (OpenAI `validating`, Gemini `PENDING`).
    Queued,
    /// Requests are being processed.
    Running,
    /// All requests done, results being written (OpenAI `finalizing`).
    Finalizing,
    /// A cancel was asked for and is under way.
    Cancelling,
    /// Nothing more will happen; results, if any, can be fetched.
    Ended(EndKind),
}

impl BatchPhase {
    /// Whether the batch has ended.
    pub fn is_ended(self) -> bool {
        matches!(self, BatchPhase::Ended(_))
    }
}

/// Request counts as the provider reports them (Anthropic's stay zero until the end).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Requests in the batch.
    pub total: u64,
    /// Requests answered successfully.
    pub succeeded: u64,
    /// Requests that failed, expired or were cancelled.
    pub failed: u64,
    /// Requests not yet processed.
    pub pending: u64,
}

/// A line-level rejection of a batch that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// The request's line in the input file (1-based), when the provider says.
    pub line: Option<u64>,
    /// The provider's error code (`invalid_request`, `token_limit_exceeded`).
    pub code: String,
    /// What the provider said.
    pub message: String,
}

/// A batch's state at one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchStatus {
    /// The normalized phase.
    pub phase: BatchPhase,
    /// The provider's own state string, for progress lines.
    pub raw_state: String,
    /// Counts, when the provider gives them.
    pub counts: Option<BatchCounts>,
    /// Why a failed batch failed, line by line.
    pub errors: Vec<LineError>,
}

impl BatchStatus {
    /// Whether the batch failed on the enqueued-token limit: halve the chunk, wait for
    /// running batches, submit again.
    pub fn token_limit_exceeded(&self) -> bool {
        self.phase == BatchPhase::Ended(EndKind::Failed)
            && self.errors.iter().any(|e| e.code == TOKEN_LIMIT_CODE)
    }
}

/// OpenAI's (and Azure's) code for a batch over the enqueued-token limit.
pub(crate) const TOKEN_LIMIT_CODE: &str = "token_limit_exceeded";

/// One request's result, normalized across providers.
#[derive(Debug, Clone)]
pub enum ItemOutcome {
    /// Answered, with usage as the synchronous client bills it.
    Ok(Box<ChatResponse>),
    /// Failed in a way the next round may not repeat (429, 5xx, expired, cancelled,
    /// missing).
    Retryable(String),
    /// Failed in a way that would repeat for this request (400, invalid request).
    Permanent(String),
    /// Failed in a way that would repeat for every request of the run: the account
    /// is out of credit (Anthropic `billing_error`, or `invalid_request_error` saying
    /// the credit balance is too low; OpenAI `insufficient_quota`), or the key is
    /// refused. Neither retrying nor replacing the dialog helps: the run stops, with
    /// this error (fatal by [`ProviderError::is_fatal`], never retryable).
    Fatal(ProviderError),
}

impl ItemOutcome {
    /// The outcome a provider error means for one request: fatal errors (no credit,
    /// a refused key, an unknown model) are [`ItemOutcome::Fatal`].
    pub fn from_error(error: &ProviderError) -> Self {
        if error.is_fatal() {
            ItemOutcome::Fatal(error.clone())
        } else if error.is_retryable() {
            ItemOutcome::Retryable(error.to_string())
        } else {
            ItemOutcome::Permanent(error.to_string())
        }
    }
}

/// What a batch call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The HTTP call failed as a chat call would.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The provider's queue of enqueued tokens is full: submit half as much after
    /// running batches finish.
    #[error(
        "the provider's enqueued-token limit is reached: {message} (submit smaller batches once running ones finish)"
    )]
    TokenLimitExceeded {
        /// What the provider said.
        message: String,
    },
    /// A batch just created is not visible yet (404): ask again shortly.
    #[error(
        "batch {id} is not visible yet (HTTP 404 right after it was created); poll it again shortly"
    )]
    NotYetVisible {
        /// The batch's id.
        id: String,
    },
    /// The items cannot go into one batch as given (an empty list, several models,
    /// an id the provider refuses, a duplicate id).
    #[error("cannot submit this batch: {0}")]
    Invalid(String),
    /// The provider answered with a document this crate cannot read.
    #[error("unexpected answer from the batch API: {0}")]
    Malformed(String),
    /// The batch journal could not be read or written.
    #[error("batch journal {path}: {message}")]
    Journal {
        /// The file or directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The journal directory holds the journal of another run.
    #[error(
        "the batch journal in {dir} belongs to run `{journal_run}`, not to run `{run}`: resume run `{journal_run}` instead, or give this run another output (delete {dir} only if run `{journal_run}` is abandoned and its batches are cancelled)"
    )]
    OtherRun {
        /// The journal's directory.
        dir: String,
        /// The run the journal belongs to.
        journal_run: String,
        /// The run that tried to open it.
        run: String,
    },
}
