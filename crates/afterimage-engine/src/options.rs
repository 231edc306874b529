//! The typed options of one `generate` call.

use std::sync::Arc;
use std::time::Duration;

pub use afterimage_core::Price;
use afterimage_core::{LiveDialogs, ParkedRequests, RunProgress, StoppingCriterion};

use crate::StopHandle;

/// A function told about progress after every finished dialog (for progress bars).
pub type ProgressFn = Arc<dyn Fn(&RunProgress) + Send + Sync>;

/// How many assistant replies a dialog has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turns {
    /// A number drawn uniformly from `1..=max` per dialog (Python afterimage's rule).
    UpTo(u32),
    /// Always this many.
    Exactly(u32),
}

impl Turns {
    /// The upper bound.
    pub fn max(self) -> u32 {
        match self {
            Turns::UpTo(n) | Turns::Exactly(n) => n,
        }
    }
}

/// In words: `up to 3`, `exactly 3`.
///
/// ```
/// use afterimage_engine::Turns;
///
/// assert_eq!(Turns::UpTo(3).to_string(), "up to 3");
/// assert_eq!(Turns::Exactly(1).to_string(), "exactly 1");
/// ```
impl std::fmt::Display for Turns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Turns::UpTo(n) => write!(f, "up to {n}"),
            Turns::Exactly(n) => write!(f, "exactly {n}"),
        }
    }
}

/// What one [`generate`](crate::ConversationGenerator::generate) call should make.
///
/// ```
/// use afterimage_engine::GenerateOptions;
///
/// let options = GenerateOptions::new().num_dialogs(100).max_turns(3).max_concurrency(16);
/// assert_eq!(options.requested_rows(), Some(100));
/// ```
#[derive(Clone)]
pub struct GenerateOptions {
    pub(crate) num_dialogs: Option<u64>,
    pub(crate) turns: Turns,
    pub(crate) max_concurrency: usize,
    pub(crate) stopping_criteria: Vec<Arc<dyn StoppingCriterion>>,
    pub(crate) seed: Option<u64>,
    pub(crate) max_failures: Option<u64>,
    pub(crate) run_id: Option<String>,
    pub(crate) on_progress: Option<ProgressFn>,
    pub(crate) failure_backoff: Duration,
    pub(crate) stop: Option<StopHandle>,
    pub(crate) price: Option<Price>,
    pub(crate) model_prices: std::collections::HashMap<String, Price>,
    pub(crate) price_lookup: Option<crate::PriceFn>,
    pub(crate) ledger_checkpoint: Duration,
    pub(crate) resume: bool,
    pub(crate) run_config: serde_json::Value,
    pub(crate) in_flight: InFlight,
    pub(crate) parked: Option<ParkedRequests>,
    pub(crate) steering: crate::SteeringConfig,
    pub(crate) on_exhausted: crate::OnExhausted,
    pub(crate) shared: Option<crate::SharedRun>,
    pub(crate) live_dialogs: Option<Arc<dyn LiveDialogs>>,
    pub(crate) oversample: f64,
}

/// What happens to dialogs still running when a stopping criterion fires (in a config:
/// `finish` or `cancel`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InFlight {
    /// Let them finish and keep their rows (the default): nothing paid for is lost.
    #[default]
    Finish,
    /// Cancel them at once; their partial work is dropped, never stored.
    Cancel,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            num_dialogs: None,
            turns: Turns::UpTo(1),
            max_concurrency: 8,
            stopping_criteria: Vec::new(),
            seed: None,
            max_failures: None,
            run_id: None,
            on_progress: None,
            failure_backoff: Duration::from_millis(100),
            stop: None,
            price: None,
            model_prices: std::collections::HashMap::new(),
            price_lookup: None,
            ledger_checkpoint: Duration::from_secs(1),
            resume: false,
            run_config: serde_json::Value::Null,
            in_flight: InFlight::Finish,
            parked: None,
            steering: crate::SteeringConfig::default(),
            on_exhausted: crate::OnExhausted::Stop,
            shared: None,
            live_dialogs: None,
            oversample: 1.0,
        }
    }
}

impl GenerateOptions {
    /// Defaults: one turn, 8 dialogs at a time, no count (set one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Write exactly this many rows (adds a `FixedNumber` criterion for the run).
    pub fn num_dialogs(mut self, n: u64) -> Self {
        self.num_dialogs = Some(n);
        self
    }

    /// Up to this many assistant replies per dialog, drawn per dialog from `1..=n`.
    pub fn max_turns(mut self, n: u32) -> Self {
        self.turns = Turns::UpTo(n);
        self
    }

    /// Exactly this many assistant replies in every dialog.
    pub fn fixed_turns(mut self, n: u32) -> Self {
        self.turns = Turns::Exactly(n);
        self
    }

    /// Sets the turn rule.
    pub fn turns(mut self, turns: Turns) -> Self {
        self.turns = turns;
        self
    }

    /// At most this many dialogs (and so model requests) in flight at once.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.max_concurrency = n;
        self
    }

    /// Adds a stopping criterion (any one that fires stops the run).
    pub fn stopping_criterion(mut self, criterion: Arc<dyn StoppingCriterion>) -> Self {
        self.stopping_criteria.push(criterion);
        self
    }

    /// Replaces the stopping criteria.
    pub fn stopping_criteria(mut self, criteria: Vec<Arc<dyn StoppingCriterion>>) -> Self {
        self.stopping_criteria = criteria;
        self
    }

    /// Seeds every random choice of the run (turn counts, sampling).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Failed dialogs tolerated before the run stops (default: 10 plus 10% of the
    /// requested rows).
    pub fn max_failures(mut self, n: u64) -> Self {
        self.max_failures = Some(n);
        self
    }

    /// Names the run (row ids are `<run_id>-<index>`); random by default.
    pub fn run_id(mut self, id: impl Into<String>) -> Self {
        self.run_id = Some(id.into());
        self
    }

    /// The first pause before a replacement dialog starts after a failure; it doubles
    /// with each consecutive failure up to 30 s (default 100 ms). A server's
    /// `Retry-After` is honoured when longer.
    pub fn failure_backoff(mut self, base: Duration) -> Self {
        self.failure_backoff = base;
        self
    }

    /// A handle that stops the run from outside: a drain, with a grace period or
    /// without, or a cancel (for Ctrl-C, SIGTERM, a coordinator).
    pub fn stop_handle(mut self, handle: StopHandle) -> Self {
        self.stop = Some(handle);
        self
    }

    /// Token prices, so the report shows what the run cost: the price of every model
    /// not priced by [`model_price`](Self::model_price) or
    /// [`price_lookup`](Self::price_lookup).
    pub fn price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// The price of `model` (as requests name it), for the run's ledger.
    pub fn model_price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.model_prices.insert(model.into(), price);
        self
    }

    /// Prices of models by name, for the run's ledger (added to those set before).
    pub fn model_prices(mut self, prices: std::collections::HashMap<String, Price>) -> Self {
        self.model_prices.extend(prices);
        self
    }

    /// Where to look up the price of a model that [`model_price`](Self::model_price)
    /// did not set (a built-in price table, say); `None` leaves it to
    /// [`price`](Self::price), and without that its cost is unknown.
    pub fn price_lookup(
        mut self,
        lookup: impl Fn(&str) -> Option<Price> + Send + Sync + 'static,
    ) -> Self {
        self.price_lookup = Some(std::sync::Arc::new(lookup));
        self
    }

    /// How often, at most, the run record is saved with the ledger while the run goes
    /// on (default 1 s), so a killed run loses little of its account.
    pub fn ledger_checkpoint(mut self, every: Duration) -> Self {
        self.ledger_checkpoint = every;
        self
    }

    /// Finishes the run already in storage instead of starting one: reuses its run id,
    /// seed and correspondent prompt, skips the dialogs it stored and writes only the
    /// missing ones, so the output ends with exactly `num_dialogs` distinct ids. On an
    /// empty output it starts a run as usual. Without it, an output that already holds
    /// rows is an error (never a silent append).
    pub fn resume(mut self, on: bool) -> Self {
        self.resume = on;
        self
    }

    /// Joins a run shared with other workers: dialogs come from its slots (the first
    /// worker creates the run with `num_dialogs` slots, the others read its record),
    /// and rows are stored by completing their slot. The stored-rows check of a new
    /// run and `resume` do not apply: the slots say what is left.
    pub fn shared(mut self, shared: crate::SharedRun) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The settings to keep in the run record, for people reading the store later.
    /// Never put API keys here.
    pub fn run_config(mut self, config: serde_json::Value) -> Self {
        self.run_config = config;
        self
    }

    /// What a stopping criterion does to the dialogs in flight when it fires
    /// ([`InFlight::Finish`] by default). The requested count is never overshot
    /// either way: the scheduler never starts a dialog beyond it.
    pub fn on_stop(mut self, policy: InFlight) -> Self {
        self.in_flight = policy;
        self
    }

    /// Lets a dialog start in place of one waiting out a retry delay (counted by the
    /// retry middleware in `gauge`, see `Retry::parked`): `max_concurrency` then bounds
    /// the dialogs with a request in flight or about to send one, and the dialogs in
    /// memory stay under twice it. A pacing layer below (`Throttle`) still bounds the
    /// requests in flight, so this fills slots idled by an odd 429 without pressing
    /// a rate-limited server harder.
    pub fn parked_requests(mut self, gauge: ParkedRequests) -> Self {
        self.parked = Some(gauge);
        self
    }

    /// How the instruction generator is steered away from questions already asked
    /// (on by default: [`SteeringConfig::default`](crate::SteeringConfig); off with
    /// [`SteeringConfig::off`](crate::SteeringConfig::off)).
    pub fn steering(mut self, steering: crate::SteeringConfig) -> Self {
        self.steering = steering;
        self
    }

    /// What happens when the questions run out before the count is reached:
    /// [`OnExhausted::Stop`](crate::OnExhausted) (the default) ends the run cleanly
    /// with the rows written, `Fail` makes it an error naming the rows missing.
    pub fn on_exhausted(mut self, policy: crate::OnExhausted) -> Self {
        self.on_exhausted = policy;
        self
    }

    /// Tells `live` which dialogs are running (batch mode: a round goes when every
    /// running dialog waits on it). The scheduler enters every dialog of a wave before
    /// it starts any of them, and drops a finished dialog's guard only once the
    /// dialogs replacing it have entered, so a batcher never sees the run shrink to
    /// the few dialogs that happened to start first. Every dialog runs inside
    /// [`in_dialog`](afterimage_core::in_dialog) with its index either way. A shared
    /// run ([`shared`](Self::shared)) refuses it.
    pub fn live_dialogs(mut self, live: Arc<dyn LiveDialogs>) -> Self {
        self.live_dialogs = Some(live);
        self
    }

    /// With a count, keeps up to `ceil(count × factor)` dialogs under way instead of
    /// `count` (still at most `max_concurrency` at once), so a dialog that fails or is
    /// rejected is replaced by a spare already running rather than by a new one that
    /// starts from the first round (batch mode, where a round takes minutes). Exactly
    /// `count` rows are still written: a dialog stores its row only while the count is
    /// not reached, and once it is the dialogs still running are cancelled. Those, and
    /// the ones that finished too late, are the report's
    /// [`spares`](crate::RunReport::spares): paid for, in the ledger, not stored.
    /// Default 1.0 (no spares); at least 1.0. A shared run refuses more than 1.0.
    ///
    /// ```
    /// use afterimage_engine::{GenerateOptions, OptionsError};
    ///
    /// assert_eq!(GenerateOptions::new().num_dialogs(10).oversample(1.2).validate(), Ok(()));
    /// assert_eq!(
    ///     GenerateOptions::new().num_dialogs(10).oversample(0.5).validate(),
    ///     Err(OptionsError::Oversample)
    /// );
    /// ```
    pub fn oversample(mut self, factor: f64) -> Self {
        self.oversample = factor;
        self
    }

    /// Calls `f` after every finished dialog.
    pub fn on_progress(mut self, f: impl Fn(&RunProgress) + Send + Sync + 'static) -> Self {
        self.on_progress = Some(Arc::new(f));
        self
    }

    /// The number of rows the run will write at most, from `num_dialogs` and the
    /// criteria's caps.
    pub fn requested_rows(&self) -> Option<u64> {
        self.num_dialogs
            .into_iter()
            .chain(self.stopping_criteria.iter().filter_map(|c| c.max_rows()))
            .min()
    }
}

impl std::fmt::Debug for GenerateOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerateOptions")
            .field("num_dialogs", &self.num_dialogs)
            .field("turns", &self.turns)
            .field("max_concurrency", &self.max_concurrency)
            .field("stopping_criteria", &self.stopping_criteria)
            .field("seed", &self.seed)
            .field("max_failures", &self.max_failures)
            .field("run_id", &self.run_id)
            .field("resume", &self.resume)
            .field("shared", &self.shared)
            .field("live_dialogs", &self.live_dialogs)
            .field("oversample", &self.oversample)
            .finish_non_exhaustive()
    }
}
