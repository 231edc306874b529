//! The production model stack: an endpoint's settings turned into clients (one per
//! key, in a key pool when there are several), paced by a throttle, behind the retry
//! middleware; and the embedder beside it.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{
    ApiKey, ChatModel, ChatRequest, ChatResponse, Embedder, ParkedRequests, ProviderError,
};
use async_trait::async_trait;

use crate::builder::{ChatBuilder, ChatClient};
use crate::http::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_TIMEOUT, error_chain};
use crate::{
    Anthropic, BuildError, DEFAULT_MAX_RESPONSE_BYTES, GEMINI_EMBEDDING_BATCH, Gemini,
    GeminiEmbedder, KeyPool, KeyStats, OPENAI_EMBEDDING_BATCH, OpenAiCompatible,
    OpenAiCompatibleBuilder, OpenAiEmbedder, Provider, Retry, RetryEmbedder, RetryPolicy,
    StructuredOutput, StructuredOutputState, Throttle, ThrottleConfig, ThrottleStats,
};

/// One key's client, as a [`KeyPool`] takes it.
type KeyedClient = (ApiKey, Arc<dyn ChatModel>);

/// The fewest idle connections [`Endpoint::http_client`] keeps per host.
const MIN_IDLE_CONNECTIONS: usize = 16;

/// A chat model endpoint: the provider, the model, where it is, the keys, and how hard
/// to push it. [`build`](Self::build) turns it into a [`ModelStack`].
///
/// ```
/// use std::time::Duration;
///
/// use afterimage_providers::{Endpoint, Provider};
///
/// let endpoint = Endpoint::new(Provider::Local, "qwen3-8b")
///     .base_url("http://127.0.0.1:8000/v1")
///     .timeout(Duration::from_secs(60))
///     .max_retries(3);
/// assert_eq!(endpoint.api_keys.len(), 0);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Endpoint {
    /// The provider.
    pub provider: Provider,
    /// The model used when a request names none.
    pub model: String,
    /// Another base URL than the provider's own (a proxy, a local server, a mock).
    pub base_url: Option<String>,
    /// The keys: none (local servers), one, or several rotated through a [`KeyPool`].
    pub api_keys: Vec<ApiKey>,
    /// The whole-request deadline (default 600 s).
    pub timeout: Duration,
    /// How long to wait for a connection (default 10 s), for the client
    /// [`http_client`](Self::http_client) builds.
    pub connect_timeout: Duration,
    /// Retries of a request that failed in a way that may pass (default 5; 0 leaves
    /// the retry middleware out).
    pub max_retries: u32,
    /// Rate limits, adaptive concurrency and the circuit breaker for the endpoint.
    pub pacing: ThrottleConfig,
    /// Each key's own rate limits (with several keys; applied when it sets a request
    /// or token limit).
    pub per_key: ThrottleConfig,
    /// How JSON output is asked for (default [`StructuredOutput::Auto`]).
    pub structured_output: StructuredOutput,
    /// With `Auto`, the mode to start from instead of the provider's best (the one
    /// an earlier session of a resumed run settled on).
    pub structured_output_start: Option<StructuredOutput>,
    /// The largest response body read (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: usize,
    /// The token limit of requests that set none, and the cap of those asking for
    /// more.
    pub max_tokens: Option<u32>,
    /// The temperature of requests that set none.
    pub temperature: Option<f32>,
    /// Whether requests carry prompt caching hints (default on): Anthropic's
    /// `cache_control` breakpoints, and OpenAI's `prompt_cache_key` where the client
    /// sends it. Off, neither is sent, so nothing is written to a cache either.
    pub prompt_caching: bool,
}

impl Endpoint {
    /// `model` on `provider` at its own base URL, without keys, with the default
    /// timeouts, retries and pacing.
    pub fn new(provider: Provider, model: impl Into<String>) -> Self {
        Endpoint {
            provider,
            model: model.into(),
            base_url: None,
            api_keys: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_retries: RetryPolicy::default().max_retries,
            pacing: ThrottleConfig::default(),
            per_key: ThrottleConfig::default(),
            structured_output: StructuredOutput::Auto,
            structured_output_start: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_tokens: None,
            temperature: None,
            prompt_caching: true,
        }
    }

    /// Another base URL than the provider's own.
    #[must_use]
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// Adds a key (with several, requests rotate through them).
    #[must_use]
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_keys.push(key.into());
        self
    }

    /// The whole-request deadline.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long to wait for a connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Retries of a request that failed in a way that may pass.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// How the endpoint as a whole is paced.
    #[must_use]
    pub fn pacing(mut self, pacing: ThrottleConfig) -> Self {
        self.pacing = pacing;
        self
    }

    /// How each key is paced (with several keys).
    #[must_use]
    pub fn per_key(mut self, per_key: ThrottleConfig) -> Self {
        self.per_key = per_key;
        self
    }

    /// How JSON output is asked for.
    #[must_use]
    pub fn structured_output(mut self, mode: StructuredOutput) -> Self {
        self.structured_output = mode;
        self
    }

    /// The largest response body read.
    #[must_use]
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// The token limit of requests that set none (and the cap of those asking for
    /// more).
    #[must_use]
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.max_tokens = Some(max_tokens);
        self
    }

    /// The temperature of requests that set none.
    #[must_use]
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = Some(temperature);
        self
    }

    /// Whether requests carry prompt caching hints (default on).
    #[must_use]
    pub fn prompt_caching(mut self, on: bool) -> Self {
        self.prompt_caching = on;
        self
    }

    /// An HTTP client for this endpoint's timeouts, keeping as many idle connections
    /// per host as `max_concurrency` (at least 16) so bursts do not reopen them. Share
    /// it between stacks through [`SharedParts`].
    pub fn http_client(&self, max_concurrency: usize) -> Result<reqwest::Client, BuildError> {
        reqwest::Client::builder()
            .pool_max_idle_per_host(max_concurrency.max(MIN_IDLE_CONNECTIONS))
            .connect_timeout(self.connect_timeout)
            .timeout(self.timeout)
            .build()
            .map_err(|e| BuildError::Client {
                message: error_chain(&e),
            })
    }

    /// The stack on a client and gauge of its own.
    pub fn build(&self) -> Result<ModelStack, BuildError> {
        self.build_with(&SharedParts::default())
    }

    /// The stack on `shared`'s HTTP client (or one of its own when it has none),
    /// counting requests that wait out a retry delay on `shared`'s gauge.
    pub fn build_with(&self, shared: &SharedParts) -> Result<ModelStack, BuildError> {
        let client = match &shared.client {
            Some(client) => client.clone(),
            None => self.http_client(0)?,
        };
        let mut structured = StructuredOutputState::new(self.provider, self.structured_output);
        if let Some(start) = self.structured_output_start {
            structured = structured.starting_at(start);
        }
        let parts = Parts {
            client: &client,
            structured: &structured,
        };
        let (base, key_pool) = match self.api_keys.as_slice() {
            [] => (self.client(None, &parts)?, None),
            [key] => (self.client(Some(key), &parts)?, None),
            keys => {
                let pool = Arc::new(KeyPool::new(self.per_key_clients(keys, &parts)?));
                (Arc::clone(&pool) as Arc<dyn ChatModel>, Some(pool))
            }
        };
        let throttle = Arc::new(Throttle::new(base, self.pacing));
        let mut model: Arc<dyn ChatModel> = Arc::clone(&throttle) as Arc<dyn ChatModel>;
        if self.max_tokens.is_some() || self.temperature.is_some() {
            model = Arc::new(Defaults {
                inner: model,
                max_tokens: self.max_tokens,
                temperature: self.temperature,
            });
        }
        if self.max_retries > 0 {
            let policy = RetryPolicy {
                max_retries: self.max_retries,
                ..RetryPolicy::default()
            };
            model = Arc::new(Retry::new(model, policy).parked(shared.parked.clone()));
        }
        Ok(ModelStack {
            model,
            key_pool,
            throttle,
            parked: shared.parked.clone(),
            structured,
        })
    }

    /// One client per key, each paced by the key's own limits when there are any.
    fn per_key_clients(
        &self,
        keys: &[ApiKey],
        parts: &Parts<'_>,
    ) -> Result<Vec<KeyedClient>, BuildError> {
        let limited =
            self.per_key.requests_per_minute.is_some() || self.per_key.tokens_per_minute.is_some();
        keys.iter()
            .map(|key| {
                let mut one = self.client(Some(key), parts)?;
                if limited {
                    one = Arc::new(Throttle::new(one, self.per_key));
                }
                Ok((key.clone(), one))
            })
            .collect()
    }

    /// The provider's client for one key.
    fn client(
        &self,
        key: Option<&ApiKey>,
        parts: &Parts<'_>,
    ) -> Result<Arc<dyn ChatModel>, BuildError> {
        match self.provider {
            Provider::Gemini => self.connect(Gemini::builder(), key, parts),
            Provider::Anthropic => {
                let builder = Anthropic::builder().prompt_caching(self.prompt_caching);
                self.connect(builder, key, parts)
            }
            Provider::Openai => {
                self.connect(self.cache_key(OpenAiCompatible::openai()), key, parts)
            }
            Provider::Deepseek => {
                self.connect(self.cache_key(OpenAiCompatible::deepseek()), key, parts)
            }
            Provider::Openrouter => {
                self.connect(self.cache_key(OpenAiCompatible::openrouter()), key, parts)
            }
            Provider::Local => self.connect(self.cache_key(OpenAiCompatible::local()), key, parts),
        }
    }

    /// Caching off withholds `prompt_cache_key`; on, the client's own default
    /// stands (only OpenAI's API gets it, as other servers may reject the field).
    fn cache_key(&self, builder: OpenAiCompatibleBuilder) -> OpenAiCompatibleBuilder {
        if self.prompt_caching {
            builder
        } else {
            builder.prompt_cache_key(false)
        }
    }

    /// The endpoint's settings on a provider's builder.
    fn connect<C: ChatClient>(
        &self,
        builder: ChatBuilder<C>,
        key: Option<&ApiKey>,
        parts: &Parts<'_>,
    ) -> Result<Arc<dyn ChatModel>, BuildError> {
        let mut builder = builder
            .model(&self.model)
            .timeout(self.timeout)
            .client(parts.client.clone())
            .max_response_bytes(self.max_response_bytes)
            .structured_output_state(parts.structured.clone());
        if let Some(url) = &self.base_url {
            builder = builder.base_url(url);
        }
        if let Some(key) = key {
            builder = builder.api_key(key.clone());
        }
        Ok(Arc::new(builder.build()?))
    }
}

/// What every client of one endpoint shares.
struct Parts<'a> {
    client: &'a reqwest::Client,
    structured: &'a StructuredOutputState,
}

/// An endpoint's generation defaults, applied to requests that do not set their own.
#[derive(Debug)]
struct Defaults {
    inner: Arc<dyn ChatModel>,
    max_tokens: Option<u32>,
    temperature: Option<f32>,
}

#[async_trait]
impl ChatModel for Defaults {
    async fn chat(&self, mut request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        request.max_tokens = match (request.max_tokens, self.max_tokens) {
            (Some(asked), Some(cap)) => Some(asked.min(cap)),
            (asked, cap) => asked.or(cap),
        };
        request.temperature = request.temperature.or(self.temperature);
        self.inner.chat(request).await
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        self.inner.probe().await
    }
}

/// What several stacks share: one HTTP client (one connection pool) and one gauge of
/// requests waiting out a retry delay (which a scheduler reads to start other work).
///
/// The default has no client (each stack builds its own) and a fresh gauge.
#[derive(Debug, Clone, Default)]
pub struct SharedParts {
    /// The HTTP client, when the stacks share one.
    pub client: Option<reqwest::Client>,
    /// Requests parked on a retry delay, across the stacks.
    pub parked: ParkedRequests,
}

impl SharedParts {
    /// Parts sharing `client` and a fresh gauge.
    pub fn new(client: reqwest::Client) -> Self {
        SharedParts {
            client: Some(client),
            parked: ParkedRequests::new(),
        }
    }
}

/// A built endpoint: the model to send requests to, and the middleware whose counters
/// a report shows.
#[derive(Clone)]
pub struct ModelStack {
    model: Arc<dyn ChatModel>,
    key_pool: Option<Arc<KeyPool>>,
    throttle: Arc<Throttle>,
    parked: ParkedRequests,
    structured: StructuredOutputState,
}

impl std::fmt::Debug for ModelStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStack")
            .field("model", &self.model.model_id())
            .field(
                "keys",
                &self.key_pool.as_ref().map_or(0, |p| p.stats().len()),
            )
            .finish_non_exhaustive()
    }
}

impl ModelStack {
    /// The top of the stack: retry, throttle, key pool, clients.
    pub fn model(&self) -> Arc<dyn ChatModel> {
        Arc::clone(&self.model)
    }

    /// The key pool, when the endpoint has several keys.
    pub fn key_pool(&self) -> Option<&Arc<KeyPool>> {
        self.key_pool.as_ref()
    }

    /// The endpoint's throttle.
    pub fn throttle(&self) -> &Arc<Throttle> {
        &self.throttle
    }

    /// The gauge of requests waiting out a retry delay.
    pub fn parked(&self) -> &ParkedRequests {
        &self.parked
    }

    /// Each key's counters (empty with fewer than two keys).
    pub fn key_stats(&self) -> Vec<KeyStats> {
        self.key_pool
            .as_ref()
            .map(|p| p.stats())
            .unwrap_or_default()
    }

    /// How the throttle's adaptive limit moved.
    pub fn throttle_stats(&self) -> ThrottleStats {
        self.throttle.stats()
    }

    /// The endpoint's structured output mode: the one in use now, and the steps down
    /// that led to it (shared by every client of the endpoint).
    pub fn structured_output(&self) -> &StructuredOutputState {
        &self.structured
    }
}

/// An embedding model endpoint (OpenAI-compatible `/embeddings` or Gemini
/// `batchEmbedContents`). [`build`](Self::build) gives the embedder behind the retry
/// middleware.
///
/// ```
/// use afterimage_providers::{EmbeddingEndpoint, Provider};
///
/// let endpoint = EmbeddingEndpoint::new(Provider::Gemini, "gemini-embedding-001");
/// assert_eq!(endpoint.texts_per_request(), 100);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddingEndpoint {
    /// The provider (any but [`Provider::Anthropic`], which has no embeddings API).
    pub provider: Provider,
    /// The embedding model.
    pub model: String,
    /// Another base URL than the provider's own.
    pub base_url: Option<String>,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// Texts per request, when not the provider's default.
    pub batch_size: Option<usize>,
    /// Retries of a request that failed in a way that may pass (default 5).
    pub max_retries: u32,
    /// The largest response body read (default [`DEFAULT_MAX_RESPONSE_BYTES`]).
    pub max_response_bytes: usize,
}

impl EmbeddingEndpoint {
    /// `model` on `provider` at its own base URL, without a key.
    pub fn new(provider: Provider, model: impl Into<String>) -> Self {
        EmbeddingEndpoint {
            provider,
            model: model.into(),
            base_url: None,
            api_key: None,
            batch_size: None,
            max_retries: RetryPolicy::default().max_retries,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }

    /// Another base URL than the provider's own.
    #[must_use]
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.base_url = Some(base_url.into());
        self
    }

    /// The key.
    #[must_use]
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Texts per request.
    #[must_use]
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Retries of a request that failed in a way that may pass.
    #[must_use]
    pub fn max_retries(mut self, max_retries: u32) -> Self {
        self.max_retries = max_retries;
        self
    }

    /// The texts sent per request: the configured batch size, else the provider's
    /// default ([`GEMINI_EMBEDDING_BATCH`] or [`OPENAI_EMBEDDING_BATCH`]).
    pub fn texts_per_request(&self) -> usize {
        self.batch_size.unwrap_or(match self.provider {
            Provider::Gemini => GEMINI_EMBEDDING_BATCH,
            _ => OPENAI_EMBEDDING_BATCH,
        })
    }

    /// The embedder on a client of its own.
    pub fn build(&self) -> Result<Arc<dyn Embedder>, BuildError> {
        self.build_with(&SharedParts::default())
    }

    /// The embedder on `shared`'s HTTP client (or one of its own), behind the retry
    /// middleware. Settings are checked on the first request.
    pub fn build_with(&self, shared: &SharedParts) -> Result<Arc<dyn Embedder>, BuildError> {
        let inner = match self.provider {
            Provider::Anthropic => {
                return Err(BuildError::NoEmbeddings {
                    provider: self.provider.name(),
                });
            }
            Provider::Gemini => self.gemini(shared),
            _ => self.openai(shared),
        };
        let policy = RetryPolicy {
            max_retries: self.max_retries,
            ..RetryPolicy::default()
        };
        Ok(Arc::new(RetryEmbedder::new(inner, policy)))
    }

    fn gemini(&self, shared: &SharedParts) -> Arc<dyn Embedder> {
        let mut embedder = GeminiEmbedder::new(self.key(), self.model.clone())
            .max_response_bytes(self.max_response_bytes);
        if let Some(client) = &shared.client {
            embedder = embedder.client(client.clone());
        }
        if let Some(url) = &self.base_url {
            embedder = embedder.base_url(url.clone());
        }
        if let Some(n) = self.batch_size {
            embedder = embedder.batch_size(n);
        }
        Arc::new(embedder)
    }

    fn openai(&self, shared: &SharedParts) -> Arc<dyn Embedder> {
        let url = self
            .base_url
            .clone()
            .unwrap_or_else(|| self.provider.default_base_url().to_owned());
        let mut embedder = OpenAiEmbedder::new(self.key(), self.model.clone())
            .base_url(url)
            .max_response_bytes(self.max_response_bytes);
        if let Some(client) = &shared.client {
            embedder = embedder.client(client.clone());
        }
        if let Some(n) = self.batch_size {
            embedder = embedder.batch_size(n);
        }
        Arc::new(embedder)
    }

    /// The key; an empty one sends none (local servers).
    fn key(&self) -> ApiKey {
        self.api_key.clone().unwrap_or_else(|| ApiKey::new(""))
    }
}
