//! The rows a run may still store. With spare dialogs under way
//! ([`GenerateOptions::oversample`](crate::GenerateOptions::oversample)) more dialogs
//! can finish than rows are missing; each takes a place here before it writes, so the
//! output still ends with exactly the count.

use std::sync::atomic::{AtomicU64, Ordering};

/// Rows stored or being written, against the run's count.
#[derive(Debug)]
pub(crate) struct RowCount {
    cap: Option<u64>,
    taken: AtomicU64,
}

impl RowCount {
    /// A run of `cap` rows (none: no count) that already holds `stored`.
    pub(crate) fn new(cap: Option<u64>, stored: u64) -> Self {
        RowCount {
            cap,
            taken: AtomicU64::new(stored),
        }
    }

    /// No count here: something else bounds the rows (a shared run's slots).
    pub(crate) fn unlimited() -> Self {
        RowCount::new(None, 0)
    }

    /// A place for one row, or `None` when the rows stored and being written already
    /// make the count: the dialog asking is a spare.
    pub(crate) fn reserve(&self) -> Option<Reservation<'_>> {
        let cap = self.cap.unwrap_or(u64::MAX);
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < cap).then_some(taken + 1)
            })
            .ok()
            .map(|_| Reservation {
                count: self,
                kept: false,
            })
    }
}

/// One row's place; given back when dropped unless the row was stored.
#[must_use = "a reservation not kept is given back at once"]
pub(crate) struct Reservation<'a> {
    count: &'a RowCount,
    kept: bool,
}

impl Reservation<'_> {
    /// The row is stored: its place stays taken.
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        // A write that failed, or a dialog cancelled while writing, frees the place
        // for another dialog.
        if !self.kept {
            self.count.taken.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_run_out_at_the_count_and_come_back_when_not_kept() {
        let count = RowCount::new(Some(3), 1);
        let first = count.reserve().unwrap();
        let second = count.reserve().unwrap();
        assert!(count.reserve().is_none(), "1 stored + 2 being written = 3");
        drop(second);
        let third = count.reserve().unwrap();
        first.keep();
        third.keep();
        assert!(count.reserve().is_none());
        assert!(RowCount::unlimited().reserve().is_some());
    }
}
