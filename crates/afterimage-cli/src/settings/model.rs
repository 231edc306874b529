//! `model:`: the provider, model name, endpoint, keys and pacing (the main model's
//! and, through [`resolve_keys`], the judge's).

use std::time::Duration;

use afterimage_core::ApiKey;
use afterimage_providers::{DEFAULT_MAX_RESPONSE_BYTES, StructuredOutput, ThrottleConfig};

use super::{KeyPolicy, Overrides, SettingsError};
use crate::config::ModelSection;
use afterimage_providers::Provider;

/// A model endpoint other than the main one (the judge's).
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The provider.
    pub provider: Provider,
    /// The model.
    pub model_name: String,
    /// The endpoint, when not the provider's own.
    pub base_url: Option<String>,
    /// The keys (several rotate through a key pool).
    pub api_keys: Vec<ApiKey>,
    /// Retries of a request that failed in a way that may pass.
    pub max_retries: u32,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Rate limits, adaptive concurrency and the circuit breaker.
    pub pacing: ThrottleConfig,
    /// Each key's own rate limits (with several keys).
    pub per_key: ThrottleConfig,
    /// JSON output, body limit and generation defaults.
    pub options: EndpointOptions,
}

/// What a `model` section sets for every request of its endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EndpointOptions {
    /// How JSON output is asked for.
    pub structured_output: StructuredOutput,
    /// The largest response body read.
    pub max_response_bytes: usize,
    /// The token limit of requests that set none (and the cap of those asking more).
    pub max_tokens: Option<u32>,
    /// The temperature of requests that set none.
    pub temperature: Option<f32>,
    /// Whether requests carry prompt caching hints.
    pub prompt_caching: bool,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            structured_output: StructuredOutput::Auto,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_tokens: None,
            temperature: None,
            prompt_caching: true,
        }
    }
}

/// The embedding model's endpoint.
#[derive(Debug, Clone)]
pub struct EmbeddingEndpoint {
    /// OpenAI-compatible or Gemini.
    pub provider: Provider,
    /// The model.
    pub model_name: String,
    /// The endpoint, when not the provider's own.
    pub base_url: Option<String>,
    /// The key, when the provider needs one.
    pub api_key: Option<ApiKey>,
    /// Texts per request.
    pub batch_size: Option<usize>,
    /// The largest response body read (the model section's).
    pub max_response_bytes: usize,
}

/// The main model, resolved (its fields go to [`Settings`](super::Settings) as they are).
pub(super) struct MainModel {
    pub(super) provider: Provider,
    pub(super) model_name: String,
    pub(super) base_url: Option<String>,
    pub(super) api_keys: Vec<ApiKey>,
    pub(super) key_env: Option<String>,
    pub(super) max_retries: u32,
    pub(super) timeout: Duration,
    pub(super) pacing: ThrottleConfig,
    pub(super) per_key: ThrottleConfig,
    pub(super) connect_timeout: Duration,
    pub(super) price: Option<afterimage_engine::Price>,
    pub(super) options: EndpointOptions,
}

/// `model:` with the command line's `--provider`, `--model` and `--base-url`;
/// `max_concurrency` is the run's, the ceiling of the pacing.
pub(super) fn resolve(
    section: &ModelSection,
    overrides: &Overrides,
    env: &impl Fn(&str) -> Option<String>,
    keys: KeyPolicy,
    max_concurrency: usize,
) -> Result<MainModel, SettingsError> {
    let provider = overrides.provider.unwrap_or(section.provider);
    let model_name = overrides
        .model
        .clone()
        .or(section.model_name.clone())
        .unwrap_or_else(|| provider.default_model().to_owned());
    let base_url = overrides
        .base_url
        .clone()
        .or(section.base_url.clone())
        .or_else(|| provider.base_url_from_env(env));
    let (key_env, api_keys) = resolve_keys(section, provider, env, keys, "model")?;
    let options = options(section, "model")?;
    Ok(MainModel {
        provider,
        model_name,
        base_url,
        api_keys,
        key_env,
        max_retries: section.max_retries.unwrap_or(5),
        timeout: Duration::from_secs(section.timeout_secs.unwrap_or(120)),
        pacing: pacing(section, max_concurrency),
        per_key: per_key(section, max_concurrency),
        connect_timeout: Duration::from_secs(section.connect_timeout_secs.unwrap_or(10)),
        price: section.price,
        options,
    })
}

/// A model section's JSON output mode, body limit, generation defaults and caching
/// hints, checked;
/// `name` is the section's key path.
pub(super) fn options(
    section: &ModelSection,
    name: &str,
) -> Result<EndpointOptions, SettingsError> {
    if section.max_response_bytes == Some(0) {
        return Err(SettingsError::new(
            format!("{name}.max_response_bytes"),
            "is 0: allow at least one byte (the default is 16777216, 16 MiB)",
        ));
    }
    if section.max_tokens == Some(0) {
        return Err(SettingsError::new(
            format!("{name}.max_tokens"),
            "is 0: allow at least one token, or leave it out for the server's default",
        ));
    }
    if let Some(t) = section.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(SettingsError::new(
            format!("{name}.temperature"),
            format!("is {t}: it must lie between 0 and 2"),
        ));
    }
    Ok(EndpointOptions {
        structured_output: section.structured_output.unwrap_or_default(),
        max_response_bytes: section
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES),
        max_tokens: section.max_tokens,
        temperature: section.temperature,
        prompt_caching: section.prompt_caching.unwrap_or(true),
    })
}

/// A model section's pacing: its limits, the run's concurrency as the ceiling.
pub(super) fn pacing(section: &ModelSection, max_concurrency: usize) -> ThrottleConfig {
    ThrottleConfig {
        max_concurrency,
        requests_per_minute: section.requests_per_minute,
        tokens_per_minute: section.tokens_per_minute,
        breaker_after: match section.breaker_after_secs {
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
            None => Some(Duration::from_secs(300)),
        },
    }
}

/// Limits each key has on its own plan (no adaptive limit or breaker: the shared
/// throttle does that).
pub(super) fn per_key(section: &ModelSection, max_concurrency: usize) -> ThrottleConfig {
    ThrottleConfig {
        max_concurrency,
        requests_per_minute: section.requests_per_minute_per_key,
        tokens_per_minute: section.tokens_per_minute_per_key,
        breaker_after: None,
    }
}

/// The key variables of a `model` section and the keys they hold (a variable may hold
/// several, comma-separated); `name` is the section's key path.
pub(super) fn resolve_keys(
    section: &ModelSection,
    provider: Provider,
    env: &impl Fn(&str) -> Option<String>,
    policy: KeyPolicy,
    name: &str,
) -> Result<(Option<String>, Vec<ApiKey>), SettingsError> {
    let (vars, key): (Vec<String>, _) = if section.api_key_envs.is_empty() {
        let vars = section
            .api_key_env
            .clone()
            .or_else(|| provider.default_key_env().map(str::to_owned));
        (vars.into_iter().collect(), "api_key_env")
    } else {
        (section.api_key_envs.clone(), "api_key_envs")
    };
    let mut keys = Vec::new();
    for var in &vars {
        let found: Vec<ApiKey> = env(var)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(ApiKey::new)
            .collect();
        if found.is_empty() && policy == KeyPolicy::Required && provider != Provider::Local {
            return Err(SettingsError::new(
                format!("{name}.{key}"),
                format!(
                    "the API key variable {var} is not set: export {var}=<your key> (or point {name}.api_key_env at another variable)"
                ),
            ));
        }
        keys.extend(found);
    }
    let shown = (!vars.is_empty()).then(|| vars.join(", "));
    Ok((shown, keys))
}
