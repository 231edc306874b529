//! Which dialog a request belongs to, without passing it down every call.
//!
//! Batch mode needs two things the dialog code should not know about: a stable id for
//! every request (dialog number and step within the dialog, the same when a resumed run
//! replays the dialog), and how many dialogs are running (a round goes when all of them
//! wait). The engine runs each dialog inside [`in_dialog()`] and tells a
//! [`LiveDialogs`] when one starts; a model reads [`next_dialog_step()`] when it is
//! asked. Nothing else changes: a dialog calls its models as before.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

/// One dialog's place in its run, seen by the models it calls.
#[derive(Debug)]
struct Scope {
    dialog: u64,
    steps: AtomicU32,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Scope>>> = const { RefCell::new(None) };
}

/// The step of a request inside its dialog: requests of one dialog are numbered 0, 1,
/// 2, … in the order they are made, whichever model makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DialogStep {
    /// The dialog's number in the run.
    pub dialog: u64,
    /// The request's number in the dialog, from 0.
    pub step: u32,
}

/// Runs `future` as dialog `dialog`: every [`next_dialog_step()`] made while it is
/// polled (by the models it calls, on its own task) names this dialog and counts its
/// steps. A task the future spawns is outside the scope.
///
/// ```
/// use afterimage_core::{DialogStep, in_dialog, next_dialog_step};
///
/// # futures::executor::block_on(async {
/// let steps = in_dialog(7, async { [next_dialog_step(), next_dialog_step()] }).await;
/// assert_eq!(steps, [Some(DialogStep { dialog: 7, step: 0 }), Some(DialogStep { dialog: 7, step: 1 })]);
/// assert_eq!(next_dialog_step(), None);
/// # });
/// ```
pub fn in_dialog<F: Future>(dialog: u64, future: F) -> InDialog<F> {
    InDialog {
        scope: Arc::new(Scope {
            dialog,
            steps: AtomicU32::new(0),
        }),
        future: Box::pin(future),
    }
}

/// The next step of the dialog being polled, or `None` outside any dialog (a call
/// made while a run is set up, or from a task a dialog spawned).
pub fn next_dialog_step() -> Option<DialogStep> {
    CURRENT.with(|current| {
        current.borrow().as_ref().map(|scope| DialogStep {
            dialog: scope.dialog,
            step: scope.steps.fetch_add(1, Ordering::Relaxed),
        })
    })
}

/// A future running inside a dialog's scope; see [`in_dialog()`].
#[must_use = "futures do nothing unless awaited"]
pub struct InDialog<F> {
    scope: Arc<Scope>,
    future: Pin<Box<F>>,
}

impl<F> std::fmt::Debug for InDialog<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InDialog")
            .field("dialog", &self.scope.dialog)
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for InDialog<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let scope = Arc::clone(&self.scope);
        let outer = CURRENT.with(|current| current.replace(Some(scope)));
        // Put the outer scope back even if the dialog panics, so the thread's next
        // task does not inherit this dialog.
        let _restore = Restore(Some(outer));
        self.future.as_mut().poll(cx)
    }
}

struct Restore(Option<Option<Arc<Scope>>>);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Some(outer) = self.0.take() {
            CURRENT.with(|current| *current.borrow_mut() = outer);
        }
    }
}

/// Told which dialogs of a run are running. The engine calls
/// [`enter`](Self::enter) before a dialog starts and drops the guard once the dialog
/// has ended and any dialog replacing it has entered; batch mode uses it to submit a
/// round as soon as every running dialog waits on it.
pub trait LiveDialogs: Send + Sync + std::fmt::Debug {
    /// Dialog `dialog` starts; it counts as running until the guard is dropped.
    fn enter(&self, dialog: u64) -> LiveGuard;
}

/// Held while a dialog counts as running; see [`LiveDialogs`].
#[must_use = "the dialog stops counting as running when the guard is dropped"]
pub struct LiveGuard {
    // Only ever dropped: that is the guard's whole job.
    _inner: Option<Box<dyn Send + Sync>>,
}

impl LiveGuard {
    /// A guard that ends with `inner` (dropped with it).
    pub fn new(inner: impl Send + Sync + 'static) -> Self {
        LiveGuard {
            _inner: Some(Box::new(inner)),
        }
    }

    /// A guard that keeps nothing alive.
    pub fn none() -> Self {
        LiveGuard { _inner: None }
    }
}

impl std::fmt::Debug for LiveGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveGuard")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_scopes_restore_the_outer_one() {
        futures::executor::block_on(async {
            let inner = in_dialog(1, async {
                let a = next_dialog_step();
                let b = in_dialog(2, async { next_dialog_step() }).await;
                let c = next_dialog_step();
                (a, b, c)
            })
            .await;
            assert_eq!(inner.0, Some(DialogStep { dialog: 1, step: 0 }));
            assert_eq!(inner.1, Some(DialogStep { dialog: 2, step: 0 }));
            assert_eq!(inner.2, Some(DialogStep { dialog: 1, step: 1 }));
            assert_eq!(next_dialog_step(), None);
        });
    }

    #[test]
    #[allow(clippy::panic, reason = "the test is about a dialog that panics")]
    fn a_panicking_dialog_leaves_no_scope_behind() {
        let caught = std::panic::catch_unwind(|| {
            futures::executor::block_on(in_dialog(3, async { panic!("dialog failed") }))
        });
        assert!(caught.is_err());
        assert_eq!(next_dialog_step(), None);
    }
}
