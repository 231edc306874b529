//! Embedding clients: OpenAI-compatible `/embeddings` and Gemini `batchEmbedContents`,
//! each an [`Embedder`].

use std::marker::PhantomData;
use std::sync::OnceLock;
use std::time::Duration;

use afterimage_core::{ApiKey, Embedder, ProviderError, Usage};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::http::{Auth, Http, HttpSettings};
use crate::{BuildError, GEMINI_BASE_URL, OPENAI_BASE_URL};

/// Texts per OpenAI embeddings request unless told otherwise.
pub const OPENAI_EMBEDDING_BATCH: usize = 96;
/// Texts per Gemini `batchEmbedContents` request unless told otherwise (its maximum).
pub const GEMINI_EMBEDDING_BATCH: usize = 100;

/// The connection settings of an embedder, and the client built from them on first use.
#[derive(Clone)]
struct Lazy {
    settings: HttpSettings,
    auth: Auth,
    http: OnceLock<Result<Http, BuildError>>,
}

impl std::fmt::Debug for Lazy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.settings.fmt(f)
    }
}

impl Lazy {
    fn new(base_url: &str, key: ApiKey, auth: Auth, provider: &'static str) -> Self {
        let mut settings = HttpSettings::new(base_url);
        settings.provider = provider;
        // A local server needs no key: an empty one sends none.
        settings.key = (!key.expose().is_empty()).then_some(key);
        Lazy {
            settings,
            auth,
            http: OnceLock::new(),
        }
    }

    /// Changes the settings (and forgets a client built from the old ones).
    fn update(mut self, change: impl FnOnce(&mut HttpSettings)) -> Self {
        change(&mut self.settings);
        self.http = OnceLock::new();
        self
    }

    fn get(&self) -> Result<&Http, BuildError> {
        self.http
            .get_or_init(|| self.settings.clone().build(self.auth))
            .as_ref()
            .map_err(Clone::clone)
    }

    fn http(&self) -> Result<&Http, ProviderError> {
        self.get().map_err(|e| ProviderError::Other {
            message: format!("cannot build the embedding client: {e}"),
            retryable: false,
        })
    }
}

/// An embedding client over HTTP; `W` is the wire format ([`OpenAiWire`] or
/// [`GeminiWire`]). Use it as [`OpenAiEmbedder`] or [`GeminiEmbedder`].
///
/// Inputs go in batches of [`batch_size`](Self::batch_size), one request after the
/// other; vectors come back in input order. Cloning shares the connection pool once
/// the client is built (on the first request, or by [`check`](Self::check)).
#[derive(Debug, Clone)]
pub struct HttpEmbedder<W> {
    http: Lazy,
    model: String,
    batch_size: usize,
    wire: PhantomData<W>,
}

/// Embeddings from an OpenAI-compatible `POST {base_url}/embeddings` (OpenAI, vLLM,
/// Ollama, LiteLLM, ...).
pub type OpenAiEmbedder = HttpEmbedder<OpenAiWire>;

/// Embeddings from Gemini's `POST {base_url}/models/{model}:batchEmbedContents`, the
/// key in the `x-goog-api-key` header as the chat client sends it.
pub type GeminiEmbedder = HttpEmbedder<GeminiWire>;

/// An embeddings wire format: [`OpenAiWire`] or [`GeminiWire`] (sealed: the formats
/// live in this crate).
pub trait Wire: sealed::Batch + Send + Sync + std::fmt::Debug + 'static {}

impl Wire for OpenAiWire {}
impl Wire for GeminiWire {}

// The batch method takes the crate's HTTP client. Outside this crate the trait can
// be named (as a bound) but neither implemented nor called, which is the point.
#[allow(private_interfaces)]
mod sealed {
    use afterimage_core::{ProviderError, Usage};

    use crate::http::Http;

    /// How one batch of texts travels to an embeddings API and back.
    #[async_trait::async_trait]
    pub trait Batch {
        /// A base URL as the API needs it (with its version segment).
        fn versioned(base_url: String) -> String {
            base_url
        }

        /// Embeds `texts` (one batch) with `model` over `http`, in input order, with
        /// the tokens the API billed (zero where it reports none).
        async fn embed_batch(
            model: &str,
            http: &Http,
            texts: &[String],
        ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError>;
    }
}

impl OpenAiEmbedder {
    /// An embedder for `model` at [`OPENAI_BASE_URL`](crate::OPENAI_BASE_URL) (change it
    /// with [`base_url`](Self::base_url), ending before `/embeddings`), in batches of
    /// [`OPENAI_EMBEDDING_BATCH`]; an empty key sends no `Authorization` header (local
    /// servers).
    pub fn new(api_key: impl Into<ApiKey>, model: impl Into<String>) -> Self {
        HttpEmbedder {
            http: Lazy::new(OPENAI_BASE_URL, api_key.into(), Auth::Bearer, "openai"),
            model: model.into(),
            batch_size: OPENAI_EMBEDDING_BATCH,
            wire: PhantomData,
        }
    }
}

impl GeminiEmbedder {
    /// An embedder for `model` (`gemini-embedding-001`, with or without `models/`) at
    /// [`GEMINI_BASE_URL`](crate::GEMINI_BASE_URL) (change it with
    /// [`base_url`](Self::base_url), ending in `/v1beta`), in batches of
    /// [`GEMINI_EMBEDDING_BATCH`].
    pub fn new(api_key: impl Into<ApiKey>, model: impl Into<String>) -> Self {
        let model = model.into();
        let model = model.strip_prefix("models/").unwrap_or(&model).to_owned();
        HttpEmbedder {
            http: Lazy::new(
                GEMINI_BASE_URL,
                api_key.into(),
                Auth::Header("x-goog-api-key"),
                "gemini",
            ),
            model,
            batch_size: GEMINI_EMBEDDING_BATCH,
            wire: PhantomData,
        }
    }
}

impl<W: Wire> HttpEmbedder<W> {
    /// Another base URL, like the chat client's of the same API (for Gemini, a root
    /// without a version segment gets `/v1beta`).
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        let base_url = <W as sealed::Batch>::versioned(base_url.into());
        self.http = self.http.update(|s| s.base_url = base_url);
        self
    }

    /// The largest response body read (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`](crate::DEFAULT_MAX_RESPONSE_BYTES)).
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.http = self.http.update(|s| s.max_response_bytes = bytes);
        self
    }

    /// Texts per request (at least 1).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The whole-request deadline (default 600 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.http = self.http.update(|s| s.timeout = timeout);
        self
    }

    /// Uses this client (and its connection pool) instead of building one.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.http = self.http.update(|s| s.client = Some(client));
        self
    }

    /// Checks the settings (base URL, key) and builds the client now rather than on
    /// the first request.
    pub fn check(&self) -> Result<(), BuildError> {
        if self.model.trim().is_empty() {
            return Err(BuildError::MissingModel);
        }
        self.http.get().map(|_| ())
    }

    /// The embedding model (for Gemini, without `models/`).
    pub fn model(&self) -> &str {
        &self.model
    }
}

#[async_trait]
impl<W: Wire> Embedder for HttpEmbedder<W> {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(self.embed_billed(texts).await?.0)
    }

    async fn embed_billed(
        &self,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError> {
        let http = self.http.http()?;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut usage = Usage::default();
        for batch in texts.chunks(self.batch_size) {
            let (batch, billed) =
                <W as sealed::Batch>::embed_batch(&self.model, http, batch).await?;
            vectors.extend(batch);
            usage += billed;
        }
        Ok((vectors, usage))
    }
}

/// The OpenAI `/embeddings` format.
#[derive(Debug, Clone, Copy)]
pub struct OpenAiWire;

#[allow(private_interfaces)]
#[async_trait]
impl sealed::Batch for OpenAiWire {
    async fn embed_batch(
        model: &str,
        http: &Http,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError> {
        let body = OpenAiRequest {
            model,
            input: texts,
        };
        let text = http.post_json("/embeddings", &body, model).await?;
        let reply: OpenAiReply = http.parse_json(&text, "an embeddings response")?;
        let mut data = reply.data;
        // Servers that leave out `index` answer in input order.
        data.sort_by_key(|d| d.index);
        let in_order = data
            .iter()
            .enumerate()
            .all(|(i, d)| d.index.is_none_or(|index| index == i));
        if data.len() != texts.len() || !in_order {
            return Err(http.malformed(
                format!(
                    "asked for {} embeddings, got {} (indices must be 0..{})",
                    texts.len(),
                    data.len(),
                    texts.len()
                ),
                &text,
            ));
        }
        let billed = Usage::new(reply.usage.map_or(0, |u| u.prompt_tokens), 0);
        Ok((data.into_iter().map(|d| d.embedding).collect(), billed))
    }
}

#[derive(Serialize)]
struct OpenAiRequest<'a> {
    model: &'a str,
    input: &'a [String],
}

#[derive(Deserialize)]
struct OpenAiReply {
    data: Vec<OpenAiEmbedding>,
    /// What the request was billed; servers that report nothing bill nothing here.
    #[serde(default)]
    usage: Option<OpenAiUsage>,
}

#[derive(Deserialize)]
struct OpenAiUsage {
    #[serde(default, deserialize_with = "crate::usage::count")]
    prompt_tokens: u64,
}

#[derive(Deserialize)]
struct OpenAiEmbedding {
    embedding: Vec<f32>,
    #[serde(default)]
    index: Option<usize>,
}

/// The Gemini `batchEmbedContents` format.
#[derive(Debug, Clone, Copy)]
pub struct GeminiWire;

#[allow(private_interfaces)]
#[async_trait]
impl sealed::Batch for GeminiWire {
    fn versioned(base_url: String) -> String {
        crate::http::with_version(&base_url, crate::gemini::GEMINI_VERSION)
    }

    async fn embed_batch(
        model: &str,
        http: &Http,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError> {
        let name = format!("models/{}", model);
        let body = GeminiRequest {
            requests: texts
                .iter()
                .map(|text| GeminiEmbedRequest {
                    model: &name,
                    content: GeminiContent {
                        parts: [GeminiPart { text }],
                    },
                })
                .collect(),
        };
        let path = format!("/models/{}:batchEmbedContents", model);
        let text = http.post_json(&path, &body, model).await?;
        let reply: GeminiReply = http.parse_json(&text, "a batchEmbedContents response")?;
        if reply.embeddings.len() != texts.len() {
            return Err(http.malformed(
                format!(
                    "asked for {} embeddings, got {}",
                    texts.len(),
                    reply.embeddings.len()
                ),
                &text,
            ));
        }
        // batchEmbedContents reports no token counts.
        let vectors = reply.embeddings.into_iter().map(|e| e.values).collect();
        Ok((vectors, Usage::default()))
    }
}

#[derive(Serialize)]
struct GeminiRequest<'a> {
    requests: Vec<GeminiEmbedRequest<'a>>,
}

#[derive(Serialize)]
struct GeminiEmbedRequest<'a> {
    model: &'a str,
    content: GeminiContent<'a>,
}

#[derive(Serialize)]
struct GeminiContent<'a> {
    parts: [GeminiPart<'a>; 1],
}

#[derive(Serialize)]
struct GeminiPart<'a> {
    text: &'a str,
}

#[derive(Deserialize)]
struct GeminiReply {
    #[serde(default)]
    embeddings: Vec<GeminiEmbedding>,
}

#[derive(Deserialize)]
struct GeminiEmbedding {
    values: Vec<f32>,
}
