//! Client-side pacing: request and token rate limits, adaptive concurrency, and a
//! circuit breaker.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use afterimage_core::{ChatModel, ChatRequest, ChatResponse, Gauge, Metrics, ProviderError};
use async_trait::async_trait;
use serde::Serialize;
use tokio::sync::Notify;

/// How a [`Throttle`] paces requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// The most requests in flight (the adaptive limit never goes above it).
    pub max_concurrency: usize,
    /// Requests per minute, when the provider's plan has a limit.
    pub requests_per_minute: Option<u32>,
    /// Tokens per minute (prompt estimate plus completion), when limited.
    pub tokens_per_minute: Option<u64>,
    /// Open the circuit when nothing but failures came back for this long.
    pub breaker_after: Option<Duration>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            max_concurrency: 64,
            requests_per_minute: None,
            tokens_per_minute: None,
            breaker_after: Some(Duration::from_secs(300)),
        }
    }
}

/// How the adaptive limit moved during the run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThrottleStats {
    /// The limit now.
    pub concurrency_limit: usize,
    /// The lowest it went.
    pub lowest_limit: usize,
    /// Times it was halved after 429s or overloads.
    pub decreases: u64,
    /// Requests that waited for the rate limits.
    pub paced: u64,
}

/// A [`ChatModel`] that paces another: it keeps requests within per-minute request
/// and token limits (token buckets that allow a burst of one minute's worth), keeps
/// at most an adaptive number in flight (halved on a burst of 429s or overloads, a
/// quarter of the last 64 answers; raised by one after a run of clean answers:
/// additive increase, multiplicative decrease), and
/// waits out a window the server's `x-ratelimit-*` headers say is spent, and opens a
/// circuit breaker, a fatal error, when only failures have come back for
/// `breaker_after`, so a run stops with that reason instead of stalling.
#[derive(Debug)]
pub struct Throttle {
    inner: Arc<dyn ChatModel>,
    config: ThrottleConfig,
    state: Mutex<State>,
    freed: Notify,
    /// `afterimage_concurrency_limit` of the model: this throttle's share of it.
    limit_gauge: Gauge,
}

#[derive(Debug)]
struct State {
    limit: usize,
    lowest: usize,
    in_flight: usize,
    clean_streak: usize,
    decreases: u64,
    last_decrease: Option<Instant>,
    failing_since: Option<Instant>,
    requests: Bucket,
    tokens: Bucket,
    paced: u64,
    /// The server said its window is spent: no request before this.
    paused_until: Option<Instant>,
    /// How many times the rate shares changed ([`Throttle::share_limits`]).
    shares: u64,
    /// The last outcomes (true: rate limited or overloaded), newest last.
    recent: std::collections::VecDeque<bool>,
}

/// Outcomes looked at to tell a burst of 429s from the odd one: a burst is a quarter
/// of them, and at least [`BURST_MIN`]. With a full window of 64, that is 16: about
/// seven standard deviations above a 5% rate of random 429s, so an
/// overloaded-but-healthy server never halves the run, while a real limit (most
/// answers 429) trips it within a few dozen answers. (8 of 32 tripped about once per
/// run at 5%, and cost a tenth of the throughput while the limit climbed back.)
const WINDOW: usize = 64;
/// The fewest rate-limited outcomes that make a burst (early in a run, when the
/// window is not full yet).
const BURST_MIN: usize = 8;

/// The part of an equal share a worker paces at: the rest absorbs the burst each
/// worker may take and the heartbeat it takes for shares to follow a joining worker.
const SHARE_HEADROOM: f64 = 0.9;

/// A token bucket that may go into debt, so one large request is never refused;
/// later ones wait until the debt is paid.
#[derive(Debug)]
struct Bucket {
    per_minute: Option<f64>,
    /// The most the bucket holds (a minute's worth, or a second's for a share).
    capacity: f64,
    level: f64,
    updated: Instant,
}

impl Bucket {
    fn new(per_minute: Option<f64>) -> Self {
        Bucket {
            per_minute,
            capacity: per_minute.unwrap_or(0.0),
            level: per_minute.unwrap_or(0.0),
            updated: Instant::now(),
        }
    }

    /// Paces at `fraction` of `base` per minute with at most a second's worth of
    /// burst, so the shares of several processes never add up to more than the
    /// whole in any window (a minute's burst per process would double it).
    /// Returns whether the share changed.
    fn share(&mut self, base: Option<f64>, fraction: f64) -> bool {
        let Some(base) = base else {
            return false;
        };
        let rate = base * fraction;
        if self.per_minute == Some(rate) && self.capacity < base {
            return false;
        }
        self.per_minute = Some(rate);
        self.capacity = (rate / 60.0).max(1.0);
        // A new share starts empty; the requests still waiting on the old one's debt
        // queue again (see `Throttle::acquire`), so the debt goes with them.
        self.level = 0.0;
        true
    }

    /// Takes `amount`; returns how long the caller must wait first.
    fn take(&mut self, amount: f64, now: Instant) -> Duration {
        let Some(rate) = self.per_minute else {
            return Duration::ZERO;
        };
        let refill = now.duration_since(self.updated).as_secs_f64() * rate / 60.0;
        self.level = (self.level + refill).min(self.capacity);
        self.updated = now;
        self.level -= amount;
        if self.level >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.level * 60.0 / rate)
        }
    }
}

impl Throttle {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ChatModel>, config: ThrottleConfig) -> Self {
        let max = config.max_concurrency.max(1);
        // Summed over the model's throttles (one per key, say): its total limit.
        let limit_gauge = Metrics::global().gauge(
            "afterimage_concurrency_limit",
            "The adaptive limit of requests in flight, by model (summed over its throttles).",
            &[("model", inner.model_id())],
        );
        limit_gauge.add(max as f64);
        Throttle {
            limit_gauge,
            inner,
            config,
            state: Mutex::new(State {
                limit: max,
                lowest: max,
                in_flight: 0,
                clean_streak: 0,
                decreases: 0,
                last_decrease: None,
                failing_since: None,
                requests: Bucket::new(config.requests_per_minute.map(f64::from)),
                tokens: Bucket::new(config.tokens_per_minute.map(|t| t as f64)),
                paced: 0,
                paused_until: None,
                shares: 0,
                recent: std::collections::VecDeque::with_capacity(WINDOW),
            }),
            freed: Notify::new(),
        }
    }

    /// Takes this process's share of the configured requests and tokens per minute
    /// when `workers` processes share them (a run joined by several workers): each
    /// paces at 90% of an equal part, with a second's burst at most, so the fleet
    /// stays under the limits in every window while a joining or leaving worker's
    /// share settles (at the next heartbeat). `1` restores a second's burst at 90%
    /// of the whole.
    pub fn share_limits(&self, workers: u32) {
        let fraction = SHARE_HEADROOM / f64::from(workers.max(1));
        let mut state = self.lock();
        let requests = state
            .requests
            .share(self.config.requests_per_minute.map(f64::from), fraction);
        let tokens = state
            .tokens
            .share(self.config.tokens_per_minute.map(|t| t as f64), fraction);
        if requests || tokens {
            state.shares += 1;
        }
    }

    /// How the limit moved.
    pub fn stats(&self) -> ThrottleStats {
        let state = self.lock();
        ThrottleStats {
            concurrency_limit: state.limit,
            lowest_limit: state.lowest,
            decreases: state.decreases,
            paced: state.paced,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent in a
        // way that matters more than stopping the run would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn breaker(&self) -> Result<(), ProviderError> {
        let (Some(after), Some(since)) = (self.config.breaker_after, self.lock().failing_since)
        else {
            return Ok(());
        };
        if since.elapsed() >= after {
            return Err(ProviderError::CircuitOpen {
                message: format!(
                    "only rate limits and server errors came back for {}s; stopping instead of stalling (check the provider's status and your quota)",
                    since.elapsed().as_secs()
                ),
            });
        }
        Ok(())
    }

    /// Waits for a slot under the adaptive limit, then for the rate limits.
    async fn acquire(&self, estimated_tokens: u64) {
        loop {
            let freed = self.freed.notified();
            {
                let mut state = self.lock();
                if state.in_flight < state.limit {
                    state.in_flight += 1;
                    break;
                }
            }
            freed.await;
        }
        loop {
            let (wait, shares) = {
                let mut state = self.lock();
                let now = Instant::now();
                let paused = state
                    .paused_until
                    .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
                let wait = state
                    .requests
                    .take(1.0, now)
                    .max(state.tokens.take(estimated_tokens as f64, now))
                    .max(paused);
                if !wait.is_zero() {
                    state.paced += 1;
                    rate_limit_wait("pacing");
                }
                (wait, state.shares)
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
            // A new share while waiting: the wait was reckoned at the old rate, so
            // queue again at the new one.
            if self.lock().shares == shares {
                return;
            }
        }
    }

    fn release(&self, outcome: &Result<ChatResponse, ProviderError>) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        let now = Instant::now();
        match outcome {
            Ok(response) => {
                // The server's own count: when it says the window is spent, wait for
                // its reset instead of walking into a 429.
                if let Some(hint) = response.rate_limit {
                    let spent = |left: Option<u64>, reset: Option<Duration>| {
                        (left == Some(0)).then_some(reset).flatten()
                    };
                    let pause = spent(hint.remaining_requests, hint.reset_requests)
                        .max(spent(hint.remaining_tokens, hint.reset_tokens));
                    if let Some(pause) = pause {
                        let until = now + pause.min(Duration::from_secs(60));
                        state.paused_until =
                            Some(state.paused_until.map_or(until, |u| u.max(until)));
                    }
                }
                state.failing_since = None;
                push_outcome(&mut state.recent, false);
                state.clean_streak += 1;
                if state.clean_streak >= state.limit && state.limit < self.config.max_concurrency {
                    state.limit += 1;
                    state.clean_streak = 0;
                    self.limit_gauge.inc();
                }
            }
            Err(e) if e.is_rate_limited() || matches!(e, ProviderError::Server { .. }) => {
                state.failing_since.get_or_insert(now);
                state.clean_streak = 0;
                push_outcome(&mut state.recent, true);
                // An odd 429 is the server's business (the retry waits it out); a
                // burst, a quarter of the recent answers, means we ask too fast. One
                // burst halves the limit once, not once per request in flight.
                let limited = state.recent.iter().filter(|r| **r).count();
                let burst = limited >= BURST_MIN && limited * 4 >= state.recent.len();
                let recent = state
                    .last_decrease
                    .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
                if burst && !recent && state.limit > 1 {
                    let halved = (state.limit / 2).max(1);
                    self.limit_gauge.add(-((state.limit - halved) as f64));
                    state.limit = halved;
                    state.lowest = state.lowest.min(state.limit);
                    state.decreases += 1;
                    state.last_decrease = Some(now);
                    state.recent.clear();
                    tracing::info!(
                        limit = state.limit,
                        "rate limited: fewer requests in flight"
                    );
                }
            }
            Err(_) => {}
        }
        drop(state);
        self.freed.notify_waiters();
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        let limit = self.lock().limit;
        self.limit_gauge.add(-(limit as f64));
    }
}

/// Counts a request held back by a rate limit: `pacing` (our own limits) or `server`
/// (a 429 waited out).
pub(crate) fn rate_limit_wait(source: &str) {
    Metrics::global()
        .counter(
            "afterimage_rate_limit_waits_total",
            "Requests held back by a rate limit: pacing (the configured limits, the server's x-ratelimit headers) or server (a 429 waited out before a retry).",
            &[("source", source)],
        )
        .inc();
}

fn push_outcome(recent: &mut std::collections::VecDeque<bool>, limited: bool) {
    if recent.len() == WINDOW {
        recent.pop_front();
    }
    recent.push_back(limited);
}

/// A cheap guess of a request's tokens: characters / 4, plus the completion limit or
/// a typical reply.
fn estimate_tokens(request: &ChatRequest) -> u64 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    chars as u64 / 4 + u64::from(request.max_tokens.unwrap_or(256))
}

#[async_trait]
impl ChatModel for Throttle {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.breaker()?;
        self.acquire(estimate_tokens(&request)).await;
        let outcome = self.inner.chat(request).await;
        self.release(&outcome);
        outcome
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        self.inner.probe().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_a_burst_then_pace() {
        let start = Instant::now();
        let mut bucket = Bucket::new(Some(60.0));
        bucket.updated = start;
        for _ in 0..60 {
            assert_eq!(bucket.take(1.0, start), Duration::ZERO);
        }
        // The 61st waits a second (60 a minute).
        assert_eq!(bucket.take(1.0, start), Duration::from_secs(1));
        // Unlimited never waits.
        assert_eq!(Bucket::new(None).take(1e9, start), Duration::ZERO);
    }

    /// Requests `bucket` lets through in `seconds` when asked for one every 10 ms.
    fn admitted(bucket: &mut Bucket, start: Instant, seconds: u64) -> u64 {
        let mut admitted = 0;
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            let wait = bucket.take(1.0, now);
            now += wait.max(Duration::from_millis(10));
            if now <= start + Duration::from_secs(seconds) {
                admitted += 1;
            }
        }
        admitted
    }

    #[test]
    fn a_share_paces_a_quarter_with_no_minute_burst() {
        let start = Instant::now();
        let mut whole = Bucket::new(Some(600.0));
        whole.updated = start;
        // Alone, a full bucket lets a minute's budget through at once.
        assert!(admitted(&mut whole, start, 10) > 600);
        let mut share = Bucket::new(Some(600.0));
        share.updated = start;
        assert!(share.share(Some(600.0), SHARE_HEADROOM / 4.0));
        // A quarter at 90% is 2.25 a second: four such workers stay under the 100
        // requests a 10-second window allows, and under 600 in a minute.
        let ten = admitted(&mut share, start, 10);
        assert!(4 * ten <= 100, "{ten}");
        assert!(ten >= 20, "{ten}");
        let mut minute = Bucket::new(Some(600.0));
        minute.updated = start;
        assert!(minute.share(Some(600.0), SHARE_HEADROOM / 4.0));
        assert!(4 * admitted(&mut minute, start, 60) <= 600);
        // The same share again keeps the bucket; a new one starts it empty.
        share.level = 1.0;
        assert!(!share.share(Some(600.0), SHARE_HEADROOM / 4.0));
        assert_eq!(share.level, 1.0);
        assert!(share.share(Some(600.0), SHARE_HEADROOM / 3.0));
        assert_eq!(share.level, 0.0);
    }
}
