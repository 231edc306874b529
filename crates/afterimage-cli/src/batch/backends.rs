//! The providers' batch APIs of a run: one [`BatchEndpoint`] for the main endpoint
//! (the respondent's and the correspondent's models) and, when the judge has an
//! endpoint of its own, one named `judge`; one backend per configured key of each,
//! since a batch is only visible to the key that created it.

use std::sync::Arc;
use std::time::Duration;

use afterimage_batch::{
    AnthropicBatch, BatchBackend, BatchEndpoint, GeminiBatch, OpenAiBatch, pin_name,
};
use afterimage_core::ApiKey;
use afterimage_providers::{
    Anthropic, ChatBuilder, ChatClient, Gemini, OpenAiCompatible, Provider,
};
use anyhow::{Context, anyhow};

use crate::settings::{Endpoint, Settings};

/// The name of the judge's own endpoint in the batcher and the journal.
pub(crate) const JUDGE_ENDPOINT: &str = "judge";

/// A backend and the name the journal pins its batches with (the key's fingerprint,
/// `@judge` after it on the judge's endpoint).
pub(crate) struct Keyed {
    /// The pin (`k1a2b3c4d`, `k1a2b3c4d@judge`), never the key.
    pub(crate) fingerprint: String,
    /// The backend.
    pub(crate) backend: Arc<dyn BatchBackend>,
}

/// Where one endpoint's batch API is and how to reach it.
struct Target<'a> {
    provider: Provider,
    model: &'a str,
    base_url: Option<&'a str>,
    keys: &'a [ApiKey],
    timeout: Duration,
    max_response_bytes: usize,
}

impl<'a> Target<'a> {
    fn main(settings: &'a Settings) -> Self {
        Target {
            provider: settings.provider,
            model: &settings.model_name,
            base_url: settings.base_url.as_deref(),
            keys: &settings.api_keys,
            timeout: settings.timeout,
            max_response_bytes: settings.endpoint_options.max_response_bytes,
        }
    }

    fn judge(endpoint: &'a Endpoint) -> Self {
        Target {
            provider: endpoint.provider,
            model: &endpoint.model_name,
            base_url: endpoint.base_url.as_deref(),
            keys: &endpoint.api_keys,
            timeout: endpoint.timeout,
            max_response_bytes: endpoint.options.max_response_bytes,
        }
    }

    /// Whether this version speaks the provider's batch API there (DeepSeek and
    /// OpenRouter only at a base URL of one's own serving OpenAI's routes).
    fn has_batch_api(&self) -> bool {
        !matches!(self.provider, Provider::Deepseek | Provider::Openrouter)
            || self.base_url.is_some()
    }
}

/// The run's batch endpoints: the main one, and the judge's own when `judge` (the
/// judge is batched) and the config gives the judge an endpoint with a batch API.
pub(crate) fn endpoints(
    settings: &Settings,
    client: &reqwest::Client,
    judge: bool,
) -> anyhow::Result<Vec<BatchEndpoint>> {
    let main = keyed(&Target::main(settings), "", client)?;
    let mut endpoints = vec![BatchEndpoint::new("", backends_of(main))];
    if let Some(endpoint) = judge_target(settings).filter(|_| judge) {
        let judge = keyed(&endpoint, JUDGE_ENDPOINT, client)?;
        endpoints.push(BatchEndpoint::new(JUDGE_ENDPOINT, backends_of(judge)));
    }
    Ok(endpoints)
}

/// Every backend of the run's endpoints, pinned as the journal pins them (what
/// `batch status|cancel` reach the batches with).
pub(crate) fn backends(
    settings: &Settings,
    client: &reqwest::Client,
) -> anyhow::Result<Vec<Keyed>> {
    let mut all = keyed(&Target::main(settings), "", client)?;
    if let Some(judge) = judge_target(settings) {
        all.extend(keyed(&judge, JUDGE_ENDPOINT, client)?);
    }
    Ok(all)
}

/// The judge's own endpoint, when it has one with a batch API.
fn judge_target(settings: &Settings) -> Option<Target<'_>> {
    let target = Target::judge(settings.evaluator.as_ref()?);
    if target.has_batch_api() {
        Some(target)
    } else {
        tracing::warn!(
            "the judge's endpoint ({}) has no batch API, so the judge's requests stay synchronous; give it a base_url serving OpenAI's /v1/batches to batch them",
            target.provider.name()
        );
        None
    }
}

fn backends_of(keyed: Vec<Keyed>) -> Vec<Arc<dyn BatchBackend>> {
    keyed.into_iter().map(|k| k.backend).collect()
}

/// One backend per key of `target` (one without a key for a local server), pinned
/// on the endpoint named `endpoint`.
fn keyed(target: &Target, endpoint: &str, client: &reqwest::Client) -> anyhow::Result<Vec<Keyed>> {
    let keys: Vec<Option<&ApiKey>> = if target.keys.is_empty() {
        vec![None]
    } else {
        target.keys.iter().map(Some).collect()
    };
    keys.into_iter()
        .map(|key| {
            let backend = backend(target, key, client)?;
            let own = backend.key_fingerprint();
            let fingerprint = match (own.is_empty(), key) {
                (false, _) => own,
                (true, Some(key)) => key.fingerprint(),
                (true, None) => "none".to_owned(),
            };
            Ok(Keyed {
                fingerprint: pin_name(endpoint, &fingerprint),
                backend,
            })
        })
        .collect()
}

/// The backend of the provider's batch API for one key.
fn backend(
    target: &Target,
    key: Option<&ApiKey>,
    client: &reqwest::Client,
) -> anyhow::Result<Arc<dyn BatchBackend>> {
    Ok(match target.provider {
        Provider::Anthropic => Arc::new(AnthropicBatch::new(connect(
            Anthropic::builder(),
            target,
            key,
            client,
        )?)),
        Provider::Gemini => Arc::new(GeminiBatch::new(connect(
            Gemini::builder(),
            target,
            key,
            client,
        )?)),
        Provider::Openai => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::openai(),
            target,
            key,
            client,
        )?)),
        Provider::Local => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::local(),
            target,
            key,
            client,
        )?)),
        // Settings let these through only with a base URL of one's own, which then
        // speaks OpenAI's batch routes.
        Provider::Deepseek | Provider::Openrouter => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::builder(target.base_url.unwrap_or_default()),
            target,
            key,
            client,
        )?)),
    })
}

/// The synchronous client a backend borrows its connection and request bodies from.
fn connect<C: ChatClient>(
    builder: ChatBuilder<C>,
    target: &Target,
    key: Option<&ApiKey>,
    client: &reqwest::Client,
) -> anyhow::Result<C> {
    let mut builder = builder
        .model(target.model)
        .timeout(target.timeout)
        .client(client.clone())
        .max_response_bytes(target.max_response_bytes);
    if let Some(url) = target.base_url {
        builder = builder.base_url(url);
    }
    if let Some(key) = key {
        builder = builder.api_key(key.clone());
    }
    builder.build().context("batch API client settings")
}

/// The backend holding key `fingerprint`, or an error saying which keys there are.
pub(crate) fn pinned<'a>(backends: &'a [Keyed], fingerprint: &str) -> anyhow::Result<&'a Keyed> {
    backends
        .iter()
        .find(|b| b.fingerprint == fingerprint)
        .ok_or_else(|| {
            let configured: Vec<&str> = backends.iter().map(|b| b.fingerprint.as_str()).collect();
            anyhow!(
                "the batch was created with key {fingerprint}, which is not configured (the configured keys are {}): only the key that created a batch can see it; add that key to the model's api_key_env (or the judge's, for a key ending in @judge)",
                configured.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn settings(yaml: &str) -> Settings {
        let raw =
            crate::config::parse(&format!("respondent: {{system_prompt: hi}}\n{yaml}")).unwrap();
        let env = |name: &str| {
            matches!(name, "OPENAI_API_KEY" | "ANTHROPIC_API_KEY").then(|| format!("key-{name}"))
        };
        let overrides = crate::settings::Overrides {
            batch: true,
            ..Default::default()
        };
        let policy = crate::KeyPolicy::Required;
        Settings::resolve(raw, Path::new("run.yaml"), &overrides, env, policy).unwrap()
    }

    #[test]
    fn a_judge_with_its_own_endpoint_gets_an_endpoint_and_pins_of_its_own() {
        let s = settings(
            "model: {provider: openai}\nquality: {auto_improve: true, evaluator: {provider: anthropic, base_url: 'http://127.0.0.1:9/'}}\n",
        );
        let client = reqwest::Client::new();
        let names: Vec<String> = endpoints(&s, &client, true)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["", JUDGE_ENDPOINT]);
        assert_eq!(endpoints(&s, &client, false).unwrap().len(), 1);
        let pins: Vec<String> = backends(&s, &client)
            .unwrap()
            .into_iter()
            .map(|k| k.fingerprint)
            .collect();
        assert_eq!(pins.len(), 2);
        assert!(!pins[0].contains('@'), "{pins:?}");
        assert!(pins[1].ends_with("@judge"), "{pins:?}");
        let Err(missing) = pinned(&[], "k@judge") else {
            panic!("no backend holds k@judge");
        };
        assert!(missing.to_string().contains("judge"), "{missing}");
    }

    #[test]
    fn a_judge_on_the_main_endpoint_adds_none() {
        let s = settings("model: {provider: openai}\nquality: {auto_improve: true}\n");
        let client = reqwest::Client::new();
        assert_eq!(endpoints(&s, &client, true).unwrap().len(), 1);
        assert_eq!(backends(&s, &client).unwrap().len(), 1);
    }
}
