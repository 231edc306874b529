//! Request counters: lock-free atomics on the hot path, a plain snapshot for callers.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A snapshot of what a [`MockServer`](crate::MockServer) has served.
///
/// Endpoint counters count every request routed there that passed the key check,
/// including those then answered with an injected fault or a 400.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MockStats {
    /// All HTTP requests received.
    pub requests: u64,
    /// Requests to OpenAI `chat/completions`.
    pub chat_completions: u64,
    /// Requests to Gemini `generateContent` / `streamGenerateContent`.
    pub generate_content: u64,
    /// Requests to Anthropic `messages`.
    pub messages: u64,
    /// Requests to the embedding endpoints (OpenAI `embeddings`, Gemini
    /// `batchEmbedContents` / `embedContent`).
    pub embeddings: u64,
    /// Requests to the model listing / lookup endpoints (both formats).
    pub models: u64,
    /// Requests answered 404 (unknown path or method).
    pub not_found: u64,
    /// Requests answered 401 (missing or wrong key).
    pub unauthorized: u64,
    /// Requests answered 400 or 413 (body not JSON, missing fields, too large).
    pub bad_requests: u64,
    /// Injected 500s.
    pub errors_injected: u64,
    /// 429s: injected ones and those over [`MockConfig::rpm_limit`](crate::MockConfig::rpm_limit).
    pub rate_limited: u64,
    /// Answers with unusable content ([`MockConfig::malformed_rate`](crate::MockConfig::malformed_rate)).
    pub malformed_injected: u64,
    /// Requests being handled right now.
    pub in_flight: u64,
    /// The most requests ever handled at once.
    pub max_in_flight: u64,
    /// Prompt tokens of the chat answers served, cached ones included, as the clients
    /// bill them (Anthropic's cache reads and writes added back in).
    pub input_tokens: u64,
    /// Output tokens of the chat answers served, reasoning included.
    pub output_tokens: u64,
    /// The part of `input_tokens` reported as read from the prompt cache.
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` reported as written to it (Anthropic).
    pub cache_write_tokens: u64,
    /// The part of `output_tokens` reported as reasoning (OpenAI format, Gemini).
    pub reasoning_tokens: u64,
}

impl std::fmt::Display for MockStats {
    /// One line for logs: `requests N (chat N, gemini N, anthropic N, embeddings N, models N), max in
    /// flight N, ..., tokens in N (cached N), out N`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests {} (chat {}, gemini {}, anthropic {}, embeddings {}, models {}), max in flight {}, \
             injected 500s {}, 429s {}, 401s {}, 400s {}, 404s {}, tokens in {} (cached {}), out {}",
            self.requests,
            self.chat_completions,
            self.generate_content,
            self.messages,
            self.embeddings,
            self.models,
            self.max_in_flight,
            self.errors_injected,
            self.rate_limited,
            self.unauthorized,
            self.bad_requests,
            self.not_found,
            self.input_tokens,
            self.cached_input_tokens,
            self.output_tokens,
        )
    }
}

/// The live counters behind [`MockStats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) requests: AtomicU64,
    pub(crate) chat_completions: AtomicU64,
    pub(crate) generate_content: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) embeddings: AtomicU64,
    pub(crate) models: AtomicU64,
    pub(crate) not_found: AtomicU64,
    pub(crate) unauthorized: AtomicU64,
    pub(crate) bad_requests: AtomicU64,
    pub(crate) errors_injected: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) malformed_injected: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
    cached_input_tokens: AtomicU64,
    cache_write_tokens: AtomicU64,
    reasoning_tokens: AtomicU64,
}

/// The tokens of one chat answer, in the clients' billing shape: input includes what
/// was read from and written to the cache, output includes reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Served {
    pub(crate) input: u64,
    pub(crate) output: u64,
    pub(crate) cached: u64,
    pub(crate) written: u64,
    pub(crate) reasoning: u64,
}

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    /// Counts a request as started; the guard counts it finished when dropped (also when
    /// the client hangs up and hyper drops the handler mid-flight).
    pub(crate) fn enter(&self) -> InFlight<'_> {
        bump(&self.requests);
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
        InFlight(&self.in_flight)
    }

    /// Adds the tokens of an answer sent.
    pub(crate) fn served(&self, tokens: Served) {
        self.input_tokens.fetch_add(tokens.input, Relaxed);
        self.output_tokens.fetch_add(tokens.output, Relaxed);
        self.cached_input_tokens.fetch_add(tokens.cached, Relaxed);
        self.cache_write_tokens.fetch_add(tokens.written, Relaxed);
        self.reasoning_tokens.fetch_add(tokens.reasoning, Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MockStats {
        MockStats {
            requests: self.requests.load(Relaxed),
            chat_completions: self.chat_completions.load(Relaxed),
            generate_content: self.generate_content.load(Relaxed),
            messages: self.messages.load(Relaxed),
            embeddings: self.embeddings.load(Relaxed),
            models: self.models.load(Relaxed),
            not_found: self.not_found.load(Relaxed),
            unauthorized: self.unauthorized.load(Relaxed),
            bad_requests: self.bad_requests.load(Relaxed),
            errors_injected: self.errors_injected.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            malformed_injected: self.malformed_injected.load(Relaxed),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            input_tokens: self.input_tokens.load(Relaxed),
            output_tokens: self.output_tokens.load(Relaxed),
            cached_input_tokens: self.cached_input_tokens.load(Relaxed),
            cache_write_tokens: self.cache_write_tokens.load(Relaxed),
            reasoning_tokens: self.reasoning_tokens.load(Relaxed),
        }
    }

    /// Zeroes the counters; `max_in_flight` restarts from what is in flight now.
    pub(crate) fn reset(&self) {
        for c in [
            &self.requests,
            &self.chat_completions,
            &self.generate_content,
            &self.messages,
            &self.embeddings,
            &self.models,
            &self.not_found,
            &self.unauthorized,
            &self.bad_requests,
            &self.errors_injected,
            &self.rate_limited,
            &self.input_tokens,
            &self.output_tokens,
            &self.cached_input_tokens,
            &self.cache_write_tokens,
            &self.reasoning_tokens,
            &self.malformed_injected,
        ] {
            c.store(0, Relaxed);
        }
        self.max_in_flight
            .store(self.in_flight.load(Relaxed), Relaxed);
    }
}

/// Decrements the in-flight count on drop.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a AtomicU64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
