//! What every chat client does the same way, checked once per provider: HTTP failures
//! mapped onto `ProviderError`, keys redacted, timeouts, dead servers, broken JSON,
//! probes and `Debug` output. Each provider module gives its wire format as a
//! [`Fixture`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use afterimage_core::{ChatModel, ChatRequest, Message, ProviderError, ToolCall};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::common::{KEY, SHORT_TIMEOUT, assert_hides_key, dead_url};

/// One provider's wire format, as the shared cases need it.
pub(crate) struct Fixture {
    /// For failure messages.
    pub(crate) name: &'static str,
    /// The model the client is built with.
    pub(crate) model: &'static str,
    /// The base URL's path on the mock server (`/v1`, `/v1beta`).
    pub(crate) base_path: &'static str,
    /// Where chat requests go, after the base URL.
    pub(crate) chat_path: &'static str,
    /// Where the probe's GET goes, after the base URL.
    pub(crate) probe_path: &'static str,
    /// A client with [`KEY`] at `base_url` with `timeout`.
    pub(crate) client: fn(base_url: &str, timeout: Duration) -> Arc<dyn ChatModel>,
    /// The `Debug` output of that client's builder and of the client.
    pub(crate) debug: fn(base_url: &str) -> (String, String),
    /// A successful chat answer.
    pub(crate) hello: fn() -> Value,
    /// The provider's error body for `status` saying `message`.
    pub(crate) error: fn(status: u16, message: &str) -> Value,
    /// Statuses the provider uses for passing server trouble.
    pub(crate) server_statuses: &'static [u16],
    /// How the provider says a prompt is too long.
    pub(crate) context_message: &'static str,
    /// What a broken body was expected to be, as the error names it.
    pub(crate) expected: &'static str,
    /// A successful probe answer.
    pub(crate) probe_ok: fn() -> Value,
    /// The headers carrying the key (and anything else every request carries).
    pub(crate) auth_headers: &'static [(&'static str, &'static str)],
    /// Whether tool arguments are parsed into objects before sending.
    pub(crate) parses_tool_arguments: bool,
}

const ALL: [&Fixture; 3] = [
    &crate::openai::FIXTURE,
    &crate::gemini::FIXTURE,
    &crate::anthropic::FIXTURE,
];

impl Fixture {
    fn base_url(&self, server: &MockServer) -> String {
        format!("{}{}", server.uri(), self.base_path)
    }

    fn client(&self, server: &MockServer) -> Arc<dyn ChatModel> {
        (self.client)(&self.base_url(server), Duration::from_secs(5))
    }

    async fn answer(&self, server: &MockServer, template: ResponseTemplate) {
        Mock::given(method("POST"))
            .and(path(format!("{}{}", self.base_path, self.chat_path)))
            .respond_with(template)
            .mount(server)
            .await;
    }

    /// The error a chat request gets when the server answers with `template`; it
    /// never shows the key.
    async fn chat_error(&self, template: ResponseTemplate) -> ProviderError {
        let server = MockServer::start().await;
        self.answer(&server, template).await;
        let error = self
            .client(&server)
            .chat(ChatRequest::new(vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert_hides_key(&error);
        error
    }

    /// The error for `status` with the provider's error body saying `message`.
    async fn status_error(&self, status: u16, message: &str) -> ProviderError {
        self.chat_error(ResponseTemplate::new(status).set_body_json((self.error)(status, message)))
            .await
    }
}

#[tokio::test]
async fn rate_limits_carry_retry_after() {
    for f in ALL {
        let message = "Rate limit reached for requests";
        let error = f
            .chat_error(
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "7")
                    .set_body_json((f.error)(429, message)),
            )
            .await;
        assert!(
            matches!(&error, ProviderError::RateLimited { message: got, .. } if got == message),
            "{}: {error:?}",
            f.name
        );
        assert_eq!(
            error.retry_after(),
            Some(Duration::from_secs(7)),
            "{}",
            f.name
        );
        assert!(error.is_retryable(), "{}", f.name);
    }
}

#[tokio::test]
async fn unauthorized_and_forbidden_are_auth_and_the_echoed_key_is_redacted() {
    for f in ALL {
        for status in [401, 403] {
            let error = f
                .status_error(status, &format!("Incorrect API key provided: {KEY}."))
                .await;
            match &error {
                ProviderError::Auth {
                    status: got,
                    message,
                } => {
                    assert_eq!(*got, status, "{}", f.name);
                    assert_eq!(message, "Incorrect API key provided: [redacted].");
                }
                other => panic!("{} {status}: expected Auth, got {other:?}", f.name),
            }
            assert!(error.is_auth(), "{}", f.name);
            assert!(error.is_fatal(), "{}", f.name);
        }
    }
}

#[tokio::test]
async fn an_unknown_model_is_model_not_found() {
    for f in ALL {
        let message = format!("The model `{}` does not exist.", f.model);
        let error = f.status_error(404, &message).await;
        match &error {
            ProviderError::ModelNotFound {
                model,
                message: got,
            } => {
                assert_eq!(model, f.model);
                assert_eq!(got, &message);
            }
            other => panic!("{}: expected ModelNotFound, got {other:?}", f.name),
        }
        assert!(error.is_fatal(), "{}", f.name);
    }
}

#[tokio::test]
async fn invalid_requests_are_bad_requests_that_keep_the_message() {
    for f in ALL {
        let message = "Invalid value for 'temperature': must be <= 2.";
        let error = f.status_error(400, message).await;
        assert!(
            matches!(&error, ProviderError::BadRequest { status: 400, message: got } if got == message),
            "{}: {error:?}",
            f.name
        );
        assert!(!error.is_retryable(), "{}", f.name);
    }
}

#[tokio::test]
async fn a_long_prompt_is_context_length_exceeded() {
    for f in ALL {
        let error = f.status_error(400, f.context_message).await;
        assert!(
            matches!(&error, ProviderError::ContextLengthExceeded { message } if message == f.context_message),
            "{}: {error:?}",
            f.name
        );
        assert_eq!(error.kind(), "context_length");
    }
}

#[tokio::test]
async fn server_errors_are_retryable() {
    for f in ALL {
        for &status in f.server_statuses {
            let message = "The server had an error while processing your request.";
            let error = f.status_error(status, message).await;
            match &error {
                ProviderError::Server {
                    status: got,
                    message: text,
                } => {
                    assert_eq!(*got, status, "{}", f.name);
                    assert_eq!(text, message, "{}", f.name);
                }
                other => panic!("{} {status}: expected Server, got {other:?}", f.name),
            }
            assert!(error.is_retryable(), "{}", f.name);
        }
    }
}

#[tokio::test]
async fn broken_json_is_a_malformed_response() {
    for f in ALL {
        let body = r#"{"choices": [{"mess"#;
        let error = f
            .chat_error(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
            .await;
        match &error {
            ProviderError::MalformedResponse { message, snippet } => {
                let expected = format!("expected {}: ", f.expected);
                assert!(message.starts_with(&expected), "{}: {message}", f.name);
                assert_eq!(snippet, body);
            }
            other => panic!("{}: expected MalformedResponse, got {other:?}", f.name),
        }
        assert!(error.is_retryable(), "{}", f.name);
    }
}

#[tokio::test]
async fn a_slow_server_times_out() {
    for f in ALL {
        let server = MockServer::start().await;
        f.answer(
            &server,
            ResponseTemplate::new(200)
                .set_body_json((f.hello)())
                .set_delay(Duration::from_secs(3)),
        )
        .await;
        let model = (f.client)(&f.base_url(&server), SHORT_TIMEOUT);
        let started = Instant::now();
        let error = model
            .chat(ChatRequest::new(vec![Message::user("hi")]))
            .await
            .unwrap_err();
        assert!(
            matches!(error, ProviderError::Timeout { after } if after == SHORT_TIMEOUT),
            "{}: {error:?}",
            f.name
        );
        assert!(started.elapsed() < Duration::from_secs(2), "{}", f.name);
        assert!(error.is_retryable(), "{}", f.name);
        assert_hides_key(&error);
    }
}

#[tokio::test]
async fn connection_refused_is_unreachable() {
    for f in ALL {
        let base = dead_url(f.base_path);
        let model = (f.client)(&base, SHORT_TIMEOUT);
        let error = model
            .chat(ChatRequest::new(vec![Message::user("hi")]))
            .await
            .unwrap_err();
        match &error {
            ProviderError::Unreachable { url, .. } => {
                assert_eq!(url, &format!("{base}{}", f.chat_path));
            }
            other => panic!("{}: expected Unreachable, got {other:?}", f.name),
        }
        assert!(error.is_unreachable(), "{}", f.name);
        assert!(error.is_fatal(), "{}", f.name);
        assert_hides_key(&error);
    }
}

#[tokio::test]
async fn probe_sends_the_key_header_and_no_query() {
    for f in ALL {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("{}{}", f.base_path, f.probe_path)))
            .respond_with(ResponseTemplate::new(200).set_body_json((f.probe_ok)()))
            .expect(1)
            .mount(&server)
            .await;
        f.client(&server).probe().await.unwrap();
        let requests = server.received_requests().await.unwrap();
        assert_eq!(requests.len(), 1, "{}", f.name);
        for (name, value) in f.auth_headers {
            assert_eq!(requests[0].headers[*name], value.replace("{KEY}", KEY));
        }
        assert_eq!(requests[0].url.query(), None, "{}", f.name);
    }
}

#[tokio::test]
async fn probe_reports_a_bad_key() {
    for f in ALL {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path(format!("{}{}", f.base_path, f.probe_path)))
            .respond_with(ResponseTemplate::new(401).set_body_json((f.error)(401, "Invalid key")))
            .mount(&server)
            .await;
        let error = f.client(&server).probe().await.unwrap_err();
        assert!(
            matches!(error, ProviderError::Auth { status: 401, .. }),
            "{}: {error:?}",
            f.name
        );
        assert_hides_key(&error);
    }
}

#[tokio::test]
async fn tool_arguments_that_are_not_an_object_fail_before_sending() {
    for f in ALL.into_iter().filter(|f| f.parses_tool_arguments) {
        let server = MockServer::start().await;
        f.answer(
            &server,
            ResponseTemplate::new(200).set_body_json((f.hello)()),
        )
        .await;
        let request = ChatRequest::new(vec![
            Message::user("?"),
            Message {
                tool_calls: vec![ToolCall::function("c", "f", "not json")],
                ..Message::assistant("")
            },
        ]);
        let error = f.client(&server).chat(request).await.unwrap_err();
        assert_eq!(error.kind(), "other", "{}", f.name);
        assert!(!error.is_retryable(), "{}", f.name);
        assert!(server.received_requests().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn debug_output_never_shows_the_key() {
    for f in ALL {
        let server = MockServer::start().await;
        let (builder, client) = (f.debug)(&f.base_url(&server));
        assert!(!client.contains(KEY), "{client}");
        assert!(client.contains(f.model), "{client}");
        assert!(!builder.contains(KEY), "{builder}");
        assert_eq!(f.client(&server).model_id(), f.model);
    }
}
