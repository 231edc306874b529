//! `afterimage batch status OUTPUT` and `afterimage batch cancel OUTPUT`: the open
//! provider batches of a batch-mode run, read from its journal, polled or cancelled
//! with the key that created each.

use std::path::{Path, PathBuf};

use afterimage_batch::{
    BatchBackend, BatchPhase, BatchStatus, EndKind, Journal, JournalBatch, JournalSummary,
    RemoteBatch,
};
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
    /// Print one JSON object (the run id, each open batch with its id, local key, key
    /// fingerprint, provider state, phase, counts and requests; the unsubmitted
    /// intents) instead of lines.
    #[arg(long)]
    pub(crate) json: bool,
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
    let mut looked = Vec::with_capacity(summary.open.len());
    for open in &summary.open {
        let result = match pinned(&keyed, &open.backend) {
            Ok(Keyed { backend, .. }) => one(backend.as_ref(), open, cancel).await,
            Err(e) => Err(e),
        };
        looked.push((open, result));
    }
    if target.json {
        println!("{}", json(&summary, &looked));
    } else {
        print_lines(&summary, &dir, &looked, cancel);
    }
    match looked.iter().filter(|(_, r)| r.is_err()).count() {
        0 => Ok(()),
        n => Err(Failure::Run(anyhow!(
            "{n} batch(es) could not be reached; see above"
        ))),
    }
}

/// What looking at one open batch gave: its status, and whether it was cancelled now.
type Looked<'a> = (&'a JournalBatch, anyhow::Result<(BatchStatus, bool)>);

/// The text form: a line per open batch, after the unsubmitted intents.
fn print_lines(summary: &JournalSummary, dir: &Path, looked: &[Looked<'_>], cancel: bool) {
    say_pending(summary.unsubmitted.len());
    if looked.is_empty() {
        println!(
            "run {}: no open provider batch in {}",
            summary.run_id,
            dir.display()
        );
        return;
    }
    println!(
        "run {}: {} open provider batch(es)",
        summary.run_id,
        looked.len()
    );
    for (open, result) in looked {
        match result {
            Ok((status, cancelled)) => println!("{}", line(open, status, cancel, *cancelled)),
            Err(e) => println!("fail  {}: {e:#}", open.batch_id),
        }
    }
}

/// The JSON form (`--json`).
fn json(summary: &JournalSummary, looked: &[Looked<'_>]) -> serde_json::Value {
    let open: Vec<serde_json::Value> = looked
        .iter()
        .map(|(open, result)| {
            let mut batch = serde_json::json!({
                "id": open.batch_id,
                "local_key": open.local_key,
                "key_fingerprint": open.backend,
                "requests": open.requests,
            });
            let looked = match result {
                Ok((status, cancelled)) => serde_json::json!({
                    "provider_state": status.raw_state,
                    "phase": phase_name(status.phase),
                    "counts": status.counts.map(|c| serde_json::json!({
                        "total": c.total,
                        "succeeded": c.succeeded,
                        "failed": c.failed,
                        "pending": c.pending,
                    })),
                    "cancelled_now": cancelled,
                }),
                Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
            };
            if let (Some(batch), Some(looked)) = (batch.as_object_mut(), looked.as_object()) {
                batch.extend(looked.clone());
            }
            batch
        })
        .collect();
    let unsubmitted: Vec<serde_json::Value> = summary
        .unsubmitted
        .iter()
        .map(|i| {
            serde_json::json!({
                "local_key": i.local_key,
                "key_fingerprint": i.backend,
                "requests": i.requests,
            })
        })
        .collect();
    serde_json::json!({
        "run_id": summary.run_id,
        "open": open,
        "unsubmitted": unsubmitted,
    })
}

/// A phase as `--json` names it.
fn phase_name(phase: BatchPhase) -> &'static str {
    match phase {
        BatchPhase::Queued => "queued",
        BatchPhase::Running => "running",
        BatchPhase::Finalizing => "finalizing",
        BatchPhase::Cancelling => "cancelling",
        BatchPhase::Ended(EndKind::Completed) => "completed",
        BatchPhase::Ended(EndKind::Failed) => "failed",
        BatchPhase::Ended(EndKind::Expired) => "expired",
        BatchPhase::Ended(EndKind::Cancelled) => "cancelled",
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

/// Polls one batch (and cancels it when asked and it has not ended); its status,
/// and whether it was cancelled now.
async fn one(
    backend: &dyn BatchBackend,
    open: &JournalBatch,
    cancel: bool,
) -> anyhow::Result<(BatchStatus, bool)> {
    let remote = RemoteBatch {
        id: open.batch_id.clone(),
        local_key: Some(open.local_key.clone()),
        requests: Some(open.requests as u64),
    };
    let status = backend.poll(&remote).await?;
    if !cancel || status.phase.is_ended() {
        return Ok((status, false));
    }
    backend.cancel(&remote).await?;
    Ok((backend.poll(&remote).await?, true))
}

/// One batch's line: `ok` (status), `cancelled` or `ended` (cancel), its id, state
/// and counts.
fn line(open: &JournalBatch, status: &BatchStatus, cancel: bool, cancelled: bool) -> String {
    let verb = match (cancel, cancelled) {
        (_, true) => "cancelled",
        (true, false) => "ended  ",
        (false, false) => "ok     ",
    };
    let counts = match status.counts {
        Some(c) if c.total > 0 => format!(
            "{} succeeded, {} failed, {} pending of {}",
            c.succeeded, c.failed, c.pending, c.total
        ),
        _ => format!("{} requests; counts not given yet", open.requests),
    };
    format!("{verb} {}: {} ({counts})", open.batch_id, status.raw_state)
}
