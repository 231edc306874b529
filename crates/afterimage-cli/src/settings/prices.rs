//! Token prices for every model a run calls: `model.price` (the main model's) and
//! `quality.evaluator.price` (the judge's) override the built-in table
//! (`PriceTable::builtin()`); a model neither prices has no cost.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, OnceLock};

use afterimage_core::Price;
use afterimage_providers::{PriceTable, Provider};

use super::SettingsError;
use super::model::{Endpoint, MainModel};
use crate::config::QualitySection;

/// The price of each model a run calls, by model name, and the models without one.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Prices {
    priced: BTreeMap<String, ModelPrice>,
    unknown: BTreeSet<String>,
}

/// One model's price and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    /// Per million tokens.
    pub price: Price,
    /// `model.price`, `quality.evaluator.price` or `built-in table of YYYY-MM-DD`.
    pub source: String,
}

impl Prices {
    /// The price of `model`, when known.
    pub fn get(&self, model: &str) -> Option<Price> {
        self.priced.get(model).map(|p| p.price)
    }

    /// The price of `model` with its source, when known.
    pub fn entry(&self, model: &str) -> Option<&ModelPrice> {
        self.priced.get(model)
    }

    /// Every priced model, by name.
    pub fn priced(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.priced.iter().map(|(m, p)| (m.as_str(), p))
    }

    /// The models the run calls that have no price (their cost stays unknown).
    pub fn unknown(&self) -> impl Iterator<Item = &str> {
        self.unknown.iter().map(String::as_str)
    }
}

/// A model the run calls and the config key that may price it.
struct Called<'a> {
    provider: Provider,
    model: &'a str,
    /// The key that prices it, with its value when set; `None` when no key can.
    key: Option<(&'static str, Option<Price>)>,
}

/// The prices of the main model, the correspondent's model and, when dialogs are
/// judged on an endpoint of their own, the judge's; warns once per model without
/// one.
pub(super) fn resolve(
    main: &MainModel,
    correspondent_model: Option<&str>,
    judge: Option<&Endpoint>,
    quality: &QualitySection,
) -> Result<Prices, SettingsError> {
    let mut called = vec![Called {
        provider: main.provider,
        model: &main.model_name,
        key: Some(("model.price", main.price)),
    }];
    if let Some(model) = correspondent_model {
        called.push(Called {
            provider: main.provider,
            model,
            key: None,
        });
    }
    if let (true, Some(endpoint)) = (quality.auto_improve, judge) {
        let price = quality.evaluator.as_ref().and_then(|e| e.price);
        called.push(Called {
            provider: endpoint.provider,
            model: &endpoint.model_name,
            key: Some(("quality.evaluator.price", price)),
        });
    }
    let mut prices = Prices::default();
    for model in called {
        if prices.priced.contains_key(model.model) {
            continue;
        }
        match price_of(&model)? {
            Some(price) => {
                prices.unknown.remove(model.model);
                prices.priced.insert(model.model.to_owned(), price);
            }
            None => {
                warn_unknown(&model);
                prices.unknown.insert(model.model.to_owned());
            }
        }
    }
    Ok(prices)
}

/// The configured price (checked), else the table's.
fn price_of(called: &Called) -> Result<Option<ModelPrice>, SettingsError> {
    if let Some((key, Some(price))) = called.key {
        if let Some((rate, value)) = price.invalid_rate() {
            return Err(SettingsError::new(
                format!("{key}.{rate}"),
                format!("is {value}: a price must be a number of 0 or more"),
            ));
        }
        return Ok(Some(ModelPrice {
            price,
            source: key.to_owned(),
        }));
    }
    let table = PriceTable::builtin();
    Ok(table
        .lookup(called.provider, called.model)
        .map(|price| ModelPrice {
            price,
            source: table_source(),
        }))
}

/// How the built-in table is named in messages and the report.
pub(crate) fn table_source() -> String {
    format!("built-in table of {}", PriceTable::builtin().as_of())
}

/// Logs that `called` has no price, once per model for the whole process (settings
/// may be resolved more than once).
fn warn_unknown(called: &Called) {
    static WARNED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let first = WARNED
        .get_or_init(Mutex::default)
        .lock()
        .map(|mut warned| warned.insert(called.model.to_owned()))
        .unwrap_or(false);
    if !first {
        return;
    }
    match called.key {
        Some((key, _)) => tracing::warn!("cost unknown for {}: add {key}", called.model),
        None => tracing::warn!(
            "cost unknown for {}: the built-in price table does not list it",
            called.model
        ),
    }
}
