//! The built-in price table: what the common models of OpenAI, Anthropic, Gemini and
//! DeepSeek charge, read from `prices.json` (embedded at build time; each entry names
//! its source, the file its date).

use std::sync::OnceLock;

use afterimage_core::Price;
use serde::Deserialize;

use crate::Provider;

/// The table's data file, kept beside the crate's `Cargo.toml`.
const BUILTIN: &str = include_str!("../prices.json");

/// A table of token prices by provider and model, versioned and dated.
///
/// Names match exactly or as a dated snapshot of a listed model
/// (`gpt-4o-mini-2024-07-18`, `claude-sonnet-4-5-20250929`, `gemini-2.0-flash-001`),
/// after a Gemini `models/` prefix; OpenRouter's `vendor/model` names are looked up
/// under the vendor. A local server has no price.
///
/// ```
/// use afterimage_providers::{PriceTable, Provider};
///
/// let table = PriceTable::builtin();
/// let price = table.lookup(Provider::Openai, "gpt-4o-mini-2024-07-18").unwrap();
/// assert_eq!(Some(price), table.lookup(Provider::Openrouter, "openai/gpt-4o-mini"));
/// assert_eq!(table.lookup(Provider::Local, "gpt-4o-mini"), None);
/// println!("prices of {} (version {})", table.as_of(), table.version());
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    version: u32,
    as_of: String,
    currency: String,
    #[serde(default, rename = "about")]
    _about: String,
    models: Vec<PriceEntry>,
}

/// One model's price and where it comes from.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    /// The provider that bills it.
    pub provider: Provider,
    /// The model's name at the provider, without a snapshot date.
    pub model: String,
    /// Its price per million tokens.
    pub price: Price,
    /// The page the price was read from.
    pub source: String,
    /// What the price covers when that is not obvious (a context tier, a cache TTL).
    #[serde(default)]
    pub note: Option<String>,
}

/// A price table that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("the price table cannot be read: {0}")]
pub struct PriceTableError(#[from] serde_json::Error);

impl PriceTable {
    /// The table shipped with this version (`crates/afterimage-providers/prices.json`).
    pub fn builtin() -> &'static PriceTable {
        static TABLE: OnceLock<PriceTable> = OnceLock::new();
        // The file is ours and a test parses it, so an empty table is only a fallback.
        TABLE.get_or_init(|| {
            PriceTable::from_json(BUILTIN).unwrap_or_else(|_| PriceTable {
                version: 0,
                as_of: String::new(),
                currency: String::new(),
                _about: String::new(),
                models: Vec::new(),
            })
        })
    }

    /// A table in the format of the built-in one.
    pub fn from_json(text: &str) -> Result<PriceTable, PriceTableError> {
        Ok(serde_json::from_str(text)?)
    }

    /// The price of `model` at `provider`, when the table has it.
    pub fn lookup(&self, provider: Provider, model: &str) -> Option<Price> {
        self.entry(provider, model).map(|e| e.price)
    }

    /// The entry `model` at `provider` resolves to (exact name first, then the model
    /// a dated snapshot belongs to).
    pub fn entry(&self, provider: Provider, model: &str) -> Option<&PriceEntry> {
        let (provider, name) = billed_by(provider, model)?;
        let find = |name: &str| {
            self.models
                .iter()
                .find(|e| e.provider == provider && e.model == name)
        };
        find(&name).or_else(|| find(without_snapshot(&name)?))
    }

    /// The date the prices were read (`YYYY-MM-DD`).
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// The table's version, raised whenever a price changes.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The currency of every price (`USD`).
    pub fn currency(&self) -> &str {
        &self.currency
    }

    /// Every entry, in the file's order.
    pub fn entries(&self) -> &[PriceEntry] {
        &self.models
    }
}

/// The provider that bills `model` and the name it lists it under: OpenRouter's
/// `vendor/model` goes to the vendor, Gemini's `models/` prefix goes, names are
/// lower-cased; a local server bills nothing.
fn billed_by(provider: Provider, model: &str) -> Option<(Provider, String)> {
    let model = model.trim().to_ascii_lowercase();
    let model = model.strip_prefix("models/").unwrap_or(&model).to_owned();
    match provider {
        Provider::Local => None,
        Provider::Openrouter => {
            let (vendor, name) = model.split_once('/')?;
            let vendor = match vendor {
                "openai" => Provider::Openai,
                "anthropic" => Provider::Anthropic,
                "google" => Provider::Gemini,
                "deepseek" => Provider::Deepseek,
                _ => return None,
            };
            // OpenRouter writes Claude versions with dots (`claude-sonnet-4.5`).
            let name = if vendor == Provider::Anthropic {
                name.replace('.', "-")
            } else {
                name.to_owned()
            };
            Some((vendor, name))
        }
        _ => Some((provider, model)),
    }
}

/// The model a dated snapshot name belongs to: without `-YYYY-MM-DD` (OpenAI),
/// `-YYYYMMDD` or `-latest` (Anthropic), or `-NNN` (Gemini); `None` when the name
/// has no such suffix.
fn without_snapshot(name: &str) -> Option<&str> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if let Some(base) = name.strip_suffix("-latest") {
        return Some(base);
    }
    let (base, last) = name.rsplit_once('-')?;
    if digits(last, 8) || digits(last, 3) {
        return Some(base);
    }
    // `-YYYY-MM-DD`: three dash-separated parts of 4, 2 and 2 digits.
    let (rest, month) = base.rsplit_once('-')?;
    let (base, year) = rest.rsplit_once('-')?;
    (digits(year, 4) && digits(month, 2) && digits(last, 2)).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> &'static PriceTable {
        PriceTable::builtin()
    }

    #[test]
    fn the_data_file_parses_and_is_dated_and_versioned() {
        let parsed = PriceTable::from_json(BUILTIN).unwrap();
        assert!(parsed.version() >= 1);
        assert_eq!(parsed.currency(), "USD");
        let date = parsed.as_of().as_bytes();
        assert!(
            date.len() == 10 && date[4] == b'-' && date[7] == b'-',
            "as_of {}",
            parsed.as_of()
        );
        assert_eq!(table(), &parsed);
    }

    #[test]
    fn every_entry_has_a_source_and_usable_rates_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for e in table().entries() {
            assert!(
                e.source.starts_with("https://"),
                "{} has no source",
                e.model
            );
            assert_eq!(e.price.invalid_rate(), None, "{}", e.model);
            assert!(e.price.output_per_million > 0.0, "{}", e.model);
            assert!(
                seen.insert((e.provider, e.model.clone())),
                "{} twice",
                e.model
            );
            assert_eq!(e.model, e.model.to_ascii_lowercase());
            assert_ne!(e.provider, Provider::Local);
            assert_ne!(e.provider, Provider::Openrouter);
        }
    }

    #[test]
    fn every_default_model_of_the_catalogue_is_priced() {
        for provider in Provider::ALL {
            if provider != Provider::Local {
                assert!(
                    table().lookup(provider, provider.default_model()).is_some(),
                    "{} {}",
                    provider.name(),
                    provider.default_model()
                );
            }
        }
    }

    #[test]
    fn dated_snapshots_resolve_to_their_model() {
        let t = table();
        for (provider, snapshot, model) in [
            (Provider::Openai, "gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
            (Provider::Openai, "gpt-4.1-2025-04-14", "gpt-4.1"),
            (
                Provider::Anthropic,
                "claude-sonnet-4-5-20250929",
                "claude-sonnet-4-5",
            ),
            (
                Provider::Anthropic,
                "claude-3-5-haiku-latest",
                "claude-3-5-haiku",
            ),
            (
                Provider::Gemini,
                "models/gemini-2.0-flash",
                "gemini-2.0-flash",
            ),
            (Provider::Gemini, "gemini-2.0-flash-001", "gemini-2.0-flash"),
            (Provider::Openai, " GPT-4o-Mini ", "gpt-4o-mini"),
        ] {
            assert_eq!(
                t.lookup(provider, snapshot),
                t.lookup(provider, model),
                "{snapshot}"
            );
            assert!(t.lookup(provider, model).is_some(), "{model}");
        }
    }

    #[test]
    fn an_exact_entry_outranks_the_snapshot_rule() {
        let t = table();
        let launch = t.lookup(Provider::Openai, "gpt-4o-2024-05-13").unwrap();
        let current = t.lookup(Provider::Openai, "gpt-4o-2024-08-06").unwrap();
        assert_eq!(launch.input_per_million, 5.0);
        assert_eq!(current, t.lookup(Provider::Openai, "gpt-4o").unwrap());
    }

    #[test]
    fn openrouter_names_are_looked_up_under_their_vendor() {
        let t = table();
        assert_eq!(
            t.lookup(Provider::Openrouter, "openai/gpt-4o-mini"),
            t.lookup(Provider::Openai, "gpt-4o-mini")
        );
        assert_eq!(
            t.lookup(Provider::Openrouter, "anthropic/claude-sonnet-4.5"),
            t.lookup(Provider::Anthropic, "claude-sonnet-4-5")
        );
        assert_eq!(
            t.lookup(Provider::Openrouter, "google/gemini-2.0-flash-001"),
            t.lookup(Provider::Gemini, "gemini-2.0-flash")
        );
        assert_eq!(
            t.lookup(Provider::Openrouter, "meta-llama/llama-3-70b"),
            None
        );
        assert_eq!(t.lookup(Provider::Openrouter, "gpt-4o-mini"), None);
    }

    #[test]
    fn unknown_models_and_near_misses_have_no_price() {
        let t = table();
        assert_eq!(t.lookup(Provider::Openai, "mock-model"), None);
        assert_eq!(t.lookup(Provider::Local, "gpt-4o-mini"), None);
        // A listed model of another provider is not this provider's.
        assert_eq!(t.lookup(Provider::Deepseek, "gpt-4o-mini"), None);
        // `o3-mini` is not `o3`: only dates are stripped.
        assert_eq!(t.lookup(Provider::Openai, "o3-mini"), None);
        assert_eq!(without_snapshot("gpt-4o-mini"), None);
        assert_eq!(without_snapshot("claude-sonnet-4-5"), None);
    }

    #[test]
    fn anthropic_cache_rates_follow_the_published_multipliers() {
        for e in table().entries() {
            if e.provider == Provider::Anthropic {
                let p = e.price;
                assert!((p.cache_write_rate() - p.input_per_million * 1.25).abs() < 1e-9);
                assert!((p.cached_input_rate() - p.input_per_million * 0.1).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn a_malformed_table_is_an_error() {
        assert!(PriceTable::from_json("{}").is_err());
        assert!(PriceTable::from_json(r#"{"version": 1, "as_of": "x", "currency": "USD", "models": [{"provider": "nowhere", "model": "m", "price": {"input_per_million": 1, "output_per_million": 1}, "source": "s"}]}"#).is_err());
    }
}
