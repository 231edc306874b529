//! Python callbacks behind the engine's traits: instruction generators, respondent
//! prompt modifiers and stopping rules written in Python.
//!
//! An async callback runs as a coroutine on the caller's asyncio loop (a sync one is
//! called there too, by `afterimage_rs._bridge`), and the engine awaits it as a Rust
//! future: the GIL is taken only to start the call and to read its answer, never
//! across an await. Answers cross as JSON made by the bridge, which has already checked
//! their shape. The first exception a callback raises is kept, so that `generate`
//! raises it (chained) naming the callback, instead of a summary of failed dialogs.

use std::sync::{Arc, Mutex, PoisonError};

use afterimage_core::{
    Document, GeneratedInstructions, Instruction, InstructionGenerator, InstructionRequest,
    ModifiedPrompt, Persona, RespondentPromptModifier, RunProgress, StoppingCriterion,
    StrategyError, async_trait, content_id,
};
use pyo3::prelude::*;
use pyo3::types::PyModule;
use pyo3_async_runtimes::TaskLocals;
use serde::Deserialize;

/// The Python side of the calls: the bridge module, the asyncio loop to run coroutines
/// on, and the first exception a callback raised.
#[derive(Debug)]
pub(crate) struct Bridge {
    module: Py<PyModule>,
    locals: TaskLocals,
    failure: Mutex<Option<Failure>>,
}

/// An exception a callback raised, and which callback it was.
#[derive(Debug)]
pub(crate) struct Failure {
    /// `instruction_generator_callback MyQuestions.agenerate`, for messages.
    pub(crate) callback: String,
    /// Whether the run went on without it (a stopping rule stops the run instead).
    pub(crate) stopped_run: bool,
    /// The exception.
    pub(crate) error: PyErr,
}

impl Bridge {
    /// The bridge for calls made on the running loop `locals` names.
    pub(crate) fn new(py: Python<'_>, locals: TaskLocals) -> PyResult<Self> {
        Ok(Bridge {
            module: PyModule::import(py, "afterimage_rs._bridge")?.unbind(),
            locals,
            failure: Mutex::new(None),
        })
    }

    /// The bridge module, for the exception classes it defines.
    pub(crate) fn module<'py>(&self, py: Python<'py>) -> &Bound<'py, PyModule> {
        self.module.bind(py)
    }

    /// Keeps the first failure (later ones are usually the same bug again).
    fn record(&self, failure: Failure) {
        let mut slot = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(failure);
        }
    }

    /// The first failure, taken out.
    pub(crate) fn take_failure(&self) -> Option<Failure> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Calls the bridge's async `function` with the arguments `args` makes, awaits the
    /// coroutine on the asyncio loop without holding the GIL, and returns the JSON it
    /// answered.
    async fn call_async<A, F>(&self, function: &str, args: F) -> PyResult<String>
    where
        F: for<'py> FnOnce(Python<'py>) -> A + Send,
        A: for<'py> pyo3::call::PyCallArgs<'py>,
    {
        let future = Python::attach(|py| {
            let coroutine = self.module.bind(py).getattr(function)?.call1(args(py))?;
            pyo3_async_runtimes::into_future_with_locals(&self.locals, coroutine)
        })?;
        let answer = future.await?;
        Python::attach(|py| answer.bind(py).extract::<String>())
    }
}

/// One Python callback object and how messages name it.
#[derive(Debug)]
pub(crate) struct Callback {
    object: Py<PyAny>,
    /// `instruction_generator_callback MyQuestions`.
    name: String,
    bridge: Arc<Bridge>,
}

impl Callback {
    /// `object`, passed as the constructor argument (or list) `role`.
    pub(crate) fn new(py: Python<'_>, object: Py<PyAny>, role: &str, bridge: &Arc<Bridge>) -> Self {
        let class = object
            .bind(py)
            .get_type()
            .qualname()
            .map(|q| q.to_string())
            .unwrap_or_else(|_| "callback".to_owned());
        Callback {
            object,
            name: format!("{role} {class}"),
            bridge: Arc::clone(bridge),
        }
    }

    /// Keeps `error` for `generate` to raise, and says what failed in the engine's terms.
    fn failed(&self, method: &str, error: PyErr, stopped_run: bool) -> StrategyError {
        let text = Python::attach(|py| describe(py, &error));
        let callback = format!("{}.{method}", self.name);
        let message = format!("{callback} raised {text}");
        self.bridge.record(Failure {
            callback,
            stopped_run,
            error,
        });
        // `Config` from an instruction generator stops the run at once: a callback that
        // raised will most likely raise for every dialog.
        StrategyError::Config(message)
    }

    fn object(&self, py: Python<'_>) -> Py<PyAny> {
        self.object.clone_ref(py)
    }
}

/// `ValueError: no documents left`, for messages.
pub(crate) fn describe(py: Python<'_>, error: &PyErr) -> String {
    let kind = error
        .get_type(py)
        .qualname()
        .map(|q| q.to_string())
        .unwrap_or_else(|_| "Exception".to_owned());
    format!("{kind}: {}", error.value(py))
}

/// A batch as the bridge hands it over (`GeneratedInstructions`, checked).
#[derive(Debug, Deserialize)]
struct PyInstructions {
    instructions: Vec<String>,
    context: Option<String>,
    persona: Option<String>,
    persona_generation_depth: Option<u32>,
    context_ids: Vec<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

impl PyInstructions {
    /// The engine's batch: the context becomes the documents the row names (by the
    /// given ids, else one id derived from the text).
    fn into_core(self) -> GeneratedInstructions {
        let context = self.context.unwrap_or_default();
        let documents = match (self.context_ids.as_slice(), context.is_empty()) {
            ([], true) => Vec::new(),
            ([], false) => vec![Document::with_id(content_id(&context), context.clone())],
            (ids, _) => ids
                .iter()
                .map(|id| Document::with_id(id.clone(), context.clone()))
                .collect(),
        };
        GeneratedInstructions {
            instructions: self.instructions,
            documents,
            context,
            persona: self.persona.map(|description| Persona {
                description,
                generation_depth: self.persona_generation_depth,
            }),
            metadata: self.metadata,
            ..GeneratedInstructions::default()
        }
    }
}

/// A `BaseInstructionGeneratorCallback` (or any object with `agenerate`/`generate`).
#[derive(Debug)]
pub(crate) struct PyInstructionGenerator(pub(crate) Callback);

#[async_trait]
impl InstructionGenerator for PyInstructionGenerator {
    async fn generate(
        &self,
        request: &InstructionRequest,
    ) -> Result<GeneratedInstructions, StrategyError> {
        let prompt = request.correspondent_prompt.as_str();
        let json = self
            .0
            .bridge
            .call_async("call_instructions", |py| (self.0.object(py), prompt))
            .await
            .map_err(|e| self.0.failed("agenerate", e, false))?;
        let batch: PyInstructions =
            serde_json::from_str(&json).map_err(|e| StrategyError::MalformedOutput {
                message: format!("{}: {e}", self.0.name),
            })?;
        Ok(batch.into_core())
    }
}

/// A prompt as the bridge hands it over (`GeneratedResponsePrompt`, checked).
#[derive(Debug, Deserialize)]
struct PyPrompt {
    prompt: String,
    context: Option<String>,
    metadata: serde_json::Map<String, serde_json::Value>,
}

/// A `BaseRespondentPromptModifierCallback` (or any object with `agenerate`/`generate`).
#[derive(Debug)]
pub(crate) struct PyPromptModifier(pub(crate) Callback);

#[async_trait]
impl RespondentPromptModifier for PyPromptModifier {
    async fn modify(
        &self,
        respondent_prompt: &str,
        instruction: &Instruction,
    ) -> Result<ModifiedPrompt, StrategyError> {
        let (context, text) = (instruction.source.context.as_str(), &instruction.text);
        let json = self
            .0
            .bridge
            .call_async("call_modifier", |py| {
                (self.0.object(py), respondent_prompt, context, text.as_str())
            })
            .await
            .map_err(|e| self.0.failed("agenerate", e, false))?;
        let prompt: PyPrompt =
            serde_json::from_str(&json).map_err(|e| StrategyError::MalformedOutput {
                message: format!("{}: {e}", self.0.name),
            })?;
        Ok(ModifiedPrompt {
            system_prompt: prompt.prompt,
            response_context: prompt.context,
            metadata: prompt.metadata,
        })
    }
}

/// A `BaseStoppingCallback`: `should_stop(state)` is called with the GIL held, from
/// the scheduler, after each finished dialog.
#[derive(Debug)]
pub(crate) struct PyStoppingCriterion(pub(crate) Callback);

impl StoppingCriterion for PyStoppingCriterion {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        let state = state_json(progress);
        let answer = Python::attach(|py| {
            self.0
                .bridge
                .module(py)
                .getattr("call_should_stop")?
                .call1((self.0.object(py), state))?
                .extract::<bool>()
        });
        match answer {
            Ok(stop) => stop,
            Err(e) => {
                // The run cannot go on without its stopping rule: stop, then raise.
                let _ = self.0.failed("should_stop", e, true);
                true
            }
        }
    }

    fn describe(&self) -> String {
        self.0.name.clone()
    }
}

/// The run's progress as `GenerationState` fields.
fn state_json(progress: &RunProgress) -> String {
    serde_json::json!({
        "num_generated": progress.rows_written,
        "num_failed": progress.dialogs_failed,
        "num_requests": progress.requests,
        "prompt_tokens": progress.usage.input_tokens,
        "completion_tokens": progress.usage.output_tokens,
        "unique_personas": progress.unique_personas,
        "in_flight": progress.in_flight,
        "elapsed_seconds": progress.elapsed.as_secs_f64(),
        "context_visits": &*progress.context_visits,
    })
    .to_string()
}
