//! What every provider shares: one pooled HTTP client, sending a request, and turning
//! HTTP and transport failures into [`ProviderError`]s a caller can act on.

use std::time::{Duration, SystemTime};

use afterimage_core::{ApiKey, Gauge, Metrics, ProviderError, RateLimitHint, snippet};
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use reqwest::{RequestBuilder, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::BuildError;

/// Long enough for a reasoning model writing thousands of tokens; the OpenAI SDKs use
/// the same default. Retry middleware can impose a tighter per-request deadline.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// A server that has not accepted the TCP connection in this long is not going to.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// High concurrency runs keep hundreds of requests in flight against one host; the
/// default idle cap would close and reopen connections between bursts.
const POOL_MAX_IDLE_PER_HOST: usize = 1024;
/// How much of an unexpected body an error quotes.
pub(crate) const SNIPPET_CHARS: usize = 200;
/// The largest response body read unless told otherwise: far above any chat answer
/// or embeddings batch, far below what would hurt the process.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// How many of the models an endpoint lists an error names.
const LISTED_MODELS: usize = 10;

/// What a chat client tells apart on a 404: where its endpoint lists models, and
/// what a base URL for its provider looks like.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NotFoundHelp {
    /// The model list, after the base URL.
    pub(crate) models_path: &'static str,
    /// A base URL for the provider, as an error suggests it.
    pub(crate) url_hint: &'static str,
}

/// How a provider sends its key.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth {
    /// `Authorization: Bearer <key>`.
    Bearer,
    /// The key as the whole value of this header.
    Header(&'static str),
}

/// The transport settings every provider builder collects.
#[derive(Clone)]
pub(crate) struct HttpSettings {
    pub(crate) base_url: String,
    pub(crate) key: Option<ApiKey>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) client: Option<reqwest::Client>,
    /// Headers sent with every request besides the key (Anthropic's `anthropic-version`).
    pub(crate) headers: Vec<(HeaderName, HeaderValue)>,
    /// The largest response body read.
    pub(crate) max_response_bytes: usize,
    /// For chat clients: how to tell a wrong path from a wrong model on a 404.
    pub(crate) not_found: Option<NotFoundHelp>,
    /// The provider's name in the request metrics (`openai`, `gemini`, ...).
    pub(crate) provider: &'static str,
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("shared_client", &self.client.is_some())
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

impl HttpSettings {
    pub(crate) fn new(base_url: impl Into<String>) -> Self {
        HttpSettings {
            base_url: base_url.into(),
            key: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            client: None,
            headers: Vec::new(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            not_found: None,
            provider: "local",
        }
    }

    pub(crate) fn build(self, auth: Auth) -> Result<Http, BuildError> {
        let base_url = validate_base_url(&self.base_url, self.key.as_ref())?;
        let auth = match &self.key {
            None => None,
            Some(key) => Some(auth_header(auth, key)?),
        };
        // A shared client keeps its own connect timeout; ours is only known when we
        // build the client ourselves.
        let (client, connect_timeout) = match self.client {
            Some(client) => (client, None),
            None => {
                let client = reqwest::Client::builder()
                    .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
                    .connect_timeout(self.connect_timeout)
                    .timeout(self.timeout)
                    .user_agent(concat!("afterimage/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| BuildError::Client {
                        message: error_chain(&e),
                    })?;
                (client, Some(self.connect_timeout))
            }
        };
        Ok(Http {
            client,
            base_url,
            key: self.key,
            auth,
            headers: self.headers,
            timeout: self.timeout,
            connect_timeout,
            max_response_bytes: self.max_response_bytes.max(1),
            not_found: self.not_found,
            counts: RequestCounts::new(self.provider),
        })
    }
}

fn auth_header(auth: Auth, key: &ApiKey) -> Result<(HeaderName, HeaderValue), BuildError> {
    let (name, value) = match auth {
        Auth::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
        Auth::Header(name) => (HeaderName::from_static(name), key.expose().to_owned()),
    };
    let mut value = HeaderValue::from_str(&value).map_err(|_| BuildError::InvalidApiKey)?;
    // Keeps the value out of hyper's and reqwest's Debug output and HTTP/2 indexing.
    value.set_sensitive(true);
    Ok((name, value))
}

/// Checks a base URL and returns it without a trailing slash.
fn validate_base_url(raw: &str, key: Option<&ApiKey>) -> Result<String, BuildError> {
    let shown = match key {
        Some(key) => key.redact(raw),
        None => raw.to_owned(),
    };
    let invalid = |reason: &str| BuildError::InvalidBaseUrl {
        url: shown.clone(),
        reason: reason.to_owned(),
    };
    let url = Url::parse(raw.trim()).map_err(|e| invalid(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    // Paths are appended to the base, so a query or fragment would end up in the
    // middle of every URL; and keys do not belong in URLs, where errors print them.
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query string or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "it must not contain credentials (use `.api_key(...)`)",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// One provider's connection: the pooled client, its base URL and its key.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base_url: String,
    key: Option<ApiKey>,
    auth: Option<(HeaderName, HeaderValue)>,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    connect_timeout: Option<Duration>,
    max_response_bytes: usize,
    not_found: Option<NotFoundHelp>,
    counts: RequestCounts,
}

/// The provider's request metrics: `afterimage_requests_total` by outcome and
/// `afterimage_requests_in_flight`.
#[derive(Debug, Clone)]
struct RequestCounts {
    provider: &'static str,
    in_flight: Gauge,
}

impl RequestCounts {
    fn new(provider: &'static str) -> Self {
        RequestCounts {
            provider,
            in_flight: Metrics::global().gauge(
                "afterimage_requests_in_flight",
                "HTTP requests to model providers awaiting their answer.",
                &[("provider", provider)],
            ),
        }
    }

    /// Counts a request that ended: `ok`, an error's kind, or `cancelled`.
    fn ended(&self, status: &str) {
        Metrics::global()
            .counter(
                "afterimage_requests_total",
                "HTTP requests to model providers, by provider and outcome (ok, an error kind such as rate_limited or server_error, or cancelled).",
                &[("provider", self.provider), ("status", status)],
            )
            .inc();
    }
}

/// A request in flight: counted as cancelled if dropped before it ends.
struct Sending<'a> {
    counts: &'a RequestCounts,
    ended: bool,
}

impl<'a> Sending<'a> {
    fn start(counts: &'a RequestCounts) -> Self {
        counts.in_flight.inc();
        Sending {
            counts,
            ended: false,
        }
    }

    fn end<T>(mut self, outcome: &Result<T, ProviderError>) {
        self.ended = true;
        self.counts
            .ended(outcome.as_ref().map_or_else(ProviderError::kind, |_| "ok"));
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.counts.in_flight.dec();
        if !self.ended {
            self.counts.ended("cancelled");
        }
    }
}

/// An HTTP answer, read within the size limit.
struct Answer {
    status: reqwest::StatusCode,
    headers: HeaderMap,
    body: String,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Http {
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// This connection with another limit on the bodies it reads.
    pub(crate) fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes.max(1);
        self
    }

    /// The full URL of `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs `body` as JSON to `{base}{path}` and returns the body of a 2xx answer.
    pub(crate) async fn post_json<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        model: &str,
    ) -> Result<String, ProviderError> {
        self.post_json_hinted(path, body, model)
            .await
            .map(|(text, _)| text)
    }

    /// Like [`post_json`](Self::post_json), with what the rate-limit headers said.
    /// A chat client's 404 is told apart into a wrong path or a wrong model.
    pub(crate) async fn post_json_hinted<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        model: &str,
    ) -> Result<(String, Option<RateLimitHint>), ProviderError> {
        let url = self.url(path);
        tracing::debug!(%url, model, "POST");
        self.execute(self.client.post(&url).json(body), &url, model, true)
            .await
            .map(|(text, headers)| (text, rate_limit_hint(&headers)))
    }

    /// GETs `{base}{path}` and returns the body of a 2xx answer; `diagnose` tells a
    /// 404 apart as a chat request's is.
    pub(crate) async fn get(
        &self,
        path: &str,
        model: &str,
        diagnose: bool,
    ) -> Result<String, ProviderError> {
        let url = self.url(path);
        tracing::debug!(%url, model, "GET");
        self.execute(self.client.get(&url), &url, model, diagnose)
            .await
            .map(|(text, _)| text)
    }

    /// Sends `method` to `target` (a path under the base URL, or a URL on its host)
    /// with extra `headers` and an optional raw body and its content type; the body
    /// and headers of a 2xx answer. A 404 is not told apart: batch endpoints are not
    /// chat endpoints.
    pub(crate) async fn send_raw(
        &self,
        method: reqwest::Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
        model: &str,
    ) -> Result<(String, HeaderMap), ProviderError> {
        let url = self.target_url(target)?;
        tracing::debug!(%url, model, %method, "batch request");
        let mut request = self.client.request(method, &url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        self.execute(request, &url, model, false).await
    }

    /// `scheme://host[:port]` of the base URL.
    pub(crate) fn origin(&self) -> &str {
        let after_scheme = self.base_url.find("://").map_or(0, |i| i + 3);
        let end = self.base_url[after_scheme..]
            .find('/')
            .map_or(self.base_url.len(), |i| after_scheme + i);
        &self.base_url[..end]
    }

    /// The URL of `target`: a path is appended to the base URL; a full URL must be on
    /// the base URL's host, since the key goes with every request.
    fn target_url(&self, target: &str) -> Result<String, ProviderError> {
        if !(target.starts_with("http://") || target.starts_with("https://")) {
            return Ok(self.url(target));
        }
        let origin = self.origin();
        let rest = target.strip_prefix(origin).unwrap_or("-");
        if rest.is_empty() || rest.starts_with('/') || rest.starts_with('?') {
            return Ok(target.to_owned());
        }
        Err(ProviderError::Other {
            message: format!(
                "the server pointed to {}, which is not on the base URL's host {origin}; the API key is only sent to that host",
                self.redact(target)
            ),
            retryable: false,
        })
    }

    /// A short, non-secret name of the key (empty without one).
    pub(crate) fn key_fingerprint(&self) -> String {
        self.key
            .as_ref()
            .map(ApiKey::fingerprint)
            .unwrap_or_default()
    }

    /// [`exchange`](Self::exchange), counted in the request metrics.
    async fn execute(
        &self,
        request: RequestBuilder,
        url: &str,
        model: &str,
        diagnose: bool,
    ) -> Result<(String, HeaderMap), ProviderError> {
        let sending = Sending::start(&self.counts);
        let outcome = self.exchange(request, url, model, diagnose).await;
        sending.end(&outcome);
        outcome
    }

    /// Sends the request; a 2xx body with its headers, or the error it means.
    async fn exchange(
        &self,
        request: RequestBuilder,
        url: &str,
        model: &str,
        diagnose: bool,
    ) -> Result<(String, HeaderMap), ProviderError> {
        let answer = self.send(request, url).await?;
        if answer.status.is_success() {
            return Ok((answer.body, answer.headers));
        }
        // Servers echo keys back in error bodies ("Incorrect API key provided: sk-...").
        let body = self.redact(&answer.body);
        let status = answer.status.as_u16();
        let error = classify(
            status,
            &answer.headers,
            &body,
            model,
            url,
            SystemTime::now(),
        );
        tracing::debug!(%url, status, kind = error.kind(), "request failed");
        match self.not_found {
            Some(help) if diagnose && status == 404 => {
                let from_api = parse_error_body(&body).message.is_some();
                Err(self.tell_404_apart(error, help, url, model, from_api).await)
            }
            _ => Err(error),
        }
    }

    /// Sends `request` and reads the answer, at most `max_response_bytes` of it.
    async fn send(&self, request: RequestBuilder, url: &str) -> Result<Answer, ProviderError> {
        // Per request, so that the timeout holds with a shared client too.
        let mut request = request.timeout(self.timeout);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let limit = self.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(self.too_large(url));
        }
        let mut bytes = Vec::new();
        // Chunk by chunk, so a body without a length (or with a false one) stops
        // at the limit instead of filling memory.
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e, url))?
        {
            if bytes.len() + chunk.len() > limit {
                return Err(self.too_large(url));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        })
    }

    fn too_large(&self, url: &str) -> ProviderError {
        ProviderError::Other {
            message: format!(
                "the response from {} is larger than the {} limit; raise `max_response_bytes` (`model.max_response_bytes` in a config) if answers this large are expected",
                self.redact(url),
                show_bytes(self.max_response_bytes)
            ),
            retryable: false,
        }
    }

    /// A 404 from `url`: a wrong model when the endpoint lists models without ours, a
    /// wrong base URL when it lists none (unless the 404 itself, from the API, named
    /// the model).
    async fn tell_404_apart(
        &self,
        error: ProviderError,
        help: NotFoundHelp,
        url: &str,
        model: &str,
        from_api: bool,
    ) -> ProviderError {
        let ProviderError::ModelNotFound { message, .. } = &error else {
            return error;
        };
        let listing = self.url(help.models_path);
        // Sent directly: a failed listing is an answer here, not an error to tell
        // apart again.
        let models = match self.send(self.client.get(&listing), &listing).await {
            Ok(answer) if answer.status.is_success() => model_names(&answer.body),
            _ => None,
        };
        let url = self.redact(url);
        match models {
            Some(models) if models.iter().any(|m| m == model) => ProviderError::EndpointNotFound {
                url,
                message: format!(
                    "{message}; the server lists model `{model}`, so the path is wrong: a base URL for this provider looks like {}",
                    help.url_hint
                ),
            },
            Some(models) => ProviderError::ModelNotFound {
                model: model.to_owned(),
                message: format!(
                    "{url} answered 404 and the server does not list `{model}`; it lists {}",
                    list_some(&models)
                ),
            },
            None if from_api && message.contains(model) => error,
            None => ProviderError::EndpointNotFound {
                url,
                message: format!(
                    "{message}; nothing lists models at {} either, so the base URL is wrong: a base URL for this provider looks like {}",
                    self.redact(&listing),
                    help.url_hint
                ),
            },
        }
    }

    /// Parses a 2xx body, or says what was wrong with it; `what` names the expected
    /// document ("a chat completion").
    pub(crate) fn parse_json<T: DeserializeOwned>(
        &self,
        body: &str,
        what: &str,
    ) -> Result<T, ProviderError> {
        serde_json::from_str(body)
            .map_err(|e| self.malformed(format!("expected {what}: {e}"), body))
    }

    /// A [`ProviderError::MalformedResponse`] quoting the start of `body`.
    pub(crate) fn malformed(&self, message: impl Into<String>, body: &str) -> ProviderError {
        ProviderError::MalformedResponse {
            message: self.redact(&message.into()),
            snippet: snippet(&self.redact(body), SNIPPET_CHARS),
        }
    }

    /// `text` with the key replaced, safe to put in an error.
    pub(crate) fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(key) => key.redact(text),
            None => text.to_owned(),
        }
    }

    fn transport_error(&self, error: &reqwest::Error, url: &str) -> ProviderError {
        let message = self.redact(&cause_chain(error));
        if error.is_timeout() {
            // A connect timeout means a slow or black-holed host, which may recover,
            // so it stays a retryable timeout rather than "unreachable".
            let after = match self.connect_timeout {
                Some(connect) if error.is_connect() => connect,
                _ => self.timeout,
            };
            ProviderError::Timeout { after }
        } else if error.is_connect() {
            ProviderError::Unreachable {
                url: self.redact(url),
                message,
            }
        } else {
            ProviderError::Transport { message }
        }
    }
}

/// A byte count as people read limits: `16 MiB`, `512 KiB`, `1000 bytes`.
fn show_bytes(bytes: usize) -> String {
    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else if bytes >= KIB && bytes.is_multiple_of(KIB) {
        format!("{} KiB", bytes / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// The model names in a model list: OpenAI's and Anthropic's `data[].id`, Gemini's
/// `models[].name` (without `models/`), Ollama's `models[].model`. `None` when the
/// body is no model list at all.
fn model_names(body: &str) -> Option<Vec<String>> {
    let value: Value = serde_json::from_str(body).ok()?;
    let items = value
        .get("data")
        .or_else(|| value.get("models"))
        .and_then(Value::as_array)?;
    let names = items
        .iter()
        .filter_map(|item| {
            ["id", "name", "model"]
                .iter()
                .find_map(|key| item.get(*key).and_then(Value::as_str))
        })
        .map(|name| name.strip_prefix("models/").unwrap_or(name).to_owned())
        .collect();
    Some(names)
}

/// Up to [`LISTED_MODELS`] names, and how many more there are.
fn list_some(models: &[String]) -> String {
    if models.is_empty() {
        return "no models".to_owned();
    }
    let shown: Vec<String> = models
        .iter()
        .take(LISTED_MODELS)
        .map(|m| format!("`{m}`"))
        .collect();
    let mut text = shown.join(", ");
    if models.len() > LISTED_MODELS {
        text.push_str(&format!(" and {} more", models.len() - LISTED_MODELS));
    }
    text
}

/// `base` with the API version segment `version` appended, unless its last path
/// segment already is one (`v1`, `v1beta`, `v1alpha`, `v2`): users write a server's
/// root (`http://host:4000`, `http://gw/anthropic`) as often as the versioned URL.
pub(crate) fn with_version(base: &str, version: &str) -> String {
    let trimmed = base.trim().trim_end_matches('/');
    let Ok(url) = Url::parse(trimmed) else {
        return base.to_owned();
    };
    let last = url.path_segments().and_then(|mut s| s.next_back());
    if last.is_some_and(is_version_segment) {
        return trimmed.to_owned();
    }
    format!("{trimmed}/{version}")
}

fn is_version_segment(segment: &str) -> bool {
    segment.strip_prefix('v').is_some_and(|rest| {
        rest.starts_with(|c: char| c.is_ascii_digit())
            && rest.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// The error's causes joined by `: `, without reqwest's top line (which repeats the
/// URL that [`ProviderError::Unreachable`] already names).
fn cause_chain(error: &reqwest::Error) -> String {
    match std::error::Error::source(error) {
        Some(source) => error_chain(source),
        None => error.to_string(),
    }
}

pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Many error types repeat their source in their own message.
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// What an error body says, in the union of the shapes OpenAI, Gemini and the
/// OpenAI-compatible servers (vLLM, Ollama, llama.cpp, FastAPI apps) use.
#[derive(Debug, Default, PartialEq)]
struct ErrorBody {
    /// The human-readable message.
    message: Option<String>,
    /// Machine-readable codes: OpenAI `code` and `type`, Google `status` and
    /// `ErrorInfo.reason`.
    codes: Vec<String>,
    /// Google's `RetryInfo.retryDelay`.
    retry_delay: Option<Duration>,
}

impl ErrorBody {
    fn has_code(&self, code: &str) -> bool {
        self.codes.iter().any(|c| c.eq_ignore_ascii_case(code))
    }
}

fn parse_error_body(body: &str) -> ErrorBody {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return ErrorBody::default();
    };
    // Google's streaming endpoints wrap the error in a one-element array.
    let value = match value {
        Value::Array(items) => items.into_iter().next().unwrap_or(Value::Null),
        other => other,
    };
    let error = value.get("error");
    let fields = match error {
        Some(inner) if inner.is_object() => inner,
        _ => &value,
    };
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let message = text(fields.get("message"))
        .or_else(|| text(error))
        .or_else(|| text(value.get("detail")))
        .or_else(|| validation_errors(value.get("detail")))
        .or_else(|| text(value.get("message")));
    let mut parsed = ErrorBody {
        message,
        ..ErrorBody::default()
    };
    for key in ["code", "type", "status"] {
        if let Some(code) = text(fields.get(key)) {
            parsed.codes.push(code);
        }
    }
    let details = fields.get("details").and_then(Value::as_array);
    for detail in details.into_iter().flatten() {
        if let Some(reason) = text(detail.get("reason")) {
            parsed.codes.push(reason);
        }
        let is_retry_info = detail
            .get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"));
        if is_retry_info {
            parsed.retry_delay = detail
                .get("retryDelay")
                .and_then(Value::as_str)
                .and_then(parse_proto_duration);
        }
    }
    parsed
}

/// FastAPI's (pydantic's) list of validation errors, as `loc: msg` lines joined by
/// `; ` (`body.response_format.type: Input should be 'text' or 'json_object'`).
fn validation_errors(detail: Option<&Value>) -> Option<String> {
    let items = detail?.as_array()?;
    let lines: Vec<String> = items
        .iter()
        .filter_map(|item| {
            let msg = item.get("msg").and_then(Value::as_str)?;
            let loc: Vec<String> = item
                .get("loc")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|part| match part {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect();
            Some(if loc.is_empty() {
                msg.to_owned()
            } else {
                format!("{}: {msg}", loc.join("."))
            })
        })
        .collect();
    (!lines.is_empty()).then(|| lines.join("; "))
}

/// A protobuf JSON duration: decimal seconds with an `s` suffix (`"30s"`, `"1.5s"`).
fn parse_proto_duration(text: &str) -> Option<Duration> {
    let seconds = text.trim().strip_suffix('s')?.parse::<f64>().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The wait a 429 asks for: `retry-after-ms` (OpenAI), then `retry-after` in seconds
/// or as an HTTP date.
/// The `x-ratelimit-*` headers OpenAI and many compatible servers send, if any.
pub(crate) fn rate_limit_hint(headers: &HeaderMap) -> Option<RateLimitHint> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let number = |name: &str| text(name).and_then(|v| v.parse::<u64>().ok());
    let hint = RateLimitHint {
        remaining_requests: number("x-ratelimit-remaining-requests"),
        reset_requests: text("x-ratelimit-reset-requests").and_then(go_duration),
        remaining_tokens: number("x-ratelimit-remaining-tokens"),
        reset_tokens: text("x-ratelimit-reset-tokens").and_then(go_duration),
    };
    (hint != RateLimitHint::default()).then_some(hint)
}

/// Durations as OpenAI writes them: `1s`, `6m0s`, `20ms`, `1h2m3.5s`.
fn go_duration(text: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = text;
    while !rest.is_empty() {
        let split = rest.find(|c: char| c.is_ascii_alphabetic())?;
        let value: f64 = rest[..split].parse().ok()?;
        let unit_end = rest[split..]
            .find(|c: char| !c.is_ascii_alphabetic())
            .map_or(rest.len(), |i| split + i);
        total += value
            * match &rest[split..unit_end] {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 0.001,
                _ => return None,
            };
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

fn retry_after_header(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let millis = header("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok());
    millis.or_else(|| {
        let value = header("retry-after")?;
        if let Ok(seconds) = value.parse::<f64>() {
            return Duration::try_from_secs_f64(seconds).ok();
        }
        let at = httpdate::parse_http_date(value).ok()?;
        // A date in the past means "now".
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    })
}

fn is_context_length(body: &ErrorBody, message: &str) -> bool {
    const PHRASES: [&str; 7] = [
        "context_length_exceeded",
        "context length",
        "context window",
        "maximum context",
        // Gemini: "The input token count (N) exceeds the maximum number of tokens allowed (M)."
        "exceeds the maximum number of tokens",
        "prompt is too long",
        "too many tokens",
    ];
    let message = message.to_ascii_lowercase();
    body.has_code("context_length_exceeded") || PHRASES.iter().any(|p| message.contains(p))
}

/// Maps a non-2xx answer onto a [`ProviderError`]. `body` must already be redacted.
pub(crate) fn classify(
    status: u16,
    headers: &HeaderMap,
    body: &str,
    model: &str,
    url: &str,
    now: SystemTime,
) -> ProviderError {
    let parsed = parse_error_body(body);
    let message = match &parsed.message {
        Some(message) => message.clone(),
        None => fallback_message(status, body, url),
    };
    match status {
        429 if parsed.has_code("insufficient_quota") => ProviderError::QuotaExhausted { message },
        429 => ProviderError::RateLimited {
            retry_after: retry_after_header(headers, now).or(parsed.retry_delay),
            message,
        },
        // OpenRouter answers 402 when the account is out of credit.
        402 => ProviderError::QuotaExhausted { message },
        401 | 403 => ProviderError::Auth { status, message },
        404 => ProviderError::ModelNotFound {
            model: model.to_owned(),
            message,
        },
        // Gemini answers a bad key with 400 INVALID_ARGUMENT and this reason.
        400..=499 if parsed.has_code("API_KEY_INVALID") => ProviderError::Auth { status, message },
        408 | 409 | 425 => ProviderError::Server { status, message },
        400..=499 if is_context_length(&parsed, &message) => {
            ProviderError::ContextLengthExceeded { message }
        }
        400..=499 => ProviderError::BadRequest { status, message },
        _ => ProviderError::Server { status, message },
    }
}

/// A message for an error body that carries none of its own.
fn fallback_message(status: u16, body: &str, url: &str) -> String {
    let body = body.trim();
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut message = format!("HTTP {status} {reason}").trim_end().to_owned();
    if !body.is_empty() {
        message = format!("{message}: {}", snippet(body, SNIPPET_CHARS));
    }
    if status == 404 {
        // A bare 404 is as often a wrong base URL as an unknown model.
        message = format!("{message} (from {url}; check the base URL too)");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    const URL: &str = "http://localhost/v1/chat/completions";

    #[test]
    fn rate_limit_headers_are_read() {
        let hint = rate_limit_hint(&headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0.5s"),
            ("x-ratelimit-remaining-tokens", "1200"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]))
        .unwrap();
        assert_eq!(hint.remaining_requests, Some(0));
        assert_eq!(hint.reset_requests, Some(Duration::from_millis(360_500)));
        assert_eq!(hint.remaining_tokens, Some(1200));
        assert_eq!(hint.reset_tokens, Some(Duration::from_millis(20)));
        assert_eq!(rate_limit_hint(&headers(&[])), None);
        assert_eq!(go_duration("1h2m3s"), Some(Duration::from_secs(3723)));
        assert_eq!(go_duration("soon"), None);
    }

    #[test]
    fn retry_after_prefers_milliseconds_then_seconds_then_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let both = headers(&[("retry-after-ms", "1500"), ("retry-after", "7")]);
        assert_eq!(
            retry_after_header(&both, now),
            Some(Duration::from_millis(1500))
        );
        let seconds = headers(&[("retry-after", " 7 ")]);
        assert_eq!(
            retry_after_header(&seconds, now),
            Some(Duration::from_secs(7))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(42));
        let dated = headers(&[("retry-after", &date)]);
        assert_eq!(
            retry_after_header(&dated, now),
            Some(Duration::from_secs(42))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(42));
        let late = headers(&[("retry-after", &past)]);
        assert_eq!(retry_after_header(&late, now), Some(Duration::ZERO));
        let junk = headers(&[("retry-after-ms", "-5"), ("retry-after", "soon")]);
        assert_eq!(retry_after_header(&junk, now), None);
        let huge = headers(&[("retry-after", "1e300")]);
        assert_eq!(retry_after_header(&huge, now), None);
    }

    #[test]
    fn proto_durations() {
        assert_eq!(parse_proto_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_proto_duration("1.5s"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_proto_duration("30"), None);
        assert_eq!(parse_proto_duration("-1s"), None);
    }

    #[test]
    fn error_bodies_in_every_shape() {
        let openai = parse_error_body(
            r#"{"error":{"message":"Slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
        );
        assert_eq!(openai.message.as_deref(), Some("Slow down"));
        assert_eq!(openai.codes, vec!["rate_limit_exceeded", "requests"]);

        let google = parse_error_body(
            r#"[{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}]}}]"#,
        );
        assert_eq!(google.message.as_deref(), Some("Quota"));
        assert_eq!(google.codes, vec!["RESOURCE_EXHAUSTED"]);
        assert_eq!(google.retry_delay, Some(Duration::from_secs(12)));

        let vllm = parse_error_body(
            r#"{"object":"error","message":"The model `x` does not exist.","type":"NotFoundError","code":404}"#,
        );
        assert_eq!(
            vllm.message.as_deref(),
            Some("The model `x` does not exist.")
        );
        assert_eq!(vllm.codes, vec!["NotFoundError"]);

        let plain = parse_error_body(r#"{"error":"model 'llama9' not found"}"#);
        assert_eq!(plain.message.as_deref(), Some("model 'llama9' not found"));

        let fastapi = parse_error_body(r#"{"detail":"Not authenticated"}"#);
        assert_eq!(fastapi.message.as_deref(), Some("Not authenticated"));

        assert_eq!(
            parse_error_body("<html>bad gateway</html>"),
            ErrorBody::default()
        );
    }

    #[test]
    fn statuses_map_onto_provider_errors() {
        let now = SystemTime::now();
        let none = HeaderMap::new();
        let kind = |status, body: &str| classify(status, &none, body, "m", URL, now).kind();
        assert_eq!(kind(402, "{}"), "quota_exhausted");
        assert_eq!(kind(408, ""), "server_error");
        assert_eq!(kind(409, ""), "server_error");
        assert_eq!(kind(425, ""), "server_error");
        assert_eq!(
            kind(413, r#"{"error":{"message":"prompt is too long"}}"#),
            "context_length"
        );
        assert_eq!(kind(422, r#"{"detail":"field required"}"#), "bad_request");
        assert_eq!(kind(502, "<html>bad gateway</html>"), "server_error");
    }

    #[test]
    fn messages_fall_back_to_the_status_and_body() {
        let error = classify(
            502,
            &HeaderMap::new(),
            "<html>bad gateway</html>",
            "m",
            URL,
            SystemTime::now(),
        );
        assert_eq!(
            error.to_string(),
            "server error (HTTP 502): HTTP 502 Bad Gateway: <html>bad gateway</html>"
        );
        let error = classify(404, &HeaderMap::new(), "", "m", URL, SystemTime::now());
        assert_eq!(
            error.to_string(),
            format!(
                "model `m` not found: HTTP 404 Not Found (from {URL}; check the base URL too) (check the model name)"
            )
        );
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        assert_eq!(
            validate_base_url("https://api.openai.com/v1/", None).unwrap(),
            "https://api.openai.com/v1"
        );
        assert_eq!(
            validate_base_url("http://localhost:8000", None).unwrap(),
            "http://localhost:8000"
        );
        for bad in [
            "api.openai.com/v1",
            "ftp://example.com",
            "https://example.com/v1?key=abc",
            "https://user:secret@example.com/v1",
            "not a url",
        ] {
            let error = validate_base_url(bad, None).unwrap_err();
            assert!(error.is_invalid_base_url(), "{bad}: {error}");
        }
        let key = ApiKey::new("sk-secret-in-url");
        let error = validate_base_url("https://x/v1?k=sk-secret-in-url", Some(&key)).unwrap_err();
        assert!(!error.to_string().contains("sk-secret"), "{error}");
    }

    #[test]
    fn keys_that_cannot_be_headers_are_refused() {
        let error = auth_header(Auth::Bearer, &ApiKey::new("sk-bad\nkey")).unwrap_err();
        assert_eq!(error, BuildError::InvalidApiKey);
        let (_, value) =
            auth_header(Auth::Header("x-goog-api-key"), &ApiKey::new("AIza-ok")).unwrap();
        assert!(value.is_sensitive());
    }
}
