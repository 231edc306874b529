//! `quality:`: the judge's threshold and model, on the main endpoint or its own.

use std::time::Duration;

use super::model::{options, pacing, per_key, resolve_keys};
use super::sampling::{self, RoleSampling};
use super::{Endpoint, KeyPolicy, SettingsError};
use crate::config::QualitySection;

/// The judge's model and sampling settings, resolved.
pub(super) struct Judge {
    /// Its temperature and token limit.
    pub(super) sampling: RoleSampling,
    /// Its model name (`evaluator_model_name`, else the evaluator section's).
    pub(super) model_name: Option<String>,
    /// Its own endpoint, when `quality.evaluator` names one.
    pub(super) endpoint: Option<Endpoint>,
}

/// Checks the threshold and resolves the judge's endpoint (paced like the run).
pub(super) fn resolve(
    section: &QualitySection,
    env: &impl Fn(&str) -> Option<String>,
    keys: KeyPolicy,
    max_concurrency: usize,
) -> Result<Judge, SettingsError> {
    if !(0.0..=1.0).contains(&section.min_score) {
        return Err(SettingsError::new(
            "quality.min_score",
            format!("is {}: it must lie between 0 and 1", section.min_score),
        ));
    }
    let endpoint = match &section.evaluator {
        None => None,
        Some(evaluator) => {
            let provider = evaluator.provider;
            let (_, api_keys) = resolve_keys(evaluator, provider, env, keys, "quality.evaluator")?;
            Some(Endpoint {
                provider,
                model_name: evaluator
                    .model_name
                    .clone()
                    .unwrap_or_else(|| provider.default_model().to_owned()),
                base_url: evaluator
                    .base_url
                    .clone()
                    .or_else(|| provider.base_url_from_env(env)),
                api_keys,
                max_retries: evaluator.max_retries.unwrap_or(5),
                pacing: pacing(evaluator, max_concurrency),
                per_key: per_key(evaluator, max_concurrency),
                timeout: Duration::from_secs(evaluator.timeout_secs.unwrap_or(120)),
                options: options(evaluator, "quality.evaluator")?,
            })
        }
    };
    let model_name = section.evaluator_model_name.clone().or_else(|| {
        section
            .evaluator
            .as_ref()
            .and_then(|e| e.model_name.clone())
    });
    Ok(Judge {
        sampling: sampling::resolve("quality", section.temperature, section.max_tokens)?,
        model_name,
        endpoint,
    })
}
