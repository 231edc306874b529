//! Turns the Python constructor's settings into models, strategies, storage and a
//! generator, through the library crates (as the CLI's `build` does for a config).

use std::sync::Arc;

use afterimage_core::{
    ApiKey, ChatModel, DocumentSource, FixedNumber, InstructionGenerator, Ledger, ParkedRequests,
    RespondentPromptModifier, StoppingCriterion, Storage,
};
use afterimage_engine::{ConversationGenerator, GenerateOptions, PersonaUsage};
use afterimage_providers::{Endpoint, Provider, SharedParts};
use afterimage_storage::JsonlStorage;
use afterimage_strategies::{
    Bm25Retriever, ChunkOptions, ContextualInstructionGenerator, InMemoryDocumentProvider,
    PersonaGenerator, PersonaInstructionGenerator, SimpleInstructionGenerator,
    ToolCallingInstructionGenerator, WithContextRespondentPromptModifier,
    WithRagRespondentPromptModifier, chunk_documents, parse_tool_specs,
};
use pyo3::PyResult;
use pyo3::exceptions::PyValueError;

use crate::callbacks::{PyInstructionGenerator, PyPromptModifier, PyStoppingCriterion};
use crate::spec::{GeneratorSpec, InstructionsSpec, ModelSpec, ModifierSpec, RunSpec, StopSpec};

/// The Python objects that travel beside the JSON settings, already wrapped.
#[derive(Debug)]
pub(crate) struct Objects {
    pub(crate) instructions: Option<PyInstructionGenerator>,
    pub(crate) modifier: Option<PyPromptModifier>,
    pub(crate) stoppers: Vec<Option<PyStoppingCriterion>>,
}

/// What a run's models share: one HTTP client, the parked-request gauge, the ledger.
struct Shared {
    parts: SharedParts,
    ledger: Ledger,
    concurrency: usize,
}

fn bad(message: impl std::fmt::Display) -> pyo3::PyErr {
    PyValueError::new_err(message.to_string())
}

/// The provider `spec` names (Gemini, the Python library's default, when unset).
fn provider(spec: &ModelSpec) -> PyResult<Provider> {
    spec.provider
        .as_deref()
        .unwrap_or("gemini")
        .parse::<Provider>()
        .map_err(|e| bad(format!("model_provider_name: {e}")))
}

/// The endpoint `spec` describes: keys from the arguments or the provider's variable,
/// the base URL from the arguments or the provider's variable (`GOOGLE_GEMINI_BASE_URL`,
/// `OPENAI_BASE_URL`, ...), as the CLI reads them.
fn endpoint(spec: &ModelSpec, concurrency: usize) -> PyResult<Endpoint> {
    let provider = provider(spec)?;
    let model = spec
        .model_name
        .clone()
        .unwrap_or_else(|| provider.default_model().to_owned());
    let mut endpoint = Endpoint::new(provider, model);
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    endpoint.base_url = spec
        .base_url
        .clone()
        .or_else(|| provider.base_url_from_env(env));
    let mut keys: Vec<String> = spec.api_keys.clone();
    if keys.is_empty() {
        keys.extend(provider.default_key_env().and_then(env));
    }
    if keys.is_empty() && provider != Provider::Local {
        let variable = provider
            .default_key_env()
            .unwrap_or("the provider's key variable");
        return Err(bad(format!(
            "api_key is missing for {}: pass api_key=... or set {variable}",
            provider.name()
        )));
    }
    endpoint.api_keys = keys.into_iter().map(ApiKey::from).collect();
    endpoint.pacing.max_concurrency = concurrency;
    Ok(endpoint)
}

/// The production stack (clients, key pool, throttle, retry) for `spec`.
fn model(spec: &ModelSpec, shared: &Shared) -> PyResult<Arc<dyn ChatModel>> {
    let stack = endpoint(spec, shared.concurrency)?
        .build_with(&shared.parts)
        .map_err(|e| bad(format!("the model settings: {e}")))?;
    Ok(stack.model())
}

/// A callback's own model when it names one (any field set), else the generator's.
fn callback_model(
    spec: &ModelSpec,
    generator: &GeneratorSpec,
    respondent: &Arc<dyn ChatModel>,
    shared: &Shared,
) -> PyResult<Arc<dyn ChatModel>> {
    let model = if spec.is_empty() {
        Arc::clone(respondent)
    } else {
        model(&spec.or(&generator.model), shared)?
    };
    Ok(shared.ledger.meter(model, "instructions"))
}

fn documents(texts: &[String]) -> Arc<dyn DocumentSource> {
    Arc::new(InMemoryDocumentProvider::new(texts.to_vec()))
}

/// The built-in instruction generator `spec` describes.
fn instructions(
    generator: &GeneratorSpec,
    respondent: &Arc<dyn ChatModel>,
    storage: &Arc<dyn Storage>,
    shared: &Shared,
) -> PyResult<Option<Arc<dyn InstructionGenerator>>> {
    let built: Arc<dyn InstructionGenerator> = match &generator.instructions {
        InstructionsSpec::Python => return Ok(None),
        InstructionsSpec::Simple {
            model,
            n_instructions,
        } => {
            let model = callback_model(model, generator, respondent, shared)?;
            let mut simple = SimpleInstructionGenerator::new(model);
            if let Some(n) = n_instructions {
                simple = simple.n_instructions(*n);
            }
            Arc::new(simple)
        }
        InstructionsSpec::Contextual {
            model,
            documents: texts,
            n_instructions,
            num_random_contexts,
        } => {
            let model = callback_model(model, generator, respondent, shared)?;
            let contextual = ContextualInstructionGenerator::new(model, documents(texts));
            Arc::new(contextual_counts(
                contextual,
                *n_instructions,
                *num_random_contexts,
            ))
        }
        InstructionsSpec::Persona {
            model,
            documents: texts,
            n_instructions,
            num_random_contexts,
            max_depth,
        } => {
            let model = callback_model(model, generator, respondent, shared)?;
            let personas = Arc::new(
                PersonaGenerator::new(shared.ledger.meter(Arc::clone(&model), "personas"))
                    .max_depth(max_depth.unwrap_or(3))
                    .store(Arc::clone(storage)),
            );
            let persona = PersonaInstructionGenerator::new(model, documents(texts), personas);
            Arc::new(contextual_counts(
                persona,
                *n_instructions,
                *num_random_contexts,
            ))
        }
        InstructionsSpec::ToolCalling {
            model,
            tools,
            documents: texts,
            n_instructions,
            num_tools_to_sample,
        } => {
            let model = callback_model(model, generator, respondent, shared)?;
            let specs = parse_tool_specs(tools).map_err(bad)?;
            let mut calling = ToolCallingInstructionGenerator::new(model, specs);
            if let Some(texts) = texts {
                calling = calling.documents(documents(texts));
            }
            if let Some(n) = n_instructions {
                calling = calling.n_instructions(*n);
            }
            if let Some(n) = num_tools_to_sample {
                calling = calling.num_tools_to_sample(*n);
            }
            Arc::new(calling)
        }
    };
    Ok(Some(built))
}

fn contextual_counts(
    mut generator: ContextualInstructionGenerator,
    n_instructions: Option<usize>,
    num_random_contexts: Option<usize>,
) -> ContextualInstructionGenerator {
    if let Some(n) = n_instructions {
        generator = generator.n_instructions(n);
    }
    if let Some(n) = num_random_contexts {
        generator = generator.num_random_contexts(n);
    }
    generator
}

/// The built-in modifier `spec` describes (`None` for a Python one).
fn modifier(spec: &ModifierSpec) -> PyResult<Option<Arc<dyn RespondentPromptModifier>>> {
    Ok(match spec {
        ModifierSpec::Python => None,
        ModifierSpec::Context {
            prompt_template: None,
        } => Some(Arc::new(WithContextRespondentPromptModifier::new())),
        ModifierSpec::Context {
            prompt_template: Some(template),
        } => Some(Arc::new(
            WithContextRespondentPromptModifier::with_template(template.clone()).map_err(bad)?,
        )),
        ModifierSpec::Rag {
            documents: texts,
            top_k,
            template,
        } => {
            let docs: Vec<_> = texts
                .iter()
                .map(|t| afterimage_core::Document::new(t.clone()))
                .collect();
            let chunks = chunk_documents(&docs, &ChunkOptions::default()).map_err(bad)?;
            let retriever = Arc::new(Bm25Retriever::new(chunks).map_err(bad)?);
            let mut rag = WithRagRespondentPromptModifier::new(retriever);
            if let Some(k) = top_k {
                rag = rag.top_k(*k);
            }
            if let Some(template) = template {
                rag = rag.template(template.clone());
            }
            Some(Arc::new(rag))
        }
    })
}

/// The generator and the options for one `generate` call.
pub(crate) fn generator(
    spec: &GeneratorSpec,
    run: &RunSpec,
    objects: Objects,
) -> PyResult<(ConversationGenerator, GenerateOptions)> {
    let concurrency = run
        .max_concurrency
        .unwrap_or_else(|| provider(&spec.model).map_or(2, Provider::default_concurrency));
    let client = endpoint(&spec.model, concurrency)?
        .http_client(concurrency)
        .map_err(|e| bad(format!("the HTTP client: {e}")))?;
    let shared = Shared {
        parts: SharedParts {
            client: Some(client),
            parked: ParkedRequests::default(),
        },
        ledger: Ledger::default(),
        concurrency,
    };
    let respondent = model(&spec.model, &shared)?;
    let storage: Arc<dyn Storage> = match &spec.storage {
        Some(crate::spec::StorageSpec::Jsonl { path: Some(path) }) => {
            Arc::new(JsonlStorage::new(path))
        }
        _ => Arc::new(JsonlStorage::timestamped()),
    };
    let mut builder = ConversationGenerator::builder()
        .respondent_prompt(spec.respondent_prompt.clone())
        .ledger(shared.ledger.clone())
        .model(Arc::clone(&respondent))
        .storage(Arc::clone(&storage))
        .auto_improve(spec.auto_improve);
    if let Some(name) = &spec.evaluator_model_name {
        builder = builder.evaluator_model_name(name.clone());
    }
    if let Some(prompt) = &spec.correspondent_prompt {
        builder = builder.correspondent_prompt(prompt.clone());
    }
    if let InstructionsSpec::ToolCalling { tools, .. } = &spec.instructions {
        builder = builder.tools(parse_tool_specs(tools).map_err(bad)?);
    }
    let instructions = match instructions(spec, &respondent, &storage, &shared)? {
        Some(built) => built,
        None => Arc::new(objects.instructions.ok_or_else(|| {
            bad("instruction_generator_callback is missing: pass one of the callbacks")
        })?),
    };
    builder = builder.instruction_generator(instructions);
    let built_modifier = spec.modifier.as_ref().map(modifier).transpose()?.flatten();
    if let Some(m) = built_modifier {
        builder = builder.respondent_prompt_modifier(m);
    } else if let Some(m) = objects.modifier {
        builder = builder.respondent_prompt_modifier(Arc::new(m));
    }
    let generator = builder.build().map_err(bad)?;
    let options = options(run, concurrency, objects.stoppers, &shared.parts.parked);
    Ok((generator, options))
}

/// The run's options; without a count or any rule, five dialogs (the Python library's
/// default).
fn options(
    run: &RunSpec,
    concurrency: usize,
    mut stoppers: Vec<Option<PyStoppingCriterion>>,
    parked: &ParkedRequests,
) -> GenerateOptions {
    let mut criteria: Vec<Arc<dyn StoppingCriterion>> = Vec::new();
    for stop in &run.stopping_criteria {
        match stop {
            StopSpec::Fixed { n } => criteria.push(Arc::new(FixedNumber(*n))),
            StopSpec::PersonaUsage { n_personas } => {
                criteria.push(Arc::new(PersonaUsage(*n_personas)))
            }
            StopSpec::Python { index } => {
                if let Some(stopper) = stoppers.get_mut(*index).and_then(Option::take) {
                    criteria.push(Arc::new(stopper));
                }
            }
        }
    }
    let num_dialogs = match (run.num_dialogs, criteria.is_empty()) {
        (None, true) => Some(5),
        (n, _) => n,
    };
    let mut options = GenerateOptions::new()
        .max_turns(run.max_turns)
        .max_concurrency(concurrency)
        .stopping_criteria(criteria)
        .parked_requests(parked.clone());
    if let Some(n) = num_dialogs {
        options = options.num_dialogs(n);
    }
    if let Some(seed) = run.seed {
        options = options.seed(seed);
    }
    options
}
