//! Batch mode in the CLI (`generate --batch`, `afterimage batch status|cancel`): it
//! builds the provider's batch backends and the batcher, hands the engine the batched
//! models of the roles `batch.roles` names, says what the run will take, shows rounds
//! and batches as they go, and leaves (or cancels) open batches on a stop.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use afterimage_batch::{Batcher, Journal, RequestRole};
use afterimage_core::{
    ChatModel, Ledger, LedgerBook, RunProgress, RunRecord, StoppingCriterion, Storage,
    split_batch_ledger_name,
};
use afterimage_engine::{
    EngineError, GenerateOptions, RunReport, StopHandle, StopRule, new_run_id,
};
use afterimage_providers::Provider;
use afterimage_storage::StorageSpec;
use anyhow::{Context, anyhow};

use crate::Failure;
use crate::settings::{BatchConfig, Prices, Settings};

mod backends;
mod jobs;
mod progress;
mod report;
mod status;

pub(crate) use jobs::JobRounds;
pub(crate) use report::BatchSummary;
pub(crate) use status::{BatchCommand, run as command};

/// What `generate` settles before the generator is built: the run id the batcher
/// prefixes request ids with, and the journal it writes.
#[derive(Debug)]
pub(crate) struct BatchStart {
    /// The run's id: a new run's, or the resumed one's.
    pub(crate) run_id: String,
    /// The journal in `batch.dir`.
    pub(crate) journal: Journal,
    /// The money limit checked before each round (`--max-cost`, a `budget` rule).
    pub(crate) max_cost: Option<f64>,
    /// The pass rate a resumed run observed, for `oversample: auto`.
    pub(crate) pass_rate: Option<f64>,
    /// What earlier sessions of a resumed run spent (the run record's ledger), which
    /// counts against the money limit too.
    pub(crate) prior: LedgerBook,
    /// The run's stop handle: a round refused for the budget stops the run with it.
    pub(crate) stop: StopHandle,
}

/// The run id and journal of a batch-mode run: on `--resume` the stored run's (or,
/// when no row was written yet, the journal's), else a new id.
pub(crate) async fn prepare(
    settings: &Settings,
    storage: &dyn Storage,
    resume: bool,
    max_cost: Option<f64>,
    stop: &StopHandle,
) -> Result<Option<BatchStart>, Failure> {
    let Some(config) = &settings.batch else {
        return Ok(None);
    };
    let record = if resume {
        storage.load_run().await.ok().flatten()
    } else {
        None
    };
    let run_id = match (&record, resume) {
        (Some(record), _) => record.run_id.clone(),
        (None, true) => journal_run_id(config)?.unwrap_or_else(new_run_id),
        (None, false) => new_run_id(),
    };
    let journal = Journal::open(&config.dir, &run_id)
        .with_context(|| format!("opening the batch journal in {}", config.dir.display()))
        .map_err(Failure::Usage)?;
    Ok(Some(BatchStart {
        run_id,
        journal,
        max_cost: max_cost.or_else(|| budget(&settings.stopping)),
        pass_rate: record.as_ref().and_then(pass_rate),
        prior: record.map(|r| r.ledger).unwrap_or_default(),
        stop: stop.clone(),
    }))
}

/// The run id of the journal in `batch.dir`, when there is one (a run killed before
/// its first row has no run record yet).
fn journal_run_id(config: &BatchConfig) -> Result<Option<String>, Failure> {
    if !config.dir.exists() {
        return Ok(None);
    }
    let summary = Journal::summary(&config.dir)
        .with_context(|| format!("reading the batch journal in {}", config.dir.display()))
        .map_err(Failure::Usage)?;
    Ok(Some(summary.run_id))
}

/// The share of a stored run's finished dialogs that made a row, once there are
/// enough of them to say (what `oversample: auto` starts spares for).
fn pass_rate(record: &RunRecord) -> Option<f64> {
    let failed: u64 = record.failures.iter().flat_map(|f| f.values()).sum();
    let ended = record.rows_written + failed;
    (ended >= MIN_OBSERVED_DIALOGS && record.rows_written > 0)
        .then(|| record.rows_written as f64 / ended as f64)
}

/// Finished dialogs a resumed run needs before its pass rate replaces the assumed one.
const MIN_OBSERVED_DIALOGS: u64 = 20;

/// The smallest money limit among the top-level `budget` rules.
fn budget(rules: &[StopRule]) -> Option<f64> {
    rules
        .iter()
        .filter_map(|rule| match rule {
            StopRule::Budget { max_cost, .. } => *max_cost,
            _ => None,
        })
        .reduce(f64::min)
}

/// The synchronous models of the dialog roles, as `build` makes them.
#[derive(Debug, Clone)]
pub(crate) struct SyncModels {
    /// The main endpoint's model.
    pub(crate) respondent: Arc<dyn ChatModel>,
    /// The correspondent's own model (`correspondent.model_name`), when it has one.
    pub(crate) correspondent: Option<Arc<dyn ChatModel>>,
    /// The judge's own endpoint's model (`quality.evaluator`), when it has one.
    pub(crate) judge: Option<Arc<dyn ChatModel>>,
}

/// A stopping criterion in batch mode: it still ends the run, but holds no dialog
/// back. The money look-ahead is the round gate's there (`Budget`): a cost budget
/// that starts dialogs one at a time until one finished would run a single dialog
/// through every round, each a batch turnaround.
#[derive(Debug)]
struct RoundGated(Arc<dyn StoppingCriterion>);

/// `criterion` as batch mode applies it (see `RoundGated`).
pub(crate) fn round_gated(criterion: Arc<dyn StoppingCriterion>) -> Arc<dyn StoppingCriterion> {
    Arc::new(RoundGated(criterion))
}

impl StoppingCriterion for RoundGated {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        self.0.should_stop(progress)
    }

    fn max_rows(&self) -> Option<u64> {
        self.0.max_rows()
    }

    fn describe(&self) -> String {
        self.0.describe()
    }
}

/// The models the dialog roles call: batched for the roles `batch.roles` names,
/// the synchronous stack for the others.
#[derive(Debug, Clone)]
pub(crate) struct RoleModels {
    /// The assistant's.
    pub(crate) respondent: Arc<dyn ChatModel>,
    /// The simulated user's (`None`: the engine's default, the respondent's).
    pub(crate) correspondent: Option<Arc<dyn ChatModel>>,
    /// The judge's.
    pub(crate) judge: Arc<dyn ChatModel>,
    /// The instruction generator's (and the persona generator's).
    pub(crate) instructions: Arc<dyn ChatModel>,
}

impl RoleModels {
    /// Every role on its synchronous model.
    pub(crate) fn sync(sync: &SyncModels) -> Self {
        RoleModels {
            respondent: Arc::clone(&sync.respondent),
            correspondent: sync.correspondent.clone(),
            judge: sync
                .judge
                .clone()
                .unwrap_or_else(|| Arc::clone(&sync.respondent)),
            instructions: Arc::clone(&sync.respondent),
        }
    }
}

/// Batch mode while `generate` runs: the batcher and what the CLI says about it.
#[derive(Debug)]
pub(crate) struct BatchRun {
    /// The batcher every batched role parks its requests with.
    pub(crate) batcher: Batcher,
    config: BatchConfig,
    provider: Provider,
    /// The provider of the judge's own batch endpoint, when the judge has one.
    judge_provider: Option<Provider>,
    oversample: f64,
    rounds: RoundEstimate,
    /// Why the budget stopped the run, once a round was refused for it.
    budget_stop: Arc<OnceLock<String>>,
}

/// The rounds a dialog takes, as the engine predicts them.
#[derive(Debug, Clone, Copy)]
struct RoundEstimate {
    floor: u32,
    with_regenerations: u32,
    max_turns: u32,
    judged: bool,
    regenerations: u32,
}

/// Starts the batcher over the providers' batch APIs (the main endpoint's, and the
/// judge's own when the judge is batched; one backend per key), each role's `sync`
/// model answering its small rounds, and returns it with the models of the dialog
/// roles.
pub(crate) fn start(
    settings: &Settings,
    start: BatchStart,
    sync: &SyncModels,
    client: &reqwest::Client,
    ledger: &Ledger,
) -> anyhow::Result<(BatchRun, RoleModels)> {
    let config = settings
        .batch
        .clone()
        .ok_or_else(|| anyhow!("batch mode is off"))?;
    let judged = config.roles.judge && settings.auto_improve;
    let endpoints = backends::endpoints(settings, client, judged)?;
    let judge_provider = endpoints
        .iter()
        .any(|e| e.name == backends::JUDGE_ENDPOINT)
        .then(|| settings.evaluator.as_ref().map(|e| e.provider))
        .flatten();
    let mut batch_settings = config.settings.clone();
    batch_settings.keep_files = config.keep_files;
    let batcher = Batcher::start_with(
        &start.run_id,
        settings.model_name.clone(),
        endpoints,
        Some(Arc::clone(&sync.respondent)),
        batch_settings,
        Some(start.journal),
    );
    let budget_stop = Arc::new(OnceLock::new());
    if let Some(max_cost) = start.max_cost {
        let budget = Budget {
            ledger: ledger.clone(),
            prior: start.prior,
            prices: settings.prices.clone(),
            max_cost,
        };
        batcher.set_round_gate(budget.gate(start.stop, Arc::clone(&budget_stop)));
    }
    let models = role_models(settings, &config, &batcher, sync);
    let run = BatchRun {
        batcher,
        oversample: config.oversample_factor(settings.auto_improve, start.pass_rate),
        provider: settings.provider,
        judge_provider,
        rounds: estimate(settings),
        config,
        budget_stop,
    };
    Ok((run, models))
}

/// The batched model for the roles `batch.roles` names, each on its own model: a
/// correspondent with a model of its own on the main endpoint under that model, a
/// judge with an endpoint of its own on the batcher's `judge` endpoint.
fn role_models(
    settings: &Settings,
    config: &BatchConfig,
    batcher: &Batcher,
    sync: &SyncModels,
) -> RoleModels {
    let unbatched = RoleModels::sync(sync);
    let respondent = if config.roles.respondent {
        batcher.model(RequestRole::Assistant)
    } else {
        unbatched.respondent
    };
    let correspondent = match (
        &settings.correspondent_model_name,
        config.roles.correspondent,
    ) {
        // Not the engine's default: that is the respondent's model, batched here.
        (_, false) => Some(
            unbatched
                .correspondent
                .unwrap_or_else(|| Arc::clone(&sync.respondent)),
        ),
        (Some(name), true) => {
            batcher.model_on("", name, RequestRole::User, sync.correspondent.clone())
        }
        (None, true) => Some(batcher.model(RequestRole::User)),
    };
    let judge = match (&settings.evaluator, &sync.judge, config.roles.judge) {
        (_, _, false) => None,
        (Some(endpoint), Some(own), true) => batcher.model_on(
            backends::JUDGE_ENDPOINT,
            &endpoint.model_name,
            RequestRole::Judge,
            Some(Arc::clone(own)),
        ),
        _ => Some(batcher.model(RequestRole::Judge)),
    };
    let instructions = if config.roles.instructions {
        batcher.model(RequestRole::Question)
    } else {
        unbatched.instructions
    };
    RoleModels {
        respondent,
        correspondent,
        // A judge whose endpoint has no batch API stays on its synchronous model.
        judge: judge.unwrap_or(unbatched.judge),
        instructions,
    }
}

/// The rounds a dialog of the run takes: the engine's prediction for its turns,
/// judge and regenerations.
fn estimate(settings: &Settings) -> RoundEstimate {
    let max_turns = settings.turns.max();
    let judged = settings.auto_improve;
    let regenerations = if judged {
        settings.quality.max_regenerations
    } else {
        0
    };
    let predicted = afterimage_engine::predicted_rounds(max_turns, judged, regenerations);
    RoundEstimate {
        floor: predicted.floor,
        with_regenerations: predicted.with_regenerations,
        max_turns,
        judged,
        regenerations,
    }
}

/// The money limit a batch round is checked against: this session's ledger plus what
/// earlier sessions spent, at the settings' prices (batched answers at the batch rate).
#[derive(Debug, Clone)]
struct Budget {
    ledger: Ledger,
    prior: LedgerBook,
    prices: Prices,
    max_cost: f64,
}

impl Budget {
    /// Why a batch round of `requests` (each at the mean cost of a batched request so
    /// far) would take the run past the limit, if it would.
    fn refuse(&self, requests: usize) -> Option<String> {
        let spend = Spend::of(&self.ledger.book().plus(&self.prior), &self.prices);
        let next = spend.per_batched_request() * requests as f64;
        let (max_cost, spent) = (self.max_cost, spend.total);
        let why = if spent >= max_cost {
            format!("{spent:.4} is spent")
        } else if spent + next > max_cost {
            format!(
                "{spent:.4} is spent and the next batch round of {requests} requests would add about {next:.4}"
            )
        } else {
            return None;
        };
        Some(format!(
            "the budget of {max_cost:.4} (--max-cost or a budget rule): {why}; raise the limit and run the same command with --resume"
        ))
    }

    /// The round gate: a round the budget refuses stops the run through `stop` (the
    /// dialogs waiting on it are cancelled, not failed), and `tripped` keeps why.
    fn gate(
        self,
        stop: StopHandle,
        tripped: Arc<OnceLock<String>>,
    ) -> Arc<dyn Fn(usize) -> Result<(), String> + Send + Sync> {
        Arc::new(move |requests| {
            let Some(why) = self.refuse(requests) else {
                return Ok(());
            };
            // Asked before the batcher answers the round, so the engine counts the
            // dialogs it ends as cancelled.
            let _ = tripped.set(why.clone());
            stop.set_reason(why.clone());
            stop.cancel();
            Err(why)
        })
    }
}

/// What the ledger's requests cost at the settings' prices; models without a price
/// count nothing.
#[derive(Debug, Default)]
struct Spend {
    total: f64,
    batched: f64,
    batched_requests: u64,
}

impl Spend {
    fn of(book: &LedgerBook, prices: &Prices) -> Spend {
        let mut spend = Spend::default();
        for (name, _) in book.models() {
            let (model, batched) = split_batch_ledger_name(name);
            let Some(price) = prices.get(model) else {
                continue;
            };
            let spent = book.model_total(name);
            if batched {
                let cost = price.batch_rate().cost(spent.usage);
                spend.batched += cost;
                spend.batched_requests += u64::from(spent.requests);
                spend.total += cost;
            } else {
                spend.total += price.cost(spent.usage);
            }
        }
        spend
    }

    /// The mean cost of one batched request so far (0 before the first).
    fn per_batched_request(&self) -> f64 {
        if self.batched_requests == 0 {
            0.0
        } else {
            self.batched / self.batched_requests as f64
        }
    }
}

impl BatchRun {
    /// The engine's options for batch mode: it tells the batcher which dialogs run,
    /// starts spares, and uses the batcher's run id.
    pub(crate) fn apply(&self, options: GenerateOptions, run_id: &str) -> GenerateOptions {
        options
            .live_dialogs(Arc::new(self.batcher.clone()))
            .oversample(self.oversample)
            .run_id(run_id)
    }

    /// Before the run: the API, the rounds and the provider's stated turnaround.
    pub(crate) fn announce(&self) {
        let r = self.rounds;
        let why = format!(
            "2 × {} turn{}{}",
            r.max_turns,
            if r.max_turns == 1 { "" } else { "s" },
            if r.judged { " + judge" } else { "" }
        );
        let more = match r.regenerations {
            0 => String::new(),
            1 => format!("; {} with one regeneration", r.with_regenerations),
            n => format!("; {} with {n} regenerations", r.with_regenerations),
        };
        let spares = if self.oversample > 1.0 {
            format!(
                "; {:.0}% spare dialogs start beside the rows asked for (batch.oversample)",
                (self.oversample - 1.0) * 100.0
            )
        } else {
            String::new()
        };
        let judge = match self.judge_provider {
            Some(judge) if api_name(judge) != api_name(self.provider) => format!(
                "; the judge's requests go through {} ({})",
                api_name(judge),
                turnaround(judge)
            ),
            _ => String::new(),
        };
        crate::batch::progress::say(&format!(
            "batch mode: {}, about {} rounds ({why}{more}); each round takes one batch turnaround: {}{judge}{spares}",
            api_name(self.provider),
            r.floor,
            turnaround(self.provider)
        ));
    }

    /// Prints a line per round and per open batch while the run goes on, until the
    /// returned guard is dropped.
    pub(crate) fn watch(&self, print: progress::Printer) -> progress::Watch {
        progress::Watch::start(
            self.batcher.clone(),
            self.provider,
            self.rounds.floor,
            print,
        )
    }

    /// Once the run returned: a finished run cancels batches left with spare dialogs'
    /// requests only; a stopped or failed one leaves its open batches running (or
    /// cancels them with `cancel_on_exit`) and says how to resume, check or cancel them.
    pub(crate) async fn close(
        &self,
        result: &Result<RunReport, EngineError>,
        output: &StorageSpec,
        config: &Path,
    ) {
        if matches!(result, Ok(report) if !report.interrupted) {
            let spares = self.batcher.shutdown(true).await;
            if !spares.is_empty() {
                let ids: Vec<&str> = spares.iter().map(|b| b.id.as_str()).collect();
                progress::say(&format!(
                    "cancelled {} provider batch(es) of spare dialogs the run no longer needs: {}",
                    ids.len(),
                    ids.join(", ")
                ));
            }
            return;
        }
        let cancel = self.config.cancel_on_exit;
        let open = self.batcher.shutdown(cancel).await;
        let config = config.display().to_string();
        if self.budget_stopped() {
            progress::say(
                "the batch budget stopped the run: raise --max-cost (or the budget rule's max_cost) before resuming",
            );
        }
        progress::stopped(
            &open,
            cancel,
            &resume_command(),
            &output.to_string(),
            &config,
        );
    }

    /// Whether a round refused for the budget stopped the run.
    pub(crate) fn budget_stopped(&self) -> bool {
        self.budget_stop.get().is_some()
    }

    /// The figures for the report, once the run ended.
    pub(crate) fn summary(&self, ledger: &afterimage_engine::LedgerSummary) -> BatchSummary {
        BatchSummary::of(&self.batcher.report(), ledger)
    }
}

/// `validate`'s batch line, when the config turns batch mode on.
pub(crate) fn validate_line(settings: &Settings) -> Option<String> {
    let config = settings.batch.as_ref()?;
    let rounds = estimate(settings);
    Some(format!(
        "batch mode: {}, about {} rounds; journal in {}",
        api_name(settings.provider),
        rounds.floor,
        config.dir.display()
    ))
}

/// This process's command line with `--resume`: what finishes the run.
fn resume_command() -> String {
    let mut words: Vec<String> = crate::invocation().to_vec();
    if !words.iter().any(|w| w == "--resume") {
        words.push("--resume".into());
    }
    let quoted: Vec<String> = words
        .iter()
        .map(|w| {
            if w.is_empty() || w.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", w.replace('\'', r"'\''"))
            } else {
                w.clone()
            }
        })
        .collect();
    format!("afterimage {}", quoted.join(" "))
}

/// How the provider's batch API is named in messages.
fn api_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Anthropic => "Anthropic Message Batches API",
        Provider::Gemini => "Gemini batch API",
        Provider::Openai => "OpenAI Batch API",
        _ => "OpenAI-compatible batch API",
    }
}

/// What the provider says about a batch's turnaround (vendor statements, not SLAs).
fn turnaround(provider: Provider) -> &'static str {
    match provider {
        Provider::Openai => "OpenAI says within 24 h, often much sooner",
        Provider::Anthropic => "Anthropic says most batches end within 1 hour, at most 24 h",
        Provider::Gemini => {
            "Gemini targets 24 h, in most cases much sooner (a job pending for 48 h expires)"
        }
        _ => "as long as this server takes (OpenAI's own API says within 24 h)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::Usage;

    fn settings(yaml: &str) -> Settings {
        let raw =
            crate::config::parse(&format!("respondent: {{system_prompt: hi}}\n{yaml}")).unwrap();
        let env = |name: &str| (name == "OPENAI_API_KEY").then(|| "k".to_owned());
        let overrides = crate::settings::Overrides {
            batch: true,
            ..Default::default()
        };
        Settings::resolve(
            raw,
            Path::new("run.yaml"),
            &overrides,
            env,
            crate::KeyPolicy::Required,
        )
        .unwrap()
    }

    #[test]
    fn the_round_gate_projects_the_round_with_batched_answers_at_half_price() {
        let settings = settings(
            "model: {provider: openai, model_name: m, price: {input_per_million: 1, output_per_million: 1}}\n",
        );
        let ledger = Ledger::new();
        // Two batched requests of half a million tokens: 0.5 at the batch rate, 0.25
        // per request.
        ledger.record("m (batch)", "respondent", Usage::new(500_000, 0));
        ledger.record("m (batch)", "respondent", Usage::new(500_000, 0));
        let budget = |max_cost, prior| Budget {
            ledger: ledger.clone(),
            prior,
            prices: settings.prices.clone(),
            max_cost,
        };
        let stop = StopHandle::new();
        let tripped = Arc::new(OnceLock::new());
        let gate = budget(1.0, LedgerBook::default()).gate(stop.clone(), Arc::clone(&tripped));
        assert!(gate(2).is_ok(), "0.5 + 2 × 0.25 stays within 1.0");
        assert!(!stop.is_stopped());
        let refused = gate(3).unwrap_err();
        assert!(
            refused.contains("round of 3 requests") && refused.contains("0.5000 is spent"),
            "{refused}"
        );
        assert!(stop.is_cancelled(), "a refused round stops the run at once");
        assert_eq!(stop.reason().as_deref(), Some(refused.as_str()));
        assert_eq!(tripped.get(), Some(&refused));
        let earlier = Ledger::new();
        earlier.record("m (batch)", "respondent", Usage::new(400_000, 0));
        assert!(budget(1.0, LedgerBook::default()).refuse(2).is_none());
        assert!(
            budget(1.0, earlier.book()).refuse(2).is_some(),
            "earlier sessions' spend counts: 0.7 + 2 × 0.7 / 3 passes 1.0"
        );
        ledger.record("m", "instructions", Usage::new(400_000, 0));
        assert!(
            budget(1.0, LedgerBook::default()).refuse(1).is_some(),
            "synchronous answers count at the full rate"
        );
        assert!(
            budget(0.5, LedgerBook::default()).refuse(0).is_some(),
            "a spent budget refuses any round"
        );
    }

    #[test]
    fn auto_oversampling_reads_a_resumed_runs_pass_rate_once_it_has_enough() {
        let mut record = RunRecord::new("r", 1, "");
        record.rows_written = 10;
        assert_eq!(pass_rate(&record), None, "too few to say");
        record.rows_written = 30;
        assert_eq!(pass_rate(&record), Some(1.0));
        record.failures = Some([("judge: below min_score".to_owned(), 10)].into());
        assert_eq!(pass_rate(&record), Some(0.75));
        record.rows_written = 5;
        assert_eq!(pass_rate(&record), None);
    }

    #[test]
    fn the_budget_is_the_smallest_money_limit() {
        let s = settings(
            "generation: {stopping: [{type: budget, max_cost: 3}, {type: budget, max_cost: 2}, {type: fixed, n: 5}]}\nmodel: {provider: openai, model_name: m, price: {input_per_million: 1, output_per_million: 1}}\n",
        );
        assert_eq!(budget(&s.stopping), Some(2.0));
        assert_eq!(budget(&[]), None);
    }

    #[test]
    fn the_announcement_and_validate_name_the_api_and_rounds() {
        let s = settings(
            "generation: {max_turns: 4}\nmodel: {provider: openai}\nquality: {auto_improve: true, max_regenerations: 1}\n",
        );
        let line = validate_line(&s).unwrap();
        assert!(
            line.starts_with("batch mode: OpenAI Batch API, about 9 rounds"),
            "{line}"
        );
        assert!(turnaround(Provider::Anthropic).contains("1 hour"));
        assert!(resume_command().ends_with("--resume"));
    }
}
