//! Pricing the run's ledger: a price per model, and the ledger's figures for reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use afterimage_core::{Ledger, LedgerBook, Spent};
use serde::Serialize;

use crate::{GenerateOptions, Price};

/// Looks up the price of a model by name (a built-in price table, say).
pub type PriceFn = Arc<dyn Fn(&str) -> Option<Price> + Send + Sync>;

/// The run's prices: per model, then the lookup, then the one price for all.
#[derive(Clone, Default)]
pub(crate) struct Prices {
    by_model: HashMap<String, Price>,
    lookup: Option<PriceFn>,
    fallback: Option<Price>,
}

impl Prices {
    pub(crate) fn of(options: &GenerateOptions) -> Self {
        Prices {
            by_model: options.model_prices.clone(),
            lookup: options.price_lookup.clone(),
            fallback: options.price,
        }
    }

    /// The price of `model`, when known; a ledger name of batched requests
    /// (`gpt-4o-mini (batch)`) is priced at its model's batch rate.
    pub(crate) fn get(&self, model: &str) -> Option<Price> {
        let (model, batched) = afterimage_core::split_batch_ledger_name(model);
        let price = self
            .by_model
            .get(model)
            .copied()
            .or_else(|| self.lookup.as_ref().and_then(|f| f(model)))
            .or(self.fallback)?;
        Some(if batched { price.batch_rate() } else { price })
    }

    /// Whether any price was given.
    fn any(&self) -> bool {
        !self.by_model.is_empty() || self.lookup.is_some() || self.fallback.is_some()
    }

    /// What `book` cost at the known prices (models without one count nothing);
    /// `None` without any price.
    pub(crate) fn cost(&self, book: &LedgerBook) -> Option<f64> {
        self.any().then(|| {
            book.models()
                .filter_map(|(model, _)| {
                    self.get(model)
                        .map(|p| p.cost(book.model_total(model).usage))
                })
                .sum()
        })
    }
}

impl std::fmt::Debug for Prices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prices")
            .field("by_model", &self.by_model)
            .field("fallback", &self.fallback)
            .finish_non_exhaustive()
    }
}

/// The run's view of the shared ledger: what earlier sessions stored, plus what the
/// ledger recorded since this session started.
#[derive(Debug)]
pub(crate) struct RunLedger {
    ledger: Ledger,
    /// What earlier sessions of a resumed run spent.
    stored: LedgerBook,
    /// The ledger when this session started (a generator's ledger outlives its runs).
    start: LedgerBook,
    pub(crate) prices: Prices,
}

impl RunLedger {
    pub(crate) fn new(
        ledger: Ledger,
        stored: LedgerBook,
        start: LedgerBook,
        prices: Prices,
    ) -> Self {
        RunLedger {
            ledger,
            stored,
            start,
            prices,
        }
    }

    /// What this session spent.
    pub(crate) fn session(&self) -> LedgerBook {
        self.ledger.book().minus(&self.start)
    }

    /// What the whole run spent, every session.
    pub(crate) fn run(&self) -> LedgerBook {
        self.stored.plus(&self.session())
    }
}

/// The snapshot of the ledger already accounted to earlier runs of a generator.
pub(crate) type Accounted = Mutex<LedgerBook>;

/// Requests, tokens and their cost.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SpendFigures {
    /// What they cost (`None` when no price covers them).
    pub cost: Option<f64>,
    /// Requests answered (each one billed).
    pub requests: u64,
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// The part of the prompt tokens read from a prompt cache.
    pub cached_input_tokens: u64,
    /// The part of the prompt tokens written to a prompt cache.
    pub cache_write_tokens: u64,
    /// Completion tokens, reasoning included.
    pub output_tokens: u64,
    /// The part of the completion tokens spent on reasoning.
    pub reasoning_tokens: u64,
}

impl SpendFigures {
    fn of(spent: Spent, cost: Option<f64>) -> Self {
        let usage = spent.usage;
        SpendFigures {
            cost,
            requests: u64::from(spent.requests),
            input_tokens: usage.input_tokens,
            cached_input_tokens: usage.cached_input_tokens,
            cache_write_tokens: usage.cache_write_tokens,
            output_tokens: usage.output_tokens,
            reasoning_tokens: usage.reasoning_tokens,
        }
    }
}

/// What one model spent, in all and by role.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ModelSpend {
    /// The model's figures, all roles together.
    #[serde(flatten)]
    pub total: SpendFigures,
    /// By role: `respondent`, `correspondent`, `judge`, `instructions`, `personas`,
    /// `tools`, `embeddings`.
    pub by_role: BTreeMap<String, SpendFigures>,
}

/// The run's ledger as reports show it: every request the run paid for over all its
/// sessions, by model and role, priced where prices are known.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerSummary {
    /// All models together; `cost` counts the priced models only.
    #[serde(flatten)]
    pub total: SpendFigures,
    /// By model.
    pub by_model: BTreeMap<String, ModelSpend>,
    /// Models whose cost is unknown (no price given for them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unpriced: Vec<String>,
    /// The cost per stored row (all the run's rows, earlier sessions' included).
    pub cost_per_row: Option<f64>,
    /// What the whole run will have cost once its count is written, at the cost per
    /// row so far (the cost itself once it is written).
    pub projected_cost: Option<f64>,
}

impl LedgerSummary {
    /// Figures of `book` alone, without prices (a stored run record read later).
    ///
    /// ```
    /// use afterimage_core::{LedgerBook, Spent, Usage};
    /// use afterimage_engine::LedgerSummary;
    ///
    /// let mut book = LedgerBook::default();
    /// book.add("m", "judge", Spent::one(Usage::new(5, 1)));
    /// let summary = LedgerSummary::of(&book);
    /// assert_eq!(summary.by_model["m"].by_role["judge"].input_tokens, 5);
    /// assert_eq!(summary.total.cost, None);
    /// ```
    pub fn of(book: &LedgerBook) -> Self {
        let mut summary = Self::new(book, &Prices::default(), 0, None);
        summary.unpriced.clear();
        summary
    }

    /// Figures of `book` at `prices`, with `rows` stored of `requested`.
    pub(crate) fn new(
        book: &LedgerBook,
        prices: &Prices,
        rows: u64,
        requested: Option<u64>,
    ) -> Self {
        let mut summary = LedgerSummary {
            total: SpendFigures::of(book.total(), prices.cost(book)),
            ..LedgerSummary::default()
        };
        for (model, roles) in book.models() {
            let price = prices.get(model);
            if price.is_none() {
                summary.unpriced.push(model.to_owned());
            }
            let figures =
                |spent: Spent| SpendFigures::of(spent, price.map(|p| p.cost(spent.usage)));
            let by_role = roles
                .iter()
                .map(|(role, spent)| (role.clone(), figures(*spent)))
                .collect();
            let total = figures(book.model_total(model));
            summary
                .by_model
                .insert(model.to_owned(), ModelSpend { total, by_role });
        }
        let cost = summary.total.cost;
        summary.cost_per_row = cost.filter(|_| rows > 0).map(|c| c / rows as f64);
        summary.projected_cost = match (cost, summary.cost_per_row, requested) {
            (Some(cost), Some(per_row), Some(n)) => {
                Some(cost + per_row * n.saturating_sub(rows) as f64)
            }
            _ => None,
        };
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::Usage;

    #[test]
    fn the_summary_prices_known_models_and_names_the_others() {
        let mut book = LedgerBook::default();
        book.add("a", "respondent", Spent::new(2, Usage::new(1_000_000, 0)));
        book.add("a", "judge", Spent::one(Usage::new(0, 1_000_000)));
        book.add("b", "correspondent", Spent::one(Usage::new(5, 5)));
        let prices = Prices {
            by_model: HashMap::from([("a".to_owned(), Price::new(1.0, 2.0))]),
            ..Prices::default()
        };
        let summary = LedgerSummary::new(&book, &prices, 3, Some(6));
        assert_eq!(summary.total.cost, Some(3.0));
        assert_eq!(summary.total.requests, 4);
        assert_eq!(summary.unpriced, ["b"]);
        assert_eq!(summary.by_model["a"].by_role["judge"].cost, Some(2.0));
        assert_eq!(summary.by_model["b"].total.cost, None);
        assert_eq!(summary.cost_per_row, Some(1.0));
        assert_eq!(summary.projected_cost, Some(6.0));
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            json["by_model"]["a"]["by_role"]["respondent"]["requests"],
            2
        );
        assert_eq!(json["input_tokens"], 1_000_005);
    }
}
