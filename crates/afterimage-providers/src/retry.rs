//! Retries with jittered exponential backoff that honours `Retry-After`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use afterimage_core::{
    ChatModel, ChatRequest, ChatResponse, Embedder, Metrics, ParkedRequests, ProviderError, Usage,
};
use async_trait::async_trait;
use rand::Rng;

/// When and how long to wait before trying a failed request again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (default 5).
    pub max_retries: u32,
    /// The first backoff (default 500 ms); it doubles each retry.
    pub base: Duration,
    /// The longest backoff (default 30 s).
    pub cap: Duration,
    /// The longest wait a server's `Retry-After` may ask for (default 120 s): a
    /// hostile or mistaken `Retry-After: 999999` must not park a run.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0-based): a random point in the upper
    /// half of the exponential step, so many clients do not retry in lockstep, and
    /// never less than what the server asked for (up to `max_retry_after`).
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << retry.min(16))
            .min(self.cap);
        let jittered = step.mul_f64(rand::rng().random_range(0.5..=1.0));
        match retry_after {
            Some(asked) => jittered.max(asked.min(self.max_retry_after)),
            None => jittered,
        }
    }
}

/// A [`ChatModel`] that retries the requests of another on errors that may pass
/// (429, 5xx, 529, timeouts, dropped connections, garbled bodies), never on those that
/// cannot (400, 401/403, an unknown model, no quota).
///
/// ```no_run
/// use std::sync::Arc;
/// use afterimage_providers::{OpenAiCompatible, Retry, RetryPolicy};
///
/// # fn demo() -> Result<(), afterimage_providers::BuildError> {
/// let client = OpenAiCompatible::local().model("llama3").build()?;
/// let model = Retry::new(Arc::new(client), RetryPolicy::default());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Retry {
    inner: Arc<dyn ChatModel>,
    policy: RetryPolicy,
    retries: AtomicU64,
    parked: Option<ParkedRequests>,
}

impl Retry {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ChatModel>, policy: RetryPolicy) -> Self {
        Retry {
            inner,
            policy,
            retries: AtomicU64::new(0),
            parked: None,
        }
    }

    /// Counts requests waiting out a retry delay in `gauge`, so a scheduler can start
    /// other work while they wait.
    pub fn parked(mut self, gauge: ParkedRequests) -> Self {
        self.parked = Some(gauge);
        self
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

impl RetryPolicy {
    /// Runs `attempt` until it succeeds, fails in a way retrying cannot cure, or the
    /// retries run out; `retries` counts the retries made, `parked` the waits going on.
    async fn run<T, F, Fut>(
        &self,
        retries: &AtomicU64,
        parked: Option<&ParkedRequests>,
        mut attempt: F,
    ) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut retry = 0;
        loop {
            match attempt().await {
                Err(e) if e.is_retryable() && retry < self.max_retries => {
                    let delay = self.delay(retry, e.retry_after());
                    tracing::debug!(kind = e.kind(), ?delay, retry, "retrying: {e}");
                    retries.fetch_add(1, Ordering::Relaxed);
                    count_retry(&e);
                    retry += 1;
                    let _waiting = parked.map(ParkedRequests::park);
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }
}

/// Counts a retry in `afterimage_retries_total`, and a 429 waited out as a rate-limit
/// wait.
fn count_retry(error: &ProviderError) {
    Metrics::global()
        .counter(
            "afterimage_retries_total",
            "Model requests sent again after a retryable failure, by the failure's kind.",
            &[("kind", error.kind())],
        )
        .inc();
    if error.is_rate_limited() {
        crate::throttle::rate_limit_wait("server");
    }
}

#[async_trait]
impl ChatModel for Retry {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.policy
            .run(&self.retries, self.parked.as_ref(), || {
                self.inner.chat(request.clone())
            })
            .await
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        self.inner.probe().await
    }
}

/// [`Retry`] for an [`Embedder`]: embedding calls (a RAG run's chunks at start-up, a
/// query per question) get the same backoff and `Retry-After` handling as chat calls.
#[derive(Debug)]
pub struct RetryEmbedder {
    inner: Arc<dyn Embedder>,
    policy: RetryPolicy,
    retries: AtomicU64,
}

impl RetryEmbedder {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Embedder>, policy: RetryPolicy) -> Self {
        RetryEmbedder {
            inner,
            policy,
            retries: AtomicU64::new(0),
        }
    }

    /// Retries made so far.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }
}

#[async_trait]
impl Embedder for RetryEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(self.embed_billed(texts).await?.0)
    }

    async fn embed_billed(
        &self,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError> {
        self.policy
            .run(&self.retries, None, || self.inner.embed_billed(texts))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_honour_retry_after() {
        let policy = RetryPolicy {
            max_retries: 5,
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(10),
        };
        for _ in 0..50 {
            let first = policy.delay(0, None);
            assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
            let third = policy.delay(2, None);
            assert!(third >= Duration::from_millis(200) && third <= Duration::from_millis(400));
            assert!(policy.delay(30, None) <= Duration::from_secs(1));
            assert_eq!(
                policy.delay(0, Some(Duration::from_secs(7))),
                Duration::from_secs(7)
            );
            assert_eq!(
                policy.delay(0, Some(Duration::from_secs(999_999))),
                Duration::from_secs(10)
            );
        }
    }
}
