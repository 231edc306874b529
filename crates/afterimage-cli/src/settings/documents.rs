//! `documents:` and `context:`: where documents come from and how questions are
//! drawn from them.

use std::path::{Path, PathBuf};

use afterimage_engine::StopRule;

use super::SettingsError;
use crate::config::{ContextSection, DocumentsKind, DocumentsSection};

/// Where documents come from, with paths resolved against the config file.
#[derive(Debug, Clone)]
pub enum DocumentsSpec {
    /// A folder of `.txt`/`.md` files.
    Directory(PathBuf),
    /// One text file.
    File(PathBuf),
    /// Text files matching a glob pattern.
    Glob(String),
    /// A JSONL file.
    Jsonl {
        /// The file.
        path: PathBuf,
        /// The text field.
        text_field: String,
        /// Keep ids.
        preserve_ids: bool,
        /// Keep metadata.
        include_metadata: bool,
        /// The field holding a sampling weight.
        weight_field: Option<String>,
    },
    /// Texts written in the config.
    Inline(Vec<String>),
    /// Documents already read (so a run reads its files once).
    Loaded(Vec<afterimage_core::Document>),
}

/// `documents:` and `context:`, resolved.
pub(super) struct Context {
    pub(super) documents: Option<DocumentsSpec>,
    pub(super) min_length: usize,
    pub(super) num_random_contexts: usize,
    pub(super) n_instructions: usize,
}

/// The document source, when `context.enabled` draws questions from one (a warning
/// when documents are configured but unused).
pub(super) fn resolve(
    section: Option<&DocumentsSection>,
    context: &ContextSection,
    base_dir: &Path,
    warnings: &mut Vec<String>,
) -> Result<Context, SettingsError> {
    let documents = match (section, context.enabled) {
        (Some(section), true) => Some(documents_spec(section, base_dir)?),
        (Some(_), false) => {
            warnings.push(
                "documents are configured but context.enabled is false: questions will not be drawn from them"
                    .into(),
            );
            None
        }
        (None, _) => None,
    };
    for (key, value) in [
        ("context.num_random_contexts", context.num_random_contexts),
        ("context.n_instructions", context.n_instructions),
    ] {
        if value == 0 {
            return Err(SettingsError::new(
                key,
                "is 0: context.num_random_contexts and context.n_instructions must be at least 1",
            ));
        }
    }
    Ok(Context {
        documents,
        min_length: section.and_then(|d| d.min_length).unwrap_or(1),
        num_random_contexts: context.num_random_contexts,
        n_instructions: context.n_instructions,
    })
}

/// Uses after which a document is no longer sampled: `context.target_visits`, else
/// the largest `target_visits` of the coverage rules (as upstream infers it).
pub(super) fn target_visits(
    context: &ContextSection,
    stopping: &[StopRule],
) -> Result<Option<u64>, SettingsError> {
    let target_visits = context
        .target_visits
        .or_else(|| stopping.iter().filter_map(StopRule::target_visits).max());
    if target_visits == Some(0) {
        return Err(SettingsError::new(
            "context.target_visits",
            "is 0: a document needs at least one visit",
        ));
    }
    Ok(target_visits)
}

fn documents_spec(
    section: &DocumentsSection,
    base_dir: &Path,
) -> Result<DocumentsSpec, SettingsError> {
    let path = || {
        section
            .path
            .as_ref()
            .map(|p| base_dir.join(p))
            .ok_or_else(|| {
                SettingsError::new(
                    "documents.path",
                    "is missing: name the folder or file to read",
                )
            })
    };
    if section.weight_key.is_some() && section.provider != DocumentsKind::Jsonl {
        return Err(SettingsError::new(
            "documents.weight_key",
            "reads a field of JSONL records: it needs provider: jsonl",
        ));
    }
    match section.provider {
        DocumentsKind::Directory => Ok(DocumentsSpec::Directory(path()?)),
        DocumentsKind::File => {
            let path = path()?;
            let text = path.to_string_lossy();
            if text.contains(['*', '?', '[']) {
                return Ok(DocumentsSpec::Glob(text.into_owned()));
            }
            Ok(DocumentsSpec::File(path))
        }
        DocumentsKind::Jsonl => Ok(DocumentsSpec::Jsonl {
            path: path()?,
            text_field: section.content_key.clone(),
            preserve_ids: section.preserve_ids,
            include_metadata: section.include_metadata,
            weight_field: section.weight_key.clone(),
        }),
        DocumentsKind::Memory => match &section.texts {
            Some(texts) if !texts.is_empty() => Ok(DocumentsSpec::Inline(texts.clone())),
            _ => Err(SettingsError::new(
                "documents.texts",
                "is empty but documents.provider is memory: list the texts",
            )),
        },
        DocumentsKind::Qdrant => Err(SettingsError::new(
            "documents.provider",
            "qdrant is not supported yet; use directory, file, jsonl or memory",
        )),
    }
}
