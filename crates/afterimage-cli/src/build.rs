//! Turns validated settings into models, strategies, storage and a generator.

use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{ChatModel, Document, DocumentSource, InstructionGenerator, Storage};
use afterimage_engine::{ConversationGenerator, GenerateOptions};
use afterimage_providers::{Gemini, OpenAiCompatible};
use afterimage_strategies::{
    ContextualInstructionGenerator, DirectoryDocumentProvider, InMemoryDocumentProvider,
    JsonlDocumentProvider, SimpleInstructionGenerator, WithContextRespondentPromptModifier,
};
use anyhow::Context;

use crate::config::ProviderKind;
use crate::settings::{DocumentsSpec, Settings};

/// A chat model for `model_name` on the configured provider. `client` is shared so
/// the respondent and correspondent pool the same connections.
pub(crate) fn model(
    settings: &Settings,
    model_name: &str,
    client: &reqwest::Client,
) -> anyhow::Result<Arc<dyn ChatModel>> {
    let model: Arc<dyn ChatModel> = match settings.provider {
        ProviderKind::Gemini => {
            let mut builder = Gemini::builder()
                .model(model_name)
                .timeout(settings.timeout)
                .client(client.clone());
            if let Some(url) = &settings.base_url {
                builder = builder.base_url(url);
            }
            if let Some(key) = &settings.api_key {
                builder = builder.api_key(key.clone());
            }
            Arc::new(builder.build().context("model settings")?)
        }
        kind => {
            let mut builder = match kind {
                ProviderKind::Openai => OpenAiCompatible::openai(),
                ProviderKind::Deepseek => OpenAiCompatible::deepseek(),
                ProviderKind::Openrouter => OpenAiCompatible::openrouter(),
                _ => OpenAiCompatible::local(),
            }
            .model(model_name)
            .timeout(settings.timeout)
            .client(client.clone());
            if let Some(url) = &settings.base_url {
                builder = builder.base_url(url);
            }
            if let Some(key) = &settings.api_key {
                builder = builder.api_key(key.clone());
            }
            Arc::new(builder.build().context("model settings")?)
        }
    };
    Ok(model)
}

/// One HTTP client for the run, with a connection pool as large as the concurrency so
/// bursts do not reopen connections.
pub(crate) fn http_client(settings: &Settings) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(settings.max_concurrency.max(16))
        .connect_timeout(Duration::from_secs(10))
        .timeout(settings.timeout)
        .build()
        .context("cannot set up the HTTP client")
}

/// The configured document source.
pub(crate) fn documents(spec: &DocumentsSpec) -> anyhow::Result<Arc<dyn DocumentSource>> {
    Ok(match spec {
        DocumentsSpec::Directory(path) => Arc::new(DirectoryDocumentProvider::new(path)),
        DocumentsSpec::Jsonl {
            path,
            text_field,
            preserve_ids,
            include_metadata,
        } => Arc::new(
            JsonlDocumentProvider::new(path)
                .text_field(text_field)
                .preserve_ids(*preserve_ids)
                .include_metadata(*include_metadata),
        ),
        DocumentsSpec::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the document {}", path.display()))?;
            if text.trim().is_empty() {
                anyhow::bail!("the document {} is empty", path.display());
            }
            let id = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            Arc::new(InMemoryDocumentProvider::new([Document::with_id(
                id.display().to_string(),
                text,
            )]))
        }
        DocumentsSpec::Inline(texts) => Arc::new(InMemoryDocumentProvider::new(texts.clone())),
        DocumentsSpec::Loaded(docs) => Arc::new(InMemoryDocumentProvider::new(docs.clone())),
    })
}

/// The generator and options for a run writing to `storage`.
pub(crate) fn generator(
    settings: &Settings,
    storage: Arc<dyn Storage>,
) -> anyhow::Result<(ConversationGenerator, GenerateOptions)> {
    let client = http_client(settings)?;
    let respondent = model(settings, &settings.model_name, &client)?;
    let mut builder = ConversationGenerator::builder()
        .respondent_prompt(settings.respondent_prompt.clone())
        .model(Arc::clone(&respondent))
        .storage(storage);
    if let Some(name) = &settings.correspondent_model_name {
        builder = builder.correspondent_model(model(settings, name, &client)?);
    }
    if settings.auto_improve {
        builder = builder.auto_improve(true);
        if let Some(name) = &settings.evaluator_model_name {
            builder = builder.evaluator_model_name(name.clone());
        }
    }
    if let Some(prompt) = &settings.correspondent_prompt {
        builder = builder.correspondent_prompt(prompt.clone());
    }
    let instructions: Arc<dyn InstructionGenerator> = match &settings.documents {
        Some(spec) => {
            builder = builder
                .respondent_prompt_modifier(Arc::new(WithContextRespondentPromptModifier::new()));
            Arc::new(
                ContextualInstructionGenerator::new(Arc::clone(&respondent), documents(spec)?)
                    .n_instructions(settings.n_instructions)
                    .num_random_contexts(settings.num_random_contexts),
            )
        }
        None => Arc::new(
            SimpleInstructionGenerator::new(Arc::clone(&respondent))
                .n_instructions(settings.n_instructions),
        ),
    };
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
    let mut options = GenerateOptions::new()
        .run_config(run_config)
        .turns(settings.turns)
        .max_concurrency(settings.max_concurrency)
        .stopping_criteria(settings.criteria.clone());
    if let Some(n) = settings.num_dialogs {
        options = options.num_dialogs(n);
    }
    if let Some(seed) = settings.seed {
        options = options.seed(seed);
    }
    if let Some(n) = settings.max_failures {
        options = options.max_failures(n);
    }
    Ok((generator, options))
}
