//! A count of requests waiting out a retry delay, shared by the retry middleware and
//! the scheduler: a dialog parked on a 429's `Retry-After` holds no request in flight,
//! so the scheduler may start another dialog in its place.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many requests are waiting out a retry delay right now.
///
/// ```
/// use afterimage_core::ParkedRequests;
///
/// let parked = ParkedRequests::new();
/// let waiting = parked.park();
/// assert_eq!(parked.now(), 1);
/// drop(waiting);
/// assert_eq!(parked.now(), 0);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ParkedRequests(Arc<AtomicU64>);

impl ParkedRequests {
    /// A gauge at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// The requests parked now.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one parked request until the guard is dropped.
    pub fn park(&self) -> Parked {
        self.0.fetch_add(1, Ordering::Relaxed);
        Parked(Arc::clone(&self.0))
    }
}

/// One parked request; dropping it (the wait is over, or the task was cancelled)
/// takes it off the count.
#[derive(Debug)]
pub struct Parked(Arc<AtomicU64>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}
