//! Stopping a run from outside: a drain (no new dialogs, those in flight finish), with
//! an optional deadline after which the stragglers are cancelled, or a cancel at once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
// Tokio's clock, so a test with paused time sees the grace period end.
use tokio::time::Instant;

/// Asks a running `generate` to stop. [`stop`](Self::stop) drains: no dialog starts,
/// those in flight finish and are stored. [`stop_after`](Self::stop_after) drains with
/// a deadline (a grace period), after which the dialogs still in flight are cancelled.
/// [`cancel`](Self::cancel) cancels them at once. Either way storage is flushed and
/// the run record says the run stopped, and why ([`set_reason`](Self::set_reason)).
///
/// Clones share the request: clone one into a signal handler, a watchdog or a
/// coordinator's heartbeat.
///
/// ```
/// use std::time::Duration;
/// use afterimage_engine::StopHandle;
///
/// let stop = StopHandle::new();
/// stop.set_reason("SIGTERM");
/// stop.stop_after(Duration::from_secs(25));
/// assert!(stop.is_stopped() && !stop.is_cancelled());
/// stop.cancel();
/// assert!(stop.is_cancelled());
/// assert_eq!(stop.reason().as_deref(), Some("SIGTERM"));
/// ```
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<watch::Sender<Request>>);

/// What has been asked so far (only ever escalates).
#[derive(Debug, Clone, Default)]
struct Request {
    draining: bool,
    deadline: Option<Instant>,
    cancel: bool,
    reason: Option<String>,
}

impl Default for StopHandle {
    fn default() -> Self {
        StopHandle(Arc::new(watch::Sender::new(Request::default())))
    }
}

impl StopHandle {
    /// A handle not yet triggered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the run from starting new dialogs; those in flight finish and are stored.
    pub fn stop(&self) {
        self.0.send_modify(|r| r.draining = true);
    }

    /// Like [`stop`](Self::stop), and cancels the dialogs still in flight once `grace`
    /// has passed (an earlier deadline already set is kept; a grace too long for the
    /// clock is none).
    pub fn stop_after(&self, grace: Duration) {
        let deadline = Instant::now().checked_add(grace);
        self.0.send_modify(|r| {
            r.draining = true;
            r.deadline = match (r.deadline, deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        });
    }

    /// Stops at once: no new dialogs, and those in flight are cancelled (their partial
    /// work is dropped, never stored); rows already written are flushed.
    pub fn cancel(&self) {
        self.0.send_modify(|r| {
            r.draining = true;
            r.cancel = true;
        });
    }

    /// Says why the run is stopping (a signal's name, "cancelled by an operator"), for
    /// the report and the run record; the first reason given is kept.
    pub fn set_reason(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.0.send_if_modified(|r| {
            if r.reason.is_some() {
                return false;
            }
            r.reason = Some(reason);
            true
        });
    }

    /// Whether a stop of any kind was asked for.
    pub fn is_stopped(&self) -> bool {
        self.0.borrow().draining
    }

    /// Whether the dialogs in flight are to be cancelled now: [`cancel`](Self::cancel)
    /// was called or the grace period of [`stop_after`](Self::stop_after) is over.
    pub fn is_cancelled(&self) -> bool {
        let request = self.0.borrow();
        request.cancel || request.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Why the run is stopping, when a reason was given.
    pub fn reason(&self) -> Option<String> {
        self.0.borrow().reason.clone()
    }

    /// When the dialogs still in flight will be cancelled, if a grace period was set.
    pub fn deadline(&self) -> Option<std::time::Instant> {
        self.0.borrow().deadline.map(Instant::into_std)
    }

    /// Resolves once the dialogs in flight are to be cancelled (see
    /// [`is_cancelled`](Self::is_cancelled)); never, if that is never asked.
    pub async fn cancelled(&self) {
        let mut changes = self.0.subscribe();
        loop {
            let (cancel, deadline) = {
                let request = changes.borrow_and_update();
                (request.cancel, request.deadline)
            };
            if cancel {
                return;
            }
            let changed = async {
                // The sender lives in `self`, so it cannot close while we wait.
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            match deadline {
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => return,
                    () = changed => {}
                },
                None => changed.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_grace_period_ends_in_a_cancel() {
        let stop = StopHandle::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nothing asked yet");
        stop.stop();
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "a drain without deadline never cancels"
        );
        stop.stop_after(Duration::from_secs(25));
        stop.stop_after(Duration::from_secs(60));
        assert!(!stop.is_cancelled());
        tokio::time::sleep(Duration::from_secs(24)).await;
        assert!(!waiter.is_finished(), "still within the grace period");
        tokio::time::sleep(Duration::from_secs(2)).await;
        waiter.await.unwrap();
        assert!(stop.is_cancelled(), "the earlier deadline holds");
    }

    #[tokio::test]
    async fn cancel_wakes_the_waiter_and_the_first_reason_stays() {
        let stop = StopHandle::new();
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.cancelled().await }
        });
        stop.set_reason("SIGTERM");
        stop.set_reason("SIGHUP");
        stop.cancel();
        waiter.await.unwrap();
        assert!(stop.is_stopped() && stop.is_cancelled());
        assert_eq!(stop.reason().as_deref(), Some("SIGTERM"));
    }
}
