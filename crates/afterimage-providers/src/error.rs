//! Why a provider client could not be built.

/// A provider builder was given settings that cannot work.
///
/// Messages never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The base URL does not parse or is not a plain `http(s)://host/path` URL.
    #[error("invalid base URL `{url}`: {reason}")]
    InvalidBaseUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No model name was given.
    #[error("no model name given (set one with `.model(...)`)")]
    MissingModel,
    /// The provider needs an API key and none was given.
    #[error("no API key given for {provider} (set one with `.api_key(...)`)")]
    MissingApiKey {
        /// The provider that needs it.
        provider: &'static str,
    },
    /// The API key cannot travel in an HTTP header (control or non-ASCII characters).
    #[error("the API key contains characters that cannot be sent in an HTTP header")]
    InvalidApiKey,
    /// A header value (such as Anthropic's API version) cannot be sent in HTTP.
    #[error("invalid value for the `{name}` header: {value:?}")]
    InvalidHeader {
        /// The header.
        name: &'static str,
        /// The value given.
        value: String,
    },
    /// The provider has no embeddings API.
    #[error("{provider} has no embeddings API; use openai, gemini or local")]
    NoEmbeddings {
        /// The provider named.
        provider: &'static str,
    },
    /// The HTTP client could not be created (for example no TLS backend).
    #[error("cannot build the HTTP client: {message}")]
    Client {
        /// The underlying cause.
        message: String,
    },
}

impl BuildError {
    /// Whether the base URL was the problem.
    pub fn is_invalid_base_url(&self) -> bool {
        matches!(self, BuildError::InvalidBaseUrl { .. })
    }

    /// Whether a required setting (model, key) was missing.
    pub fn is_missing_setting(&self) -> bool {
        matches!(
            self,
            BuildError::MissingModel | BuildError::MissingApiKey { .. }
        )
    }
}
