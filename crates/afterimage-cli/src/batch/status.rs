//! `afterimage batch status OUTPUT` and `afterimage batch cancel OUTPUT`: the open
//! provider batches of a batch-mode run, read from its journal, polled or cancelled
//! with the key that created each.

use std::path::{Path, PathBuf};

use afterimage_batch::{BatchBackend, Journal, RemoteBatch};
use anyhow::anyhow;
use clap::{Args, Subcommand};

use super::backends::{Keyed, backends, pinned};
use crate::Failure;
use crate::args::ModelFlags;
use crate::settings::{KeyPolicy, Overrides, Settings};

/// `afterimage batch ...`
#[derive(Debug, Subcommand)]
pub(crate) enum BatchCommand {
    /// Where a batch-mode run's open provider batches stand: phase and counts, polled
    /// with the key that created each.
    Status(BatchTarget),
    /// Cancel a batch-mode run's open provider batches (finished requests keep their
    /// results; `generate --resume` asks for the rest again).
    Cancel(BatchTarget),
}

/// The run whose batches to look at.
#[derive(Debug, Args)]
pub(crate) struct BatchTarget {
    /// The run's output (FILE.jsonl, sqlite:FILE or postgres://...); its journal is
    /// `<OUTPUT>.batch/` unless the config's batch.dir says otherwise.
    #[arg(value_name = "OUTPUT")]
    pub(crate) output: String,
    /// The run's YAML config: its provider, base URL and keys.
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: PathBuf,
    /// The provider, model and base URL, when the run overrode the config's.
    #[command(flatten)]
    pub(crate) model: ModelFlags,
}

/// Runs `afterimage batch status|cancel`.
pub(crate) async fn run(command: BatchCommand) -> Result<(), Failure> {
    let (target, cancel) = match command {
        BatchCommand::Status(target) => (target, false),
        BatchCommand::Cancel(target) => (target, true),
    };
    let settings = target_settings(&target)?;
    let dir = settings
        .batch
        .as_ref()
        .map(|b| b.dir.clone())
        .ok_or_else(|| Failure::Usage(anyhow!("batch mode could not be resolved")))?;
    let summary = read_journal(&dir, &target.output)?;
    let client = crate::build::http_client(&settings).map_err(Failure::Usage)?;
    let keyed = backends(&settings, &client).map_err(Failure::Usage)?;
    say_pending(summary.unsubmitted.len());
    if summary.open.is_empty() {
        println!(
            "run {}: no open provider batch in {}",
            summary.run_id,
            dir.display()
        );
        return Ok(());
    }
    println!(
        "run {}: {} open provider batch(es)",
        summary.run_id,
        summary.open.len()
    );
    let mut failed = 0;
    for open in &summary.open {
        let remote = RemoteBatch {
            id: open.batch_id.clone(),
            local_key: Some(open.local_key.clone()),
            requests: Some(open.requests as u64),
        };
        let done = match pinned(&keyed, &open.backend) {
            Ok(Keyed { backend, .. }) => one(backend.as_ref(), &remote, cancel).await,
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            println!("fail  {}: {e:#}", open.batch_id);
            failed += 1;
        }
    }
    match failed {
        0 => Ok(()),
        n => Err(Failure::Run(anyhow!(
            "{n} batch(es) could not be reached; see above"
        ))),
    }
}

/// The config resolved with `OUTPUT` as the output and batch mode on (so `batch.dir`
/// has its default).
fn target_settings(target: &BatchTarget) -> Result<Settings, Failure> {
    let overrides = Overrides {
        out: Some(target.output.clone()),
        batch: true,
        ..target.model.overrides()
    };
    crate::commands::settings(&target.config, overrides, KeyPolicy::Required)
}

/// The journal's summary, or an error saying there is none.
fn read_journal(dir: &Path, output: &str) -> Result<afterimage_batch::JournalSummary, Failure> {
    if !dir.is_dir() {
        return Err(Failure::Usage(anyhow!(
            "no batch journal at {}: {output} is not the output of a batch-mode run (generate --batch), or the config's batch.dir points elsewhere",
            dir.display()
        )));
    }
    Journal::summary(dir).map_err(|e| {
        Failure::Usage(anyhow!(
            "cannot read the batch journal in {}: {e}",
            dir.display()
        ))
    })
}

/// Batches whose creation was started but never recorded.
fn say_pending(count: usize) {
    if count > 0 {
        println!(
            "{count} batch(es) were being created when the run stopped: generate --resume looks for them at the provider before submitting again"
        );
    }
}

/// Polls one batch (and cancels it when asked and it has not ended) and prints its
/// line.
async fn one(backend: &dyn BatchBackend, remote: &RemoteBatch, cancel: bool) -> anyhow::Result<()> {
    let mut status = backend.poll(remote).await?;
    let verb = match (cancel, status.phase.is_ended()) {
        (true, false) => {
            backend.cancel(remote).await?;
            status = backend.poll(remote).await?;
            "cancelled"
        }
        (true, true) => "ended  ",
        (false, _) => "ok     ",
    };
    let counts = match status.counts {
        Some(c) if c.total > 0 => format!(
            "{} succeeded, {} failed, {} pending of {}",
            c.succeeded, c.failed, c.pending, c.total
        ),
        _ => format!(
            "{} requests; counts not given yet",
            remote.requests.unwrap_or(0)
        ),
    };
    println!("{verb} {}: {} ({counts})", remote.id, status.raw_state);
    Ok(())
}
