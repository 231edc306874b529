//! `respondent:` and `correspondent:`: the system prompts, inline or from files, and
//! each role's sampling settings.

use std::path::Path;

use super::SettingsError;
use super::sampling::{self, RoleSampling};
use crate::config::{CorrespondentSection, PromptSection};

/// The prompts of a run, resolved, with each role's sampling settings.
pub(super) struct Prompts {
    pub(super) respondent: String,
    pub(super) correspondent: Option<String>,
    pub(super) correspondent_model_name: Option<String>,
    pub(super) respondent_sampling: RoleSampling,
    pub(super) correspondent_sampling: RoleSampling,
}

/// Reads both prompts (files relative to `base_dir`); the respondent's is required.
pub(super) fn resolve(
    respondent: Option<&PromptSection>,
    correspondent: Option<&CorrespondentSection>,
    base_dir: &Path,
) -> Result<Prompts, SettingsError> {
    let respondent_section = respondent;
    let respondent = read_prompt(
        respondent.and_then(|r| r.system_prompt.clone()),
        respondent.and_then(|r| r.system_prompt_file.clone()),
        base_dir,
        "respondent",
    )?
    .ok_or_else(|| {
        SettingsError::new(
            "respondent.system_prompt",
            "is missing: add `respondent: {system_prompt: \"You are ...\"}` to the config",
        )
    })?;
    let correspondent_prompt = read_prompt(
        correspondent.and_then(|c| c.system_prompt.clone()),
        correspondent.and_then(|c| c.system_prompt_file.clone()),
        base_dir,
        "correspondent",
    )?;
    let respondent_sampling = sampling::resolve(
        "respondent",
        respondent_section.and_then(|r| r.temperature),
        respondent_section.and_then(|r| r.max_tokens),
    )?;
    let correspondent_sampling = sampling::resolve(
        "correspondent",
        correspondent.and_then(|c| c.temperature),
        correspondent.and_then(|c| c.max_tokens),
    )?;
    Ok(Prompts {
        respondent,
        correspondent: correspondent_prompt,
        correspondent_model_name: correspondent.and_then(|c| c.model_name.clone()),
        respondent_sampling,
        correspondent_sampling,
    })
}

fn read_prompt(
    text: Option<String>,
    file: Option<String>,
    base_dir: &Path,
    section: &str,
) -> Result<Option<String>, SettingsError> {
    match (text, file) {
        (Some(_), Some(_)) => Err(SettingsError::new(
            section,
            "give either system_prompt or system_prompt_file, not both",
        )),
        (Some(text), None) if text.trim().is_empty() => Err(SettingsError::new(
            format!("{section}.system_prompt"),
            "is empty: write the prompt or drop the key",
        )),
        (Some(text), None) => Ok(Some(text)),
        (None, Some(file)) => read_prompt_file(&base_dir.join(&file), section).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_prompt_file(path: &Path, section: &str) -> Result<String, SettingsError> {
    let key = || format!("{section}.system_prompt_file");
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingsError::new(key(), format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(SettingsError::new(
            key(),
            format!("{} is empty: write the prompt in it", path.display()),
        ));
    }
    Ok(text)
}
