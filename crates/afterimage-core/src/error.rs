//! The errors that cross crate boundaries.

use std::time::Duration;

/// What went wrong talking to a model, in the terms a caller acts on.
///
/// Providers map HTTP failures onto these; retry middleware asks
/// [`is_retryable`](ProviderError::is_retryable) and
/// [`retry_after`](ProviderError::retry_after). Messages never contain API keys.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProviderError {
    /// HTTP 429 or an equivalent: slow down, and maybe wait `retry_after`.
    #[error("rate limited by the provider{}: {message}", fmt_after(.retry_after))]
    RateLimited {
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
        /// What the server said.
        message: String,
    },
    /// The account is out of credit or quota; retrying will not help.
    #[error("quota exhausted: {message} (add credit or use another key)")]
    QuotaExhausted {
        /// What the server said.
        message: String,
    },
    /// HTTP 401/403: the key is missing, wrong or not allowed to use this model.
    #[error("authentication failed (HTTP {status}): {message} (check the API key)")]
    Auth {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// HTTP 400/422: the request itself is wrong.
    #[error("request rejected (HTTP {status}): {message}")]
    BadRequest {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// The model name is unknown to the server.
    #[error("model `{model}` not found: {message} (check the model name)")]
    ModelNotFound {
        /// The model asked for.
        model: String,
        /// What the server said.
        message: String,
    },
    /// HTTP 404 from a path where nothing answers (the endpoint lists no models
    /// either): the base URL is wrong, not the model name.
    #[error("nothing answers at {url} (HTTP 404): {message}")]
    EndpointNotFound {
        /// The URL that was called.
        url: String,
        /// What is wrong, and what a base URL for the provider looks like.
        message: String,
    },
    /// The server cannot do something every request of the run needs (such as JSON
    /// output in any form); the message names the setting that works around it.
    #[error("{message}")]
    Unsupported {
        /// What the server refused, and the fix.
        message: String,
    },
    /// The prompt is longer than the model's context window.
    #[error("context length exceeded: {message}")]
    ContextLengthExceeded {
        /// What the server said.
        message: String,
    },
    /// HTTP 5xx (or 408/409/425): the server failed; a retry may succeed.
    #[error("server error (HTTP {status}): {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// What the server said.
        message: String,
    },
    /// No answer in time.
    #[error("request timed out after {}s", .after.as_secs_f32())]
    Timeout {
        /// The timeout that expired.
        after: Duration,
    },
    /// Nothing listens at the URL (connection refused, DNS failure).
    #[error("cannot connect to {url}: {message} (is the server running and the base URL right?)")]
    Unreachable {
        /// The URL we tried.
        url: String,
        /// The underlying cause.
        message: String,
    },
    /// The connection broke mid-request.
    #[error("transport error: {message}")]
    Transport {
        /// The underlying cause.
        message: String,
    },
    /// The server answered, but not with what its API promises.
    #[error("malformed response: {message}; body starts: {snippet}")]
    MalformedResponse {
        /// What was wrong.
        message: String,
        /// The first bytes of the body.
        snippet: String,
    },
    /// Nothing but failures came back for too long: the run should stop rather than
    /// stall (a circuit breaker opened).
    #[error("{message}")]
    CircuitOpen {
        /// What was seen, and for how long.
        message: String,
    },
    /// A failure of a middleware or custom model that fits nowhere else.
    #[error("{message}")]
    Other {
        /// What went wrong.
        message: String,
        /// Whether retrying may help.
        retryable: bool,
    },
}

fn fmt_after(after: &Option<Duration>) -> String {
    after
        .map(|d| format!(" (retry after {:.1}s)", d.as_secs_f32()))
        .unwrap_or_default()
}

impl ProviderError {
    /// Whether the same request may succeed later.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Server { .. }
            | ProviderError::Timeout { .. }
            | ProviderError::Transport { .. }
            | ProviderError::MalformedResponse { .. } => true,
            ProviderError::Other { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The wait the server asked for, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether this is a rate limit.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, ProviderError::RateLimited { .. })
    }

    /// Whether the credentials were refused.
    pub fn is_auth(&self) -> bool {
        matches!(self, ProviderError::Auth { .. })
    }

    /// Whether nothing answered at the configured URL.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ProviderError::Unreachable { .. })
    }

    /// Whether every later request will fail the same way, so a run should stop
    /// at once instead of spending its failure budget (bad key, unknown model,
    /// no quota, dead server, wrong base URL, no JSON output).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ProviderError::Auth { .. }
                | ProviderError::ModelNotFound { .. }
                | ProviderError::EndpointNotFound { .. }
                | ProviderError::Unsupported { .. }
                | ProviderError::QuotaExhausted { .. }
                | ProviderError::Unreachable { .. }
                | ProviderError::CircuitOpen { .. }
        )
    }

    /// A short, stable name for the kind of failure, for reports and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::QuotaExhausted { .. } => "quota_exhausted",
            ProviderError::Auth { .. } => "auth",
            ProviderError::BadRequest { .. } => "bad_request",
            ProviderError::ModelNotFound { .. } => "model_not_found",
            ProviderError::EndpointNotFound { .. } => "endpoint_not_found",
            ProviderError::Unsupported { .. } => "unsupported",
            ProviderError::ContextLengthExceeded { .. } => "context_length",
            ProviderError::Server { .. } => "server_error",
            ProviderError::Timeout { .. } => "timeout",
            ProviderError::Unreachable { .. } => "unreachable",
            ProviderError::Transport { .. } => "transport",
            ProviderError::MalformedResponse { .. } => "malformed_response",
            ProviderError::CircuitOpen { .. } => "circuit_open",
            ProviderError::Other { .. } => "other",
        }
    }
}

/// A strategy (document source, instruction generator, prompt modifier, evaluator,
/// retriever) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// The model call behind the strategy failed.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The model answered, but not in the shape the strategy asked for.
    #[error("the model's answer could not be used: {message}")]
    MalformedOutput {
        /// What was wrong with it.
        message: String,
    },
    /// A document source has nothing usable.
    #[error("no usable documents: {message}")]
    NoDocuments {
        /// Where we looked, and why nothing qualified.
        message: String,
    },
    /// Reading input files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Bad settings for the strategy.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The strategy has nothing left to give (every document reached its
    /// `target_visits`, every scenario was used). The engine ends the run cleanly
    /// instead of counting it as a failure.
    #[error("exhausted: {message}")]
    Exhausted {
        /// What ran out.
        message: String,
    },
    /// Nothing can be drawn until dialogs in flight finish (their documents hold every
    /// visit left); the caller waits for one to end and asks again. Only returned to
    /// callers that report how dialogs end (`InstructionRequest::reports_outcomes`).
    #[error("waiting: {message}")]
    Waiting {
        /// What is held.
        message: String,
    },
    /// A tool call the respondent made cannot be answered (unknown tool, arguments
    /// that break its schema, a handler that failed).
    #[error("tool call `{tool}`: {message}")]
    Tool {
        /// The tool's name as the model called it.
        tool: String,
        /// What is wrong.
        message: String,
    },
}

impl StrategyError {
    /// The provider error behind this one, if any.
    pub fn as_provider(&self) -> Option<&ProviderError> {
        match self {
            StrategyError::Provider(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the strategy ran out of material (see [`StrategyError::Exhausted`]).
    pub fn is_exhausted(&self) -> bool {
        matches!(self, StrategyError::Exhausted { .. })
    }

    /// Whether the caller should wait for a dialog to end and ask again (see
    /// [`StrategyError::Waiting`]).
    pub fn is_waiting(&self) -> bool {
        matches!(self, StrategyError::Waiting { .. })
    }

    /// A short, stable name for the kind of failure, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            StrategyError::Provider(e) => e.kind(),
            StrategyError::MalformedOutput { .. } => "malformed_output",
            StrategyError::NoDocuments { .. } => "no_documents",
            StrategyError::Io { .. } => "io",
            StrategyError::Config(_) => "config",
            StrategyError::Exhausted { .. } => "exhausted",
            StrategyError::Waiting { .. } => "waiting",
            StrategyError::Tool { .. } => "tool",
        }
    }
}

/// Writing or reading stored rows failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored row is not valid.
    #[error("{path}: line {line}: {message}")]
    Corrupt {
        /// The file or table.
        path: String,
        /// Where (1-based).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A database or other backend failed.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A storage read back does not exist (a file-backed one never written).
    #[error(
        "{location} does not exist: check the path, or write it first with afterimage generate --out {location}"
    )]
    NotFound {
        /// Where it was looked for.
        location: String,
    },
}
