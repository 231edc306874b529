//! `afterimage export` and `afterimage analyze`, and the export and report that
//! `generate` runs at the end when the config asks for them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use afterimage_core::{ConversationRow, DocumentSource, Embedder};
use afterimage_datasets::{
    Analysis, AnalyzeOptions, DatasetError, ExportFormat, ExportOptions, ExportReport,
    FormatOptions, RowFilter, analyze, compare, embedding_similarity, export, read_dataset,
    render_comparison_html, render_html,
};
use afterimage_providers::Provider;
use afterimage_storage::{StorageSpec, Stored};
use afterimage_strategies::DirectoryDocumentProvider;
use anyhow::{Context, anyhow};
use clap::Args;

use crate::Failure;
use crate::settings::{AfterRun, DocumentsSpec, KeyPolicy, Overrides, Settings};

/// `afterimage export`
#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// The rows: FILE.jsonl, sqlite:FILE or postgres://...
    #[arg(value_name = "IN", required_unless_present = "list_formats")]
    pub(crate) input: Option<String>,
    /// A format to write (repeatable): openai (also `messages`, `oumi`), sharegpt,
    /// alpaca, llama_factory, raw, dpo.
    #[arg(short, long = "format", value_name = "F")]
    pub(crate) formats: Vec<String>,
    /// Write every format.
    #[arg(long)]
    pub(crate) all: bool,
    /// Where the files go (default: the input's folder).
    #[arg(short, long, value_name = "DIR")]
    pub(crate) out_dir: Option<PathBuf>,
    /// List the formats with one line each, and exit.
    #[arg(long)]
    pub(crate) list_formats: bool,
    /// A system message to put first in every record (openai, sharegpt, llama_factory).
    #[arg(long, value_name = "TEXT")]
    pub(crate) system_prompt: Option<String>,
    /// Alpaca: one record per exchange instead of the first exchange only.
    #[arg(long)]
    pub(crate) split_turns: bool,
    /// Keep rows whose judge score is at least this (unscored rows are dropped).
    #[arg(long, value_name = "SCORE")]
    pub(crate) min_score: Option<f64>,
    /// DPO: the least final_score difference between the chosen and the rejected
    /// dialog of a first question.
    #[arg(long, value_name = "GAP", default_value_t = afterimage_datasets::DEFAULT_MIN_SCORE_GAP)]
    pub(crate) min_score_gap: f64,
    /// Keep rows whose persona contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub(crate) persona: Option<String>,
    /// Keep rows with at most this many exchanges.
    #[arg(long, value_name = "N")]
    pub(crate) max_turns: Option<u32>,
    /// Keep only rows with tool calls.
    #[arg(long)]
    pub(crate) with_tools: bool,
    /// Write `_train` and `_val` files, this share of rows in `_val` (for example 0.1).
    #[arg(long, value_name = "RATIO")]
    pub(crate) split: Option<f64>,
    /// The shuffle's seed.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Keep the stored order.
    #[arg(long)]
    pub(crate) no_shuffle: bool,
    /// Print what was written as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `afterimage analyze`
#[derive(Debug, Args)]
pub(crate) struct AnalyzeArgs {
    /// The rows: FILE.jsonl, sqlite:FILE or postgres://... (the run record found there
    /// gives the failed dialogs by cause).
    #[arg(value_name = "IN")]
    pub(crate) input: String,
    /// Write the HTML report here (default: next to the input, `<name>.html`, unless
    /// `--json` is given).
    #[arg(long, value_name = "OUT.html")]
    pub(crate) html: Option<PathBuf>,
    /// Print the figures as one JSON object on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// The document folder the run drew from, to list documents never used.
    #[arg(long, value_name = "DIR")]
    pub(crate) documents: Option<PathBuf>,
    /// A second dataset (FILE.jsonl, sqlite:FILE or postgres://...) to compare with
    /// IN: both datasets' figures side by side, each change marked better or worse
    /// (HTML default: next to IN, `<IN>_vs_<OTHER>.html`).
    #[arg(long, value_name = "OTHER")]
    pub(crate) compare: Option<String>,
    /// A run config whose `retrieval.embedding` model embeds a sample of first
    /// questions, for their mean pairwise cosine (the requests are paid for).
    #[arg(long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

/// The embedding model `analyze --config` measures first questions with.
struct AnalysisEmbedder {
    embedder: Arc<dyn Embedder>,
    model: String,
    batch: usize,
}

/// The embedder of `config`'s `retrieval.embedding` section. The chat model's key is
/// not needed; the embedding model's is.
fn config_embedder(config: &Path) -> Result<AnalysisEmbedder, Failure> {
    let usage = |e: anyhow::Error| Failure::Usage(anyhow!("{}: {e:#}", config.display()));
    let raw = crate::config::load(config).map_err(|e| Failure::Usage(e.into()))?;
    let settings = Settings::resolve(
        raw,
        config,
        &Overrides::default(),
        |name| std::env::var(name).ok(),
        KeyPolicy::Optional,
    )
    .map_err(|e| usage(e.into()))?;
    let Some(endpoint) = settings
        .retrieval
        .as_ref()
        .and_then(|r| r.embedding.as_ref())
    else {
        return Err(usage(anyhow!(
            "names no embedding model: analyze --config takes the one of `retrieval: {{retriever: embedding, embedding: {{provider: ..., model_name: ...}}}}`; add that section or drop --config"
        )));
    };
    if endpoint.api_key.is_none() && endpoint.provider != Provider::Local {
        return Err(usage(anyhow!(
            "the embedding model needs an API key: set {} (or the variable retrieval.embedding.api_key_env names)",
            endpoint
                .provider
                .default_key_env()
                .unwrap_or("its key variable")
        )));
    }
    let model = crate::build::embedding_endpoint(endpoint, settings.max_retries);
    let embedder = model
        .build()
        .map_err(|e| usage(anyhow::Error::new(e).context("embedding settings")))?;
    Ok(AnalysisEmbedder {
        embedder,
        batch: model.texts_per_request(),
        model: endpoint.model_name.clone(),
    })
}

/// Reading the input is the user's input being wrong (exit 2); writing is the run
/// failing (exit 1).
async fn read(input: &StorageSpec) -> Result<Stored, Failure> {
    read_dataset(input)
        .await
        .map_err(|e| Failure::Usage(message(&e)))
}

fn classify(e: DatasetError) -> Failure {
    if e.is_invalid() {
        Failure::Usage(message(&e))
    } else {
        Failure::Run(message(&e))
    }
}

/// The error's own line: its Display already names the file and the OS error, and
/// the `{:#}` chain the CLI prints would repeat them.
fn message(e: &DatasetError) -> anyhow::Error {
    anyhow::Error::msg(e.to_string())
}

/// Prints to stdout, ignoring a closed pipe (`afterimage analyze IN --json | head`).
fn print_stdout(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs `export`.
pub(crate) async fn run_export(args: ExportArgs) -> Result<(), Failure> {
    if args.list_formats {
        for format in ExportFormat::ALL {
            println!("{:<14} {}", format.name(), format.description());
        }
        return Ok(());
    }
    let input = args
        .input
        .as_deref()
        .map(StorageSpec::parse)
        .ok_or_else(|| Failure::Usage(anyhow!("give the input (IN)")))?;
    let formats: Vec<ExportFormat> = if args.all {
        ExportFormat::ALL.to_vec()
    } else {
        args.formats
            .iter()
            .flat_map(|f| f.split(','))
            .map(str::parse)
            .collect::<Result<_, DatasetError>>()
            .map_err(classify)?
    };
    if formats.is_empty() {
        return Err(Failure::Usage(anyhow!(
            "no format given: add --format F (see --list-formats) or --all"
        )));
    }
    let options = ExportOptions {
        formats,
        format: FormatOptions {
            system_prompt: args.system_prompt,
            split_turns: args.split_turns,
            min_score_gap: Some(args.min_score_gap),
        },
        filter: RowFilter {
            min_score: args.min_score,
            persona: args.persona,
            max_turns: args.max_turns,
            with_tools: args.with_tools,
        },
        shuffle: !args.no_shuffle,
        seed: args.seed,
        split: args.split,
    };
    // Options are checked before the input is read, so a typo costs no read.
    if let Some(split) = options.split
        && !(split > 0.0 && split < 1.0)
    {
        return Err(Failure::Usage(anyhow!(
            "--split must be between 0 and 1 (exclusive), got {split}"
        )));
    }
    let stored = read(&input).await?;
    let mut options = options;
    // `--all` writes pairs only when the rows were judged; asked for by name, the
    // format explains itself.
    if args.all && !stored.rows.iter().any(|r| r.final_score.is_some()) {
        options.formats.retain(|f| *f != ExportFormat::Dpo);
    }
    let out_dir = args.out_dir.unwrap_or_else(|| input_dir(&input));
    let report = export(&stored.rows, &out_dir, &input.stem(), &options).map_err(classify)?;
    if args.json {
        let json = serde_json::to_string(&report).map_err(|e| Failure::Run(e.into()))?;
        print_stdout(&format!("{json}\n"));
    } else {
        print_stdout(&export_summary(&report));
    }
    Ok(())
}

/// The folder of a file input (`.` for PostgreSQL or a bare file name).
fn input_dir(input: &StorageSpec) -> PathBuf {
    input
        .file()
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// One line per file, then the skipped rows per format.
fn export_summary(report: &ExportReport) -> String {
    let mut out = format!(
        "{} rows read, {} filtered out, {} to train{}\n",
        report.rows_read,
        report.rows_filtered_out,
        report.rows_train,
        if report.rows_val > 0 {
            format!(", {} to validate", report.rows_val)
        } else {
            String::new()
        }
    );
    for format in &report.formats {
        for file in &format.files {
            out.push_str(&format!(
                "{:<14} {:>6} records  {}\n",
                format.format,
                file.records,
                file.path.display()
            ));
        }
        for (reason, count) in &format.skipped {
            out.push_str(&format!(
                "{:<14} {count:>6} rows skipped: {}\n",
                "",
                reason.as_str()
            ));
        }
    }
    out
}

/// Runs `analyze`: one dataset's report, or two side by side with `--compare`.
pub(crate) async fn run_analyze(args: AnalyzeArgs) -> Result<(), Failure> {
    let documents = match &args.documents {
        Some(dir) => Some(document_ids(dir).await.map_err(Failure::Usage)?),
        None => None,
    };
    let embedder = args.config.as_deref().map(config_embedder).transpose()?;
    let input = StorageSpec::parse(&args.input);
    let analysis = analyze_stored(&input, documents.clone(), embedder.as_ref()).await?;
    let Some(other) = &args.compare else {
        let default = format!("{}.html", input.stem());
        let html = html_path(&args, &input, &default);
        if let Some(path) = &html {
            write_html(path, &render_html(&analysis, &input.to_string())).map_err(Failure::Run)?;
        }
        return finish_analyze(&analysis, &args, html.as_deref(), analysis.summary.rows);
    };
    let other = StorageSpec::parse(other);
    let theirs = analyze_stored(&other, documents, embedder.as_ref()).await?;
    let rows = analysis.summary.rows + theirs.summary.rows;
    let comparison = compare(analysis, &input.to_string(), theirs, &other.to_string());
    let default = format!("{}_vs_{}.html", input.stem(), other.stem());
    let html = html_path(&args, &input, &default);
    if let Some(path) = &html {
        write_html(path, &render_comparison_html(&comparison)).map_err(Failure::Run)?;
    }
    finish_analyze(&comparison, &args, html.as_deref(), rows)
}

/// Reads one dataset and computes its figures (with the embedding figure when an
/// embedder is given).
async fn analyze_stored(
    input: &StorageSpec,
    documents: Option<Vec<String>>,
    embedder: Option<&AnalysisEmbedder>,
) -> Result<Analysis, Failure> {
    let stored = read(input).await?;
    let mut analysis = analyze(
        &stored.rows,
        &AnalyzeOptions {
            documents,
            run_failures: stored.run.and_then(|run| run.failures),
        },
    );
    if let Some(e) = embedder {
        analysis.diversity.embedding = embed(&stored.rows, e).await?;
    }
    Ok(analysis)
}

async fn embed(
    rows: &[ConversationRow],
    e: &AnalysisEmbedder,
) -> Result<Option<afterimage_datasets::EmbeddingSimilarity>, Failure> {
    embedding_similarity(rows, e.embedder.as_ref(), &e.model, e.batch)
        .await
        .map_err(|e| Failure::Run(message(&e)))
}

/// Where the page goes: `--html`, else next to the input unless `--json` is given.
fn html_path(args: &AnalyzeArgs, input: &StorageSpec, default: &str) -> Option<PathBuf> {
    match (&args.html, args.json) {
        (Some(path), _) => Some(path.clone()),
        (None, false) => Some(input_dir(input).join(default)),
        (None, true) => None,
    }
}

/// Prints the figures with `--json`, else where the page went.
fn finish_analyze(
    figures: &impl serde::Serialize,
    args: &AnalyzeArgs,
    html: Option<&Path>,
    rows: u64,
) -> Result<(), Failure> {
    if args.json {
        let json = serde_json::to_string(figures).map_err(|e| Failure::Run(e.into()))?;
        print_stdout(&format!("{json}\n"));
    } else if let Some(path) = html {
        println!("report of {rows} rows written to {}", path.display());
    }
    Ok(())
}

async fn document_ids(dir: &Path) -> anyhow::Result<Vec<String>> {
    let docs = DirectoryDocumentProvider::new(dir)
        .load()
        .await
        .with_context(|| format!("reading documents from {}", dir.display()))?;
    Ok(docs.into_iter().map(|d| d.id).collect())
}

fn write_html(path: &Path, html: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))
}

/// The most rows `generate`'s summary reads back for its diversity line when no
/// export or report reads them anyway.
const SUMMARY_DIVERSITY_MAX_ROWS: u64 = 10_000;

/// The diversity line of the run summary (on stderr with `--json`), then the export
/// and report `output.export` and `analytics.auto_analyze` ask for after a
/// successful `generate`. A failure here is a warning: the rows are already stored and
/// the run succeeded, so the exit code stays 0. Messages go to stderr, so `--json`
/// keeps stdout to the run report. The rows are read from the output's own spec (a
/// PostgreSQL URL keeps its password, which its display hides); failures come from
/// the run record (summed over resumed sessions), else from this session's report.
pub(crate) async fn after_generate(
    settings: &Settings,
    failures: &BTreeMap<String, u64>,
    rows: u64,
    json: bool,
) {
    let AfterRun {
        export: wanted,
        analyze: report_path,
    } = &settings.after_run;
    let input = &settings.output;
    // Reading a large output back only for the summary line would make the end of a
    // long run its most expensive moment (100k rows: seconds and hundreds of MB, where
    // the run itself held tens of MB); `analyze` gives the figures on demand.
    if wanted.is_none() && report_path.is_none() && rows > SUMMARY_DIVERSITY_MAX_ROWS {
        let line = format!(
            "diversity: not computed after {rows} rows (the summary reads back at most {SUMMARY_DIVERSITY_MAX_ROWS}); run `afterimage analyze {input}` for the figures"
        );
        if json {
            eprintln!("{line}");
        } else {
            print_stdout(&format!("{line}\n"));
        }
        return;
    }
    let stored = match read_dataset(input).await {
        Ok(stored) => stored,
        Err(e) if wanted.is_some() || report_path.is_some() => {
            tracing::warn!("export and analysis skipped: {e:#}");
            return;
        }
        Err(e) => {
            tracing::debug!("no diversity figures: {e:#}");
            return;
        }
    };
    let documents = match &settings.documents {
        Some(DocumentsSpec::Loaded(docs)) => Some(docs.iter().map(|d| d.id.clone()).collect()),
        _ => None,
    };
    let run_failures = stored
        .run
        .and_then(|run| run.failures)
        .unwrap_or_else(|| failures.clone());
    let analysis = analyze(
        &stored.rows,
        &AnalyzeOptions {
            documents,
            run_failures: Some(run_failures),
        },
    );
    // With --json, stdout holds the run report alone.
    let line = crate::output::diversity_line(&analysis.diversity);
    if json {
        eprintln!("{line}");
    } else {
        print_stdout(&format!("{line}\n"));
    }
    if let Some(wanted) = wanted {
        let out_dir = wanted.out_dir.clone().unwrap_or_else(|| input_dir(input));
        match export(&stored.rows, &out_dir, &input.stem(), &wanted.options) {
            Ok(report) => eprint!("{}", export_summary(&report)),
            Err(e) => tracing::warn!("output.export failed (the generated rows are kept): {e:#}"),
        }
    }
    if let Some(path) = report_path {
        match write_html(path, &render_html(&analysis, &input.to_string())) {
            Ok(()) => eprintln!("report written to {}", path.display()),
            Err(e) => {
                tracing::warn!("analytics report failed (the generated rows are kept): {e:#}")
            }
        }
    }
}
