//! What batch mode prints while it runs and when it stops: a line per round and per
//! open batch (phase and counts), and after a stop the open batches' ids and the
//! commands that resume, check or cancel them.

use std::time::Duration;

use afterimage_batch::{BatchPhase, BatchProgress, Batcher, OpenBatch};
use afterimage_providers::Provider;

/// How often the batcher's state is looked at (a line is printed only on a change).
const TICK: Duration = Duration::from_millis(250);

/// Tells the user on stderr; a terminal that is gone is ignored.
pub(crate) fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Where progress lines go (above the progress bar, when there is one).
pub(crate) type Printer = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The progress printer's task, stopped when dropped.
#[derive(Debug)]
pub(crate) struct Watch(tokio::task::JoinHandle<()>);

impl Watch {
    /// Starts printing `batcher`'s rounds and batches; `rounds` is the predicted count.
    pub(crate) fn start(
        batcher: Batcher,
        provider: Provider,
        rounds: u32,
        print: Printer,
    ) -> Watch {
        Watch(tokio::spawn(async move {
            let mut shown = String::new();
            loop {
                tokio::time::sleep(TICK).await;
                let line = describe(&batcher.progress(), provider, rounds);
                if line != shown {
                    print(&line);
                    shown = line;
                }
            }
        }))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `batch round 3/≈9: 2 open · batch_a running 5/12 · msgbatch_b in_progress (counts
/// appear when the batch ends)`.
pub(crate) fn describe(progress: &BatchProgress, provider: Provider, rounds: u32) -> String {
    let mut line = format!("batch round {}/≈{rounds}", progress.round);
    if progress.open.is_empty() {
        line.push_str(&format!(": {} requests waiting", progress.waiting));
        return line;
    }
    line.push_str(&format!(": {} open", progress.open.len()));
    for batch in &progress.open {
        line.push_str(" · ");
        line.push_str(&batch_state(batch, provider));
    }
    line
}

/// One batch: its id, the provider's state and what the counts say.
pub(crate) fn batch_state(batch: &OpenBatch, provider: Provider) -> String {
    let counts = match (batch.phase, batch.counts) {
        (BatchPhase::Finalizing, _) => {
            " finalizing (every request answered; the provider is writing the results)".to_owned()
        }
        (phase, _) if provider == Provider::Anthropic && !phase.is_ended() => {
            " (counts appear when the batch ends)".to_owned()
        }
        (_, Some(c)) if c.total > 0 => format!(
            " {}/{} done{}",
            c.succeeded + c.failed,
            c.total,
            if c.failed > 0 {
                format!(", {} failed", c.failed)
            } else {
                String::new()
            }
        ),
        _ => format!(" ({} requests)", batch.requests),
    };
    let state = if batch.phase == BatchPhase::Finalizing {
        String::new()
    } else {
        format!(" {}", batch.raw_state)
    };
    format!("{}{state}{counts}", batch.id)
}

/// After a stop: which batches were left running (or cancelled), and the commands.
pub(crate) fn stopped(
    open: &[OpenBatch],
    cancelled: bool,
    resume: &str,
    output: &str,
    config: &str,
) {
    if open.is_empty() {
        say(&format!(
            "no provider batch is open; the same command with --resume finishes the run:\n  {resume}"
        ));
        return;
    }
    let ids: Vec<&str> = open.iter().map(|b| b.id.as_str()).collect();
    if cancelled {
        say(&format!(
            "cancelled {} provider batch(es) (batch.cancel_on_exit): {}; requests they finished keep their results and --resume asks for the rest again:\n  {resume}",
            ids.len(),
            ids.join(", ")
        ));
        return;
    }
    say(&format!(
        "left {} provider batch(es) running: {}\n  resume (adopts them):  {resume}\n  check them:            afterimage batch status {output} --config {config}\n  cancel them:           afterimage batch cancel {output} --config {config}",
        ids.len(),
        ids.join(", ")
    ));
}
