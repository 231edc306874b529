//! Stopping `generate` by signal: Ctrl-C (`SIGINT`), `SIGTERM` and `SIGHUP` all drain
//! the run the same way, and the exit code says which signal stopped it.
//!
//! The first signal starts no new dialogs and gives those in flight the grace period
//! (`--grace`) to finish and be stored; the engine then cancels the rest, flushes
//! storage and marks the run record `stopped`. A second signal cancels the dialogs in
//! flight at once (rows written are still flushed); a third quits on the spot.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use afterimage_engine::StopHandle;

/// How long a second signal's cancel may take to flush and close before the process
/// quits anyway (a storage that hangs must not keep a stopped process alive).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(10);

/// A signal that stops a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// Ctrl-C in a terminal.
    Interrupt,
    /// What Kubernetes, systemd, Docker and Slurm send to stop a process.
    Terminate,
    /// The terminal went away (an SSH session closed).
    Hangup,
}

impl Signal {
    /// How the run record and the report name it.
    fn name(self) -> &'static str {
        match self {
            Signal::Interrupt => "Ctrl-C (SIGINT)",
            Signal::Terminate => "SIGTERM",
            Signal::Hangup => "SIGHUP",
        }
    }

    /// The exit code of a run it stopped: 128 + the signal's number, the shell's
    /// convention for "ended by this signal" (130, 143, 129).
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
            Signal::Hangup => 129,
        }
    }
}

/// The first signal that stopped the run, once one came.
#[derive(Debug, Clone, Default)]
pub(crate) struct Caught(Arc<OnceLock<Signal>>);

impl Caught {
    /// The signal that stopped the run, if any did.
    pub(crate) fn signal(&self) -> Option<Signal> {
        self.0.get().copied()
    }
}

/// Listens for the stopping signals for the rest of the process and drives `stop`:
/// a drain with `grace` on the first, a cancel on the second, exit on the third.
/// Installing the handlers replaces the default action (die at once), so call it
/// before anything worth keeping starts.
pub(crate) fn watch(stop: StopHandle, grace: Duration) -> Caught {
    let caught = Caught::default();
    let first = caught.clone();
    let mut signals = match Listener::install() {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(
                "cannot listen for stop signals ({e}); Ctrl-C and SIGTERM will end the run at once"
            );
            return caught;
        }
    };
    tokio::spawn(async move {
        let Some(signal) = signals.next().await else {
            return;
        };
        let _ = first.0.set(signal);
        stop.set_reason(signal.name());
        stop.stop_after(grace);
        say(&format!(
            "\nstopping on {}: no new dialogs; those in flight have {}s to finish (send it again to stop at once)",
            signal.name(),
            grace.as_secs()
        ));
        if signals.next().await.is_none() {
            return;
        }
        say("stopping at once: cancelling the dialogs in flight; rows written are kept");
        stop.cancel();
        tokio::select! {
            _ = signals.next() => {}
            () = tokio::time::sleep(CANCEL_TIMEOUT) => {}
        }
        say("quitting; rows already written are kept");
        std::process::exit(i32::from(signal.exit_code()));
    });
    caught
}

/// Tells the user on stderr, which may be a terminal that is gone (a SIGHUP after an
/// SSH session closed): a failed write is ignored, where `eprintln!` would panic.
fn say(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// The signal streams of this platform.
struct Listener {
    #[cfg(unix)]
    streams: [(Signal, tokio::signal::unix::Signal); 3],
}

impl Listener {
    #[cfg(unix)]
    fn install() -> std::io::Result<Listener> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Listener {
            streams: [
                (Signal::Interrupt, signal(SignalKind::interrupt())?),
                (Signal::Terminate, signal(SignalKind::terminate())?),
                (Signal::Hangup, signal(SignalKind::hangup())?),
            ],
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Listener> {
        Ok(Listener {})
    }

    /// The next signal; `None` if none can come any more.
    #[cfg(unix)]
    async fn next(&mut self) -> Option<Signal> {
        let [(a, sa), (b, sb), (c, sc)] = &mut self.streams;
        tokio::select! {
            Some(()) = sa.recv() => Some(*a),
            Some(()) = sb.recv() => Some(*b),
            Some(()) = sc.recv() => Some(*c),
            else => None,
        }
    }

    /// The next Ctrl-C (the only stop signal elsewhere).
    #[cfg(not(unix))]
    async fn next(&mut self) -> Option<Signal> {
        tokio::signal::ctrl_c()
            .await
            .ok()
            .map(|()| Signal::Interrupt)
    }
}
