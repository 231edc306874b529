//! How the mock behaves: latency, injected faults, auth and output quirks.

use std::time::Duration;

/// How a [`MockServer`](crate::MockServer) behaves; `Default` is instant, faultless and open.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct MockConfig {
    /// Base delay before every model answer (and injected 500).
    pub latency: Duration,
    /// Each delay is drawn uniformly from `latency ± jitter` (never below zero).
    pub jitter: Duration,
    /// Fraction of model requests answered 500, in `0.0..=1.0`.
    pub error_rate: f64,
    /// Fraction of model requests answered 429 with `Retry-After`, in `0.0..=1.0`.
    pub rate_limit_rate: f64,
    /// Fraction of model requests answered 200, billed, with content the caller cannot
    /// use: prose where JSON was asked for (text requests get their usual answer), in
    /// `0.0..=1.0`.
    pub malformed_rate: f64,
    /// Fraction of requests with a JSON schema (OpenAI `json_schema`, Gemini
    /// `responseJsonSchema`) answered 200, billed, with JSON that breaks the schema (the
    /// first required property left out), in `0.0..=1.0`; drawn apart from the other
    /// faults, per request, so a request asked again may pass.
    pub schema_violation_rate: f64,
    /// The `Retry-After` seconds sent with injected 429s.
    pub retry_after_secs: u64,
    /// When set, requests without this key (Bearer, `x-goog-api-key`, `x-api-key` or
    /// `?key=`) are answered 401.
    pub require_key: Option<String>,
    /// Answer structured-output requests with prose, to exercise clients' parse failures.
    pub prose_instead_of_json: bool,
    /// Seed of the per-request random streams (faults, jitter, text choices).
    pub seed: u64,
    /// A hard limit of model requests per minute per API key (requests without a key
    /// share one budget): beyond it, 429 with `Retry-After` until the minute's window
    /// ends. `None` is unlimited.
    pub rpm_limit: Option<u32>,
    /// The size of embedding vectors when a request does not ask for one (default 64).
    pub embedding_dimensions: usize,
    /// Report cached prompt tokens as each provider does (default on): a prompt that
    /// shares a prefix with an earlier request of the same format and model reads it
    /// from the cache (Anthropic: only prefixes marked with `cache_control`, written
    /// the first time).
    pub prompt_cache: bool,
    /// The shortest prefix the cache keeps, in the mock's estimated tokens (default
    /// 1024, the real providers' minimum); tests set it low to cache small prompts.
    pub prompt_cache_min_tokens: u64,
    /// How long each phase of a batch lasts (OpenAI validating, in progress, finalizing;
    /// Anthropic and Gemini run the same three phases under their own state names).
    /// Default 200 ms, so a run of many rounds takes seconds.
    pub batch_phase: Duration,
    /// Fraction of batch lines answered with a retryable error (429 or 5xx, Anthropic
    /// `rate_limit_error`/`overloaded_error`), in `0.0..=1.0`.
    pub batch_retryable_rate: f64,
    /// Fraction of batch lines answered with a permanent error (400,
    /// `invalid_request_error`), in `0.0..=1.0`.
    pub batch_permanent_rate: f64,
    /// Fraction of batch lines left out of the results altogether, in `0.0..=1.0`.
    pub batch_missing_rate: f64,
    /// Fraction of OpenAI and Gemini batches that fail validation as a whole (OpenAI
    /// `failed` with `errors.data`, Gemini `FAILED`), in `0.0..=1.0`.
    pub batch_validation_failure_rate: f64,
    /// Fraction of batches that expire with only the first half of their lines done
    /// (the rest `batch_expired` / `expired`; Gemini `EXPIRED` without results).
    pub batch_expiry_rate: f64,
    /// Fraction of OpenAI batches failing with `token_limit_exceeded` (the enqueued
    /// token limit of the model), in `0.0..=1.0`.
    pub batch_token_limit_rate: f64,
    /// The most requests one batch may hold (`None`: the provider's own limit, 50,000
    /// OpenAI, 100,000 Anthropic): beyond it OpenAI fails the batch's validation,
    /// Anthropic and Gemini answer the create 400. For tests of splitting.
    pub batch_max_requests: Option<usize>,
    /// For this long after its create, a batch is not found (404) on get, cancel and
    /// results, as a real API may answer a poll sent right after the create.
    pub batch_hidden_for: Duration,
    /// Batches and files are visible only to the API key that created them (default
    /// on, as the real APIs scope them to a project): another key gets 404.
    pub batch_pin_keys: bool,
    /// The most batches one page of a batch list holds, below what the client asks
    /// for (`None`: as asked, up to the provider's maximum). For tests of paging.
    pub batch_list_page: Option<usize>,
    /// The batch lines the account can pay for over the server's life (`None`: no
    /// end). Beyond it every line fails for low credit: Anthropic `errored` with
    /// `invalid_request_error` "Your credit balance is too low…", OpenAI 429
    /// `insufficient_quota`, Gemini 429 `RESOURCE_EXHAUSTED`.
    pub batch_credit: Option<u64>,
    /// Gemini batch states are written `JOB_STATE_*` (the SDK's spelling) instead of
    /// the wire's `BATCH_STATE_*`.
    pub gemini_job_states: bool,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
            rate_limit_rate: 0.0,
            malformed_rate: 0.0,
            schema_violation_rate: 0.0,
            retry_after_secs: 1,
            require_key: None,
            prose_instead_of_json: false,
            seed: 0,
            rpm_limit: None,
            embedding_dimensions: 64,
            prompt_cache: true,
            prompt_cache_min_tokens: DEFAULT_PROMPT_CACHE_MIN_TOKENS,
            batch_phase: Duration::from_millis(200),
            batch_retryable_rate: 0.0,
            batch_permanent_rate: 0.0,
            batch_missing_rate: 0.0,
            batch_validation_failure_rate: 0.0,
            batch_expiry_rate: 0.0,
            batch_token_limit_rate: 0.0,
            batch_max_requests: None,
            batch_hidden_for: Duration::ZERO,
            batch_pin_keys: true,
            batch_list_page: None,
            batch_credit: None,
            gemini_job_states: false,
        }
    }
}

impl MockConfig {
    /// Sets the base latency of every model answer.
    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Sets the jitter around the latency.
    pub fn with_jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the fraction of model requests answered 500 (clamped to `0.0..=1.0`).
    pub fn with_error_rate(mut self, rate: f64) -> Self {
        self.error_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of model requests answered 429 (clamped to `0.0..=1.0`).
    pub fn with_rate_limit_rate(mut self, rate: f64) -> Self {
        self.rate_limit_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of model requests answered with unusable (but billed)
    /// content (clamped to `0.0..=1.0`).
    pub fn with_malformed_rate(mut self, rate: f64) -> Self {
        self.malformed_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of JSON-schema requests answered with JSON that breaks the
    /// schema (clamped to `0.0..=1.0`).
    pub fn with_schema_violation_rate(mut self, rate: f64) -> Self {
        self.schema_violation_rate = clamp_rate(rate);
        self
    }

    /// Sets the `Retry-After` seconds of injected 429s.
    pub fn with_retry_after_secs(mut self, secs: u64) -> Self {
        self.retry_after_secs = secs;
        self
    }

    /// Requires this API key on every request.
    pub fn with_require_key(mut self, key: impl Into<String>) -> Self {
        self.require_key = Some(key.into());
        self
    }

    /// Answers structured-output requests with prose instead of JSON.
    pub fn with_prose_instead_of_json(mut self, prose: bool) -> Self {
        self.prose_instead_of_json = prose;
        self
    }

    /// Limits model requests per minute per API key (`0` is unlimited).
    pub fn with_rpm_limit(mut self, rpm: u32) -> Self {
        self.rpm_limit = (rpm > 0).then_some(rpm);
        self
    }

    /// Sets the default size of embedding vectors (at least 1).
    pub fn with_embedding_dimensions(mut self, dimensions: usize) -> Self {
        self.embedding_dimensions = dimensions.max(1);
        self
    }

    /// Turns the prompt cache on or off.
    pub fn with_prompt_cache(mut self, on: bool) -> Self {
        self.prompt_cache = on;
        self
    }

    /// Sets the shortest cached prefix, in estimated tokens (at least 1).
    pub fn with_prompt_cache_min_tokens(mut self, tokens: u64) -> Self {
        self.prompt_cache_min_tokens = tokens.max(1);
        self
    }

    /// Sets the length of each batch phase.
    pub fn with_batch_phase(mut self, phase: Duration) -> Self {
        self.batch_phase = phase;
        self
    }

    /// Sets the fraction of batch lines answered with a retryable error (clamped).
    pub fn with_batch_retryable_rate(mut self, rate: f64) -> Self {
        self.batch_retryable_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of batch lines answered with a permanent error (clamped).
    pub fn with_batch_permanent_rate(mut self, rate: f64) -> Self {
        self.batch_permanent_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of batch lines missing from the results (clamped).
    pub fn with_batch_missing_rate(mut self, rate: f64) -> Self {
        self.batch_missing_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of OpenAI and Gemini batches failing validation (clamped).
    pub fn with_batch_validation_failure_rate(mut self, rate: f64) -> Self {
        self.batch_validation_failure_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of batches expiring with partial results (clamped).
    pub fn with_batch_expiry_rate(mut self, rate: f64) -> Self {
        self.batch_expiry_rate = clamp_rate(rate);
        self
    }

    /// Sets the fraction of OpenAI batches failing with `token_limit_exceeded` (clamped).
    pub fn with_batch_token_limit_rate(mut self, rate: f64) -> Self {
        self.batch_token_limit_rate = clamp_rate(rate);
        self
    }

    /// Limits the requests per batch (`0` keeps the provider's own limit).
    pub fn with_batch_max_requests(mut self, max: usize) -> Self {
        self.batch_max_requests = (max > 0).then_some(max);
        self
    }

    /// Hides each batch for `hidden` after its create (404 on get, cancel, results).
    pub fn with_batch_hidden_for(mut self, hidden: Duration) -> Self {
        self.batch_hidden_for = hidden;
        self
    }

    /// Pins batches and files to the key that created them (or shows them to all).
    pub fn with_batch_pin_keys(mut self, pin: bool) -> Self {
        self.batch_pin_keys = pin;
        self
    }

    /// Cuts batch list pages to at most `max` batches (`0`: as the client asks).
    pub fn with_batch_list_page(mut self, max: usize) -> Self {
        self.batch_list_page = (max > 0).then_some(max);
        self
    }

    /// Lets the account pay for `lines` batch lines; later ones fail for low credit.
    pub fn with_batch_credit(mut self, lines: u64) -> Self {
        self.batch_credit = Some(lines);
        self
    }

    /// Writes Gemini batch states as `JOB_STATE_*` instead of `BATCH_STATE_*`.
    pub fn with_gemini_job_states(mut self, job: bool) -> Self {
        self.gemini_job_states = job;
        self
    }

    /// Sets the random seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }
}

/// OpenAI's and Anthropic's (non-Haiku) shortest cacheable prompt, in tokens.
const DEFAULT_PROMPT_CACHE_MIN_TOKENS: u64 = 1024;

fn clamp_rate(rate: f64) -> f64 {
    if rate.is_nan() {
        0.0
    } else {
        rate.clamp(0.0, 1.0)
    }
}
