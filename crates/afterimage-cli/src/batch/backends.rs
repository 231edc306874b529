//! The provider's batch API for the run's model: one backend per configured key, since
//! a batch is only visible to the key that created it.

use std::sync::Arc;

use afterimage_batch::{AnthropicBatch, BatchBackend, GeminiBatch, OpenAiBatch};
use afterimage_core::ApiKey;
use afterimage_providers::{
    Anthropic, ChatBuilder, ChatClient, Gemini, OpenAiCompatible, Provider,
};
use anyhow::{Context, anyhow};

use crate::settings::Settings;

/// A backend and the fingerprint of the key it calls with (what the journal pins).
pub(crate) struct Keyed {
    /// The fingerprint (`k1a2b3c4d`), never the key.
    pub(crate) fingerprint: String,
    /// The backend.
    pub(crate) backend: Arc<dyn BatchBackend>,
}

/// One backend per key of the main endpoint (one without a key for a local server),
/// speaking the provider's batch protocol.
pub(crate) fn backends(
    settings: &Settings,
    client: &reqwest::Client,
) -> anyhow::Result<Vec<Keyed>> {
    let keys: Vec<Option<&ApiKey>> = if settings.api_keys.is_empty() {
        vec![None]
    } else {
        settings.api_keys.iter().map(Some).collect()
    };
    keys.into_iter()
        .map(|key| {
            let backend = backend(settings, key, client)?;
            let own = backend.key_fingerprint();
            let fingerprint = match (own.is_empty(), key) {
                (false, _) => own,
                (true, Some(key)) => key.fingerprint(),
                (true, None) => "none".to_owned(),
            };
            Ok(Keyed {
                fingerprint,
                backend,
            })
        })
        .collect()
}

/// The backend of the provider's batch API for one key.
fn backend(
    settings: &Settings,
    key: Option<&ApiKey>,
    client: &reqwest::Client,
) -> anyhow::Result<Arc<dyn BatchBackend>> {
    Ok(match settings.provider {
        Provider::Anthropic => Arc::new(AnthropicBatch::new(connect(
            Anthropic::builder(),
            settings,
            key,
            client,
        )?)),
        Provider::Gemini => Arc::new(GeminiBatch::new(connect(
            Gemini::builder(),
            settings,
            key,
            client,
        )?)),
        Provider::Openai => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::openai(),
            settings,
            key,
            client,
        )?)),
        Provider::Local => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::local(),
            settings,
            key,
            client,
        )?)),
        // Settings let these through only with a base URL of one's own, which then
        // speaks OpenAI's batch routes.
        Provider::Deepseek | Provider::Openrouter => Arc::new(OpenAiBatch::new(connect(
            OpenAiCompatible::builder(settings.base_url.clone().unwrap_or_default()),
            settings,
            key,
            client,
        )?)),
    })
}

/// The synchronous client a backend borrows its connection and request bodies from.
fn connect<C: ChatClient>(
    builder: ChatBuilder<C>,
    settings: &Settings,
    key: Option<&ApiKey>,
    client: &reqwest::Client,
) -> anyhow::Result<C> {
    let mut builder = builder
        .model(&settings.model_name)
        .timeout(settings.timeout)
        .client(client.clone())
        .max_response_bytes(settings.endpoint_options.max_response_bytes);
    if let Some(url) = &settings.base_url {
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
                "the batch was created with key {fingerprint}, which is not configured (the configured keys are {}): only the key that created a batch can see it; add that key to the model's api_key_env",
                configured.join(", ")
            )
        })
}
