//! Stopping rules as a config file writes them (`{type: fixed, n: 100}`), checked and
//! compiled into [`StoppingCriterion`]s once the run's documents are counted.

use std::sync::Arc;

use afterimage_core::{FixedNumber, StoppingCriterion};
use serde::Deserialize;

use crate::{AllOf, AnyOf, ContextCoverage, CostBudget, ErrorRate, PersonaUsage, TokenBudget};

/// One stopping rule, in the Python afterimage config's schema.
///
/// Read through a flat struct rather than an internally tagged enum: serde buffers
/// tagged enums untyped, and a YAML 1.1 reader then takes the key `n` of
/// `{type: fixed, n: 100}` for the boolean `false`.
///
/// ```
/// use afterimage_engine::StopRule;
///
/// let rule: StopRule = serde_json::from_str(r#"{"type": "fixed", "n": 100}"#).unwrap();
/// let criterion = rule.compile(0).unwrap();
/// assert_eq!(criterion.max_rows(), Some(100));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawRule")]
pub enum StopRule {
    /// Stop after `n` rows.
    Fixed {
        /// Rows.
        n: u64,
    },
    /// Stop when a share of the documents was each used `target_visits` times.
    ContextCoverage {
        /// Uses per document.
        target_visits: u64,
        /// Fraction of documents that must reach it.
        coverage_threshold: f64,
    },
    /// Stop after this many distinct personas.
    PersonaUsage {
        /// Distinct personas.
        n_personas: u64,
    },
    /// Stop when tokens or money reach a limit.
    Budget {
        /// Prompt-token limit.
        max_prompt_tokens: Option<f64>,
        /// Completion-token limit.
        max_completion_tokens: Option<f64>,
        /// Total-token limit.
        max_total_tokens: Option<f64>,
        /// Money limit, at the run's prices (a [`CostBudget`]: the run ends at or
        /// under it).
        max_cost: Option<f64>,
    },
    /// Stop when too many dialogs fail.
    RateLimit {
        /// Failed share of finished dialogs.
        max_error_rate: f64,
        /// Finished dialogs before the rule applies.
        min_samples: u64,
    },
    /// Stop when all the conditions hold.
    All {
        /// The conditions.
        conditions: Vec<StopRule>,
    },
}

/// Why a stopping rule cannot be read or compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StopRuleError {
    /// `type` names no rule.
    #[error(
        "unknown stopping rule type `{0}`, expected one of fixed, context_coverage, persona_usage, budget, rate_limit, all"
    )]
    UnknownType(String),
    /// A key another rule type takes.
    #[error("a `{kind}` stopping rule has no key `{key}` (it takes {takes})")]
    StrayKey {
        /// The rule type.
        kind: String,
        /// The key it does not take.
        key: &'static str,
        /// The keys it takes, comma-separated.
        takes: String,
    },
    /// A key the rule cannot do without.
    #[error("a `{kind}` stopping rule needs `{key}`")]
    MissingKey {
        /// The rule type.
        kind: String,
        /// The missing key.
        key: &'static str,
    },
    /// `fixed` with `n: 0`.
    #[error("a fixed rule needs n of at least 1")]
    ZeroRows,
    /// `budget` without any limit.
    #[error("a budget rule needs at least one limit")]
    NoLimit,
    /// `context_coverage` out of range.
    #[error(
        "context_coverage needs target_visits of at least 1 and a coverage_threshold between 0 and 1 (got {target_visits} and {coverage_threshold})"
    )]
    Coverage {
        /// The visits asked for.
        target_visits: u64,
        /// The share asked for.
        coverage_threshold: f64,
    },
    /// A condition of an `all` rule is wrong.
    #[error("conditions[{index}]: {source}")]
    Condition {
        /// Its position in `conditions`.
        index: usize,
        /// What is wrong with it.
        source: Box<StopRuleError>,
    },
}

impl StopRuleError {
    /// The key within the rule at fault (`n`, `conditions[1].coverage_threshold`), or
    /// `""` when the rule as a whole is.
    pub fn key(&self) -> String {
        let own = match self {
            StopRuleError::ZeroRows => "n",
            StopRuleError::Coverage {
                target_visits: 0, ..
            } => "target_visits",
            StopRuleError::Coverage { .. } => "coverage_threshold",
            StopRuleError::Condition { index, source } => {
                let inner = source.key();
                let sep = if inner.is_empty() { "" } else { "." };
                return format!("conditions[{index}]{sep}{inner}");
            }
            _ => "",
        };
        own.to_owned()
    }

    /// The innermost error, without the path of nested conditions (for messages that
    /// show [`key`](Self::key) on their own).
    pub fn cause(&self) -> &StopRuleError {
        match self {
            StopRuleError::Condition { source, .. } => source.cause(),
            other => other,
        }
    }
}

impl StopRule {
    /// Whether the rule (or a nested one) counts documents, so it can only be
    /// compiled once they are read.
    pub fn needs_documents(&self) -> bool {
        match self {
            StopRule::ContextCoverage { .. } => true,
            StopRule::All { conditions } => conditions.iter().any(StopRule::needs_documents),
            _ => false,
        }
    }

    /// Whether the rule (or a nested one) is a money budget, which needs prices.
    pub fn needs_prices(&self) -> bool {
        match self {
            StopRule::Budget { max_cost, .. } => max_cost.is_some(),
            StopRule::All { conditions } => conditions.iter().any(StopRule::needs_prices),
            _ => false,
        }
    }

    /// The largest `target_visits` of the coverage rules in it, nested ones included:
    /// how Python afterimage infers the sampling target.
    pub fn target_visits(&self) -> Option<u64> {
        match self {
            StopRule::ContextCoverage { target_visits, .. } => Some(*target_visits),
            StopRule::All { conditions } => {
                conditions.iter().filter_map(StopRule::target_visits).max()
            }
            _ => None,
        }
    }

    /// The criterion for a run over `documents` documents (only coverage rules read
    /// the number).
    pub fn compile(&self, documents: usize) -> Result<Arc<dyn StoppingCriterion>, StopRuleError> {
        Ok(match self {
            StopRule::Fixed { n } => {
                if *n == 0 {
                    return Err(StopRuleError::ZeroRows);
                }
                Arc::new(FixedNumber(*n))
            }
            StopRule::Budget {
                max_prompt_tokens,
                max_completion_tokens,
                max_total_tokens,
                max_cost,
            } => budget(
                *max_prompt_tokens,
                *max_completion_tokens,
                *max_total_tokens,
                *max_cost,
            )?,
            StopRule::PersonaUsage { n_personas } => Arc::new(PersonaUsage(*n_personas)),
            StopRule::RateLimit {
                max_error_rate,
                min_samples,
            } => Arc::new(ErrorRate {
                max_error_rate: *max_error_rate,
                min_samples: *min_samples,
            }),
            StopRule::All { conditions } => all(conditions, documents)?,
            StopRule::ContextCoverage {
                target_visits,
                coverage_threshold,
            } => coverage(documents, *target_visits, *coverage_threshold)?,
        })
    }
}

fn budget(
    prompt: Option<f64>,
    completion: Option<f64>,
    total: Option<f64>,
    cost: Option<f64>,
) -> Result<Arc<dyn StoppingCriterion>, StopRuleError> {
    let money = cost.map(|max_cost| CostBudget { max_cost });
    if prompt.is_none() && completion.is_none() && total.is_none() {
        return match money {
            Some(money) => Ok(Arc::new(money)),
            None => Err(StopRuleError::NoLimit),
        };
    }
    // YAML writes big limits as floats (`1e6`); negative ones stop at once.
    let tokens = |v: Option<f64>| v.map(|t| t.max(0.0) as u64);
    let tokens: Arc<dyn StoppingCriterion> = Arc::new(TokenBudget {
        max_input_tokens: tokens(prompt),
        max_output_tokens: tokens(completion),
        max_total_tokens: tokens(total),
    });
    Ok(match money {
        // Any limit reached ends the run, as the keys of one budget read.
        Some(money) => Arc::new(AnyOf(vec![tokens, Arc::new(money)])),
        None => tokens,
    })
}

fn all(
    conditions: &[StopRule],
    documents: usize,
) -> Result<Arc<dyn StoppingCriterion>, StopRuleError> {
    let inner = conditions
        .iter()
        .enumerate()
        .map(|(index, rule)| {
            rule.compile(documents)
                .map_err(|e| StopRuleError::Condition {
                    index,
                    source: Box::new(e),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(AllOf(inner)))
}

fn coverage(
    documents: usize,
    target_visits: u64,
    coverage_threshold: f64,
) -> Result<Arc<dyn StoppingCriterion>, StopRuleError> {
    if target_visits == 0 || !(0.0..=1.0).contains(&coverage_threshold) {
        return Err(StopRuleError::Coverage {
            target_visits,
            coverage_threshold,
        });
    }
    Ok(Arc::new(ContextCoverage {
        documents,
        target_visits,
        coverage_threshold,
    }))
}

/// Every key any stopping rule may have; [`StopRule`] checks that a rule uses only
/// its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    #[serde(rename = "type")]
    kind: String,
    n: Option<u64>,
    target_visits: Option<u64>,
    coverage_threshold: Option<f64>,
    n_personas: Option<u64>,
    max_prompt_tokens: Option<f64>,
    max_completion_tokens: Option<f64>,
    max_total_tokens: Option<f64>,
    max_cost: Option<f64>,
    max_error_rate: Option<f64>,
    min_samples: Option<u64>,
    conditions: Option<Vec<StopRule>>,
}

impl RawRule {
    /// The keys the rule's type takes.
    fn allowed(&self) -> Result<&'static [&'static str], StopRuleError> {
        Ok(match self.kind.as_str() {
            "fixed" => &["n"],
            "context_coverage" => &["target_visits", "coverage_threshold"],
            "persona_usage" => &["n_personas"],
            "budget" => &[
                "max_prompt_tokens",
                "max_completion_tokens",
                "max_total_tokens",
                "max_cost",
            ],
            "rate_limit" => &["max_error_rate", "min_samples"],
            "all" => &["conditions"],
            other => return Err(StopRuleError::UnknownType(other.to_owned())),
        })
    }

    /// The keys the file sets.
    fn present(&self) -> Vec<&'static str> {
        [
            ("n", self.n.is_some()),
            ("target_visits", self.target_visits.is_some()),
            ("coverage_threshold", self.coverage_threshold.is_some()),
            ("n_personas", self.n_personas.is_some()),
            ("max_prompt_tokens", self.max_prompt_tokens.is_some()),
            (
                "max_completion_tokens",
                self.max_completion_tokens.is_some(),
            ),
            ("max_total_tokens", self.max_total_tokens.is_some()),
            ("max_cost", self.max_cost.is_some()),
            ("max_error_rate", self.max_error_rate.is_some()),
            ("min_samples", self.min_samples.is_some()),
            ("conditions", self.conditions.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, present)| present.then_some(key))
        .collect()
    }

    fn need(&self, value: Option<u64>, key: &'static str) -> Result<u64, StopRuleError> {
        value.ok_or_else(|| StopRuleError::MissingKey {
            kind: self.kind.clone(),
            key,
        })
    }
}

impl TryFrom<RawRule> for StopRule {
    type Error = StopRuleError;

    fn try_from(raw: RawRule) -> Result<Self, StopRuleError> {
        let allowed = raw.allowed()?;
        if let Some(stray) = raw.present().into_iter().find(|key| !allowed.contains(key)) {
            return Err(StopRuleError::StrayKey {
                kind: raw.kind.clone(),
                key: stray,
                takes: allowed.join(", "),
            });
        }
        Ok(match raw.kind.as_str() {
            "fixed" => StopRule::Fixed {
                n: raw.need(raw.n, "n")?,
            },
            "context_coverage" => StopRule::ContextCoverage {
                target_visits: raw.target_visits.unwrap_or(1),
                coverage_threshold: raw.coverage_threshold.unwrap_or(1.0),
            },
            "persona_usage" => StopRule::PersonaUsage {
                n_personas: raw.need(raw.n_personas, "n_personas")?,
            },
            "budget" => StopRule::Budget {
                max_prompt_tokens: raw.max_prompt_tokens,
                max_completion_tokens: raw.max_completion_tokens,
                max_total_tokens: raw.max_total_tokens,
                max_cost: raw.max_cost,
            },
            "rate_limit" => StopRule::RateLimit {
                max_error_rate: raw.max_error_rate.unwrap_or(0.5),
                min_samples: raw.min_samples.unwrap_or(10),
            },
            _ => StopRule::All {
                conditions: raw.conditions.unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(json: &str) -> Result<StopRule, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn rules_read_with_their_defaults_and_only_their_keys() {
        assert_eq!(
            rule(r#"{"type": "rate_limit"}"#).unwrap(),
            StopRule::RateLimit {
                max_error_rate: 0.5,
                min_samples: 10
            }
        );
        let err = rule(r#"{"type": "fixed", "n_personas": 3}"#).unwrap_err();
        assert!(
            err.contains("has no key `n_personas` (it takes n)"),
            "{err}"
        );
        let err = rule(r#"{"type": "persona_usage"}"#).unwrap_err();
        assert!(err.contains("needs `n_personas`"), "{err}");
        let err = rule(r#"{"type": "fixd", "n": 3}"#).unwrap_err();
        assert!(err.contains("unknown stopping rule type `fixd`"), "{err}");
        assert!(rule(r#"{"type": "fixed", "count": 3}"#).is_err());
    }

    #[test]
    fn compiling_checks_values_and_names_the_key() {
        let nested = rule(
            r#"{"type": "all", "conditions": [{"type": "fixed", "n": 2}, {"type": "context_coverage", "coverage_threshold": 2}]}"#,
        )
        .unwrap();
        assert!(nested.needs_documents());
        assert_eq!(nested.target_visits(), Some(1));
        let err = nested.compile(4).unwrap_err();
        assert_eq!(err.key(), "conditions[1].coverage_threshold");
        assert!(err.cause().to_string().contains("got 1 and 2"), "{err}");
        let err = rule(r#"{"type": "fixed", "n": 0}"#)
            .unwrap()
            .compile(0)
            .unwrap_err();
        assert_eq!((err.key().as_str(), err), ("n", StopRuleError::ZeroRows));
        let err = rule(r#"{"type": "budget"}"#)
            .unwrap()
            .compile(0)
            .unwrap_err();
        assert_eq!(err.key(), "");
        let budget = rule(r#"{"type": "budget", "max_total_tokens": 1e6}"#).unwrap();
        assert!(!budget.needs_documents());
        assert!(!budget.needs_prices());
        assert!(budget.compile(0).is_ok());
        let money = rule(r#"{"type": "budget", "max_cost": 2.5}"#).unwrap();
        assert!(money.needs_prices());
        assert_eq!(money.compile(0).unwrap().describe(), "cost budget of 2.5");
        let both = rule(r#"{"type": "all", "conditions": [{"type": "budget", "max_cost": 1, "max_total_tokens": 10}]}"#)
            .unwrap();
        assert!(both.needs_prices());
        assert_eq!(
            both.compile(0).unwrap().describe(),
            "all of (any of (token budget of 10 tokens, cost budget of 1))"
        );
    }
}
