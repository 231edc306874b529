//! The catalogue of providers: their names, endpoints, key variables and defaults.

use serde::{Deserialize, Serialize};

use crate::{
    ANTHROPIC_BASE_URL, DEEPSEEK_BASE_URL, GEMINI_BASE_URL, LOCAL_BASE_URL, OPENAI_BASE_URL,
    OPENROUTER_BASE_URL,
};

/// A provider this crate has a client for, named as configs spell it (`gemini`,
/// `openai`, `deepseek`, `openrouter`, `local`, `anthropic`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Google Gemini (generateContent).
    #[default]
    Gemini,
    /// OpenAI chat completions.
    Openai,
    /// DeepSeek (OpenAI-compatible).
    Deepseek,
    /// OpenRouter (OpenAI-compatible).
    Openrouter,
    /// Any OpenAI-compatible server (vLLM, Ollama, llama.cpp), no key needed.
    Local,
    /// Anthropic Messages API.
    Anthropic,
}

/// A provider name that is not in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown provider `{0}` (expected gemini, openai, deepseek, openrouter, local or anthropic)"
)]
pub struct UnknownProvider(pub String);

impl Provider {
    /// Every provider, in the order configs and `--help` list them.
    pub const ALL: [Provider; 6] = [
        Provider::Gemini,
        Provider::Openai,
        Provider::Deepseek,
        Provider::Openrouter,
        Provider::Local,
        Provider::Anthropic,
    ];

    /// The name used in configs.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Gemini => "gemini",
            Provider::Openai => "openai",
            Provider::Deepseek => "deepseek",
            Provider::Openrouter => "openrouter",
            Provider::Local => "local",
            Provider::Anthropic => "anthropic",
        }
    }

    /// One line saying what the provider is (for help texts).
    pub fn description(self) -> &'static str {
        match self {
            Provider::Gemini => "Google Gemini (generateContent)",
            Provider::Openai => "OpenAI chat completions",
            Provider::Deepseek => "DeepSeek (OpenAI-compatible)",
            Provider::Openrouter => "OpenRouter (OpenAI-compatible)",
            Provider::Local => {
                "Any OpenAI-compatible server (vLLM, Ollama, llama.cpp), no key needed"
            }
            Provider::Anthropic => "Anthropic Messages API",
        }
    }

    /// The provider's own API, used unless an endpoint gives another base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Provider::Gemini => GEMINI_BASE_URL,
            Provider::Openai => OPENAI_BASE_URL,
            Provider::Deepseek => DEEPSEEK_BASE_URL,
            Provider::Openrouter => OPENROUTER_BASE_URL,
            Provider::Local => LOCAL_BASE_URL,
            Provider::Anthropic => ANTHROPIC_BASE_URL,
        }
    }

    /// The environment variable holding the key by convention (none for local
    /// servers).
    pub fn default_key_env(self) -> Option<&'static str> {
        match self {
            Provider::Gemini => Some("GEMINI_API_KEY"),
            Provider::Openai => Some("OPENAI_API_KEY"),
            Provider::Deepseek => Some("DEEPSEEK_API_KEY"),
            Provider::Openrouter => Some("OPENROUTER_API_KEY"),
            Provider::Anthropic => Some("ANTHROPIC_API_KEY"),
            Provider::Local => None,
        }
    }

    /// The environment variable the provider's own SDK reads a base URL from
    /// (`OPENAI_BASE_URL`, `ANTHROPIC_BASE_URL`, `GOOGLE_GEMINI_BASE_URL`); none for
    /// the providers whose SDKs have none.
    pub fn base_url_env(self) -> Option<&'static str> {
        match self {
            Provider::Openai => Some("OPENAI_BASE_URL"),
            Provider::Anthropic => Some("ANTHROPIC_BASE_URL"),
            Provider::Gemini => Some("GOOGLE_GEMINI_BASE_URL"),
            _ => None,
        }
    }

    /// The base URL [`base_url_env`](Self::base_url_env) names, read through `env`
    /// (so callers decide where variables come from); `None` when it is unset or
    /// blank.
    ///
    /// ```
    /// use afterimage_providers::Provider;
    ///
    /// let env = |name: &str| (name == "ANTHROPIC_BASE_URL").then(|| "http://gw:4000".to_owned());
    /// assert_eq!(Provider::Anthropic.base_url_from_env(env).as_deref(), Some("http://gw:4000"));
    /// assert_eq!(Provider::Local.base_url_from_env(env), None);
    /// ```
    pub fn base_url_from_env(self, env: impl Fn(&str) -> Option<String>) -> Option<String> {
        let value = env(self.base_url_env()?)?;
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_owned())
    }

    /// A sensible model for the provider (the Python tool sends a Gemini model name to
    /// every provider).
    pub fn default_model(self) -> &'static str {
        match self {
            Provider::Gemini => "gemini-2.0-flash",
            Provider::Openai => "gpt-4o-mini",
            Provider::Deepseek => "deepseek-chat",
            Provider::Openrouter => "openai/gpt-4o-mini",
            Provider::Local => "default",
            Provider::Anthropic => "claude-sonnet-4-5",
        }
    }

    /// Dialogs in flight when a config does not say (the Python tool's defaults:
    /// rate-limited hosted APIs 2, DeepSeek 16, local servers 8).
    pub fn default_concurrency(self) -> usize {
        match self {
            Provider::Deepseek => 16,
            Provider::Local => 8,
            _ => 2,
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Provider {
    type Err = UnknownProvider;

    /// Reads a name as configs spell it (lowercase).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| UnknownProvider(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for provider in Provider::ALL {
            let json = serde_json::to_string(&provider).unwrap();
            assert_eq!(json, format!("\"{}\"", provider.name()));
            assert_eq!(serde_json::from_str::<Provider>(&json).unwrap(), provider);
            assert_eq!(provider.name().parse::<Provider>().unwrap(), provider);
            assert_eq!(provider.to_string(), provider.name());
        }
        assert!("Gemini".parse::<Provider>().is_err());
        assert_eq!(Provider::default(), Provider::Gemini);
    }
}
