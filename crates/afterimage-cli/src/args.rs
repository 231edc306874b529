//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::settings::Overrides;
use afterimage_providers::Provider;
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};

/// Generate synthetic multi-turn conversations with LLMs.
#[derive(Debug, Parser)]
#[command(name = "afterimage", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate dialogs from a YAML config.
    #[command(after_help = GENERATE_EXIT_CODES)]
    Generate(GenerateArgs),
    /// Check a config, its API key, documents, output and endpoint without generating.
    Validate(ValidateArgs),
    /// Write a dataset in the formats fine-tuning tools read.
    Export(crate::datasets::ExportArgs),
    /// Write an HTML report (or the figures as JSON) about a dataset.
    Analyze(crate::datasets::AnalyzeArgs),
    /// Summarise stored rows (a JSONL file, sqlite:FILE or postgres://...).
    Stats(StatsArgs),
    /// Generate rows whose output matches a JSON Schema (the `structured:` section).
    Structured(crate::structured::StructuredArgs),
    /// Generate preference pairs (DPO data) from a YAML config's `preference:` section.
    Preference(crate::preference::PreferenceArgs),
    /// Show where a run stands: slots done, in flight and failed, and each worker of a
    /// shared run (PostgreSQL) with its last heartbeat.
    Status(crate::fleet::StatusArgs),
    /// Ask a shared run's workers to stop claiming dialogs and finish those they hold.
    Cancel(crate::fleet::CancelArgs),
    /// The provider batches of a batch-mode run (`generate --batch`): where they stand,
    /// or cancel them.
    #[command(subcommand)]
    Batch(crate::batch::BatchCommand),
}

/// The end of `generate --help`.
const GENERATE_EXIT_CODES: &str = "\
Stopping: Ctrl-C, SIGTERM or SIGHUP starts no new dialogs and lets those in flight finish
within --grace; a second signal cancels them at once. Rows written are kept and the run
record says `stopped`; run the same command with --resume to finish.

In batch mode (--batch), the provider batches keep running after a stop (their ids are
printed): --resume picks them up, `afterimage batch status|cancel OUTPUT` checks or
cancels them, and --cancel-on-exit cancels them on the way out.

Exit codes: 0 done, 1 the run failed, 2 bad usage or config; a run stopped by a signal
exits 128 + its number: 130 Ctrl-C (SIGINT), 143 SIGTERM, 129 SIGHUP.";

/// `afterimage stats`
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    /// Where the rows are: FILE.jsonl, sqlite:FILE or postgres://...
    #[arg(value_name = "IN")]
    pub(crate) input: String,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Stop at the first malformed row instead of reporting it and going on.
    #[arg(long)]
    pub(crate) strict: bool,
}

/// `afterimage generate`
#[derive(Debug, Args)]
pub(crate) struct GenerateArgs {
    /// The YAML config (the Python afterimage CLI's schema).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Print the final report as one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Stop starting dialogs before the run's cost would pass this amount (needs
    /// model.price in the config).
    #[arg(long, value_name = "AMOUNT")]
    pub(crate) max_cost: Option<f64>,
    /// Finish the run already in the output: same run id and seed, only the missing
    /// dialogs (an empty output starts a new run).
    #[arg(long)]
    pub(crate) resume: bool,
    /// On Ctrl-C, SIGTERM or SIGHUP, start no new dialogs and give those in flight
    /// this long to finish and be stored before cancelling the rest (under the 30 s
    /// Kubernetes waits before SIGKILL). A second signal cancels at once. The exit
    /// code is then 128 + the signal's number: 130 (Ctrl-C), 143 (SIGTERM), 129
    /// (SIGHUP); --resume finishes the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub(crate) grace: u64,
    /// Serve live counters in the Prometheus text format on http://HOST:PORT/metrics
    /// while the run goes on (dialogs, requests, tokens, cost, rate-limit waits);
    /// port 0 picks a free one, printed on stderr.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
    /// Send the dialogs' requests through the provider's batch API at half price, one
    /// round per batch turnaround (turns on the config's `batch:` section).
    #[arg(long)]
    pub(crate) batch: bool,
    /// In batch mode, cancel the open provider batches on Ctrl-C, SIGTERM or SIGHUP
    /// instead of leaving them running for --resume (batch.cancel_on_exit).
    #[arg(long)]
    pub(crate) cancel_on_exit: bool,
    /// Settings that override the config.
    #[command(flatten)]
    pub(crate) overrides: OverrideArgs,
    /// Shared-run flags (`--run`, `--join`, `--lease`).
    #[command(flatten)]
    pub(crate) fleet: crate::fleet::FleetArgs,
}

/// `afterimage validate`
#[derive(Debug, Args)]
pub(crate) struct ValidateArgs {
    /// The YAML config.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Settings that override the config.
    #[command(flatten)]
    pub(crate) overrides: OverrideArgs,
}

/// The model and seed flags every generating command shares.
#[derive(Debug, Args, Clone)]
pub(crate) struct ModelFlags {
    /// The provider (model.provider).
    #[arg(long, value_parser = provider_parser())]
    pub(crate) provider: Option<Provider>,
    /// The model name (model.model_name).
    #[arg(long)]
    pub(crate) model: Option<String>,
    /// The API base URL (model.base_url).
    #[arg(long, value_name = "URL")]
    pub(crate) base_url: Option<String>,
    /// Seed for reproducible sampling (generation.seed).
    #[arg(long)]
    pub(crate) seed: Option<u64>,
}

impl ModelFlags {
    /// The config overrides these flags make; the command adds its own.
    pub(crate) fn overrides(&self) -> Overrides {
        Overrides {
            provider: self.provider,
            model: self.model.clone(),
            base_url: self.base_url.clone(),
            seed: self.seed,
            ..Overrides::default()
        }
    }
}

/// Flags that override the config file.
#[derive(Debug, Args, Clone)]
pub(crate) struct OverrideArgs {
    /// Provider, model, base URL and seed.
    #[command(flatten)]
    pub(crate) model: ModelFlags,
    /// Rows to write (generation.num_dialogs).
    #[arg(long, value_name = "N")]
    pub(crate) num_dialogs: Option<u64>,
    /// Most assistant replies per dialog (generation.max_turns).
    #[arg(long, value_name = "N")]
    pub(crate) max_turns: Option<u32>,
    /// Dialogs in flight (generation.max_concurrency).
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrency: Option<usize>,
    /// Where rows go (output.path): FILE.jsonl, sqlite:FILE or postgres://...
    #[arg(long, value_name = "OUT")]
    pub(crate) out: Option<String>,
}

/// `--provider`: the catalogue's names, each with its description in `--help`.
pub(crate) fn provider_parser() -> impl TypedValueParser<Value = Provider> {
    PossibleValuesParser::new(
        Provider::ALL.map(|p| PossibleValue::new(p.name()).help(p.description())),
    )
    .try_map(|name| name.parse::<Provider>())
}

impl From<OverrideArgs> for Overrides {
    fn from(args: OverrideArgs) -> Self {
        Overrides {
            num_dialogs: args.num_dialogs,
            max_turns: args.max_turns,
            max_concurrency: args.max_concurrency,
            out: args.out,
            ..args.model.overrides()
        }
    }
}
