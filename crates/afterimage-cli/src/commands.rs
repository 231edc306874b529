//! `afterimage generate`, `afterimage validate` and `afterimage stats`.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use afterimage_core::{Document, DocumentSource, StoppingCriterion, Storage, StorageError};
use afterimage_engine::{CostBudget, EngineError, RunReport, StopHandle};
use afterimage_providers::{
    KeyStats, Provider, StructuredOutput, StructuredOutputState, ThrottleStats,
};
use afterimage_storage::StorageSpec;
use anyhow::{Context, anyhow};

use crate::Failure;
use crate::args::{GenerateArgs, StatsArgs, ValidateArgs};
use crate::build;
use crate::config;
use crate::output::{Progress, print_report, print_stats};
use crate::settings::{
    DocumentsSpec, KeyPolicy, ModelPrice, Overrides, RetrievalSettings, Settings, table_source,
};
use crate::signals::{self, Signal};

/// Runs `generate`: settings, output, the generator (batched when asked), the run
/// with its progress, then the report and the exit code.
pub(crate) async fn generate(args: GenerateArgs) -> Result<(), Failure> {
    // First, so a SIGTERM during setup already drains instead of killing.
    let stop = StopHandle::new();
    let caught = signals::watch(stop.clone(), Duration::from_secs(args.grace));
    let mut settings = generate_settings(&args).await?;
    let storage = open_output(&settings).await?;
    if args.resume {
        settings.structured_output_start = recorded_mode(storage.as_ref()).await;
    }
    let batch = prepare_batch(&args, &settings, storage.as_ref(), &stop).await?;
    let batch_run_id = batch.as_ref().map(|b| b.run_id.clone());
    let (generator, options, pools) = build::generator_with(&settings, Arc::clone(&storage), batch)
        .await
        .map_err(Failure::Usage)?;
    let options = options.resume(args.resume);
    let options = run_options(&args, &settings, &pools, options, stop).await?;
    let options = match (&pools.batch, &batch_run_id) {
        (Some(run), Some(id)) => {
            let options = run.apply(options, id);
            run.announce();
            options
        }
        _ => options,
    };
    let result = run_with_progress(&generator, options, &settings, &args, &pools).await;
    let joined = args.fleet.join;
    // A shared run's record belongs to the fleet (and the output may hold other runs).
    if let Some(state) = pools.structured.as_ref().filter(|_| !joined) {
        record_structured_mode(storage.as_ref(), state).await;
    }
    let code = stopped_code(&caught, &pools);
    conclude(result, &settings, &pools, args.json, code, !joined).await
}

/// The settings of `generate`: the config with the command line's overrides, the
/// metrics endpoint started, the documents read (so an empty folder fails before any
/// request).
async fn generate_settings(args: &GenerateArgs) -> Result<Settings, Failure> {
    let mut overrides: Overrides = args.overrides.clone().into();
    (overrides.batch, overrides.cancel_on_exit) = (args.batch, args.cancel_on_exit);
    let settings = settings(&args.config, overrides, KeyPolicy::Required)?;
    if let Some(addr) = &args.metrics_addr {
        let bound = crate::metrics::serve(addr).await.map_err(Failure::Usage)?;
        eprintln!("serving metrics on http://{bound}/metrics");
    }
    preload_documents(settings).await
}

/// The rows' output, opened.
async fn open_output(settings: &Settings) -> Result<Arc<dyn Storage>, Failure> {
    let storage = settings
        .output
        .open()
        .await
        .with_context(|| format!("opening the output {}", settings.output))
        .map_err(Failure::Usage)?;
    Ok(Arc::new(storage))
}

/// Batch mode's run id and journal, when it is on (never for a worker of a shared run).
async fn prepare_batch(
    args: &GenerateArgs,
    settings: &Settings,
    storage: &dyn Storage,
    stop: &StopHandle,
) -> Result<Option<crate::batch::BatchStart>, Failure> {
    if settings.batch.is_some() && args.fleet.join {
        return Err(Failure::Usage(anyhow!(
            "batch mode cannot run as a worker of a shared run (--join): run it as one process without --join, or turn batch mode off"
        )));
    }
    crate::batch::prepare(settings, storage, args.resume, args.max_cost, stop).await
}

/// The run's options from the command line: a shared run's, `--max-cost`, the stop
/// handle the signals drive.
async fn run_options(
    args: &GenerateArgs,
    settings: &Settings,
    pools: &build::Meters,
    options: afterimage_engine::GenerateOptions,
    stop: StopHandle,
) -> Result<afterimage_engine::GenerateOptions, Failure> {
    let mut options =
        crate::fleet::apply(&args.fleet, &settings.output, &pools.throttles, options).await?;
    if let Some(max_cost) = args.max_cost {
        options = options.stopping_criterion(max_cost_criterion(settings, max_cost)?);
    }
    Ok(options.stop_handle(stop))
}

/// Runs the generator with the progress bar (and batch mode's round lines), then lets
/// batch mode close: spares' batches cancelled, a stopped run's left with hints.
async fn run_with_progress(
    generator: &afterimage_engine::ConversationGenerator,
    options: afterimage_engine::GenerateOptions,
    settings: &Settings,
    args: &GenerateArgs,
    pools: &build::Meters,
) -> Result<RunReport, EngineError> {
    let progress = Progress::start(
        settings.num_dialogs,
        !args.json && std::io::stderr().is_terminal(),
    );
    let options = options.on_progress(progress.callback());
    let watch = pools
        .batch
        .as_ref()
        .map(|run| run.watch(Arc::new(progress.printer())));
    let result = generator.generate(options).await;
    drop(watch);
    progress.finish();
    if let Some(run) = &pools.batch {
        run.close(&result, &settings.output, &args.config).await;
    }
    result
}

/// `--max-cost` as a criterion; it needs prices.
fn max_cost_criterion(
    settings: &Settings,
    max_cost: f64,
) -> Result<Arc<dyn StoppingCriterion>, Failure> {
    if settings.price.is_none() {
        return Err(Failure::Usage(anyhow!(
            "--max-cost needs token prices: {} is not in the {}; add model.price: {{input_per_million: ..., output_per_million: ...}} to the config",
            settings.model_name,
            table_source()
        )));
    }
    let budget: Arc<dyn StoppingCriterion> = Arc::new(CostBudget { max_cost });
    Ok(match settings.batch {
        Some(_) => crate::batch::round_gated(budget),
        None => budget,
    })
}

/// The exit code of a stopped run: a signal's (130 when none was caught), or none
/// (exit 0) when the batch budget stopped it, as any stopping criterion exits.
fn stopped_code(caught: &signals::Caught, pools: &build::Meters) -> Option<u8> {
    let budget = caught.signal().is_none()
        && pools
            .batch
            .as_ref()
            .is_some_and(crate::batch::BatchRun::budget_stopped);
    (!budget).then(|| caught.signal().map_or(130, Signal::exit_code))
}

/// Prints the run's report and maps its outcome onto the exit: a finished run also
/// gets its end-of-run export and report.
async fn conclude(
    result: Result<RunReport, EngineError>,
    settings: &Settings,
    pools: &build::Meters,
    json: bool,
    interrupted_code: Option<u8>,
    after_run: bool,
) -> Result<(), Failure> {
    let keys: Vec<KeyStats> = pools.keys.iter().flat_map(|p| p.stats()).collect();
    let batch = |report: &RunReport| pools.batch.as_ref().map(|b| b.summary(&report.ledger));
    let pacing: Vec<ThrottleStats> = pools.throttles.iter().map(|t| t.stats()).collect();
    let prices = settings.price_source.as_deref();
    let show = |report: &RunReport| {
        let batch = batch(report);
        let structured = pools.structured.as_ref();
        print_report(
            report,
            &keys,
            &pacing,
            structured,
            prices,
            json,
            batch.as_ref(),
        );
    };
    match result {
        Ok(report) if report.interrupted => {
            show(&report);
            // A worker of a shared run handed its claims back: the run goes on.
            let rest = if after_run {
                "run the same command with --resume to make the rest"
            } else {
                "the other workers go on with the run, and the same command joins it again"
            };
            let stopped = anyhow!(
                "{}\n{} rows written to {} are kept; {rest}",
                report.stop_reason,
                report.rows_written,
                report.output
            );
            match interrupted_code {
                Some(code) => Err(Failure::Interrupted(stopped, code)),
                None => {
                    eprintln!("{stopped}");
                    Ok(())
                }
            }
        }
        Ok(report) => {
            show(&report);
            // A shared run's export is one job after the fleet ends, not every worker's.
            if after_run {
                let rows = report.rows_resumed + report.rows_written;
                crate::datasets::after_generate(settings, &report.failures, rows, json).await;
            }
            Ok(())
        }
        Err(EngineError::RunFailed { cause, report }) => {
            show(&report);
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

/// The structured output mode an earlier session of the stored run settled on
/// (`config.structured_output` of its record), to start a resumed run from.
pub(crate) async fn recorded_mode(storage: &dyn Storage) -> Option<StructuredOutput> {
    let record = storage.load_run().await.ok()??;
    record
        .config
        .get("structured_output")?
        .as_str()?
        .parse()
        .ok()
}

/// Keeps the structured output mode that worked in the run record, where `--resume`
/// starts from it. A failure only warns: the rows and the rest of the record are
/// already stored (the engine saved them when the run closed).
pub(crate) async fn record_structured_mode(storage: &dyn Storage, state: &StructuredOutputState) {
    let saved = async {
        let Some(mut record) = storage.load_run().await? else {
            return Ok(());
        };
        let Some(config) = record.config.as_object_mut() else {
            return Ok(());
        };
        config.insert("structured_output".into(), state.mode().name().into());
        storage.save_run(&record).await
    };
    if let Err(e) = saved.await {
        tracing::warn!(
            "could not save the structured output mode in the run record of {}: {e}",
            storage.location()
        );
    }
}

/// Runs `validate`: every check is reported; the worst outcome sets the exit code.
pub(crate) async fn validate(args: ValidateArgs) -> Result<(), Failure> {
    let settings = settings(&args.config, args.overrides.into(), KeyPolicy::Optional)?;
    println!("ok    config {}", args.config.display());
    for warning in &settings.warnings {
        println!("warn  {warning}");
    }
    let key = check_api_key(&settings);
    show_prices(&settings);
    let documents = check_documents(&settings).await;
    show_personas_and_tools(&settings);
    let structured = crate::structured::check_section(&args.config);
    let output = check_output_line(&settings).await;
    if let Some(line) = crate::batch::validate_line(&settings) {
        println!("ok    {line}");
    }
    let pairs = crate::preference::check_section(&args.config);
    let usage_problems = [key, documents, structured, output, pairs]
        .into_iter()
        .filter(|passed| !passed)
        .count();
    let endpoint = check_endpoint(&settings).await;
    validate_verdict(&args.config, usage_problems, endpoint)
}

/// The API key line; whether the key check passed.
fn check_api_key(settings: &Settings) -> bool {
    match (&settings.key_env, settings.api_keys.len()) {
        (Some(var), 1) => println!("ok    API key in {var}"),
        (Some(var), n) if n > 1 => println!("ok    {n} API keys in {var} (they rotate)"),
        (Some(var), _) if settings.provider != Provider::Local => {
            println!("fail  API key: {var} is not set (export {var}=<your key>)");
            return false;
        }
        _ => println!("ok    no API key needed"),
    }
    true
}

/// Which price applies to each model the run calls, and the models whose cost stays
/// unknown (a warning, not a failure: only `--max-cost` needs a price).
fn show_prices(settings: &Settings) {
    for (model, price) in settings.prices.priced() {
        println!(
            "ok    price of {model}: {} ({})",
            describe_price(price),
            price.source
        );
    }
    for model in settings.prices.unknown() {
        println!(
            "warn  cost unknown for {model}: it is not in the {}; add model.price (quality.evaluator.price for the judge's endpoint)",
            table_source()
        );
    }
}

/// A price as a line: each rate per million tokens.
fn describe_price(price: &ModelPrice) -> String {
    let p = price.price;
    let mut rates = vec![format!("input {}", p.input_per_million)];
    if let Some(rate) = p.cached_input_per_million {
        rates.push(format!("cached input {rate}"));
    }
    if let Some(rate) = p.cache_write_per_million {
        rates.push(format!("cache writes {rate}"));
    }
    rates.push(format!("output {}", p.output_per_million));
    format!("{} per million tokens", rates.join(", "))
}

/// The documents line (and the retrieval line when they load); whether they loaded.
async fn check_documents(settings: &Settings) -> bool {
    let Some(spec) = &settings.documents else {
        println!("ok    no documents (questions come from the prompts alone)");
        return true;
    };
    match load_documents(spec, settings.min_length).await {
        Ok(docs) => {
            println!("ok    {} documents from {}", docs.len(), describe(spec));
            if let Some(retrieval) = &settings.retrieval {
                show_retrieval(retrieval, &docs);
            }
            true
        }
        Err(e) => {
            println!("fail  documents: {e:#}");
            false
        }
    }
}

/// How the documents will be chunked and retrieved.
fn show_retrieval(retrieval: &RetrievalSettings, docs: &[Document]) {
    let options = afterimage_strategies::ChunkOptions {
        size: retrieval.chunk_size,
        overlap: retrieval.chunk_overlap,
    };
    let chunks = afterimage_strategies::chunk_documents(docs, &options).map_or(0, |c| c.len());
    let retriever = match &retrieval.embedding {
        None => "BM25".to_owned(),
        Some(e) => format!("embeddings from {}", e.model_name),
    };
    println!(
        "ok    retrieval: {chunks} chunks, top {} by {retriever}{}",
        retrieval.top_k,
        if retrieval.per_turn {
            ", every turn"
        } else {
            ""
        }
    );
}

/// The personas and tools lines, when the config has them (they cannot fail here).
fn show_personas_and_tools(settings: &Settings) {
    if let Some(personas) = &settings.personas {
        let depth = personas
            .max_depth
            .map_or("as deep as the run needs".to_owned(), |d| {
                format!("at most {d} layers deep")
            });
        println!("ok    personas: generated per document, {depth}");
    }
    if let Some(tools) = &settings.tools {
        let names: Vec<&str> = tools.specs.iter().map(|t| t.name.as_str()).collect();
        println!(
            "ok    {} tools from {}: {}",
            names.len(),
            tools.origin,
            names.join(", ")
        );
    }
}

/// The output line; whether the output can be written.
async fn check_output_line(settings: &Settings) -> bool {
    match check_output(&settings.output).await {
        Ok(()) => println!("ok    output {} is writable", settings.output),
        Err(e) => {
            println!("fail  output: {e:#}");
            return false;
        }
    }
    true
}

/// The endpoint line: one probe request, 10 s at most; whether the endpoint answered.
async fn check_endpoint(settings: &Settings) -> bool {
    let endpoint = async {
        let client = build::http_client(settings)?;
        let model = build::model(
            settings,
            &settings.model_name,
            &client,
            &mut build::Meters::default(),
        )?;
        tokio::time::timeout(Duration::from_secs(10), model.probe())
            .await
            .map_err(|_| anyhow!("no answer within 10 s"))??;
        anyhow::Ok(())
    };
    match endpoint.await {
        Ok(()) => println!(
            "ok    endpoint answers ({} {})",
            settings.provider.name(),
            settings.model_name
        ),
        Err(e) => {
            println!("fail  endpoint: {e:#}");
            return false;
        }
    }
    true
}

/// The exit of `validate`: a settings problem outranks an endpoint that did not answer.
fn validate_verdict(config: &Path, usage_problems: usize, endpoint: bool) -> Result<(), Failure> {
    if usage_problems > 0 {
        Err(Failure::Usage(anyhow!(
            "{usage_problems} check(s) failed; see above"
        )))
    } else if !endpoint {
        Err(Failure::Run(anyhow!(
            "the endpoint check failed; see above"
        )))
    } else {
        println!(
            "config is ready: afterimage generate --config {}",
            config.display()
        );
        Ok(())
    }
}

/// The config at `path` resolved with `overrides`; warnings are logged.
pub(crate) fn settings(
    path: &Path,
    overrides: Overrides,
    keys: KeyPolicy,
) -> Result<Settings, Failure> {
    let raw = config::load(path).map_err(|e| Failure::Usage(e.into()))?;
    let settings = Settings::resolve(raw, path, &overrides, |name| std::env::var(name).ok(), keys)
        .map_err(|e| Failure::Usage(anyhow!("{}: {e}", path.display())))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

pub(crate) async fn preload_documents(mut settings: Settings) -> Result<Settings, Failure> {
    if let Some(spec) = &settings.documents {
        let docs = load_documents(spec, settings.min_length)
            .await
            .map_err(Failure::Usage)?;
        settings.documents = Some(DocumentsSpec::Loaded(docs));
    }
    Ok(settings)
}

async fn load_documents(spec: &DocumentsSpec, min_length: usize) -> anyhow::Result<Vec<Document>> {
    let source: Arc<dyn DocumentSource> = build::documents(spec, min_length)?;
    source
        .load()
        .await
        .with_context(|| format!("reading documents from {}", describe(spec)))
}

fn describe(spec: &DocumentsSpec) -> String {
    match spec {
        DocumentsSpec::Directory(path) | DocumentsSpec::File(path) => path.display().to_string(),
        DocumentsSpec::Jsonl { path, .. } => path.display().to_string(),
        DocumentsSpec::Glob(pattern) => pattern.clone(),
        DocumentsSpec::Inline(texts) => format!("{} inline texts", texts.len()),
        DocumentsSpec::Loaded(docs) => format!("{} loaded documents", docs.len()),
    }
}

/// Runs `stats`: reads every row of any backend and summarises them.
pub(crate) async fn stats(args: StatsArgs) -> Result<(), Failure> {
    let spec = StorageSpec::parse(&args.input);
    let storage = spec.open_existing().await.map_err(|e| match e {
        // Its message already names the storage and the fix.
        StorageError::NotFound { .. } => Failure::Usage(e.into()),
        e => Failure::Usage(anyhow::Error::new(e).context(format!("opening {spec}"))),
    })?;
    let read = storage
        .read_report(args.strict)
        .await
        .with_context(|| format!("reading {spec}"))
        .map_err(Failure::Run)?;
    for problem in &read.problems {
        eprintln!("warning: skipped a malformed row: {problem}");
    }
    let mut stats = crate::output::Stats::of(&read);
    // The record's ledger counts what the rows do not: failed dialogs, rejected
    // attempts, unreadable answers. A store without a record has none.
    if let Ok(Some(record)) = storage.load_run().await {
        if !record.ledger.is_empty() {
            stats.ledger = Some(afterimage_engine::LedgerSummary::of(&record.ledger));
        }
        stats.stop_reason = record.stop_reason;
    }
    print_stats(&stats, args.json);
    Ok(())
}

/// Checks that the output can be written: a probe file next to a file output, a
/// connection (and schema) for a database.
async fn check_output(output: &StorageSpec) -> anyhow::Result<()> {
    match output {
        StorageSpec::Jsonl(path) | StorageSpec::Sqlite(path) => check_writable(path),
        StorageSpec::Postgres(_) => output.open().await.map(|_| ()).map_err(Into::into),
    }
}

/// Creates (and removes) a probe file next to the output, without touching the output.
fn check_writable(output: &Path) -> anyhow::Result<()> {
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let probe = dir.join(format!(".afterimage-write-check-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("cannot write in {}", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    if output.is_dir() {
        anyhow::bail!("{} is a folder, not a file", output.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use afterimage_core::RunRecord;

    use super::*;

    #[tokio::test]
    async fn the_mode_that_worked_is_recorded_for_resume() {
        let dir = tempfile::tempdir().unwrap();
        let storage = StorageSpec::Jsonl(dir.path().join("out.jsonl"))
            .open()
            .await
            .unwrap();
        assert_eq!(recorded_mode(&storage).await, None, "no run yet");
        let mut record = RunRecord::new("run-1", 7, "prompt");
        record.config = serde_json::json!({"provider": "local", "structured_output": "auto"});
        storage.save_run(&record).await.unwrap();
        assert_eq!(recorded_mode(&storage).await, Some(StructuredOutput::Auto));

        let state = StructuredOutputState::new(Provider::Local, StructuredOutput::Auto)
            .starting_at(StructuredOutput::JsonObjectSchema);
        record_structured_mode(&storage, &state).await;
        assert_eq!(
            recorded_mode(&storage).await,
            Some(StructuredOutput::JsonObjectSchema)
        );
        let saved = storage.load_run().await.unwrap().unwrap();
        assert_eq!(saved.config["provider"], "local", "the rest is kept");
    }
}
