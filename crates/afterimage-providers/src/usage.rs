//! Reading token counts as servers send them: tolerant of absent, null, negative,
//! fractional or quoted numbers, because a bill's detail must never fail a reply that
//! arrived.

use afterimage_core::Usage;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::Value;

/// A token count: a non-negative number (fractions rounded) or a numeric string;
/// anything else is 0. Pair with `#[serde(default)]` so an absent field is 0 too.
pub(crate) fn count<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    Ok(match Value::deserialize(deserializer)? {
        Value::Number(n) => n.as_u64().unwrap_or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f > 0.0)
                .map_or(0, |f| f.round() as u64)
        }),
        Value::String(s) => s.trim().parse().unwrap_or(0),
        _ => 0,
    })
}

/// Any value read as `T`, or `T::default()` when it has another shape, so an odd
/// usage object costs its detail and never the reply.
pub(crate) fn lenient<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    let value = Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).unwrap_or_default())
}

/// Core's [`Usage`] from counts already in its shape (input with cached and written
/// tokens in it, output with reasoning in it); parts larger than their total are cut
/// down to it, so a server's inconsistent report never yields an impossible bill.
pub(crate) fn billed(input: u64, output: u64, cached: u64, writes: u64, reasoning: u64) -> Usage {
    let cached = cached.min(input);
    Usage::new(input, output)
        .cached(cached)
        .cache_writes(writes.min(input - cached))
        .reasoning(reasoning.min(output))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Default)]
    struct Counts {
        #[serde(default, deserialize_with = "count")]
        n: u64,
    }

    fn read(json: &str) -> u64 {
        serde_json::from_str::<Counts>(json).unwrap().n
    }

    #[test]
    fn counts_survive_odd_values() {
        assert_eq!(read(r#"{"n": 12}"#), 12);
        assert_eq!(read(r#"{}"#), 0);
        assert_eq!(read(r#"{"n": null}"#), 0);
        assert_eq!(read(r#"{"n": -3}"#), 0);
        assert_eq!(read(r#"{"n": 7.6}"#), 8);
        assert_eq!(read(r#"{"n": "42"}"#), 42);
        assert_eq!(read(r#"{"n": "many"}"#), 0);
        assert_eq!(read(r#"{"n": {"a": 1}}"#), 0);
    }

    #[test]
    fn parts_never_exceed_their_totals() {
        let usage = billed(100, 10, 80, 50, 30);
        assert_eq!(usage.cached_input_tokens, 80);
        assert_eq!(usage.cache_write_tokens, 20);
        assert_eq!(usage.reasoning_tokens, 10);
        assert_eq!(usage.uncached_input_tokens(), 0);
    }
}
