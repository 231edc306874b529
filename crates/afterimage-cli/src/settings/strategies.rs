//! `personas:`, `tools:` and `retrieval:`: the strategies that shape the questions
//! and the respondent's prompt.

use std::path::Path;

use afterimage_core::ApiKey;

use super::{EmbeddingEndpoint, KeyPolicy, SettingsError};
use crate::config::{
    EmbeddingSection, PersonasSection, RawConfig, RetrievalSection, RetrieverKind, ToolsSection,
};
use afterimage_providers::Provider;

/// `personas:`, resolved.
#[derive(Debug, Clone, Copy)]
pub struct PersonaSettings {
    /// The deepest layer, when the file fixes it.
    pub max_depth: Option<u32>,
}

/// `tools:`, resolved.
#[derive(Debug, Clone)]
pub struct ToolSettings {
    /// The tools, checked.
    pub specs: Vec<afterimage_core::ToolSpec>,
    /// Where they came from, for messages.
    pub origin: String,
    /// Tools offered to each batch of questions.
    pub num_tools_to_sample: usize,
    /// Tool rounds per assistant turn.
    pub max_tool_rounds: u32,
}

/// `retrieval:`, resolved.
#[derive(Debug, Clone)]
pub struct RetrievalSettings {
    /// BM25 or embeddings.
    pub retriever: RetrieverKind,
    /// Chunks per question.
    pub top_k: usize,
    /// The lowest score kept.
    pub min_score: Option<f64>,
    /// Retrieve for every user turn.
    pub per_turn: bool,
    /// Also show the sampled document.
    pub include_document: bool,
    /// Characters per chunk.
    pub chunk_size: usize,
    /// Characters shared by neighbouring chunks.
    pub chunk_overlap: usize,
    /// The embedding endpoint (for `retriever: embedding`).
    pub embedding: Option<EmbeddingEndpoint>,
}

/// The chat endpoint the embedding model falls back on, and how keys are read.
pub(super) struct Chat<'a, E> {
    pub(super) provider: Provider,
    pub(super) base_url: Option<&'a str>,
    /// The model section's body limit, which the embedder shares.
    pub(super) max_response_bytes: usize,
    pub(super) env: &'a E,
    pub(super) keys: KeyPolicy,
}

/// `personas:`, `tools:` and `retrieval:`, resolved.
pub(super) struct Strategies {
    pub(super) personas: Option<PersonaSettings>,
    pub(super) tools: Option<ToolSettings>,
    pub(super) retrieval: Option<RetrievalSettings>,
}

/// The three strategy sections, in the file's order; `base_dir` anchors the tools
/// file.
pub(super) fn resolve<E: Fn(&str) -> Option<String>>(
    raw: &RawConfig,
    base_dir: &Path,
    has_documents: bool,
    chat: &Chat<'_, E>,
) -> Result<Strategies, SettingsError> {
    let personas = personas(&raw.personas, has_documents)?;
    let tools = match &raw.tools {
        None => None,
        Some(section) => Some(tools(section, base_dir)?),
    };
    let retrieval = retrieval(raw.retrieval.as_ref(), has_documents, chat)?;
    Ok(Strategies {
        personas,
        tools,
        retrieval,
    })
}

/// `personas:`; personas are drawn from documents, so they need some.
fn personas(
    section: &PersonasSection,
    has_documents: bool,
) -> Result<Option<PersonaSettings>, SettingsError> {
    if !section.enabled {
        return Ok(None);
    }
    if !has_documents {
        return Err(SettingsError::new(
            "personas.enabled",
            "needs documents: personas are drawn from them (add a `documents` section with context.enabled)",
        ));
    }
    Ok(Some(PersonaSettings {
        max_depth: section.n_iterations,
    }))
}

/// `tools:`: the specs, inline or from a file relative to `base_dir`, checked.
fn tools(section: &ToolsSection, base_dir: &Path) -> Result<ToolSettings, SettingsError> {
    let (specs, origin, key) = tool_specs(section, base_dir)?;
    let specs = afterimage_strategies::parse_tool_specs(&specs)
        .map_err(|e| SettingsError::new(key, format!("{origin}: {e}")))?;
    if specs.is_empty() {
        return Err(SettingsError::new(
            key,
            format!("{origin}: the list of tools is empty"),
        ));
    }
    if section.num_tools_to_sample == 0 {
        return Err(SettingsError::new(
            "tools.num_tools_to_sample",
            "is 0: offer at least one tool",
        ));
    }
    if section.max_tool_rounds == 0 {
        return Err(SettingsError::new(
            "tools.max_tool_rounds",
            "is 0: allow at least one round of tool calls",
        ));
    }
    Ok(ToolSettings {
        specs,
        origin,
        num_tools_to_sample: section.num_tools_to_sample,
        max_tool_rounds: section.max_tool_rounds,
    })
}

/// The raw specs, where they came from (for messages) and the key naming them.
fn tool_specs(
    section: &ToolsSection,
    base_dir: &Path,
) -> Result<(serde_json::Value, String, &'static str), SettingsError> {
    match (&section.specs, &section.file) {
        (Some(_), Some(_)) => Err(SettingsError::new(
            "tools",
            "give either specs or file, not both",
        )),
        (Some(specs), None) => Ok((specs.clone(), "tools.specs".to_owned(), "tools.specs")),
        (None, Some(file)) => {
            let path = base_dir.join(file);
            let fail = |message: String| SettingsError::new("tools.file", message);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let specs: serde_json::Value = serde_json::from_str(&text)
                .or_else(|_| serde_saphyr::from_str(&text).map_err(|e| e.to_string()))
                .map_err(|e| fail(format!("{}: neither JSON nor YAML: {e}", path.display())))?;
            Ok((specs, path.display().to_string(), "tools.file"))
        }
        (None, None) => Err(SettingsError::new(
            "tools",
            "list the tools under `specs` (OpenAI function specs) or name a `file` holding them",
        )),
    }
}

/// `retrieval:` when enabled; it searches documents, so it needs some.
fn retrieval<E: Fn(&str) -> Option<String>>(
    section: Option<&RetrievalSection>,
    has_documents: bool,
    chat: &Chat<'_, E>,
) -> Result<Option<RetrievalSettings>, SettingsError> {
    let Some(section) = section.filter(|s| s.enabled) else {
        return Ok(None);
    };
    if !has_documents {
        return Err(SettingsError::new(
            "retrieval",
            "needs documents to search: add a `documents` section (with context.enabled)",
        ));
    }
    if section.top_k == 0 {
        return Err(SettingsError::new(
            "retrieval.top_k",
            "is 0: retrieve at least one chunk",
        ));
    }
    if section.chunk_size == 0 || section.chunk_overlap >= section.chunk_size {
        return Err(SettingsError::new(
            if section.chunk_size == 0 {
                "retrieval.chunk_size"
            } else {
                "retrieval.chunk_overlap"
            },
            format!(
                "chunk_overlap ({}) must be smaller than chunk_size ({}), and chunk_size at least 1",
                section.chunk_overlap, section.chunk_size
            ),
        ));
    }
    let embedding = match (section.retriever, &section.embedding) {
        (RetrieverKind::Bm25, Some(_)) => {
            return Err(SettingsError::new(
                "retrieval.embedding",
                "is set but retrieval.retriever is bm25: set `retriever: embedding` or drop the embedding section",
            ));
        }
        (RetrieverKind::Bm25, None) => None,
        (RetrieverKind::Embedding, e) => Some(embedding(
            e.as_ref().unwrap_or(&EmbeddingSection::default()),
            chat,
        )?),
    };
    Ok(Some(RetrievalSettings {
        retriever: section.retriever,
        top_k: section.top_k,
        min_score: section.min_score,
        per_turn: section.per_turn,
        include_document: section.include_document,
        chunk_size: section.chunk_size,
        chunk_overlap: section.chunk_overlap,
        embedding,
    }))
}

/// `retrieval.embedding`: the model, its endpoint and its key.
fn embedding<E: Fn(&str) -> Option<String>>(
    e: &EmbeddingSection,
    chat: &Chat<'_, E>,
) -> Result<EmbeddingEndpoint, SettingsError> {
    let provider = e.provider.unwrap_or(chat.provider);
    if provider == Provider::Anthropic {
        return Err(SettingsError::new(
            "retrieval.embedding.provider",
            "anthropic has no embeddings API; use openai, gemini or local",
        ));
    }
    let model_name = e.model_name.clone().ok_or_else(|| SettingsError::new(
        "retrieval.embedding.model_name",
        "is missing: name the embedding model (for example text-embedding-3-small or gemini-embedding-001)",
    ))?;
    let api_key = embedding_key(e, provider, chat)?;
    // The chat endpoint serves embeddings too when the provider is the same.
    let base_url = e
        .base_url
        .clone()
        .or_else(|| {
            (provider == chat.provider)
                .then(|| chat.base_url.map(str::to_owned))
                .flatten()
        })
        .or_else(|| provider.base_url_from_env(chat.env));
    if e.batch_size == Some(0) {
        return Err(SettingsError::new(
            "retrieval.embedding.batch_size",
            "is 0: send at least one text per request",
        ));
    }
    Ok(EmbeddingEndpoint {
        provider,
        model_name,
        base_url,
        api_key,
        batch_size: e.batch_size,
        max_response_bytes: chat.max_response_bytes,
    })
}

/// The first key in the embedding section's variable (default: the provider's).
fn embedding_key<E: Fn(&str) -> Option<String>>(
    e: &EmbeddingSection,
    provider: Provider,
    chat: &Chat<'_, E>,
) -> Result<Option<ApiKey>, SettingsError> {
    let var = e
        .api_key_env
        .clone()
        .or_else(|| provider.default_key_env().map(str::to_owned));
    let Some(var) = var else {
        return Ok(None);
    };
    match (chat.env)(&var) {
        Some(key) if !key.trim().is_empty() => Ok(Some(ApiKey::new(
            key.split(',').next().unwrap_or_default().trim(),
        ))),
        _ if chat.keys == KeyPolicy::Required && provider != Provider::Local => {
            Err(SettingsError::new(
                "retrieval.embedding.api_key_env",
                format!("the API key variable {var} is not set (export {var}=<your key>)"),
            ))
        }
        _ => Ok(None),
    }
}
