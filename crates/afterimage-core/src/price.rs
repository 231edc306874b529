//! What a model's tokens cost.

use serde::{Deserialize, Serialize};

use crate::Usage;

/// The share of the synchronous rates a batch API bills when a price does not say.
pub const DEFAULT_BATCH_FACTOR: f64 = 0.5;

/// What a model's tokens cost, in your currency per million tokens.
///
/// Input and output prices are required. Cache reads and cache writes default to the
/// input price, so a price without them charges every prompt token alike (the
/// providers that cache bill reads below it, and Anthropic bills writes above it).
/// `batch_factor` is what the provider's batch API charges as a share of these rates
/// (`0.5`: half price), where it has one; a run's own calls are never batched, so it
/// is information for [`batched`](Self::batched) and never changes
/// [`cost`](Self::cost).
///
/// ```
/// use afterimage_core::{Price, Usage};
///
/// let price = Price::new(3.0, 15.0).cached_input(0.3).cache_writes(3.75);
/// // 1,000 prompt tokens, 600 read from the cache and 200 written to it; 100 out.
/// let usage = Usage::new(1000, 100).cached(600).cache_writes(200);
/// let cost = price.cost(usage);
/// assert!((cost - (200.0 * 3.0 + 600.0 * 0.3 + 200.0 * 3.75 + 100.0 * 15.0) / 1e6).abs() < 1e-12);
/// // Without cache prices every prompt token is billed at the input price.
/// assert_eq!(Price::new(3.0, 15.0).cost(usage), (1000.0 * 3.0 + 100.0 * 15.0) / 1e6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Per million prompt tokens neither read from nor written to a cache.
    pub input_per_million: f64,
    /// Per million completion tokens (reasoning included).
    pub output_per_million: f64,
    /// Per million prompt tokens read from the provider's cache; the input price when
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<f64>,
    /// Per million prompt tokens written to the provider's cache; the input price when
    /// not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<f64>,
    /// The share of these rates the provider's batch API charges (`0.5`: half), when
    /// it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_factor: Option<f64>,
}

impl Price {
    /// A price of `input_per_million` per million prompt tokens and
    /// `output_per_million` per million completion tokens, caching not priced apart.
    pub fn new(input_per_million: f64, output_per_million: f64) -> Self {
        Price {
            input_per_million,
            output_per_million,
            ..Price::default()
        }
    }

    /// With cache reads at `per_million`.
    pub fn cached_input(mut self, per_million: f64) -> Self {
        self.cached_input_per_million = Some(per_million);
        self
    }

    /// With cache writes at `per_million`.
    pub fn cache_writes(mut self, per_million: f64) -> Self {
        self.cache_write_per_million = Some(per_million);
        self
    }

    /// With the provider's batch API charging `factor` of every rate.
    pub fn batch_factor(mut self, factor: f64) -> Self {
        self.batch_factor = Some(factor);
        self
    }

    /// The rate of cache reads (the input price when not given).
    pub fn cached_input_rate(&self) -> f64 {
        self.cached_input_per_million
            .unwrap_or(self.input_per_million)
    }

    /// The rate of cache writes (the input price when not given).
    pub fn cache_write_rate(&self) -> f64 {
        self.cache_write_per_million
            .unwrap_or(self.input_per_million)
    }

    /// The cost of `usage`: uncached input, cache reads, cache writes and output, each
    /// at its rate.
    pub fn cost(&self, usage: Usage) -> f64 {
        (usage.uncached_input_tokens() as f64 * self.input_per_million
            + usage.cached_input_tokens as f64 * self.cached_input_rate()
            + usage.cache_write_tokens as f64 * self.cache_write_rate()
            + usage.output_tokens as f64 * self.output_per_million)
            / 1e6
    }

    /// The same price at the provider's batch rates, when it has a batch API.
    ///
    /// ```
    /// use afterimage_core::Price;
    ///
    /// let batch = Price::new(0.15, 0.6).batch_factor(0.5).batched().unwrap();
    /// assert_eq!((batch.input_per_million, batch.output_per_million), (0.075, 0.3));
    /// assert_eq!(Price::new(0.15, 0.6).batched(), None);
    /// ```
    pub fn batched(&self) -> Option<Price> {
        let factor = self.batch_factor?;
        Some(Price {
            input_per_million: self.input_per_million * factor,
            output_per_million: self.output_per_million * factor,
            cached_input_per_million: self.cached_input_per_million.map(|p| p * factor),
            cache_write_per_million: self.cache_write_per_million.map(|p| p * factor),
            batch_factor: None,
        })
    }

    /// What the provider's batch API charges: [`batched`](Self::batched) when the price
    /// has a `batch_factor`, else half of every rate (OpenAI, Anthropic and Gemini all
    /// bill batches at half price).
    ///
    /// ```
    /// use afterimage_core::Price;
    ///
    /// assert_eq!(Price::new(0.15, 0.6).batch_rate(), Price::new(0.075, 0.3));
    /// assert_eq!(Price::new(1.0, 2.0).batch_factor(0.8).batch_rate(), Price::new(0.8, 1.6));
    /// ```
    pub fn batch_rate(&self) -> Price {
        let half = Price {
            batch_factor: Some(DEFAULT_BATCH_FACTOR),
            ..*self
        };
        self.batched().or_else(|| half.batched()).unwrap_or(*self)
    }

    /// The first rate that is negative or not a number, by its key; `None` when every
    /// rate can be used.
    pub fn invalid_rate(&self) -> Option<(&'static str, f64)> {
        [
            ("input_per_million", Some(self.input_per_million)),
            ("output_per_million", Some(self.output_per_million)),
            ("cached_input_per_million", self.cached_input_per_million),
            ("cache_write_per_million", self.cache_write_per_million),
            ("batch_factor", self.batch_factor),
        ]
        .into_iter()
        .find_map(|(key, rate)| {
            rate.filter(|r| !r.is_finite() || *r < 0.0)
                .map(|r| (key, r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_two_number_price_bills_every_prompt_token_at_the_input_rate() {
        let price = Price::new(1.0, 4.0);
        let usage = Usage::new(1_000_000, 500_000)
            .cached(400_000)
            .cache_writes(100_000);
        assert_eq!(price.cost(usage), 1.0 + 2.0);
    }

    #[test]
    fn cache_reads_and_writes_are_billed_at_their_rates() {
        let price = Price::new(3.0, 15.0).cached_input(0.3).cache_writes(3.75);
        let usage = Usage::new(1_000_000, 0)
            .cached(500_000)
            .cache_writes(500_000);
        assert!((price.cost(usage) - (0.15 + 1.875)).abs() < 1e-9);
        let reads_only = Usage::new(1_000_000, 1_000_000).cached(1_000_000);
        assert!((price.cost(reads_only) - (0.3 + 15.0)).abs() < 1e-9);
    }

    #[test]
    fn the_old_two_key_form_still_parses_and_new_keys_are_optional() {
        let old: Price =
            serde_json::from_str(r#"{"input_per_million": 1, "output_per_million": 2}"#).unwrap();
        assert_eq!(old, Price::new(1.0, 2.0));
        let new: Price = serde_json::from_str(
            r#"{"input_per_million": 1, "output_per_million": 2, "cached_input_per_million": 0.1, "cache_write_per_million": 1.25, "batch_factor": 0.5}"#,
        )
        .unwrap();
        assert_eq!(
            new,
            Price::new(1.0, 2.0)
                .cached_input(0.1)
                .cache_writes(1.25)
                .batch_factor(0.5)
        );
        assert!(
            serde_json::from_str::<Price>(
                r#"{"input_per_million": 1, "output_per_million": 2, "cached": 1}"#
            )
            .is_err()
        );
        assert_eq!(
            serde_json::to_string(&Price::new(1.0, 2.0)).unwrap(),
            r#"{"input_per_million":1.0,"output_per_million":2.0}"#
        );
    }

    #[test]
    fn negative_or_nan_rates_are_named() {
        assert_eq!(Price::new(1.0, 2.0).invalid_rate(), None);
        assert_eq!(
            Price::new(1.0, -2.0).invalid_rate(),
            Some(("output_per_million", -2.0))
        );
        assert_eq!(
            Price::new(1.0, 2.0)
                .cached_input(f64::NAN)
                .invalid_rate()
                .map(|(k, _)| k),
            Some("cached_input_per_million")
        );
    }
}
