//! A chat client's connection lent to other protocols of the same provider (its batch
//! API): the same base URL, key header, timeouts, body limit and error mapping, with
//! plain JSON and raw-body requests.

use afterimage_core::ProviderError;
use reqwest::Method;
use serde_json::Value;

use crate::http::Http;

/// A chat client's HTTP connection, for a provider's other endpoints (batches, files).
///
/// Paths are relative to the client's base URL (`/batches` on OpenAI's
/// `https://api.openai.com/v1`). Errors are the [`ProviderError`]s the chat client
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

    /// GETs `path`; the body of a 2xx answer.
    pub async fn get(&self, path: &str) -> Result<String, ProviderError> {
        self.http
            .send_raw(Method::GET, path, None, &self.model)
            .await
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
        self.http
            .send_raw(Method::POST, path, body, &self.model)
            .await
    }

    /// POSTs to `path` without a body (a cancel).
    pub async fn post_empty(&self, path: &str) -> Result<String, ProviderError> {
        self.http
            .send_raw(Method::POST, path, None, &self.model)
            .await
    }

    /// DELETEs `path`.
    pub async fn delete(&self, path: &str) -> Result<String, ProviderError> {
        self.http
            .send_raw(Method::DELETE, path, None, &self.model)
            .await
    }
}

/// `body` as a JSON value, or an error saying it could not be serialized.
pub(crate) fn to_value<T: serde::Serialize>(body: &T) -> Result<Value, ProviderError> {
    serde_json::to_value(body).map_err(|e| ProviderError::Other {
        message: format!("could not serialize a request body: {e}"),
        retryable: false,
    })
}
