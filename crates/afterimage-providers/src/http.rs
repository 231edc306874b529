//! What every provider shares: one pooled HTTP client, sending a request, and turning
//! HTTP and transport failures into [`ProviderError`]s a caller can act on.

use std::time::{Duration, SystemTime};

use afterimage_core::{ApiKey, ProviderError, RateLimitHint, snippet};
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
}

impl std::fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSettings")
            .field("base_url", &self.base_url)
            .field("key", &self.key)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("shared_client", &self.client.is_some())
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
    pub(crate) async fn post_json_hinted<T: Serialize + ?Sized>(
        &self,
        path: &str,
        body: &T,
        model: &str,
    ) -> Result<(String, Option<RateLimitHint>), ProviderError> {
        let url = format!("{}{path}", self.base_url);
        tracing::debug!(%url, model, "POST");
        self.execute_hinted(self.client.post(&url).json(body), &url, model)
            .await
    }

    /// GETs `{base}{path}` and returns the body of a 2xx answer.
    pub(crate) async fn get(&self, path: &str, model: &str) -> Result<String, ProviderError> {
        let url = format!("{}{path}", self.base_url);
        tracing::debug!(%url, model, "GET");
        self.execute(self.client.get(&url), &url, model).await
    }

    async fn execute(
        &self,
        request: RequestBuilder,
        url: &str,
        model: &str,
    ) -> Result<String, ProviderError> {
        self.execute_hinted(request, url, model)
            .await
            .map(|(text, _)| text)
    }

    async fn execute_hinted(
        &self,
        request: RequestBuilder,
        url: &str,
        model: &str,
    ) -> Result<(String, Option<RateLimitHint>), ProviderError> {
        // Per request, so that the timeout holds with a shared client too.
        let mut request = request.timeout(self.timeout);
        if let Some((name, value)) = &self.auth {
            request = request.header(name.clone(), value.clone());
        }
        for (name, value) in &self.headers {
            request = request.header(name.clone(), value.clone());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&e, url))?;
        let body = String::from_utf8_lossy(&bytes);
        if status.is_success() {
            return Ok((body.into_owned(), rate_limit_hint(&headers)));
        }
        // Servers echo keys back in error bodies ("Incorrect API key provided: sk-...").
        let body = self.redact(&body);
        let error = classify(
            status.as_u16(),
            &headers,
            &body,
            model,
            url,
            SystemTime::now(),
        );
        tracing::debug!(%url, status = status.as_u16(), kind = error.kind(), "request failed");
        Err(error)
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
