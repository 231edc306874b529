//! The journal's own copies of a request, a response and an outcome (the core
//! types are not serializable as a whole), and the request hash.

use afterimage_core::{
    ChatRequest, ChatResponse, FinishReason, JsonSchema, Message, ToolSpec, Usage,
};
use serde::{Deserialize, Serialize};

use crate::{BatchItem, ItemOutcome};

/// A request's outcome as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoredOutcome {
    /// Answered.
    Ok {
        /// The answer.
        response: StoredResponse,
    },
    /// Failed in a way another attempt may not repeat.
    Retryable {
        /// Why.
        message: String,
    },
    /// Failed in a way another attempt would repeat.
    Permanent {
        /// Why.
        message: String,
    },
}

impl From<&ItemOutcome> for StoredOutcome {
    fn from(outcome: &ItemOutcome) -> Self {
        match outcome {
            ItemOutcome::Ok(response) => StoredOutcome::Ok {
                response: StoredResponse::from(response.as_ref()),
            },
            ItemOutcome::Retryable(message) => StoredOutcome::Retryable {
                message: message.clone(),
            },
            ItemOutcome::Permanent(message) => StoredOutcome::Permanent {
                message: message.clone(),
            },
            // Kept as permanent: a resume asks again, and meets the same stop if the
            // account is still out of credit.
            ItemOutcome::Fatal(error) => StoredOutcome::Permanent {
                message: error.to_string(),
            },
        }
    }
}

/// A [`ChatResponse`] as the journal keeps it (rate-limit hints are not kept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The assistant message.
    pub message: Message,
    /// Tokens it cost.
    pub usage: Usage,
    /// Why it ended.
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// The model that answered.
    pub model: String,
    /// Whether a batch answered it.
    #[serde(default)]
    pub batched: bool,
}

impl From<&ChatResponse> for StoredResponse {
    fn from(r: &ChatResponse) -> Self {
        StoredResponse {
            message: r.message.clone(),
            usage: r.usage,
            finish_reason: r.finish_reason.clone(),
            model: r.model.clone(),
            batched: r.batched,
        }
    }
}

impl From<StoredResponse> for ChatResponse {
    fn from(r: StoredResponse) -> Self {
        let mut response = ChatResponse::text("").with_usage(r.usage);
        response.message = r.message;
        response.finish_reason = r.finish_reason;
        response.model = r.model;
        response.batched = r.batched;
        response
    }
}

/// A [`ChatRequest`] with its model, as hashed and as kept in `requests/`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredRequest {
    custom_id: String,
    model: String,
    messages: Vec<Message>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    tools: Vec<ToolSpec>,
    #[serde(default)]
    response_schema: Option<JsonSchema>,
    #[serde(default)]
    cache_key: Option<String>,
}

impl StoredRequest {
    pub(crate) fn new(custom_id: &str, model: &str, r: &ChatRequest) -> Self {
        StoredRequest {
            custom_id: custom_id.to_owned(),
            model: model.to_owned(),
            messages: r.messages.clone(),
            temperature: r.temperature,
            max_tokens: r.max_tokens,
            tools: r.tools.clone(),
            response_schema: r.response_schema.clone(),
            cache_key: r.cache_key.clone(),
        }
    }

    pub(crate) fn into_item(self) -> BatchItem {
        let request = ChatRequest {
            messages: self.messages,
            model: Some(self.model.clone()),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            tools: self.tools,
            response_schema: self.response_schema,
            cache_key: self.cache_key,
        };
        BatchItem::new(self.custom_id, self.model, request)
    }
}

/// The hash `request` and `response` records keep: FNV-1a of the request serialized
/// with its model (`request.model` is not read; the id is left out), as 16 hex
/// digits. It detects a changed config, nothing more.
///
/// ```
/// use afterimage_batch::request_hash;
/// use afterimage_core::{ChatRequest, Message};
///
/// let hi = ChatRequest::new(vec![Message::user("Hi")]);
/// assert_eq!(request_hash("m", &hi), request_hash("m", &hi.clone()));
/// assert_ne!(request_hash("m", &hi), request_hash("other", &hi));
/// ```
pub fn request_hash(model: &str, request: &ChatRequest) -> String {
    let body = serde_json::to_vec(&StoredRequest::new("", model, request)).unwrap_or_default();
    format!("{:016x}", afterimage_core::fnv1a(&body))
}
