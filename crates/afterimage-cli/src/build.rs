//! Turns validated settings into models, strategies, storage and a generator.

use std::sync::Arc;

use afterimage_core::{
    ChatModel, Document, DocumentSource, InstructionGenerator, Ledger, ParkedRequests, Retriever,
    Storage,
};
use afterimage_engine::{ConversationGenerator, ConversationGeneratorBuilder, GenerateOptions};
use afterimage_providers::{
    EmbeddingEndpoint as EmbeddingModel, Endpoint as ModelEndpoint, KeyPool, SharedParts,
    StructuredOutputState, Throttle,
};
use afterimage_strategies::{
    Bm25Retriever, ChunkOptions, ContextualInstructionGenerator, DirectoryDocumentProvider,
    EmbeddingRetriever, FileGlobDocumentProvider, InMemoryDocumentProvider, JsonlDocumentProvider,
    LlmJudge, PersonaGenerator, PersonaInstructionGenerator, SimpleInstructionGenerator,
    ToolCallingInstructionGenerator, WithContextRespondentPromptModifier,
    WithRagRespondentPromptModifier, chunk_documents,
};
use anyhow::Context;

use crate::batch::{RoleModels, SyncModels};
use crate::config::OnFailure;
use crate::settings::{
    DocumentsSpec, EmbeddingEndpoint, Endpoint, EndpointOptions, PersonaSettings,
    RetrievalSettings, Settings,
};

/// The middleware whose counters go into the run's report.
#[derive(Debug, Default)]
pub(crate) struct Meters {
    /// Key pools (one per endpoint with several keys).
    pub(crate) keys: Vec<Arc<KeyPool>>,
    /// Throttles (one per endpoint).
    pub(crate) throttles: Vec<Arc<Throttle>>,
    /// Requests waiting out a retry delay, on every endpoint.
    pub(crate) parked: ParkedRequests,
    /// The respondent's structured output mode (the run record keeps the one that
    /// worked, for `--resume`).
    pub(crate) structured: Option<StructuredOutputState>,
    /// Every request the run pays for, by model and role: the engine's models and
    /// those built here (judge, instructions, personas, embeddings) record in it.
    pub(crate) ledger: Ledger,
    /// Batch mode's batcher, when the run has one.
    pub(crate) batch: Option<crate::batch::BatchRun>,
}

/// The main endpoint of a run with `model_name` as its model.
fn main_endpoint(settings: &Settings, model_name: &str) -> ModelEndpoint {
    let mut endpoint = ModelEndpoint::new(settings.provider, model_name)
        .timeout(settings.timeout)
        .connect_timeout(settings.connect_timeout)
        .max_retries(settings.max_retries)
        .pacing(settings.pacing)
        .per_key(settings.per_key);
    endpoint.base_url = settings.base_url.clone();
    endpoint.api_keys = settings.api_keys.clone();
    endpoint.structured_output_start = settings.structured_output_start;
    with_options(endpoint, &settings.endpoint_options)
}

/// `endpoint` with a model section's JSON output mode, body limit, defaults and
/// caching hints.
fn with_options(mut endpoint: ModelEndpoint, options: &EndpointOptions) -> ModelEndpoint {
    endpoint.structured_output = options.structured_output;
    endpoint.max_response_bytes = options.max_response_bytes;
    endpoint.max_tokens = options.max_tokens;
    endpoint.temperature = options.temperature;
    endpoint.prompt_caching = options.prompt_caching;
    endpoint
}

/// A chat model for `model_name` on the configured provider. `client` is shared so
/// the respondent and correspondent pool the same connections; `meters` collects the
/// middleware built, for the report.
pub(crate) fn model(
    settings: &Settings,
    model_name: &str,
    client: &reqwest::Client,
    meters: &mut Meters,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    stack(&main_endpoint(settings, model_name), client, meters)
}

/// The production stack for `endpoint` (clients, key pool, throttle, retry), its
/// counters kept in `meters`.
fn stack(
    endpoint: &ModelEndpoint,
    client: &reqwest::Client,
    meters: &mut Meters,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    let shared = SharedParts {
        client: Some(client.clone()),
        parked: meters.parked.clone(),
    };
    let stack = endpoint.build_with(&shared).context("model settings")?;
    if meters.structured.is_none() {
        meters.structured = Some(stack.structured_output().clone());
    }
    meters.keys.extend(stack.key_pool().cloned());
    meters.throttles.push(Arc::clone(stack.throttle()));
    Ok(stack.model())
}

/// The judge's own endpoint, as the providers crate takes it.
fn judge_endpoint(endpoint: &Endpoint) -> ModelEndpoint {
    let mut judge = ModelEndpoint::new(endpoint.provider, &endpoint.model_name)
        .timeout(endpoint.timeout)
        .max_retries(endpoint.max_retries)
        .pacing(endpoint.pacing)
        .per_key(endpoint.per_key);
    judge.base_url = endpoint.base_url.clone();
    judge.api_keys = endpoint.api_keys.clone();
    with_options(judge, &endpoint.options)
}

/// The synchronous models of the dialog roles: the main endpoint's, the
/// correspondent's own model and the judge's own endpoint where the config gives
/// them.
fn sync_models(
    settings: &Settings,
    client: &reqwest::Client,
    pools: &mut Meters,
) -> anyhow::Result<SyncModels> {
    let respondent = model(settings, &settings.model_name, client, pools)?;
    let correspondent = match &settings.correspondent_model_name {
        Some(name) => Some(model(settings, name, client, pools)?),
        None => None,
    };
    let judge = match (&settings.evaluator, settings.auto_improve) {
        (Some(endpoint), true) => Some(stack(&judge_endpoint(endpoint), client, pools)?),
        _ => None,
    };
    Ok(SyncModels {
        respondent,
        correspondent,
        judge,
    })
}

/// The judge `quality` describes, calling `model` (its own endpoint's or the main
/// one's, batched or not).
fn judge(settings: &Settings, model: &Arc<dyn ChatModel>, ledger: &Ledger) -> LlmJudge {
    let quality = &settings.quality;
    let mut judge = LlmJudge::new(ledger.meter(Arc::clone(model), "judge"))
        .model_name(settings.evaluator_model_name.clone())
        .max_tokens(settings.judge_sampling.max_tokens)
        .aggregation(quality.aggregation);
    if let Some(t) = settings.judge_sampling.temperature {
        judge = judge.temperature(t);
    }
    for criterion in &quality.criteria {
        judge = judge.criterion(&criterion.name, &criterion.description);
    }
    for (name, weight) in &quality.weights {
        judge = judge.weight(name, *weight);
    }
    judge
}

/// One HTTP client for the run, with a connection pool as large as the concurrency so
/// bursts do not reopen connections.
pub(crate) fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    main_endpoint(settings, &settings.model_name)
        .http_client(settings.max_concurrency)
        .context("cannot set up the HTTP client")
}

/// The configured document source; documents shorter than `min_length` characters
/// are skipped with a warning.
pub(crate) fn documents(
    spec: &DocumentsSpec,
    min_length: usize,
) -> anyhow::Result<Arc<dyn DocumentSource>> {
    Ok(match spec {
        DocumentsSpec::Directory(path) => {
            Arc::new(DirectoryDocumentProvider::new(path).min_length(min_length))
        }
        DocumentsSpec::Glob(pattern) => {
            Arc::new(FileGlobDocumentProvider::new(pattern.clone()).min_length(min_length))
        }
        DocumentsSpec::Jsonl {
            path,
            text_field,
            preserve_ids,
            include_metadata,
            weight_field,
        } => {
            let mut provider = JsonlDocumentProvider::new(path)
                .text_field(text_field)
                .preserve_ids(*preserve_ids)
                .include_metadata(*include_metadata)
                .min_length(min_length);
            if let Some(field) = weight_field {
                provider = provider.weight_field(field.clone());
            }
            Arc::new(provider)
        }
        DocumentsSpec::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the document {}", path.display()))?;
            if text.trim().chars().count() < min_length.max(1) {
                anyhow::bail!(
                    "the document {} is empty or shorter than documents.min_length",
                    path.display()
                );
            }
            let id = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            Arc::new(InMemoryDocumentProvider::new([Document::with_id(
                id.display().to_string(),
                text,
            )]))
        }
        DocumentsSpec::Inline(texts) => {
            Arc::new(InMemoryDocumentProvider::new(texts.clone()).min_length(min_length))
        }
        DocumentsSpec::Loaded(docs) => Arc::new(InMemoryDocumentProvider::new(docs.clone())),
    })
}

/// What decides the first questions: persona-driven or contextual questions about the
/// documents, or questions from the prompts alone.
fn instruction_generator(
    settings: &Settings,
    respondent: &Arc<dyn ChatModel>,
    storage: &Arc<dyn Storage>,
    ledger: &Ledger,
) -> anyhow::Result<Arc<dyn InstructionGenerator>> {
    let source = match &settings.documents {
        Some(spec) => Some(documents(spec, settings.min_length)?),
        None => None,
    };
    let personas = settings.personas.as_ref().map(|p| {
        let model = ledger.meter(Arc::clone(respondent), "personas");
        persona_generator(settings, p, &model, storage)
    });
    let model = &ledger.meter(Arc::clone(respondent), "instructions");
    if let Some(tools) = &settings.tools {
        let mut generator =
            ToolCallingInstructionGenerator::new(Arc::clone(model), tools.specs.clone())
                .n_instructions(settings.n_instructions)
                .num_tools_to_sample(tools.num_tools_to_sample);
        if let Some(source) = source {
            generator = generator
                .documents(source)
                .target_visits(settings.target_visits);
        }
        if let Some(personas) = personas {
            generator = generator.personas(personas);
        }
        return Ok(Arc::new(generator));
    }
    let Some(source) = source else {
        return Ok(Arc::new(
            SimpleInstructionGenerator::new(Arc::clone(model))
                .n_instructions(settings.n_instructions),
        ));
    };
    if let Some(generator) = personas {
        return Ok(Arc::new(
            PersonaInstructionGenerator::new(Arc::clone(model), source, generator)
                .n_instructions(settings.n_instructions)
                .num_random_contexts(settings.num_random_contexts)
                .target_visits(settings.target_visits),
        ));
    }
    Ok(Arc::new(
        ContextualInstructionGenerator::new(Arc::clone(model), source)
            .n_instructions(settings.n_instructions)
            .num_random_contexts(settings.num_random_contexts)
            .target_visits(settings.target_visits),
    ))
}

/// Personas for the run's documents, saved with its rows (so `--resume` reuses them),
/// as deep as the dialogs each document serves require.
fn persona_generator(
    settings: &Settings,
    personas: &PersonaSettings,
    model: &Arc<dyn ChatModel>,
    storage: &Arc<dyn Storage>,
) -> Arc<PersonaGenerator> {
    let documents = match &settings.documents {
        Some(DocumentsSpec::Loaded(docs)) => docs.len().max(1) as u64,
        _ => 1,
    };
    // Upstream's sizing: the coverage target when there is one, else the dialogs each
    // document serves.
    let per_document = settings
        .target_visits
        .or(settings.num_dialogs.map(|n| n.div_ceil(documents)));
    Arc::new(
        PersonaGenerator::new(Arc::clone(model))
            .max_depth(personas.max_depth.unwrap_or(3))
            .target_per_document(per_document)
            .store(Arc::clone(storage)),
    )
}

/// The RAG modifier: the documents cut into chunks, indexed by BM25 or embedded.
async fn rag_modifier(
    settings: &Settings,
    retrieval: &RetrievalSettings,
    client: &reqwest::Client,
    ledger: &Ledger,
) -> anyhow::Result<WithRagRespondentPromptModifier> {
    let Some(DocumentsSpec::Loaded(docs)) = &settings.documents else {
        anyhow::bail!("retrieval needs the documents read before the run is built");
    };
    let chunks = chunk_documents(
        docs,
        &ChunkOptions {
            size: retrieval.chunk_size,
            overlap: retrieval.chunk_overlap,
        },
    )?;
    let retriever: Arc<dyn Retriever> = match &retrieval.embedding {
        None => Arc::new(Bm25Retriever::new(chunks)?),
        Some(endpoint) => {
            let endpoint = embedding_endpoint(endpoint, settings.max_retries);
            let embedder = endpoint
                .build_with(&SharedParts::new(client.clone()))
                .context("embedding settings")?;
            let embedder = ledger.meter_embedder(embedder, &endpoint.model);
            let batch = endpoint.texts_per_request();
            let count = chunks.len();
            Arc::new(
                EmbeddingRetriever::build(embedder, chunks, batch)
                    .await
                    .with_context(|| {
                        format!(
                            "embedding {count} chunks with {} for retrieval",
                            endpoint.model
                        )
                    })?,
            )
        }
    };
    let mut modifier = WithRagRespondentPromptModifier::new(retriever)
        .top_k(retrieval.top_k)
        .per_turn(retrieval.per_turn)
        .include_instruction_context(retrieval.include_document);
    if let Some(min) = retrieval.min_score {
        modifier = modifier.min_score(min);
    }
    Ok(modifier)
}

/// The embedding endpoint, as the providers crate takes it, retrying as often as the
/// chat models.
pub(crate) fn embedding_endpoint(endpoint: &EmbeddingEndpoint, max_retries: u32) -> EmbeddingModel {
    let mut embedding =
        EmbeddingModel::new(endpoint.provider, &endpoint.model_name).max_retries(max_retries);
    embedding.base_url = endpoint.base_url.clone();
    embedding.api_key = endpoint.api_key.clone();
    embedding.batch_size = endpoint.batch_size;
    embedding.max_response_bytes = endpoint.max_response_bytes;
    embedding
}

/// The respondent's and the correspondent's sampling settings, where the config sets
/// them (the judge's are set on the judge).
fn sampling(
    mut builder: ConversationGeneratorBuilder,
    settings: &Settings,
) -> ConversationGeneratorBuilder {
    let (respondent, correspondent) = (
        settings.respondent_sampling,
        settings.correspondent_sampling,
    );
    if let Some(t) = respondent.temperature {
        builder = builder.respondent_temperature(t);
    }
    if let Some(n) = respondent.max_tokens {
        builder = builder.respondent_max_tokens(n);
    }
    if let Some(t) = correspondent.temperature {
        builder = builder.correspondent_temperature(t);
    }
    if let Some(n) = correspondent.max_tokens {
        builder = builder.correspondent_max_tokens(n);
    }
    builder
}

/// The generator and options for a run writing to `storage`, its dialog roles
/// batched (the batcher kept in the meters) when `batch` is given.
pub(crate) async fn generator_with(
    settings: &Settings,
    storage: Arc<dyn Storage>,
    batch: Option<crate::batch::BatchStart>,
) -> anyhow::Result<(ConversationGenerator, GenerateOptions, Meters)> {
    let client = http_client(settings)?;
    let mut pools = Meters::default();
    let sync = sync_models(settings, &client, &mut pools)?;
    let roles = match batch {
        None => RoleModels::sync(&sync),
        Some(start) => {
            let (run, roles) = crate::batch::start(settings, start, &sync, &client, &pools.ledger)?;
            pools.batch = Some(run);
            roles
        }
    };
    let mut builder = ConversationGenerator::builder()
        .respondent_prompt(settings.respondent_prompt.clone())
        .ledger(pools.ledger.clone())
        .model(Arc::clone(&roles.respondent))
        .storage(Arc::clone(&storage))
        .instruction_checks(settings.quality.instruction_checks)
        // Like the instruction checks, with or without the judge: a repeated first
        // question is never worth a dialog, and it is how running out is noticed.
        .dedup_questions(settings.quality.dedup);
    builder = sampling(builder, settings);
    if let Some(correspondent) = &roles.correspondent {
        builder = builder.correspondent_model(Arc::clone(correspondent));
    }
    if settings.auto_improve {
        let judge = judge(settings, &roles.judge, &pools.ledger);
        builder = with_quality(builder, settings, judge);
    }
    if let Some(prompt) = &settings.correspondent_prompt {
        builder = builder.correspondent_prompt(prompt.clone());
    }
    builder = with_context(builder, settings, &client, &pools.ledger).await?;
    if let Some(tools) = &settings.tools {
        builder = builder
            .tools(tools.specs.clone())
            .max_tool_rounds(tools.max_tool_rounds);
    }
    let instructions =
        instruction_generator(settings, &roles.instructions, &storage, &pools.ledger)?;
    let generator = builder.instruction_generator(instructions).build()?;
    let options = run_options(settings, &pools.parked)?;
    Ok((generator, options, pools))
}

/// `auto_improve`: the judge and the `quality:` settings around it.
fn with_quality(
    builder: ConversationGeneratorBuilder,
    settings: &Settings,
    judge: LlmJudge,
) -> ConversationGeneratorBuilder {
    let quality = &settings.quality;
    builder
        .auto_improve(true)
        .evaluator(Arc::new(judge))
        .min_score(quality.min_score)
        .max_regenerations(quality.max_regenerations)
        .keep_best(quality.on_failure == OnFailure::KeepBest)
        .quality_checks(quality.checks)
        .on_unjudged(quality.on_unjudged)
}

/// What the assistant is shown of the documents: the retrieved chunks with
/// `retrieval:`, else each dialog's documents, else nothing.
async fn with_context(
    builder: ConversationGeneratorBuilder,
    settings: &Settings,
    client: &reqwest::Client,
    ledger: &Ledger,
) -> anyhow::Result<ConversationGeneratorBuilder> {
    Ok(if let Some(retrieval) = &settings.retrieval {
        let rag = rag_modifier(settings, retrieval, client, ledger).await?;
        builder.respondent_prompt_modifier(Arc::new(rag))
    } else if settings.documents.is_some() {
        builder.respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()))
    } else {
        builder
    })
}

/// The run's options: its limits, its stopping rules, and the settings it records.
fn run_options(settings: &Settings, parked: &ParkedRequests) -> anyhow::Result<GenerateOptions> {
    let document_count = match &settings.documents {
        Some(DocumentsSpec::Loaded(docs)) => Some(docs.len()),
        _ => None,
    };
    let mut criteria = crate::settings::criteria(&settings.stopping, document_count)?;
    if settings.batch.is_some() {
        criteria = criteria
            .into_iter()
            .map(crate::batch::round_gated)
            .collect();
    }
    let mut options = GenerateOptions::new()
        .run_config(run_config(settings))
        .turns(settings.turns)
        .max_concurrency(settings.max_concurrency)
        .stopping_criteria(criteria)
        .parked_requests(parked.clone())
        .on_stop(settings.on_stop)
        .steering(settings.steering.clone())
        .on_exhausted(settings.on_exhausted);
    if let Some(n) = settings.num_dialogs {
        options = options.num_dialogs(n);
    }
    if let Some(seed) = settings.seed {
        options = options.seed(seed);
    }
    if let Some(n) = settings.max_failures {
        options = options.max_failures(n);
    }
    // Every model the settings could price (`model.price`, the judge's own price, the
    // built-in table); the ledger shows the others' cost as unknown.
    if let Some(price) = settings.price {
        options = options.model_price(settings.model_name.clone(), price);
    }
    for (model, priced) in settings.prices.priced() {
        options = options.model_price(model.to_owned(), priced.price);
    }
    Ok(options)
}

/// The settings kept in the run record for people reading the store; no keys.
pub(crate) fn run_config(settings: &Settings) -> serde_json::Value {
    serde_json::json!({
        "provider": settings.provider.name(),
        "model_name": settings.model_name,
        "num_dialogs": settings.num_dialogs,
        "turns": settings.turns.to_string(),
        "max_concurrency": settings.max_concurrency,
        "seed": settings.seed,
        "auto_improve": settings.auto_improve,
        "steering": settings.steering.enabled,
        "output": settings.output.to_string(),
        // The mode the run starts from; the mode that worked replaces it at the end.
        "structured_output": settings
            .structured_output_start
            .unwrap_or(settings.endpoint_options.structured_output)
            .name(),
    })
}
