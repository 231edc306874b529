//! The run's ledger: every request a run pays for, by model and role.
//!
//! Dialog rows keep what their own dialog spent; the ledger is the run's truth for
//! cost, because it also sees what no row owns: the attempts the judge rejected, the
//! dialogs that failed, the answers a strategy could not read and asked again, the
//! personas and the embeddings.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{
    ChatModel, ChatRequest, ChatResponse, Counter, Embedder, Metrics, ProviderError, Spent, Usage,
};

/// What was spent, by model and, within a model, by role (`respondent`, `judge`, ...).
///
/// A plain value: the run record stores it, and two sessions of a resumed run add up.
///
/// ```
/// use afterimage_core::{LedgerBook, Spent, Usage};
///
/// let mut book = LedgerBook::default();
/// book.add("gpt-4o-mini", "respondent", Spent::one(Usage::new(100, 20)));
/// book.add("gpt-4o-mini", "judge", Spent::one(Usage::new(300, 10)));
/// assert_eq!(book.total(), Spent::new(2, Usage::new(400, 30)));
/// assert_eq!(book.model_total("gpt-4o-mini").requests, 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LedgerBook {
    by_model: BTreeMap<String, BTreeMap<String, Spent>>,
}

impl LedgerBook {
    /// Adds `spent` to `model` under `role`.
    pub fn add(&mut self, model: &str, role: &str, spent: Spent) {
        let roles = self.by_model.entry(model.to_owned()).or_default();
        *roles.entry(role.to_owned()).or_default() += spent;
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.by_model.is_empty()
    }

    /// Everything, all models and roles together.
    pub fn total(&self) -> Spent {
        self.by_model
            .keys()
            .map(|model| self.model_total(model))
            .fold(Spent::default(), |a, b| a + b)
    }

    /// What `model` spent, all roles together.
    pub fn model_total(&self, model: &str) -> Spent {
        self.by_model
            .get(model)
            .map(|roles| roles.values().fold(Spent::default(), |a, b| a + *b))
            .unwrap_or_default()
    }

    /// The models and, for each, what each role spent.
    pub fn models(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, Spent>)> {
        self.by_model
            .iter()
            .map(|(model, roles)| (model.as_str(), roles))
    }

    /// This book with `other` added (two sessions of one run).
    pub fn plus(&self, other: &LedgerBook) -> LedgerBook {
        let mut sum = self.clone();
        for (model, roles) in other.models() {
            for (role, spent) in roles {
                sum.add(model, role, *spent);
            }
        }
        sum
    }

    /// What was recorded since `earlier` (a snapshot of the same ledger).
    pub fn minus(&self, earlier: &LedgerBook) -> LedgerBook {
        let mut since = LedgerBook::default();
        for (model, roles) in self.models() {
            for (role, spent) in roles {
                let before = earlier
                    .by_model
                    .get(model)
                    .and_then(|r| r.get(role))
                    .copied()
                    .unwrap_or_default();
                let delta = spent.minus(before);
                if delta != Spent::default() {
                    since.add(model, role, delta);
                }
            }
        }
        since
    }
}

/// A shared, thread-safe [`LedgerBook`] that every metered model of a run writes to.
/// Cloning shares it.
///
/// ```
/// use std::sync::Arc;
/// use afterimage_core::{ChatModel, ChatRequest, Ledger, Message};
///
/// # #[derive(Debug)] struct Echo;
/// # #[async_trait::async_trait]
/// # impl ChatModel for Echo {
/// #     async fn chat(&self, _: ChatRequest) -> Result<afterimage_core::ChatResponse, afterimage_core::ProviderError> {
/// #         Ok(afterimage_core::ChatResponse::text("hi").with_usage(afterimage_core::Usage::new(10, 2)))
/// #     }
/// #     fn model_id(&self) -> &str { "echo" }
/// # }
/// let ledger = Ledger::new();
/// let judge = ledger.meter(Arc::new(Echo), "judge");
/// # futures::executor::block_on(async {
/// judge.chat(ChatRequest::new(vec![Message::user("grade this")])).await.unwrap();
/// # });
/// assert_eq!(ledger.book().model_total("echo").usage.input_tokens, 10);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<LedgerBook>>);

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one answered request of `model` under `role`.
    pub fn record(&self, model: &str, role: &str, usage: Usage) {
        self.lock().add(model, role, Spent::one(usage));
        count_tokens(usage);
    }

    /// A copy of what was recorded so far.
    pub fn book(&self) -> LedgerBook {
        self.lock().clone()
    }

    /// `model`, recording every answer it gives in this ledger under `role`.
    pub fn meter(&self, model: Arc<dyn ChatModel>, role: &str) -> Arc<dyn ChatModel> {
        Arc::new(Metered::new(model, self.clone(), role))
    }

    /// `embedder`, recording every call in this ledger under `model` and the role
    /// `embeddings`.
    pub fn meter_embedder(&self, embedder: Arc<dyn Embedder>, model: &str) -> Arc<dyn Embedder> {
        Arc::new(MeteredEmbedder {
            inner: embedder,
            ledger: self.clone(),
            model: model.to_owned(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, LedgerBook> {
        // A poisoned lock only means a recorder panicked mid-add; the book is whole.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the ledger marks a model's name with for the requests a batch API answered, so
/// that they are priced at the batch rate and reported apart.
pub const BATCH_LEDGER_SUFFIX: &str = " (batch)";

/// The ledger's name for `model`'s batched requests: `gpt-4o-mini (batch)`.
pub fn batch_ledger_name(model: &str) -> String {
    format!("{model}{BATCH_LEDGER_SUFFIX}")
}

/// A ledger name split into the model and whether it holds batched requests.
///
/// ```
/// use afterimage_core::{batch_ledger_name, split_batch_ledger_name};
///
/// assert_eq!(split_batch_ledger_name(&batch_ledger_name("m")), ("m", true));
/// assert_eq!(split_batch_ledger_name("m"), ("m", false));
/// ```
pub fn split_batch_ledger_name(name: &str) -> (&str, bool) {
    match name.strip_suffix(BATCH_LEDGER_SUFFIX) {
        Some(model) => (model, true),
        None => (name, false),
    }
}

/// A [`ChatModel`] that records the usage of every answer of the model below it in a
/// [`Ledger`], under the model asked for and a role.
///
/// Put it above the retries: an attempt that failed over HTTP has no usage and is not
/// billed, while every answer that came back is, even one whose content its caller
/// then throws away and asks again.
#[derive(Debug)]
pub struct Metered {
    inner: Arc<dyn ChatModel>,
    ledger: Ledger,
    role: String,
}

impl Metered {
    /// Wraps `inner`, recording in `ledger` under `role`.
    pub fn new(inner: Arc<dyn ChatModel>, ledger: Ledger, role: impl Into<String>) -> Self {
        Metered {
            inner,
            ledger,
            role: role.into(),
        }
    }
}

#[async_trait]
impl ChatModel for Metered {
    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ProviderError> {
        // Priced by the name the run asked for: a server's dated variant of it
        // (`gpt-4o-2024-08-06`) is not what the user put a price on.
        let model = request
            .model
            .clone()
            .unwrap_or_else(|| self.inner.model_id().to_owned());
        let response = self.inner.chat(request).await?;
        if response.replayed {
            return Ok(response);
        }
        if response.batched {
            self.ledger
                .record(&batch_ledger_name(&model), &self.role, response.usage);
        } else {
            self.ledger.record(&model, &self.role, response.usage);
        }
        Ok(response)
    }

    fn model_id(&self) -> &str {
        self.inner.model_id()
    }

    async fn probe(&self) -> Result<(), ProviderError> {
        self.inner.probe().await
    }
}

/// Adds `usage` to `afterimage_tokens_total`, by kind.
fn count_tokens(usage: Usage) {
    static KINDS: OnceLock<[Counter; 5]> = OnceLock::new();
    let kinds = KINDS.get_or_init(|| {
        ["input", "output", "cached_input", "cache_write", "reasoning"].map(|kind| {
            Metrics::global().counter(
                "afterimage_tokens_total",
                "Tokens billed, by kind (cached_input and cache_write are parts of input, reasoning of output).",
                &[("kind", kind)],
            )
        })
    });
    let counts = [
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
    ];
    for (counter, count) in kinds.iter().zip(counts) {
        counter.add(count as f64);
    }
}

/// An [`Embedder`] that counts its calls and the tokens billed for them
/// ([`Embedder::embed_billed`]) in a [`Ledger`].
#[derive(Debug)]
struct MeteredEmbedder {
    inner: Arc<dyn Embedder>,
    ledger: Ledger,
    model: String,
}

#[async_trait]
impl Embedder for MeteredEmbedder {
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, ProviderError> {
        Ok(self.embed_billed(texts).await?.0)
    }

    async fn embed_billed(
        &self,
        texts: &[String],
    ) -> Result<(Vec<Vec<f32>>, Usage), ProviderError> {
        let (vectors, usage) = self.inner.embed_billed(texts).await?;
        self.ledger.record(&self.model, "embeddings", usage);
        Ok((vectors, usage))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn books_add_subtract_and_round_trip() {
        let mut first = LedgerBook::default();
        first.add("a", "respondent", Spent::one(Usage::new(10, 5).cached(4)));
        let mut second = first.clone();
        second.add("a", "judge", Spent::one(Usage::new(7, 1)));
        second.add("b", "respondent", Spent::new(2, Usage::new(3, 3)));
        let since = second.minus(&first);
        assert_eq!(since.total(), Spent::new(3, Usage::new(10, 4)));
        assert_eq!(first.plus(&since), second);
        let text = serde_json::to_string(&second).unwrap();
        assert_eq!(serde_json::from_str::<LedgerBook>(&text).unwrap(), second);
        assert!(text.starts_with(r#"{"a":{"judge":"#), "{text}");
    }

    /// Answers with the flags a batch model sets, one per call.
    #[derive(Debug)]
    struct Flagged(std::sync::Mutex<Vec<(bool, bool)>>);

    #[async_trait]
    impl ChatModel for Flagged {
        async fn chat(&self, _request: ChatRequest) -> Result<ChatResponse, ProviderError> {
            let (batched, replayed) = self.0.lock().unwrap().remove(0);
            let mut response = ChatResponse::text("ok").with_usage(Usage::new(10, 2));
            (response.batched, response.replayed) = (batched, replayed);
            Ok(response)
        }

        fn model_id(&self) -> &str {
            "m"
        }
    }

    #[test]
    fn batched_answers_are_booked_apart_and_replayed_ones_not_at_all() {
        let calls = vec![(false, false), (true, false), (true, true)];
        let model: Arc<dyn ChatModel> = Arc::new(Flagged(std::sync::Mutex::new(calls)));
        let ledger = Ledger::new();
        let metered = ledger.meter(model, "respondent");
        futures::executor::block_on(async {
            for _ in 0..3 {
                metered.chat(ChatRequest::new(vec![])).await.unwrap();
            }
        });
        let book = ledger.book();
        assert_eq!(book.model_total("m").requests, 1);
        assert_eq!(book.model_total(&batch_ledger_name("m")).requests, 1);
        assert_eq!(book.total().requests, 2, "the replayed answer was booked");
    }
}
