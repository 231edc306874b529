//! Many API keys behind one model: rotation, cool-down on 429, retirement on 401/403.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use afterimage_core::{ApiKey, ChatModel, ChatRequest, ChatResponse, ProviderError, fnv1a};
use async_trait::async_trait;
use serde::Serialize;

/// A key's name in logs and reports: a hash, never any of the key's characters.
pub fn key_fingerprint(key: &ApiKey) -> String {
    format!("key#{:06x}", fnv1a(key.expose().as_bytes()) & 0xff_ffff)
}

/// One client per API key, used in turn.
///
/// Requests rotate over the keys that are healthy. A key answered with 429 cools
/// down for the server's `Retry-After` (or [`default_cooldown`](Self::default_cooldown))
/// and the request moves on to the next key; when every key is cooling down, the
/// request waits for the first to come back. A key answered with 401/403 is retired
/// for the run with a warning naming only its fingerprint; when every key is retired,
/// requests fail at once with [`ProviderError::Auth`].
#[derive(Debug)]
pub struct KeyPool {
    keys: Vec<PooledKey>,
    next: AtomicUsize,
    default_cooldown: Duration,
    max_wait: Duration,
}

#[derive(Debug)]
struct PooledKey {
    fingerprint: String,
    model: Arc<dyn ChatModel>,
    state: Mutex<KeyState>,
    requests: AtomicU64,
    rate_limited: AtomicU64,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

#[derive(Debug, Default)]
struct KeyState {
    cooling_until: Option<Instant>,
    retired: bool,
}

/// What one key did during the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyStats {
    /// The key's fingerprint.
    pub key: String,
    /// Requests sent with it.
    pub requests: u64,
    /// 429s it got.
    pub rate_limited: u64,
    /// Prompt tokens of its successful requests.
    pub input_tokens: u64,
    /// Completion tokens of its successful requests.
    pub output_tokens: u64,
    /// Whether it was refused (401/403) and taken out of rotation.
    pub retired: bool,
}

impl KeyPool {
    /// A pool over `(key, client built with that key)` pairs.
    pub fn new(clients: Vec<(ApiKey, Arc<dyn ChatModel>)>) -> Self {
        KeyPool {
            keys: clients
                .into_iter()
                .map(|(key, model)| PooledKey {
                    fingerprint: key_fingerprint(&key),
                    model,
                    state: Mutex::new(KeyState::default()),
                    requests: AtomicU64::new(0),
                    rate_limited: AtomicU64::new(0),
                    input_tokens: AtomicU64::new(0),
                    output_tokens: AtomicU64::new(0),
                })
                .collect(),
            next: AtomicUsize::new(0),
            default_cooldown: Duration::from_secs(10),
            max_wait: Duration::from_secs(300),
        }
    }

    /// How long a key rests after a 429 without `Retry-After` (default 10 s).
    pub fn default_cooldown(mut self, cooldown: Duration) -> Self {
        self.default_cooldown = cooldown;
        self
    }

    /// The longest a request waits for a cooling key (default 300 s); past it the
    /// request fails as rate limited, for the caller's retry policy to decide.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = wait;
        self
    }

    /// Per-key counters.
    pub fn stats(&self) -> Vec<KeyStats> {
        self.keys
            .iter()
            .map(|k| KeyStats {
                key: k.fingerprint.clone(),
                requests: k.requests.load(Ordering::Relaxed),
                rate_limited: k.rate_limited.load(Ordering::Relaxed),
                input_tokens: k.input_tokens.load(Ordering::Relaxed),
                output_tokens: k.output_tokens.load(Ordering::Relaxed),
                retired: k.state.lock().map(|s| s.retired).unwrap_or(false),
            })
            .collect()
    }

    /// The next usable key, or how long until one is, or `None` when all are retired.
    fn pick(&self) -> Result<&PooledKey, Option<Duration>> {
        let now = Instant::now();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut soonest: Option<Duration> = None;
        for offset in 0..self.keys.len() {
            let key = &self.keys[(start + offset) % self.keys.len()];
            let Ok(state) = key.state.lock() else {
                continue;
            };
            if state.retired {
                continue;
            }
            match state.cooling_until {
                Some(until) if until > now => {
                    let wait = until - now;
                    soonest = Some(soonest.map_or(wait, |s| s.min(wait)));
                }
                _ => return Ok(key),
            }
        }
        Err(soonest)
    }

    fn all_retired_error(&self, last: Option<ProviderError>) -> ProviderError {
        let reason = last.map(|e| e.to_string()).unwrap_or_default();
        ProviderError::Auth {
            status: 401,
            message: format!(
                "all {} API keys were refused ({reason}); check the keys",
                self.keys.len()
            ),
        }
    }
}

#[async_trait]
impl ChatModel for KeyPool {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        if self.keys.is_empty() {
            return Err(self.all_retired_error(None));
        }
        let started = Instant::now();
        let mut last_auth: Option<ProviderError> = None;
        // Each key may be tried about twice before the error goes to the caller.
        for _ in 0..=self.keys.len() * 2 {
            let key = match self.pick() {
                Ok(key) => key,
                Err(None) => return Err(self.all_retired_error(last_auth)),
                Err(Some(wait)) => {
                    let waited = started.elapsed();
                    if waited + wait > self.max_wait {
                        return Err(ProviderError::RateLimited {
                            retry_after: Some(wait),
                            message: format!(
                                "every one of the {} API keys is rate limited",
                                self.keys.len()
                            ),
                        });
                    }
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            key.requests.fetch_add(1, Ordering::Relaxed);
            match key.model.chat(request.clone()).await {
                Ok(response) => {
                    key.input_tokens
                        .fetch_add(response.usage.input_tokens, Ordering::Relaxed);
                    key.output_tokens
                        .fetch_add(response.usage.output_tokens, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e) if e.is_rate_limited() => {
                    key.rate_limited.fetch_add(1, Ordering::Relaxed);
                    let rest = e.retry_after().unwrap_or(self.default_cooldown);
                    if let Ok(mut state) = key.state.lock() {
                        state.cooling_until = Some(Instant::now() + rest);
                    }
                    tracing::debug!(key = %key.fingerprint, ?rest, "key rate limited; cooling down");
                }
                Err(e) if e.is_auth() => {
                    let newly = key
                        .state
                        .lock()
                        .map(|mut s| !std::mem::replace(&mut s.retired, true))
                        .unwrap_or(false);
                    if newly {
                        tracing::warn!(key = %key.fingerprint, "API key refused ({e}); it is retired for this run");
                    }
                    last_auth = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match self.pick() {
            Err(None) => Err(self.all_retired_error(last_auth)),
            _ => Err(ProviderError::RateLimited {
                retry_after: None,
                message: format!(
                    "every one of the {} API keys is rate limited",
                    self.keys.len()
                ),
            }),
        }
    }

    fn model_id(&self) -> &str {
        self.keys.first().map_or("", |k| k.model.model_id())
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        match self.keys.first() {
            Some(key) => key.model.probe().await,
            None => Err(self.all_retired_error(None)),
        }
    }
}
