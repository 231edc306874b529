//! `afterimage structured`: rows whose output matches a JSON Schema, from the same
//! config a `generate` run uses plus its `structured:` section; and the schema check
//! `validate` shows.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::Storage;
use afterimage_engine::{EngineError, RunReport, StopHandle};
use afterimage_providers::{KeyStats, ThrottleStats};
use anyhow::{Context, anyhow};
use clap::Args;

use crate::Failure;
use crate::build;
use crate::commands::{preload_documents, record_structured_mode, recorded_mode};
use crate::output::{Progress, print_report};
use crate::settings::{KeyPolicy, Overrides, Settings, StructuredSettings, resolve_structured};
use crate::signals::{self, Signal};

/// `afterimage structured`
#[derive(Debug, Args)]
pub(crate) struct StructuredArgs {
    /// The YAML config, with a `structured:` section holding the schema.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// Rows to write (structured.num_samples).
    #[arg(long, value_name = "N")]
    pub(crate) num_samples: Option<u64>,
    /// Where rows go (structured.output_path): FILE.jsonl, sqlite:FILE or
    /// postgres://...
    #[arg(short, long, value_name = "OUT")]
    pub(crate) out: Option<String>,
    /// Finish the run already in the output: same run id and seed, only the missing
    /// rows.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Print the final report as one JSON object on stdout instead of the table.
    #[arg(long)]
    pub(crate) json: bool,
    /// On Ctrl-C, SIGTERM or SIGHUP, start no new rows and give those in flight this
    /// long to finish and be stored before cancelling the rest; the exit code is then
    /// 128 + the signal's number and --resume finishes the run.
    #[arg(long, value_name = "SECONDS", default_value_t = 25)]
    pub(crate) grace: u64,
    /// Serve live counters in the Prometheus text format on http://HOST:PORT/metrics
    /// while the run goes on (rows, requests, tokens, cost); port 0 picks a free
    /// one, printed on stderr.
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) metrics_addr: Option<String>,
    /// Provider, model, base URL and seed.
    #[command(flatten)]
    pub(crate) model: crate::args::ModelFlags,
    /// Rows in flight (generation.max_concurrency).
    #[arg(long, value_name = "N")]
    pub(crate) max_concurrency: Option<usize>,
    /// Send the rows' requests through the provider's batch API at half price, one
    /// round per batch turnaround (turns on the config's `batch:` section).
    #[arg(long)]
    pub(crate) batch: bool,
    /// In batch mode, cancel the open provider batches on Ctrl-C, SIGTERM or SIGHUP
    /// instead of leaving them running for --resume (batch.cancel_on_exit).
    #[arg(long)]
    pub(crate) cancel_on_exit: bool,
}

/// Runs `structured`.
pub(crate) async fn run(args: StructuredArgs) -> Result<(), Failure> {
    // First, so a SIGTERM during setup already drains instead of killing.
    let stop = StopHandle::new();
    let caught = signals::watch(stop.clone(), Duration::from_secs(args.grace));
    let (settings, structured) = settings(&args)?;
    if let Some(addr) = &args.metrics_addr {
        let bound = crate::metrics::serve(addr).await.map_err(Failure::Usage)?;
        eprintln!("serving metrics on http://{bound}/metrics");
    }
    let mut settings = preload_documents(settings).await?;
    let storage: Arc<dyn Storage> = Arc::new(
        structured
            .output
            .open()
            .await
            .with_context(|| format!("opening the output {}", structured.output))
            .map_err(Failure::Usage)?,
    );
    if args.resume {
        settings.structured_output_start = recorded_mode(storage.as_ref()).await;
    }
    let batch =
        crate::batch::prepare(&settings, storage.as_ref(), args.resume, None, &stop).await?;
    let batch_run_id = batch.as_ref().map(|b| b.run_id.clone());
    let (dialogs, options, mut pools) =
        build::generator_with(&settings, Arc::clone(&storage), batch)
            .await
            .map_err(Failure::Usage)?;
    let generator = dialogs
        .structured()
        .schema(structured.schema.clone())
        .output(Arc::clone(&storage))
        .build()
        .map_err(|e| Failure::Usage(e.into()))?;
    let progress = Progress::start(
        Some(structured.num_samples),
        !args.json && std::io::stderr().is_terminal(),
    );
    let mut options = options
        .num_dialogs(structured.num_samples)
        .resume(args.resume)
        .stop_handle(stop)
        .on_progress(progress.callback());
    if let (Some(run), Some(id)) = (&mut pools.batch, &batch_run_id) {
        options = run.apply(options, id);
        run.announce_job(crate::batch::JobRounds::Structured);
    }
    let watch = pools
        .batch
        .as_ref()
        .map(|run| run.watch(Arc::new(progress.printer())));
    let result = generator.generate(options).await;
    drop(watch);
    progress.finish();
    if let Some(run) = &pools.batch {
        run.close(&result, &structured.output, &args.config).await;
    }
    if let Some(state) = &pools.structured {
        record_structured_mode(storage.as_ref(), state).await;
    }
    let code = caught.signal().map_or(130, Signal::exit_code);
    conclude(result, &settings, &pools, args.json, code)
}

/// The run's settings and its `structured:` section, resolved.
fn settings(args: &StructuredArgs) -> Result<(Settings, StructuredSettings), Failure> {
    let path = &args.config;
    let mut raw = crate::config::load(path).map_err(|e| Failure::Usage(e.into()))?;
    let section = raw.structured.take();
    let structured = resolve_structured(
        section.as_ref(),
        path,
        args.num_samples,
        args.out.as_deref(),
    )
    .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    let overrides = Overrides {
        max_concurrency: args.max_concurrency,
        // The rows' output: where batch mode keeps its journal by default.
        out: Some(structured.output.to_string()),
        batch: args.batch,
        cancel_on_exit: args.cancel_on_exit,
        ..args.model.overrides()
    };
    let env = |name: &str| std::env::var(name).ok();
    let settings = Settings::resolve(raw, path, &overrides, env, KeyPolicy::Required)
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok((settings, structured))
}

/// Prints the report and maps the outcome onto the exit code.
fn conclude(
    result: Result<RunReport, EngineError>,
    settings: &Settings,
    pools: &build::Meters,
    json: bool,
    interrupted_code: u8,
) -> Result<(), Failure> {
    let keys: Vec<KeyStats> = pools.keys.iter().flat_map(|p| p.stats()).collect();
    let pacing: Vec<ThrottleStats> = pools.throttles.iter().map(|t| t.stats()).collect();
    let print = |report: &RunReport| {
        let prices = settings.price_source.as_deref();
        let batch = pools.batch.as_ref().map(|b| b.summary(&report.ledger));
        print_report(
            report,
            &keys,
            &pacing,
            pools.structured.as_ref(),
            prices,
            json,
            batch.as_ref(),
        );
    };
    match result {
        Ok(report) if report.interrupted => {
            print(&report);
            Err(Failure::Interrupted(
                anyhow!(
                    "{}\n{} rows written to {} are kept; run the same command with --resume to make the rest",
                    report.stop_reason,
                    report.rows_written,
                    report.output
                ),
                interrupted_code,
            ))
        }
        Ok(report) => {
            print(&report);
            Ok(())
        }
        Err(EngineError::RunFailed { cause, report }) => {
            print(&report);
            Err(Failure::Run(anyhow!(
                "{cause} ({} rows written to {} are kept)",
                report.rows_written,
                report.output
            )))
        }
        Err(e @ EngineError::Config(_)) => Err(Failure::Usage(e.into())),
        Err(e) => Err(Failure::Run(e.into())),
    }
}

/// `validate`'s line about the `structured:` section, when the config has one;
/// whether it passed.
pub(crate) fn check_section(config: &Path) -> bool {
    let checked = crate::config::load(config)
        .context("reading the config")
        .and_then(|mut raw| {
            let Some(section) = raw.structured.take() else {
                return Ok(None);
            };
            resolve_structured(Some(&section), config, None, None)
                .map(Some)
                .map_err(Into::into)
        });
    match checked {
        Ok(None) => true,
        Ok(Some(s)) => {
            println!(
                "ok    structured: schema `{}` from {}, {} rows to {}",
                s.schema.name, s.origin, s.num_samples, s.output
            );
            true
        }
        Err(e) => {
            println!("fail  {e:#}");
            false
        }
    }
}
