//! How the candidate answers of one pair differ: the strategies and the variant each
//! candidate is asked with.

use std::fmt;

/// How the candidates of a pair are made different (in a config: `temperature`,
/// `prompt`, `model` or `combined`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PairStrategy {
    /// The same prompt at temperatures spread evenly over 0.1 to 0.9.
    #[default]
    Temperature,
    /// The system prompt with a note asking for care (`enhanced`) or for a terse
    /// answer (`degraded`), in turn.
    Prompt,
    /// The primary and the secondary model in turn.
    Model,
    /// Enhanced at 0.2, degraded at 0.9, the secondary model at 0.7 (when there is
    /// one), then the primary model at 0.4, 0.6 and 0.8.
    Combined,
}

impl PairStrategy {
    /// The name a config uses.
    pub fn name(self) -> &'static str {
        match self {
            PairStrategy::Temperature => "temperature",
            PairStrategy::Prompt => "prompt",
            PairStrategy::Model => "model",
            PairStrategy::Combined => "combined",
        }
    }
}

impl fmt::Display for PairStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Added to the system prompt of an `enhanced` candidate.
pub(crate) const ENHANCED_NOTE: &str = "\n\nTake care with this answer: work through the question step by step, check each fact against what you know, and give a complete, well-organised reply.";

/// Added to the system prompt of a `degraded` candidate; the mock server honours
/// "one short sentence".
pub(crate) const DEGRADED_NOTE: &str =
    "\n\nAnswer in one short sentence, without explanation or detail.";

/// Which model a candidate is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Primary,
    Secondary,
}

/// How one candidate is asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Variant {
    /// Its name in the pair's metadata and the win rates.
    pub(crate) label: String,
    /// The temperature asked for (`None`: the respondent's own).
    pub(crate) temperature: Option<f32>,
    /// Added to the system prompt.
    pub(crate) note: &'static str,
    pub(crate) model: Which,
}

impl Variant {
    fn at(temperature: f32) -> Variant {
        Variant {
            label: format!("temperature_{temperature:.1}"),
            temperature: Some(temperature),
            note: "",
            model: Which::Primary,
        }
    }

    fn prompt(enhanced: bool, temperature: Option<f32>) -> Variant {
        Variant {
            label: if enhanced { "enhanced" } else { "degraded" }.to_owned(),
            temperature,
            note: if enhanced {
                ENHANCED_NOTE
            } else {
                DEGRADED_NOTE
            },
            model: Which::Primary,
        }
    }

    fn model(which: Which, temperature: Option<f32>) -> Variant {
        Variant {
            label: match which {
                Which::Primary => "primary_model",
                Which::Secondary => "secondary_model",
            }
            .to_owned(),
            temperature,
            note: "",
            model: which,
        }
    }
}

/// The `n` variants of a pair under `strategy`; `secondary` says whether a secondary
/// model exists (the `model` strategy needs one, which the builder checks).
pub(crate) fn variants(strategy: PairStrategy, n: usize, secondary: bool) -> Vec<Variant> {
    match strategy {
        PairStrategy::Temperature => (0..n).map(|i| Variant::at(spread(i, n))).collect(),
        PairStrategy::Prompt => (0..n).map(|i| Variant::prompt(i % 2 == 0, None)).collect(),
        PairStrategy::Model => (0..n)
            .map(|i| {
                let which = if i % 2 == 0 {
                    Which::Primary
                } else {
                    Which::Secondary
                };
                Variant::model(which, None)
            })
            .collect(),
        PairStrategy::Combined => combined(n, secondary),
    }
}

/// Temperature `i` of `n`, evenly from 0.1 to 0.9.
fn spread(i: usize, n: usize) -> f32 {
    if n < 2 {
        return 0.5;
    }
    let t = 0.1 + 0.8 * i as f32 / (n - 1) as f32;
    (t * 100.0).round() / 100.0
}

fn combined(n: usize, secondary: bool) -> Vec<Variant> {
    let mut list = vec![
        Variant::prompt(true, Some(0.2)),
        Variant::prompt(false, Some(0.9)),
    ];
    if secondary {
        list.push(Variant::model(Which::Secondary, Some(0.7)));
    } else {
        list.push(Variant::at(0.7));
    }
    // Beyond these, the primary model at temperatures that cycle through the middle.
    let rest = [0.4, 0.6, 0.8];
    let mut i = 0;
    while list.len() < n {
        list.push(Variant::at(rest[i % rest.len()]));
        i += 1;
    }
    list.truncate(n);
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temperatures_spread_from_low_to_high() {
        let t: Vec<Option<f32>> = variants(PairStrategy::Temperature, 3, false)
            .into_iter()
            .map(|v| v.temperature)
            .collect();
        assert_eq!(t, [Some(0.1), Some(0.5), Some(0.9)]);
        let labels: Vec<String> = variants(PairStrategy::Temperature, 2, false)
            .into_iter()
            .map(|v| v.label)
            .collect();
        assert_eq!(labels, ["temperature_0.1", "temperature_0.9"]);
    }

    #[test]
    fn model_and_prompt_alternate() {
        let models: Vec<Which> = variants(PairStrategy::Model, 3, true)
            .into_iter()
            .map(|v| v.model)
            .collect();
        assert_eq!(models, [Which::Primary, Which::Secondary, Which::Primary]);
        let notes: Vec<&str> = variants(PairStrategy::Prompt, 2, false)
            .into_iter()
            .map(|v| v.note)
            .collect();
        assert_eq!(notes, [ENHANCED_NOTE, DEGRADED_NOTE]);
    }

    #[test]
    fn combined_uses_the_secondary_model_when_there_is_one() {
        let with: Vec<String> = variants(PairStrategy::Combined, 5, true)
            .into_iter()
            .map(|v| v.label)
            .collect();
        assert_eq!(
            with,
            [
                "enhanced",
                "degraded",
                "secondary_model",
                "temperature_0.4",
                "temperature_0.6"
            ]
        );
        let without = variants(PairStrategy::Combined, 3, false);
        assert!(without.iter().all(|v| v.model == Which::Primary));
        assert_eq!(variants(PairStrategy::Combined, 2, true).len(), 2);
    }
}
