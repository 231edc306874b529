//! A chat client's connection lent to other protocols of the same provider (its batch
//! API): the same base URL, key header, timeouts, body limit and error mapping, with
//! plain JSON and raw-body requests.

use afterimage_core::ProviderError;
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::http::Http;

/// A chat client's HTTP connection, for a provider's other endpoints (batches, files).
///
/// Paths are relative to the client's base URL (`/batches` on OpenAI's
/// `https://api.openai.com/v1`); a full URL is accepted only on the base URL's host
/// (the key goes with it), as Gemini's upload URLs are. Errors are the [`ProviderError`]s the chat client
/// would return for the same status; no 404 is diagnosed as a wrong model. `Debug`
/// never shows the key.
#[derive(Debug, Clone)]
pub struct Transport {
    http: Http,
    model: String,
}

impl Transport {
    pub(crate) fn new(http: Http, model: &str) -> Self {
        Transport {
            http,
            model: model.to_owned(),
        }
    }

    /// This transport reading bodies up to `bytes` (batch result files are far
    /// larger than chat answers); the client it came from keeps its own limit.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.http = self.http.with_max_response_bytes(bytes);
        self
    }

    /// The base URL paths are appended to.
    pub fn base_url(&self) -> &str {
        self.http.base_url()
    }

    /// The URL of `path` under `prefix` on the base URL's host, keeping the base
    /// URL's own path: `("/upload", "/files")` on `https://h/v1beta` is
    /// `https://h/upload/v1beta/files` (Gemini's upload and download endpoints).
    pub fn prefixed_url(&self, prefix: &str, path: &str) -> String {
        let origin = self.http.origin();
        let base_path = &self.base_url()[origin.len()..];
        format!("{origin}{prefix}{base_path}{path}")
    }

    /// A short, non-secret name of the client's key
    /// ([`afterimage_core::ApiKey::fingerprint`]); empty when it has none.
    pub fn key_fingerprint(&self) -> String {
        self.http.key_fingerprint()
    }

    /// GETs `path`; the body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<String, ProviderError> {
        self.send(Method::GET, path, &[], None)
            .await
            .map(|r| r.body)
    }

    /// POSTs a raw body with extra `headers` to `target` (a path, or a URL on the
    /// base URL's host); the body and headers of a 2xx answer.
    pub async fn post_with_headers(
        &self,
        target: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Reply, ProviderError> {
        let body = Some((content_type, bytes));
        self.send(Method::POST, target, headers, body).await
    }

    /// POSTs `body` as JSON to `path`; the body of a 2xx answer.
    pub async fn post_json(&self, path: &str, body: &Value) -> Result<String, ProviderError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ProviderError::Other {
            message: format!("could not serialize a request body: {e}"),
            retryable: false,
        })?;
        self.post_bytes(path, "application/json", bytes).await
    }

    /// POSTs a raw body of `content_type` to `path` (a multipart upload).
    pub async fn post_bytes(
        &self,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<String, ProviderError> {
        let body = Some((content_type, bytes));
        self.send(Method::POST, path, &[], body)
            .await
            .map(|r| r.body)
    }

    /// POSTs to `path` without a body (a cancel).
    pub async fn post_empty(&self, path: &str) -> Result<String, ProviderError> {
        self.send(Method::POST, path, &[], None)
            .await
            .map(|r| r.body)
    }

    /// DELETEs `path`.
    pub async fn delete(&self, path: &str) -> Result<String, ProviderError> {
        self.send(Method::DELETE, path, &[], None)
            .await
            .map(|r| r.body)
    }

    async fn send(
        &self,
        method: Method,
        target: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Result<Reply, ProviderError> {
        let (body, headers) = self
            .http
            .send_raw(method, target, headers, body, &self.model)
            .await?;
        Ok(Reply { body, headers })
    }
}

/// A 2xx answer: its body and the headers it came with.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The body, as text.
    pub body: String,
    headers: HeaderMap,
}

impl Reply {
    /// The value of header `name` (any case), if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// `body` as a JSON value, or an error saying it could not be serialized.
pub(crate) fn to_value<T: serde::Serialize>(body: &T) -> Result<Value, ProviderError> {
    serde_json::to_value(body).map_err(|e| ProviderError::Other {
        message: format!("could not serialize a request body: {e}"),
        retryable: false,
    })
}

#[cfg(test)]
mod tests {
    use afterimage_core::ApiKey;

    use crate::Gemini;

    fn transport(base: &str, key: Option<&str>) -> super::Transport {
        let mut builder = Gemini::builder().base_url(base).model("gemini-2.5-flash");
        if let Some(key) = key {
            builder = builder.api_key(ApiKey::new(key));
        }
        builder.build().unwrap().transport()
    }

    #[test]
    fn prefixed_urls_keep_the_host_and_the_base_path() {
        let t = transport(
            "https://generativelanguage.googleapis.com/v1beta",
            Some("k"),
        );
        assert_eq!(
            t.prefixed_url("/upload", "/files"),
            "https://generativelanguage.googleapis.com/upload/v1beta/files"
        );
        let local = transport("http://127.0.0.1:8080/v1beta", None);
        assert_eq!(
            local.prefixed_url("/download", "/files/a:download?alt=media"),
            "http://127.0.0.1:8080/download/v1beta/files/a:download?alt=media"
        );
    }

    #[test]
    fn the_fingerprint_names_the_key_without_showing_it() {
        let t = transport("http://127.0.0.1:8080/v1beta", Some("AIza-secret-key"));
        assert_eq!(
            t.key_fingerprint(),
            ApiKey::new("AIza-secret-key").fingerprint()
        );
        assert!(!t.key_fingerprint().contains("secret"));
        let bare = transport("http://127.0.0.1:8080/v1beta", None);
        assert_eq!(bare.key_fingerprint(), "");
    }

    #[tokio::test]
    async fn a_url_on_another_host_is_refused_before_any_request() {
        let t = transport("http://127.0.0.1:9/v1beta", Some("AIza-secret-key"));
        for url in [
            "http://evil.example/upload",
            "http://127.0.0.1:90/upload",
            "http://127.0.0.1:9.evil.example/upload",
        ] {
            let error = t
                .post_with_headers(url, &[], "application/json", Vec::new())
                .await
                .unwrap_err();
            assert!(
                error.to_string().contains("not on the base URL's host"),
                "{url}: {error}"
            );
            assert!(!error.to_string().contains("secret"));
        }
    }
}
