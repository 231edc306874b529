//! The settings every chat client shares (key, base URL, model, timeouts, shared HTTP
//! client), written once for [`OpenAiCompatible`](crate::OpenAiCompatible),
//! [`Gemini`](crate::Gemini) and [`Anthropic`](crate::Anthropic).

use std::time::Duration;

use afterimage_core::ApiKey;

use crate::http::HttpSettings;
use crate::{BuildError, Provider, StructuredOutput, StructuredOutputState};

/// Settings for a chat client `C`: [`OpenAiCompatibleBuilder`](crate::OpenAiCompatibleBuilder),
/// [`GeminiBuilder`](crate::GeminiBuilder) or [`AnthropicBuilder`](crate::AnthropicBuilder).
///
/// The setters here are the same for every provider; each client adds its own (for
/// example [`structured_output`](Self::structured_output) for OpenAI-compatible
/// servers). [`build`](Self::build) checks them and builds the client.
#[derive(Debug, Clone)]
#[must_use]
pub struct ChatBuilder<C: ChatClient> {
    pub(crate) http: HttpSettings,
    pub(crate) model: Option<String>,
    pub(crate) structured: Structured,
    pub(crate) options: <C as sealed::Build>::Options,
}

/// The structured output mode a builder was given: a mode for a state of the
/// client's own, or an endpoint's shared state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Structured {
    mode: StructuredOutput,
    state: Option<StructuredOutputState>,
}

impl Structured {
    /// The shared state, or a new one for `provider` (whose ladder and best mode
    /// `Auto` uses).
    pub(crate) fn state(self, provider: Provider) -> StructuredOutputState {
        self.state
            .unwrap_or_else(|| StructuredOutputState::new(provider, self.mode))
    }
}

/// A chat client a [`ChatBuilder`] builds: [`OpenAiCompatible`](crate::OpenAiCompatible),
/// [`Gemini`](crate::Gemini) or [`Anthropic`](crate::Anthropic) (sealed: the clients live
/// in this crate).
pub trait ChatClient:
    sealed::Build + afterimage_core::ChatModel + Clone + std::fmt::Debug + 'static
{
}

// The build step takes the crate's HTTP settings. Outside this crate the trait can be
// named (as a bound) but neither implemented nor called, which is the point.
#[allow(private_interfaces)]
pub(crate) mod sealed {
    use super::Structured;
    use crate::BuildError;
    use crate::http::HttpSettings;

    /// How a client is made from the shared settings plus its own.
    pub trait Build: Sized {
        /// The client's own settings.
        type Options: Clone + std::fmt::Debug;

        /// Checks the settings and builds the client.
        fn build(
            http: HttpSettings,
            model: Option<String>,
            structured: Structured,
            options: Self::Options,
        ) -> Result<Self, BuildError>;
    }
}

impl<C: ChatClient> ChatBuilder<C> {
    /// A builder for `base_url` with the client's own settings at their defaults.
    pub(crate) fn new(base_url: impl Into<String>, options: <C as sealed::Build>::Options) -> Self {
        ChatBuilder {
            http: HttpSettings::new(base_url),
            model: None,
            structured: Structured::default(),
            options,
        }
    }

    /// The API key: OpenAI-compatible servers get it as `Authorization: Bearer`, Gemini
    /// in the `x-goog-api-key` header and Anthropic in `x-api-key` (never in the URL).
    /// Local servers, proxies and mock servers may need none.
    pub fn api_key(mut self, key: impl Into<ApiKey>) -> Self {
        self.http.key = Some(key.into());
        self
    }

    /// Another base URL (a proxy, a gateway, a mock server) than the provider's own.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.http.base_url = base_url.into();
        self
    }

    /// The model used when a request names none (required), e.g. `gpt-4o-mini`,
    /// `gemini-2.5-flash` or `claude-sonnet-4-5`.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// The whole-request deadline (default 600 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.http.timeout = timeout;
        self
    }

    /// How long to wait for a connection (default 10 s; ignored with [`client`](Self::client)).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.http.connect_timeout = timeout;
        self
    }

    /// Uses this client (and its connection pool) instead of building one.
    pub fn client(mut self, client: reqwest::Client) -> Self {
        self.http.client = Some(client);
        self
    }

    /// The largest response body read (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`](crate::DEFAULT_MAX_RESPONSE_BYTES)); a larger
    /// one is an error, read no further than the limit.
    pub fn max_response_bytes(mut self, bytes: usize) -> Self {
        self.http.max_response_bytes = bytes;
        self
    }

    /// How to ask for JSON when a request carries a schema (default
    /// [`StructuredOutput::Auto`]).
    pub fn structured_output(mut self, mode: StructuredOutput) -> Self {
        self.structured.mode = mode;
        self
    }

    /// Shares `state` (and the mode it settled on) with other clients of the same
    /// endpoint instead of a state of the client's own; overrides
    /// [`structured_output`](Self::structured_output).
    pub fn structured_output_state(mut self, state: StructuredOutputState) -> Self {
        self.structured.state = Some(state);
        self
    }

    /// Checks the settings and builds the client.
    pub fn build(self) -> Result<C, BuildError> {
        <C as sealed::Build>::build(self.http, self.model, self.structured, self.options)
    }
}
