//! The `afterimage` command-line tool.
//!
//! `afterimage generate --config run.yaml` reads a YAML config in the Python afterimage
//! CLI's schema (so existing configs run unchanged; unknown keys are errors naming the
//! line), builds a [`afterimage_engine::ConversationGenerator`], shows progress and
//! prints a summary. `afterimage validate --config run.yaml` checks the config, the API
//! key, the documents, the output and the endpoint without generating. `--resume`
//! finishes a killed run; `afterimage stats IN` summarises the rows of any backend.
//! `afterimage export IN --format F` writes training files for fine-tuning tools and
//! `afterimage analyze IN --html OUT.html` an HTML report (both via
//! [`afterimage_datasets`]); `IN` is any backend, read through
//! [`afterimage_storage::StorageSpec`], as are the export and report `generate` runs
//! after a successful run.
//!
//! `afterimage preference -c run.yaml` makes preference pairs (DPO data) from the same
//! config and its `preference:` section.
//!
//! The config goes through two stages: [`RawConfig`] is what the file says,
//! [`Settings`] is the resolved and checked run; only the latter reaches the engine.
//! A config that cannot run fails with a [`SettingsError`] naming the key at fault.
//! Exit codes: 0 done, 2 bad usage or config, 1 the run failed; a run stopped by a
//! signal (drained, its rows kept, resumable) exits 128 + the signal's number: 130
//! Ctrl-C, 143 `SIGTERM`, 129 `SIGHUP`.
//!
//! ```
//! let raw = afterimage_cli::parse_config("respondent: {system_prompt: You help.}\n").unwrap();
//! assert_eq!(raw.generation.num_dialogs, Some(10));
//! ```
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

use std::process::ExitCode;

use clap::Parser;

pub use afterimage_providers::Provider;

pub use crate::{
    config::{
        AnalyticsSection, ConfigError, ContextSection, CorrespondentSection, CriterionEntry,
        DocumentsKind, DocumentsSection, ExportSection, Generation, ModelSection, OnFailure,
        OutputSection, PersonasSection, PromptSection, QualitySection, RawConfig, StorageKind,
        load as load_config, parse as parse_config,
    },
    settings::{
        AfterRun, AutoExport, BatchRole, BatchSection, DocumentsSpec, Endpoint, EndpointOptions,
        KeyPolicy, Overrides, Oversample, PollSection, PreferenceOverrides, PreferenceSection,
        PreferenceSettings, RoleSampling, Settings, SettingsError, StructuredSection, TailMode,
    },
};

mod args;
mod batch;
mod build;
mod commands;
mod config;
mod datasets;
mod fleet;
mod metrics;
mod output;
mod preference;
mod settings;
mod signals;
mod structured;

/// The arguments this run was started with (the program name left out), for the
/// commands it prints to run again (`--resume`).
static INVOCATION: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// The arguments of this run, as [`run`] got them.
pub(crate) fn invocation() -> &'static [String] {
    INVOCATION.get().map_or(&[], Vec::as_slice)
}

/// How a command failed, which decides the exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The user's input is wrong (exit 2).
    Usage(anyhow::Error),
    /// The run itself failed (exit 1).
    Run(anyhow::Error),
    /// A signal stopped the run; finished rows are kept (exit 128 + the signal's
    /// number: 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
    Interrupted(anyhow::Error, u8),
}

/// Runs the CLI with the process's arguments and returns its exit code.
pub fn main() -> ExitCode {
    ExitCode::from(run(std::env::args_os()))
}

/// Runs the CLI with `args` (the program name first) and returns its exit code as a
/// number, for hosts that are not the `afterimage` binary: the Python wheel's
/// `afterimage` command passes `sys.argv`, since the process's own arguments are
/// Python's.
pub fn run<I, T>(args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    let _ = INVOCATION.set(
        args.iter()
            .skip(1)
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
    );
    let cli = match args::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout and usage errors to stderr.
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            args::Command::Generate(args) => commands::generate(args).await,
            args::Command::Validate(args) => commands::validate(args).await,
            args::Command::Stats(args) => commands::stats(args).await,
            args::Command::Status(args) => fleet::status(args).await,
            args::Command::Cancel(args) => fleet::cancel(args).await,
            args::Command::Batch(command) => batch::command(command).await,
            args::Command::Export(args) => datasets::run_export(args).await,
            args::Command::Analyze(args) => datasets::run_analyze(args).await,
            args::Command::Structured(args) => structured::run(args).await,
            args::Command::Preference(args) => preference::run(args).await,
        }
    });
    match result {
        Ok(()) => 0,
        Err(Failure::Usage(e)) => {
            eprintln!("error: {e:#}");
            2
        }
        Err(Failure::Run(e)) => {
            eprintln!("error: {e:#}");
            1
        }
        Err(Failure::Interrupted(e, code)) => {
            // After a SIGHUP the terminal may be gone: the exit code must still say so.
            use std::io::Write as _;
            let _ = writeln!(std::io::stderr(), "{e:#}");
            code
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}
