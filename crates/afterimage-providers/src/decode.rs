//! Decoding what a provider sent, apart from sending anything: the bodies a chat
//! request gets back, and error bodies. Batch APIs hand back files of such bodies
//! (one per request) to decode after the fact; the fuzz targets feed these functions
//! arbitrary bytes, since nothing a server sends may crash a run.

use std::sync::OnceLock;
use std::time::SystemTime;

use afterimage_core::{ChatRequest, ChatResponse, ProviderError, snippet};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;

use crate::anthropic::MessagesResponse;
use crate::gemini::GenerateResponse;
use crate::http::{SNIPPET_CHARS, classify};
use crate::openai::Completion;
use crate::{Anthropic, Gemini, OpenAiCompatible, Provider};

/// Decodes the body of a successful chat request to `provider` into the
/// [`ChatResponse`] the provider's client would have returned.
///
/// `request` is the request the body answers: its `model` names the response when the
/// body does not (the name is empty when neither does), and for Anthropic its
/// `response_schema` picks out the forced tool whose input is the answer. The body need
/// not be UTF-8 (invalid bytes become U+FFFD, as over HTTP). A body that is not the
/// provider's document is a [`ProviderError::MalformedResponse`]; Gemini's blocked
/// prompt is a [`ProviderError::BadRequest`]. The result carries no rate-limit hint,
/// since that comes from headers.
///
/// ```
/// use afterimage_core::{ChatRequest, Message};
/// use afterimage_providers::{Provider, decode_chat_response};
///
/// let body = br#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}],
///                 "usage":{"prompt_tokens":9,"completion_tokens":2}}"#;
/// let request = ChatRequest::new(vec![Message::user("Hello")]);
/// let reply = decode_chat_response(Provider::Local, &request, body)?;
/// assert_eq!(reply.message.content, "Hi!");
/// assert_eq!(reply.usage.total(), 11);
/// # Ok::<(), afterimage_core::ProviderError>(())
/// ```
pub fn decode_chat_response(
    provider: Provider,
    request: &ChatRequest,
    body: &[u8],
) -> Result<ChatResponse, ProviderError> {
    let body = String::from_utf8_lossy(body);
    let model = request.model.as_deref().unwrap_or_default();
    let clients = clients()?;
    match provider {
        Provider::Gemini => {
            let reply: GenerateResponse = parse(&body, "a generateContent response")?;
            clients.gemini.response(reply, model, &body)
        }
        Provider::Anthropic => {
            let reply: MessagesResponse = parse(&body, "a Messages API response")?;
            // The decoder's client never stepped down: a schema came back as the
            // forced tool, as the best mode asks for it.
            let mode = clients.anthropic.structured_output().mode();
            Ok(clients.anthropic.response(reply, request, model, mode))
        }
        Provider::Openai | Provider::Deepseek | Provider::Openrouter | Provider::Local => {
            let completion: Completion = parse(&body, "a chat completion")?;
            clients.openai.response(completion, model, &body)
        }
    }
}

/// Decodes a failed request's answer (its HTTP `status` and body) into the
/// [`ProviderError`] the provider's client would have returned, without the hints
/// response headers give (such as `retry-after`); Google's `RetryInfo` in the body is
/// read.
///
/// `model` is the model the request named, which a 404 error reports. Every body
/// shape the providers and OpenAI-compatible servers use is understood; a body in none
/// of them is quoted in the message.
///
/// ```
/// use afterimage_providers::{Provider, decode_error};
///
/// let body = br#"{"error":{"message":"Slow down","code":"rate_limit_exceeded"}}"#;
/// let error = decode_error(Provider::Openai, "gpt-4o-mini", 429, body);
/// assert_eq!(error.kind(), "rate_limited");
/// assert!(error.is_retryable());
/// ```
pub fn decode_error(provider: Provider, model: &str, status: u16, body: &[u8]) -> ProviderError {
    let body = String::from_utf8_lossy(body);
    classify(
        status,
        &HeaderMap::new(),
        &body,
        model,
        provider.default_base_url(),
        SystemTime::now(),
    )
}

/// One keyless client per wire format, built once: their `response` methods hold the
/// mapping onto core types, and they need a client to exist.
struct Clients {
    openai: OpenAiCompatible,
    gemini: Gemini,
    anthropic: Anthropic,
}

fn clients() -> Result<&'static Clients, ProviderError> {
    static CLIENTS: OnceLock<Result<Clients, String>> = OnceLock::new();
    let built = CLIENTS.get_or_init(|| {
        // Never contacted; a base URL other than the providers' own lets Gemini and
        // Anthropic build without a key.
        const NOWHERE: &str = "http://decode.invalid";
        let build = || -> Result<Clients, crate::BuildError> {
            Ok(Clients {
                openai: OpenAiCompatible::builder(NOWHERE).model("-").build()?,
                gemini: Gemini::builder().base_url(NOWHERE).model("-").build()?,
                anthropic: Anthropic::builder().base_url(NOWHERE).model("-").build()?,
            })
        };
        build().map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|message| ProviderError::Transport {
        message: format!("cannot set up the decoder: {message}"),
    })
}

fn parse<T: DeserializeOwned>(body: &str, what: &str) -> Result<T, ProviderError> {
    serde_json::from_str(body).map_err(|e| ProviderError::MalformedResponse {
        message: format!("expected {what}: {e}"),
        snippet: snippet(body, SNIPPET_CHARS),
    })
}

#[cfg(test)]
mod tests {
    use afterimage_core::{FinishReason, JsonSchema, Message};
    use serde_json::json;

    use super::*;

    fn request() -> ChatRequest {
        let mut request = ChatRequest::new(vec![Message::user("Hi")]);
        request.model = Some("asked-for".to_owned());
        request
    }

    #[test]
    fn each_wire_format_decodes() {
        let openai = br#"{"choices":[{"message":{"content":"a","tool_calls":[{"function":{"name":"f","arguments":{"x":1}}}]},"finish_reason":"tool_calls"}]}"#;
        let reply = decode_chat_response(Provider::Openai, &request(), openai).unwrap();
        assert_eq!(reply.model, "asked-for");
        assert_eq!(reply.message.tool_calls[0].function.arguments, r#"{"x":1}"#);
        assert_eq!(reply.finish_reason, Some(FinishReason::ToolCalls));

        let gemini = br#"{"candidates":[{"content":{"parts":[{"text":"hm","thought":true},{"text":"b"}]},"finishReason":"STOP"}],"modelVersion":"gemini-x"}"#;
        let reply = decode_chat_response(Provider::Gemini, &request(), gemini).unwrap();
        assert_eq!(reply.message.content, "b");
        assert_eq!(reply.message.reasoning.as_deref(), Some("hm"));
        assert_eq!(reply.model, "gemini-x");

        let anthropic = br#"{"content":[{"type":"tool_use","id":"t","name":"answer","input":{"ok":true}}],"stop_reason":"tool_use"}"#;
        let mut structured = request();
        structured.response_schema = Some(JsonSchema::new("answer", json!({"type": "object"})));
        let reply = decode_chat_response(Provider::Anthropic, &structured, anthropic).unwrap();
        assert_eq!(reply.message.content, r#"{"ok":true}"#);
        assert_eq!(reply.finish_reason, Some(FinishReason::Stop));
        let reply = decode_chat_response(Provider::Anthropic, &request(), anthropic).unwrap();
        assert_eq!(reply.message.tool_calls.len(), 1);
    }

    #[test]
    fn bodies_that_are_not_the_document_are_malformed() {
        for provider in Provider::ALL {
            for body in [&b""[..], b"<html>", b"[]", b"{\"choices\":1}", b"\xff\xfe"] {
                let error = decode_chat_response(provider, &request(), body);
                let kind = error.map(|_| "ok").unwrap_or_else(|e| e.kind());
                // Gemini and Anthropic default every field, so `{...}` shapes may pass.
                assert!(
                    matches!(kind, "malformed_response" | "ok"),
                    "{provider:?} {body:?}"
                );
            }
        }
        let error = decode_chat_response(Provider::Local, &request(), b"{\"choices\":[]}");
        assert_eq!(error.unwrap_err().kind(), "malformed_response");
        let blocked = br#"{"promptFeedback":{"blockReason":"SAFETY"}}"#;
        let error = decode_chat_response(Provider::Gemini, &request(), blocked).unwrap_err();
        assert_eq!(error.kind(), "bad_request");
    }

    #[test]
    fn error_bodies_decode_as_the_clients_classify_them() {
        let google = br#"[{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","message":"Quota","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"3s"}]}}]"#;
        let error = decode_error(Provider::Gemini, "g", 429, google);
        assert!(
            matches!(error, ProviderError::RateLimited { retry_after: Some(after), .. } if after.as_secs() == 3),
            "{error}"
        );
        let error = decode_error(Provider::Local, "smollm2", 404, b"");
        assert!(error.to_string().contains("smollm2"), "{error}");
        assert_eq!(
            decode_error(Provider::Anthropic, "c", 500, b"\xff").kind(),
            "server_error"
        );
    }
}
