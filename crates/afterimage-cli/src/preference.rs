//! `afterimage preference`: preference pairs (DPO data) from the same config a
//! `generate` run uses, its `preference:` section saying how many and how.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::Storage;
use afterimage_engine::{
    EngineError, PairFormat, PreferenceGenerator, PreferenceReport, StopHandle,
};
use afterimage_providers::{KeyStats, ThrottleStats};
use anyhow::{Context, anyhow};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};

use crate::Failure;
use crate::build;
use crate::commands::preload_documents;
use crate::config;
use crate::output::{Progress, print_report};
use crate::settings::{
    KeyPolicy, Overrides, PreferenceOverrides, PreferenceSettings, Settings, preference,
};
use crate::signals::{self, Signal};

/// `afterimage preference`
#[derive(Debug, Args)]
pub(crate) struct PreferenceArgs {
    /// The YAML config (the same file `generate` reads, with a `preference:` section).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Pairs to write (preference.num_pairs).
    #[arg(long, value_name = "N")]
    pub(crate) num_pairs: Option<u64>,
    /// The rows' shape (preference.output_format).
    #[arg(long, value_name = "F", value_parser = format_parser())]
    pub(crate) format: Option<PairFormat>,
    /// Where pairs go (preference.output_path): FILE.jsonl, sqlite:FILE or postgres://...
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<String>,
    /// Also write every pair whole (all candidates) and the run's analytics to
    /// `<output>_log.jsonl` (preference.save_log).
    #[arg(long)]
    pub(crate) save_log: bool,
    /// Check the config and show what would run, without calling any model.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Finish the run already in the output: same run id and seed, only the missing
    /// pairs.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Print the final report as one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// On Ctrl-C, SIGTERM or SIGHUP, start no new pairs and give those in flight this
    /// long to finish and be stored before cancelling the rest; the exit code is then
    /// 128 + the signal's number and --resume finishes the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub(crate) grace: u64,
    /// Provider, model, base URL and seed.
    #[command(flatten)]
    pub(crate) model: crate::args::ModelFlags,
    /// Pairs in flight (preference.max_concurrency).
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrency: Option<usize>,
    /// Most assistant replies of a multi-turn pair (generation.max_turns).
    #[arg(long, value_name = "N")]
    pub(crate) max_turns: Option<u32>,
    /// Send the pairs' requests (candidates and the judge's scores) through the
    /// providers' batch APIs at half price, one round per batch turnaround (turns on
    /// the config's `batch:` section).
    #[arg(long)]
    pub(crate) batch: bool,
    /// In batch mode, cancel the open provider batches on Ctrl-C, SIGTERM or SIGHUP
    /// instead of leaving them running for --resume (batch.cancel_on_exit).
    #[arg(long)]
    pub(crate) cancel_on_exit: bool,
}

/// `--format`: the format names.
fn format_parser() -> impl TypedValueParser<Value = PairFormat> {
    PossibleValuesParser::new(PairFormat::ALL.map(PairFormat::name))
        .try_map(|name| PairFormat::from_name(&name).ok_or("unknown format"))
}

/// Runs `preference`.
pub(crate) async fn run(args: PreferenceArgs) -> Result<(), Failure> {
    let (settings, pairs) = resolve(&args)?;
    if args.dry_run {
        print_plan(&settings, &pairs);
        return Ok(());
    }
    let mut settings = preload_documents(settings).await?;
    // The judge scores every candidate; `quality:` configures it as for dialogs.
    settings.auto_improve = true;
    let storage: Arc<dyn Storage> = Arc::new(
        pairs
            .output
            .open()
            .await
            .with_context(|| format!("opening the output {}", pairs.output))
            .map_err(Failure::Usage)?,
    );
    let stop = StopHandle::new();
    let batch =
        crate::batch::prepare(&settings, storage.as_ref(), args.resume, None, &stop).await?;
    let batch_run_id = batch.as_ref().map(|b| b.run_id.clone());
    let (conversation, options, mut pools) =
        build::generator_with(&settings, Arc::clone(&storage), batch)
            .await
            .map_err(Failure::Usage)?;
    let generator = pair_generator(conversation, &pairs)?;
    if args.resume {
        check_resumed_format(storage.as_ref(), pairs.format).await?;
    }
    let caught = signals::watch(stop.clone(), Duration::from_secs(args.grace));
    let progress = Progress::counting(
        Some(pairs.num_pairs),
        !args.json && std::io::stderr().is_terminal(),
        "pairs",
        "not kept",
    );
    let mut options = options
        .run_config(run_config(&settings, &pairs))
        .resume(args.resume)
        .stop_handle(stop)
        .on_progress(progress.callback());
    if let (Some(run), Some(id)) = (&mut pools.batch, &batch_run_id) {
        options = run.apply(options, id);
        run.announce_job(crate::batch::JobRounds::Pair {
            multi_turn: pairs.multi_turn,
            max_turns: settings.turns.max(),
        });
    }
    let watch = pools
        .batch
        .as_ref()
        .map(|run| run.watch(Arc::new(progress.printer())));
    let result = generator.generate(options).await;
    drop(watch);
    progress.finish();
    if let Some(run) = &pools.batch {
        // Closing looks at the run's report only: a failure keeps its message.
        let run_result = result
            .as_ref()
            .map(|r| r.run.clone())
            .map_err(|e| EngineError::Setup(e.to_string()));
        run.close(&run_result, &pairs.output, &args.config).await;
    }
    let code = caught.signal().map_or(130, Signal::exit_code);
    conclude(result, &settings, &pairs, &pools, args.json, code)
}

/// The pairs' generator around the dialogs' one, as the `preference:` section says.
fn pair_generator(
    conversation: afterimage_engine::ConversationGenerator,
    pairs: &PreferenceSettings,
) -> Result<PreferenceGenerator, Failure> {
    let mut builder = PreferenceGenerator::builder()
        .conversation(conversation)
        .num_responses(pairs.num_responses)
        .min_score_gap(pairs.min_score_gap)
        .strategy(pairs.strategy)
        .multi_turn(pairs.multi_turn)
        .format(pairs.format);
    if let Some(model) = &pairs.secondary_model {
        builder = builder.secondary_model(model.clone());
    }
    if let Some(log) = &pairs.log {
        builder = builder.log(Arc::new(afterimage_storage::JsonlStorage::new(log)));
    }
    builder.build().map_err(|e| Failure::Usage(e.into()))
}

/// What the run record keeps: the dialog settings and the pairs'.
fn run_config(settings: &Settings, pairs: &PreferenceSettings) -> serde_json::Value {
    let mut config = build::run_config(settings);
    config["preference"] = serde_json::json!({
        "num_pairs": pairs.num_pairs,
        "num_responses": pairs.num_responses,
        "min_score_gap": pairs.min_score_gap,
        "strategy": pairs.strategy.name(),
        "secondary_model": pairs.secondary_model,
        "multi_turn": pairs.multi_turn,
        "output_format": pairs.format.name(),
    });
    config
}

/// A resumed run keeps its format: one file holding two shapes would not load.
async fn check_resumed_format(storage: &dyn Storage, format: PairFormat) -> Result<(), Failure> {
    let Ok(Some(record)) = storage.load_run().await else {
        return Ok(());
    };
    let stored = record
        .config
        .pointer("/preference/output_format")
        .and_then(serde_json::Value::as_str);
    match stored {
        Some(stored) if stored != format.name() => Err(Failure::Usage(anyhow!(
            "{} holds {stored} pairs, and this run would add {format} ones: resume with --format {stored}, or choose another output",
            storage.location()
        ))),
        _ => Ok(()),
    }
}

/// The config with the flags applied: the run's settings and the pairs'.
fn resolve(args: &PreferenceArgs) -> Result<(Settings, PreferenceSettings), Failure> {
    let path = &args.config;
    let raw = config::load(path).map_err(|e| Failure::Usage(e.into()))?;
    let flags = PreferenceOverrides {
        num_pairs: args.num_pairs,
        format: args.format,
        output: args.output.clone(),
        save_log: args.save_log,
    };
    let pairs = preference::resolve(raw.preference.as_ref(), &flags)
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    let overrides = Overrides {
        num_dialogs: Some(pairs.num_pairs),
        max_turns: args.max_turns,
        max_concurrency: args.max_concurrency.or(pairs.max_concurrency),
        // The pairs' output: where batch mode keeps its journal by default.
        out: Some(pairs.output.to_string()),
        batch: args.batch,
        cancel_on_exit: args.cancel_on_exit,
        ..args.model.overrides()
    };
    let keys = if args.dry_run {
        KeyPolicy::Optional
    } else {
        KeyPolicy::Required
    };
    let settings = Settings::resolve(raw, path, &overrides, |n| std::env::var(n).ok(), keys)
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok((settings, pairs))
}

/// `validate`'s line for a `preference:` section (none without one); whether it
/// resolves.
pub(crate) fn check_section(config: &std::path::Path) -> bool {
    let Ok(raw) = config::load(config) else {
        return true;
    };
    let Some(section) = raw.preference.as_ref() else {
        return true;
    };
    match preference::resolve(Some(section), &PreferenceOverrides::default()) {
        Ok(pairs) => {
            println!(
                "ok    preference: {} {} pairs of {} candidates ({}) to {}",
                pairs.num_pairs, pairs.format, pairs.num_responses, pairs.strategy, pairs.output
            );
            true
        }
        Err(e) => {
            println!("fail  {e}");
            false
        }
    }
}

/// `--dry-run`: what the run would do.
fn print_plan(settings: &Settings, pairs: &PreferenceSettings) {
    println!(
        "would write {} {} pairs to {} with {} on {}",
        pairs.num_pairs,
        pairs.format,
        pairs.output,
        settings.model_name,
        settings.provider.name()
    );
    println!(
        "candidates: {} per question, strategy {}{}; min_score_gap {}",
        pairs.num_responses,
        pairs.strategy,
        pairs
            .secondary_model
            .as_deref()
            .map(|m| format!(" (secondary model {m})"))
            .unwrap_or_default(),
        pairs.min_score_gap
    );
    let shape = if pairs.multi_turn {
        format!(
            "a simulated dialog of up to {} exchanges, then the pair's answer",
            settings.turns.max().saturating_sub(1)
        )
    } else {
        "one question, one answer".to_owned()
    };
    println!("each pair: {shape}; {} in flight", settings.max_concurrency);
}

/// Prints the report and maps the outcome onto the exit.
fn conclude(
    result: Result<PreferenceReport, EngineError>,
    settings: &Settings,
    pairs: &PreferenceSettings,
    pools: &build::Meters,
    json: bool,
    interrupted_code: u8,
) -> Result<(), Failure> {
    let keys: Vec<KeyStats> = pools.keys.iter().flat_map(|p| p.stats()).collect();
    let pacing: Vec<ThrottleStats> = pools.throttles.iter().map(|t| t.stats()).collect();
    let batch = |report: &afterimage_engine::RunReport| {
        pools.batch.as_ref().map(|b| b.summary(&report.ledger))
    };
    let report = match result {
        Ok(report) => report,
        Err(EngineError::RunFailed { cause, report }) => {
            let summary = batch(&report);
            print_report(&report, &keys, &pacing, None, None, json, summary.as_ref());
            return Err(Failure::Run(anyhow!(
                "{cause} ({} pairs written to {} are kept)",
                report.rows_written,
                report.output
            )));
        }
        Err(e @ EngineError::Config(_)) => return Err(Failure::Usage(e.into())),
        Err(e) => return Err(Failure::Run(e.into())),
    };
    let summary = batch(&report.run);
    if json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let (Some(object), Some(summary)) = (value.as_object_mut(), &summary) {
            let summary = serde_json::to_value(summary).unwrap_or_default();
            object.insert("batch".into(), summary);
        }
        println!("{value}");
    } else {
        print_report(
            &report.run,
            &keys,
            &pacing,
            None,
            settings.price_source.as_deref(),
            false,
            summary.as_ref(),
        );
        print_analytics(&report);
    }
    if let Some(log) = &pairs.log {
        save_log(log, &report).map_err(Failure::Run)?;
    }
    if report.run.interrupted {
        return Err(Failure::Interrupted(
            anyhow!(
                "{}\n{} pairs written to {} are kept; run the same command with --resume to make the rest",
                report.run.stop_reason,
                report.run.rows_written,
                report.run.output
            ),
            interrupted_code,
        ));
    }
    Ok(())
}

/// The pairs' lines under the run's table.
fn print_analytics(report: &PreferenceReport) {
    let a = &report.preference;
    let run = &report.run;
    let discarded: u64 = a.discarded.values().sum();
    let causes: Vec<String> = a
        .discarded
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "pairs: {} kept, {discarded} discarded{} (discard rate {:.0}%, budget {}), {:.1} requests per kept pair",
        a.pairs_kept,
        if causes.is_empty() {
            String::new()
        } else {
            format!(" ({})", causes.join(", "))
        },
        a.discard_rate * 100.0,
        report.attempt_budget,
        run.requests as f64 / run.rows_written.max(1) as f64,
    );
    let g = &a.score_gap;
    println!(
        "score gap: min {:.3}, median {:.3}, mean {:.3}, max {:.3}",
        g.min, g.median, g.mean, g.max
    );
    for (label, wins) in &a.win_rates {
        println!(
            "  {label}: won {:.0}% ({} chosen, {} rejected)",
            wins.win_rate * 100.0,
            wins.chosen,
            wins.rejected
        );
    }
    for warning in &a.warnings {
        eprintln!("warning: {warning}");
    }
}

/// Appends the analytics as `{"_analytics": ...}` to the log file, after the pairs.
fn save_log(path: &std::path::Path, report: &PreferenceReport) -> anyhow::Result<()> {
    use std::io::Write as _;
    let line = serde_json::json!({ "_analytics": report });
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("writing the analytics log {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("writing {}", path.display()))
}
