//! Turns validated settings into models, strategies, storage and a generator.

use std::sync::Arc;

use afterimage_core::{
    ApiKey, ChatModel, Document, DocumentSource, Embedder, InstructionGenerator, ParkedRequests,
    Retriever, Storage,
};
use afterimage_engine::{ConversationGenerator, GenerateOptions, InFlight};
use afterimage_providers::{
    Anthropic, DEEPSEEK_BASE_URL, GEMINI_EMBEDDING_BATCH, Gemini, GeminiEmbedder, KeyPool,
    LOCAL_BASE_URL, OPENAI_BASE_URL, OPENAI_EMBEDDING_BATCH, OPENROUTER_BASE_URL, OpenAiCompatible,
    OpenAiEmbedder, Retry, RetryEmbedder, RetryPolicy, Throttle,
};
use afterimage_strategies::{
    Aggregation, Bm25Retriever, ChunkOptions, ContextualInstructionGenerator,
    DirectoryDocumentProvider, EmbeddingRetriever, FileGlobDocumentProvider,
    InMemoryDocumentProvider, JsonlDocumentProvider, LlmJudge, PersonaGenerator,
    PersonaInstructionGenerator, SimpleInstructionGenerator, ToolCallingInstructionGenerator,
    WithContextRespondentPromptModifier, WithRagRespondentPromptModifier, chunk_documents,
};
use anyhow::Context;

use crate::config::{AggregationKind, OnFailure};
use afterimage_providers::Provider;
use crate::settings::{
    DocumentsSpec, EmbeddingEndpoint, Endpoint, PersonaSettings, RetrievalSettings, Settings,
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
}

/// A chat model for `model_name` on the configured provider. `client` is shared so
/// the respondent and correspondent pool the same connections; `pools` collects the
/// key pools built, for their per-key report.
pub(crate) fn model(
    settings: &Settings,
    model_name: &str,
    client: &reqwest::Client,
    pools: &mut Meters,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    endpoint_model(
        &Endpoint {
            provider: settings.provider,
            model_name: model_name.to_owned(),
            base_url: settings.base_url.clone(),
            api_keys: settings.api_keys.clone(),
            max_retries: settings.max_retries,
            timeout: settings.timeout,
            pacing: settings.pacing,
            per_key: settings.per_key,
        },
        client,
        pools,
    )
}

/// A chat model for an endpoint: one client per key (a [`KeyPool`] when there are
/// several), paced by a [`Throttle`], behind the retry middleware.
pub(crate) fn endpoint_model(
    endpoint: &Endpoint,
    client: &reqwest::Client,
    pools: &mut Meters,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    let base: Arc<dyn ChatModel> = match endpoint.api_keys.as_slice() {
        [] => provider_client(endpoint, None, client)?,
        [key] => provider_client(endpoint, Some(key), client)?,
        keys => {
            let clients = keys
                .iter()
                .map(|key| {
                    let mut one = provider_client(endpoint, Some(key), client)?;
                    // A key's own plan limits, when the config gives them.
                    if endpoint.per_key.requests_per_minute.is_some()
                        || endpoint.per_key.tokens_per_minute.is_some()
                    {
                        one = Arc::new(Throttle::new(one, endpoint.per_key));
                    }
                    Ok((key.clone(), one))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let pool = Arc::new(KeyPool::new(clients));
            pools.keys.push(Arc::clone(&pool));
            pool
        }
    };
    let throttle = Arc::new(Throttle::new(base, endpoint.pacing));
    pools.throttles.push(Arc::clone(&throttle));
    let base: Arc<dyn ChatModel> = throttle;
    if endpoint.max_retries == 0 {
        return Ok(base);
    }
    let policy = RetryPolicy {
        max_retries: endpoint.max_retries,
        ..RetryPolicy::default()
    };
    Ok(Arc::new(
        Retry::new(base, policy).parked(pools.parked.clone()),
    ))
}

/// The provider's client for one key.
fn provider_client(
    endpoint: &Endpoint,
    key: Option<&ApiKey>,
    client: &reqwest::Client,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    let model: Arc<dyn ChatModel> = match endpoint.provider {
        Provider::Gemini => {
            let mut builder = Gemini::builder()
                .model(&endpoint.model_name)
                .timeout(endpoint.timeout)
                .client(client.clone());
            if let Some(url) = &endpoint.base_url {
                builder = builder.base_url(url);
            }
            if let Some(key) = key {
                builder = builder.api_key(key.clone());
            }
            Arc::new(builder.build().context("model settings")?)
        }
        Provider::Anthropic => {
            let mut builder = Anthropic::builder()
                .model(&endpoint.model_name)
                .timeout(endpoint.timeout)
                .client(client.clone());
            if let Some(url) = &endpoint.base_url {
                builder = builder.base_url(url);
            }
            if let Some(key) = key {
                builder = builder.api_key(key.clone());
            }
            Arc::new(builder.build().context("model settings")?)
        }
        kind => {
            let mut builder = match kind {
                Provider::Openai => OpenAiCompatible::openai(),
                Provider::Deepseek => OpenAiCompatible::deepseek(),
                Provider::Openrouter => OpenAiCompatible::openrouter(),
                _ => OpenAiCompatible::local(),
            }
            .model(&endpoint.model_name)
            .timeout(endpoint.timeout)
            .client(client.clone());
            if let Some(url) = &endpoint.base_url {
                builder = builder.base_url(url);
            }
            if let Some(key) = key {
                builder = builder.api_key(key.clone());
            }
            Arc::new(builder.build().context("model settings")?)
        }
    };
    Ok(model)
}

/// The judge `quality` describes, on its own endpoint or the respondent's model.
fn judge(
    settings: &Settings,
    respondent: &Arc<dyn ChatModel>,
    client: &reqwest::Client,
    pools: &mut Meters,
) -> anyhow::Result<LlmJudge> {
    let quality = &settings.quality;
    let model = match &settings.evaluator {
        Some(endpoint) => endpoint_model(endpoint, client, pools)?,
        None => Arc::clone(respondent),
    };
    let mut judge = LlmJudge::new(model)
        .model_name(settings.evaluator_model_name.clone())
        .aggregation(match quality.aggregation {
            AggregationKind::Mean => Aggregation::Mean,
            AggregationKind::Min => Aggregation::Min,
            AggregationKind::WeightedMean => Aggregation::WeightedMean,
        });
    for criterion in &quality.criteria {
        judge = judge.criterion(&criterion.name, &criterion.description);
    }
    for (name, weight) in &quality.weights {
        judge = judge.weight(name, *weight);
    }
    Ok(judge)
}

/// One HTTP client for the run, with a connection pool as large as the concurrency so
/// bursts do not reopen connections.
pub(crate) fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(settings.max_concurrency.max(16))
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.timeout)
        .build()
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
    model: &Arc<dyn ChatModel>,
    storage: &Arc<dyn Storage>,
) -> anyhow::Result<Arc<dyn InstructionGenerator>> {
    let source = match &settings.documents {
        Some(spec) => Some(documents(spec, settings.min_length)?),
        None => None,
    };
    let personas = settings
        .personas
        .as_ref()
        .map(|p| persona_generator(settings, p, model, storage));
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
            let policy = RetryPolicy {
                max_retries: settings.max_retries,
                ..RetryPolicy::default()
            };
            let embedder = Arc::new(RetryEmbedder::new(embedder(endpoint, client), policy));
            let batch = endpoint.batch_size.unwrap_or(match endpoint.provider {
                Provider::Gemini => GEMINI_EMBEDDING_BATCH,
                _ => OPENAI_EMBEDDING_BATCH,
            });
            let count = chunks.len();
            Arc::new(
                EmbeddingRetriever::build(embedder, chunks, batch)
                    .await
                    .with_context(|| {
                        format!(
                            "embedding {count} chunks with {} for retrieval",
                            endpoint.model_name
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

/// The embedding client for `endpoint`.
fn embedder(endpoint: &EmbeddingEndpoint, client: &reqwest::Client) -> Arc<dyn Embedder> {
    let key = endpoint.api_key.clone().unwrap_or_else(|| ApiKey::new(""));
    let mut batch = endpoint.batch_size;
    if endpoint.provider == Provider::Gemini {
        let mut embedder =
            GeminiEmbedder::new(key, endpoint.model_name.clone()).client(client.clone());
        if let Some(url) = &endpoint.base_url {
            embedder = embedder.base_url(url.clone());
        }
        if let Some(n) = batch.take() {
            embedder = embedder.batch_size(n);
        }
        return Arc::new(embedder);
    }
    let default_url = match endpoint.provider {
        Provider::Deepseek => DEEPSEEK_BASE_URL,
        Provider::Openrouter => OPENROUTER_BASE_URL,
        Provider::Local => LOCAL_BASE_URL,
        _ => OPENAI_BASE_URL,
    };
    let mut embedder = OpenAiEmbedder::new(key, endpoint.model_name.clone())
        .client(client.clone())
        .base_url(
            endpoint
                .base_url
                .clone()
                .unwrap_or_else(|| default_url.to_owned()),
        );
    if let Some(n) = batch {
        embedder = embedder.batch_size(n);
    }
    Arc::new(embedder)
}

/// The generator and options for a run writing to `storage`.
pub(crate) async fn generator(
    settings: &Settings,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<(ConversationGenerator, GenerateOptions, Meters)> {
    let client = http_client(settings)?;
    let mut pools = Meters::default();
    let respondent = model(settings, &settings.model_name, &client, &mut pools)?;
    let mut builder = ConversationGenerator::builder()
        .respondent_prompt(settings.respondent_prompt.clone())
        .model(Arc::clone(&respondent))
        .storage(Arc::clone(&storage));
    if let Some(name) = &settings.correspondent_model_name {
        builder = builder.correspondent_model(model(settings, name, &client, &mut pools)?);
    }
    if settings.auto_improve {
        let quality = &settings.quality;
        builder = builder
            .auto_improve(true)
            .evaluator(Arc::new(judge(settings, &respondent, &client, &mut pools)?))
            .min_score(quality.min_score)
            .max_regenerations(quality.max_regenerations)
            .keep_best(quality.on_failure == OnFailure::KeepBest)
            .quality_checks(quality.checks)
            .dedup_questions(quality.dedup);
    }
    if let Some(prompt) = &settings.correspondent_prompt {
        builder = builder.correspondent_prompt(prompt.clone());
    }
    if let Some(retrieval) = &settings.retrieval {
        let rag = rag_modifier(settings, retrieval, &client).await?;
        builder = builder.respondent_prompt_modifier(Arc::new(rag));
    } else if settings.documents.is_some() {
        builder = builder
            .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()));
    }
    if let Some(tools) = &settings.tools {
        builder = builder
            .tools(tools.specs.clone())
            .max_tool_rounds(tools.max_tool_rounds);
    }
    let instructions = instruction_generator(settings, &respondent, &storage)?;
    let generator = builder.instruction_generator(instructions).build()?;

    // Kept in the run record for people reading the store; no keys.
    let run_config = serde_json::json!({
        "provider": settings.provider.name(),
        "model_name": settings.model_name,
        "num_dialogs": settings.num_dialogs,
        "turns": format!("{:?}", settings.turns),
        "max_concurrency": settings.max_concurrency,
        "seed": settings.seed,
        "auto_improve": settings.auto_improve,
        "output": settings.output.to_string(),
    });
    let document_count = match &settings.documents {
        Some(DocumentsSpec::Loaded(docs)) => Some(docs.len()),
        _ => None,
    };
    let criteria = crate::settings::criteria(&settings.stopping, document_count)
        .map_err(anyhow::Error::msg)?;
    let mut options = GenerateOptions::new()
        .run_config(run_config)
        .turns(settings.turns)
        .max_concurrency(settings.max_concurrency)
        .stopping_criteria(criteria)
        .parked_requests(pools.parked.clone())
        .on_stop(match settings.on_stop {
            crate::config::OnStop::Finish => InFlight::Finish,
            crate::config::OnStop::Cancel => InFlight::Cancel,
        });
    if let Some(n) = settings.num_dialogs {
        options = options.num_dialogs(n);
    }
    if let Some(seed) = settings.seed {
        options = options.seed(seed);
    }
    if let Some(n) = settings.max_failures {
        options = options.max_failures(n);
    }
    if let Some(price) = settings.price {
        options = options.price(price);
    }
    Ok((generator, options, pools))
}
