//! Python bindings: the `afterimage_rs` module and the `afterimage` command in one
//! wheel (built with maturin from `crates/afterimage-py/pyproject.toml`).
//!
//! The native part, `afterimage_rs._native`, is small on purpose: the seed's classes
//! (`ConversationGenerator`, the callbacks by their upstream names, `JSONLStorage`)
//! are Python in `python/afterimage_rs/`, and describe a run as JSON plus the Python
//! callback objects. `run` builds the run through the library crates (the
//! providers' `Endpoint` stack, the strategies, the engine's builder) and runs it in
//! the worker thread `generate` awaits; Python callbacks reach the engine through adapters implementing the core
//! traits. `cli_main` is the `afterimage` command: the CLI crate's own entry, so the
//! wheel carries one copy of the engine.
//!
//! ```python
//! import asyncio
//! from afterimage_rs import ConversationGenerator, ContextualInstructionGeneratorCallback
//!
//! generator = ConversationGenerator(
//!     respondent_prompt="You are a support agent.",
//!     api_key="...",
//!     instruction_generator_callback=ContextualInstructionGeneratorCallback(
//!         documents=["Error 503 means the service is unavailable."]
//!     ),
//! )
//! report = asyncio.run(generator.generate(num_dialogs=2, max_turns=2))
//! ```

use std::sync::Arc;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_async_runtimes::TaskLocals;

use crate::assemble::Objects;
use crate::callbacks::{
    Bridge, Callback, PyInstructionGenerator, PyPromptModifier, PyStoppingCriterion, describe,
};
use crate::spec::{GeneratorSpec, RunSpec};

mod assemble;
mod callbacks;
mod spec;

/// Stops a run from Python: dialogs in flight finish, no new one starts (the engine's
/// stop handle; `generate` uses it when its task is cancelled).
#[pyclass(frozen)]
#[derive(Debug, Default)]
struct StopHandle(afterimage_engine::StopHandle);

#[pymethods]
impl StopHandle {
    #[new]
    fn new() -> Self {
        StopHandle::default()
    }

    /// Asks the run to stop.
    fn stop(&self) {
        self.0.stop();
    }
}

/// Runs one generation and blocks until it ends, with the GIL released: `generate`
/// calls it in a worker thread (`run_in_executor`), so the result comes back through
/// asyncio's own machinery and no engine thread touches Python after the run. `generator`
/// and `run` are the JSON the Python layer wrote; `event_loop` is the caller's loop,
/// where async callbacks run; `instructions`, `modifier` and `stoppers` are the Python
/// callbacks the JSON refers to. Returns the run report as JSON.
#[pyfunction]
#[pyo3(signature = (generator, run, event_loop, instructions=None, modifier=None, stoppers=Vec::new(), stop=None))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    generator: &str,
    run: &str,
    event_loop: Bound<'_, PyAny>,
    instructions: Option<Py<PyAny>>,
    modifier: Option<Py<PyAny>>,
    stoppers: Vec<Option<Py<PyAny>>>,
    stop: Option<Py<StopHandle>>,
) -> PyResult<String> {
    let spec: GeneratorSpec = serde_json::from_str(generator)
        .map_err(|e| PyValueError::new_err(format!("generator settings: {e}")))?;
    let run: RunSpec = serde_json::from_str(run)
        .map_err(|e| PyValueError::new_err(format!("generate() arguments: {e}")))?;
    let locals = TaskLocals::new(event_loop).copy_context(py)?;
    let bridge = Arc::new(Bridge::new(py, locals)?);
    let wrap = |object: Py<PyAny>, role: &str| Callback::new(py, object, role, &bridge);
    let objects = Objects {
        instructions: instructions
            .map(|o| PyInstructionGenerator(wrap(o, "instruction_generator_callback"))),
        modifier: modifier.map(|o| PyPromptModifier(wrap(o, "respondent_prompt_modifier"))),
        stoppers: stoppers
            .into_iter()
            .map(|o| o.map(|o| PyStoppingCriterion(wrap(o, "stopping_criteria"))))
            .collect(),
    };
    let stop = stop.map(|s| s.get().0.clone());
    let result = py.detach(|| {
        pyo3_async_runtimes::tokio::get_runtime().block_on(async move {
            let (generator, mut options) = assemble::generator(&spec, &run, objects)?;
            if let Some(stop) = stop {
                options = options.stop_handle(stop);
            }
            Ok::<_, PyErr>(generator.generate(options).await)
        })
    })?;
    finish(result, &bridge)
}

/// The report as JSON, or the exception to raise: a callback's own (chained under
/// `CallbackError`, naming it) when one raised, else `GenerationError`.
fn finish(
    result: Result<afterimage_engine::RunReport, afterimage_engine::EngineError>,
    bridge: &Bridge,
) -> PyResult<String> {
    let failure = bridge.take_failure();
    let failed = result.is_err() || failure.as_ref().is_some_and(|f| f.stopped_run);
    Python::attach(|py| {
        let module = bridge.module(py);
        if let (true, Some(failure)) = (failed, failure) {
            let message = format!(
                "{} raised {}",
                failure.callback,
                describe(py, &failure.error)
            );
            let error = PyErr::from_value(module.getattr("CallbackError")?.call1((message,))?);
            error.set_cause(py, Some(failure.error));
            return Err(error);
        }
        match result {
            Ok(report) => serde_json::to_string(&report)
                .map_err(|e| PyValueError::new_err(format!("the run report: {e}"))),
            Err(e) => {
                let report = e.report().and_then(|r| serde_json::to_string(r).ok());
                let class = module.getattr("GenerationError")?;
                Err(PyErr::from_value(class.call1((e.to_string(), report))?))
            }
        }
    })
}

/// The `afterimage` command: runs the CLI with `argv` (the program first) and returns
/// its exit code. The GIL is released for the whole run.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| afterimage_cli::run(argv))
}

/// The native part of `afterimage_rs`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_class::<StopHandle>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
