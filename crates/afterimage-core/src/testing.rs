//! A scripted [`ChatModel`] for tests (feature `testing`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::{ChatModel, ChatRequest, ChatResponse, ProviderError};

type Reply = Pin<Box<dyn Future<Output = Result<ChatResponse, ProviderError>> + Send>>;
type Script = Box<dyn Fn(ChatRequest) -> Reply + Send + Sync>;

/// A [`ChatModel`] whose answers come from a closure, and which counts its calls and
/// the most calls it had in flight at once.
///
/// ```
/// use afterimage_core::testing::ScriptedModel;
/// use afterimage_core::{ChatModel, ChatRequest, ChatResponse, Message};
///
/// # futures::executor::block_on(async {
/// let model = ScriptedModel::new("scripted", |request| async move {
///     Ok(ChatResponse::text(format!("{} messages", request.messages.len())))
/// });
/// let reply = model.chat(ChatRequest::new(vec![Message::user("hi")])).await.unwrap();
/// assert_eq!(reply.message.content, "1 messages");
/// assert_eq!(model.calls(), 1);
/// # });
/// ```
pub struct ScriptedModel {
    name: String,
    script: Script,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    requests: Mutex<Vec<ChatRequest>>,
}

impl ScriptedModel {
    /// A model named `name` that answers with `script`.
    pub fn new<F, Fut>(name: impl Into<String>, script: F) -> Self
    where
        F: Fn(ChatRequest) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ChatResponse, ProviderError>> + Send + 'static,
    {
        ScriptedModel {
            name: name.into(),
            script: Box::new(move |request| Box::pin(script(request))),
            calls: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Calls so far.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The most calls that were in flight at the same time.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl std::fmt::Debug for ScriptedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScriptedModel")
            .field("name", &self.name)
            .field("calls", &self.calls())
            .finish()
    }
}

struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl ChatModel for ScriptedModel {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut log) = self.requests.lock() {
            log.push(request.clone());
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _guard = InFlight(&self.in_flight);
        let mut response = (self.script)(request).await?;
        if response.model.is_empty() {
            response.model = self.name.clone();
        }
        Ok(response)
    }

    fn model_id(&self) -> &str {
        &self.name
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        Ok(())
    }
}
