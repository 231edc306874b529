//! Personas generated per document in depth layers, and the policy that picks one for
//! each dialog.
//!
//! Layer 0 comes from the document's text; each persona of layer `k` yields five
//! related people in layer `k + 1` (5, 25, 125, ...). Layers are generated lazily, only
//! as deep as the run's target of dialogs per document needs, once per document, and
//! saved after each new layer so a resumed run does not pay for them again.
//!
//! [`PersonaGenerator`] implements [`PersonaSource`]; the persona instruction
//! generator (in the instructions seam) asks questions in the voice it picks.

mod ask;
mod parse;
mod policy;
mod prompts;
mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use afterimage_core::{
    ChatModel, Document, Persona, PersonaDocument, PersonaPick, PersonaSource, ProviderError,
    Storage, StrategyError, Usage,
};
use async_trait::async_trait;
use futures::StreamExt;
use tokio::sync::{Mutex as AsyncMutex, OnceCell};

use self::ask::ask_for_personas;
use self::prompts::{persona_from_persona_message, persona_from_text_message};
use self::state::DocState;

pub use self::policy::{expected_persona_count, persona_depth_for};
pub use self::prompts::{DEFAULT_PERSONA_FROM_PERSONA_PROMPT, DEFAULT_PERSONA_FROM_TEXT_PROMPT};

/// Parent personas asked about at once when a deeper layer is generated.
const PARENT_CONCURRENCY: usize = 5;

/// Generates personas for documents, layer by layer, and picks one per dialog.
///
/// [`persona_for`](PersonaSource::persona_for) generates a document's first layer on
/// the document's first use (concurrent callers wait for that one generation) and a
/// deeper layer only when the sampling policy runs out of personas before reaching
/// [`target_per_document`](Self::target_per_document). Personas repeated across layers
/// (same words, ignoring case and punctuation) are kept once. A failed call loses only
/// what it would have produced: at depth 0 the document has no personas (a warning;
/// picks return `None`), deeper down only that parent's children are missing. A fatal
/// provider error (bad key, unknown model, no quota) is returned as an error.
pub struct PersonaGenerator {
    model: Arc<dyn ChatModel>,
    temperature: f32,
    max_depth: u32,
    target: Option<u64>,
    store: Option<Arc<dyn Storage>>,
    preloaded: Vec<PersonaDocument>,
    saved: OnceCell<HashMap<String, PersonaDocument>>,
    states: Mutex<HashMap<String, Arc<AsyncMutex<DocState>>>>,
    from_text_prompt: String,
    from_persona_prompt: String,
}

/// What generating personas for many documents did.
#[derive(Debug, Default)]
pub struct PersonaReport {
    /// Documents handled.
    pub documents: usize,
    /// Documents that have at least one persona.
    pub with_personas: usize,
    /// Personas over every document, every layer.
    pub personas: usize,
    /// Calls that failed (after their retry); what they would have produced is missing.
    pub failures: Vec<PersonaFailure>,
    /// A fatal provider error that stopped the generation, if one happened.
    pub fatal: Option<ProviderError>,
    /// Tokens spent.
    pub usage: Usage,
    /// Model requests made.
    pub requests: u64,
}

/// A persona call that failed.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaFailure {
    /// The document's id.
    pub document_id: String,
    /// The layer the call was for.
    pub depth: u32,
    /// What went wrong.
    pub message: String,
}

/// What one growth step spent, and what failed.
#[derive(Debug, Default)]
struct Spent {
    usage: Usage,
    requests: u32,
    failures: Vec<PersonaFailure>,
    first_layer_error: Option<StrategyError>,
}

impl PersonaGenerator {
    /// A generator asking `model`, at temperature 0.9, at most 3 layers below the first,
    /// with no target (only the first layer, cycled).
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        PersonaGenerator {
            model,
            temperature: 0.9,
            max_depth: 3,
            target: None,
            store: None,
            preloaded: Vec::new(),
            saved: OnceCell::new(),
            states: Mutex::new(HashMap::new()),
            from_text_prompt: DEFAULT_PERSONA_FROM_TEXT_PROMPT.to_owned(),
            from_persona_prompt: DEFAULT_PERSONA_FROM_PERSONA_PROMPT.to_owned(),
        }
    }

    /// Replaces the system prompt of the first layer's calls (the document is the user
    /// message); start from [`DEFAULT_PERSONA_FROM_TEXT_PROMPT`]. The answer must
    /// still be a JSON list of personas (or `Persona N:` lines).
    pub fn from_text_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.from_text_prompt = prompt.into();
        self
    }

    /// Replaces the system prompt of deeper layers' calls (a persona and the
    /// document's subject are the user message); start from
    /// [`DEFAULT_PERSONA_FROM_PERSONA_PROMPT`].
    pub fn from_persona_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.from_persona_prompt = prompt.into();
        self
    }

    /// Sampling temperature of persona calls (default 0.9).
    pub fn temperature(mut self, temperature: f32) -> Self {
        self.temperature = temperature;
        self
    }

    /// The deepest layer ever generated (default 3: at most 5 + 25 + 125 + 625).
    pub fn max_depth(mut self, max_depth: u32) -> Self {
        self.max_depth = max_depth;
        self
    }

    /// Dialogs each document is expected to serve; picks the depth (see
    /// [`persona_depth_for`]) and the sampling policy. `None` (the default): only the
    /// first layer, cycled. A target of 0 counts as 1.
    pub fn target_per_document(mut self, target: Option<u64>) -> Self {
        self.target = target.map(|t| t.max(1));
        self
    }

    /// Saves each document's personas to `store` after every new layer, and on first
    /// use takes what `store` saved earlier, so nothing is generated twice.
    pub fn store(mut self, store: Arc<dyn Storage>) -> Self {
        self.store = Some(store);
        self
    }

    /// Personas generated earlier (a documents file), used instead of generating for
    /// documents with the same id and text; a store's saves take precedence.
    pub fn preload(mut self, documents: Vec<PersonaDocument>) -> Self {
        self.preloaded = documents;
        self
    }

    /// The deepest layer the target needs (0 without a target).
    pub fn planned_depth(&self) -> u32 {
        match self.target {
            Some(target) => persona_depth_for(target, self.max_depth),
            None => 0,
        }
    }

    /// The personas of `document` so far, generating its first layer if it has none
    /// yet; the error is that generation's failure.
    pub async fn personas(&self, document: &Document) -> Result<PersonaDocument, StrategyError> {
        let state = self.state_for(document).await;
        let mut state = state.lock().await;
        if state.layers.is_empty() {
            let mut spent = Spent::default();
            self.grow(&mut state, &mut spent).await?;
            if let Some(error) = spent.first_layer_error {
                return Err(error);
            }
        }
        Ok(state.to_document())
    }

    /// How often each persona of the document `document_id` was picked, shallowest
    /// first (empty for a document not seen yet).
    pub async fn persona_uses(&self, document_id: &str) -> Vec<(Persona, u64)> {
        let state = self
            .states
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(document_id)
            .cloned();
        match state {
            Some(state) => state.lock().await.uses(),
            None => Vec::new(),
        }
    }

    /// Generates every layer the target needs for every document, `concurrency`
    /// documents at a time. A failing document is reported and does not affect the
    /// others; a fatal provider error stops documents not yet started.
    pub async fn generate_all(&self, documents: &[Document], concurrency: usize) -> PersonaReport {
        let stop = AtomicBool::new(false);
        let stop = &stop;
        let results: Vec<(Spent, Option<StrategyError>, usize)> = futures::stream::iter(documents)
            .map(|document| async move {
                if stop.load(Ordering::SeqCst) {
                    return (Spent::default(), None, 0);
                }
                let (spent, result) = self.generate_eagerly(document).await;
                let error = result.err();
                if error.is_some() {
                    stop.store(true, Ordering::SeqCst);
                }
                let count = self.state_for(document).await.lock().await.len();
                (spent, error, count)
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut report = PersonaReport {
            documents: documents.len(),
            ..PersonaReport::default()
        };
        for (spent, error, count) in results {
            report.usage += spent.usage;
            report.requests += u64::from(spent.requests);
            report.failures.extend(spent.failures);
            report.personas += count;
            report.with_personas += usize::from(count > 0);
            if let Some(StrategyError::Provider(e)) = error {
                report.fatal.get_or_insert(e);
            }
        }
        report
    }

    /// Grows `document`'s layers as deep as the target needs, ignoring picks.
    async fn generate_eagerly(&self, document: &Document) -> (Spent, Result<(), StrategyError>) {
        let state = self.state_for(document).await;
        let mut state = state.lock().await;
        let mut spent = Spent::default();
        let planned = self.planned_depth();
        while state.can_grow(planned)
            && (state.layers.is_empty() || self.target.is_some_and(|t| (state.len() as u64) < t))
        {
            if let Err(e) = self.grow(&mut state, &mut spent).await {
                return (spent, Err(e));
            }
        }
        (spent, Ok(()))
    }

    /// The documents saved earlier (by the store, else preloaded), loaded once.
    async fn saved(&self) -> &HashMap<String, PersonaDocument> {
        self.saved
            .get_or_init(|| async {
                let mut saved: HashMap<String, PersonaDocument> = self
                    .preloaded
                    .iter()
                    .map(|d| (d.id.clone(), d.clone()))
                    .collect();
                if let Some(store) = &self.store {
                    match store.load_documents().await {
                        Ok(documents) => {
                            saved.extend(documents.into_iter().map(|d| (d.id.clone(), d)));
                        }
                        Err(e) => tracing::warn!(
                            store = %store.location(),
                            "saved personas could not be read ({e}); generating them again"
                        ),
                    }
                }
                saved
            })
            .await
    }

    /// The state of `document`, created (from a saved copy, if any) on first use.
    async fn state_for(&self, document: &Document) -> Arc<AsyncMutex<DocState>> {
        let saved = self.saved().await.get(&document.id);
        let mut states = self.states.lock().unwrap_or_else(PoisonError::into_inner);
        let state = states
            .entry(document.id.clone())
            .or_insert_with(|| Arc::new(AsyncMutex::new(DocState::new(document, saved))));
        Arc::clone(state)
    }

    /// Generates the next layer of `state`. Non-fatal failures are recorded in `spent`
    /// (and warned about); a fatal provider error is returned after the layer's
    /// successful calls are kept.
    async fn grow(&self, state: &mut DocState, spent: &mut Spent) -> Result<(), StrategyError> {
        let depth = state.layers.len() as u32;
        let model = self.model.as_ref();
        let temperature = self.temperature;
        let answers = if depth == 0 {
            vec![
                ask_for_personas(
                    model,
                    &self.from_text_prompt,
                    persona_from_text_message(&state.text),
                    temperature,
                )
                .await,
            ]
        } else {
            let parents = state.layers[depth as usize - 1].clone();
            let text = state.text.clone();
            let text = &text;
            let prompt = self.from_persona_prompt.as_str();
            futures::stream::iter(parents)
                .map(|parent| async move {
                    ask_for_personas(
                        model,
                        prompt,
                        persona_from_persona_message(&parent, text),
                        temperature,
                    )
                    .await
                })
                .buffered(PARENT_CONCURRENCY)
                .collect()
                .await
        };
        let mut layer = Vec::new();
        let mut fatal = None;
        for answer in answers {
            spent.usage += answer.usage;
            spent.requests += answer.requests;
            match answer.personas {
                Ok(personas) => layer.extend(personas),
                Err(e) if e.as_provider().is_some_and(ProviderError::is_fatal) => {
                    fatal.get_or_insert(e);
                }
                Err(e) => {
                    let message = e.to_string();
                    if depth == 0 {
                        tracing::warn!(
                            document = %state.id,
                            "no personas for this document ({message}); its dialogs use a generic user"
                        );
                        spent.first_layer_error = Some(e);
                    } else {
                        tracing::warn!(
                            document = %state.id,
                            depth,
                            "a persona call failed ({message}); layer {depth} is smaller"
                        );
                    }
                    spent.failures.push(PersonaFailure {
                        document_id: state.id.clone(),
                        depth,
                        message,
                    });
                }
            }
        }
        if let Some(e) = fatal {
            if depth == 0 {
                // Nothing was generated: the layer stays unattempted, to be retried.
                return Err(e);
            }
            if state.push_layer(layer) > 0 {
                self.save(state).await;
            }
            return Err(e);
        }
        if state.push_layer(layer) > 0 {
            self.save(state).await;
        }
        Ok(())
    }

    /// Saves `state` to the store, if there is one; a failure is a warning.
    async fn save(&self, state: &DocState) {
        let Some(store) = &self.store else {
            return;
        };
        if let Err(e) = store.save_documents(&[state.to_document()]).await {
            tracing::warn!(
                document = %state.id,
                store = %store.location(),
                "personas could not be saved ({e}); a resumed run generates them again"
            );
        }
    }
}

impl std::fmt::Debug for PersonaGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonaGenerator")
            .field("model", &self.model.model_id())
            .field("temperature", &self.temperature)
            .field("max_depth", &self.max_depth)
            .field("target", &self.target)
            .field("store", &self.store.as_ref().map(|s| s.location()))
            .field("preloaded", &self.preloaded.len())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PersonaSource for PersonaGenerator {
    async fn persona_for(
        &self,
        document: &Document,
        seed: u64,
    ) -> Result<PersonaPick, StrategyError> {
        let state = self.state_for(document).await;
        let mut state = state.lock().await;
        let mut spent = Spent::default();
        let planned = self.planned_depth();
        loop {
            let total = state.len() as u64;
            let needed = state.layers.is_empty()
                || (state.picks >= total && self.target.is_some_and(|t| total < t));
            if !(needed && state.can_grow(planned)) {
                break;
            }
            self.grow(&mut state, &mut spent).await?;
        }
        let persona = state.pick(self.target, seed);
        if persona.is_none() && spent.requests == 0 {
            tracing::debug!(document = %document.id, "no personas for this document");
        }
        Ok(PersonaPick {
            persona,
            usage: spent.usage,
            requests: spent.requests,
        })
    }
}
