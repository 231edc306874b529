//! The slot seam: where a run's dialog indices come from when many workers share it.
//!
//! A run of N dialogs is N slots. A worker claims slots as leases; each claim bumps the
//! slot's `attempt`, the fencing token: a row is stored only together with completing
//! the slot under the same attempt, so a worker whose lease was taken over (paused,
//! cut off) can never add a second row for the index. The PostgreSQL implementation
//! lives in `afterimage-storage`; the engine drives any implementation.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::{ConversationRow, RunRecord, StorageError};

/// One claimed dialog: its index in the run and the attempt this claim made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slot {
    /// The dialog's index (row id `<run_id>-<index>`).
    pub index: u64,
    /// The claim's attempt (1 for the first), the fencing token.
    pub attempt: u32,
}

/// What completing a slot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The row is stored and the slot done.
    Stored,
    /// The slot no longer belongs to this attempt (its lease was taken over): nothing
    /// was written.
    Fenced,
}

/// What this worker tells the others at a heartbeat.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerReport {
    /// Dialogs in flight.
    pub in_flight: u64,
    /// Rows this worker stored.
    pub rows: u64,
    /// What this worker's requests cost so far.
    pub cost: f64,
    /// Dialogs this worker cancelled because their lease was taken over.
    pub leases_lost: u64,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Renewal {
    /// The slots this worker still holds (their leases renewed); a dialog in flight
    /// whose slot is missing was taken over and should stop.
    pub held: Vec<Slot>,
    /// Workers seen in the last minute, this one included (at least 1): a worker
    /// that died or left still spent its part of the provider's minute window, so
    /// the rate shares grow back only once that window has passed.
    pub live_workers: u32,
    /// Someone asked the run to stop (`afterimage cancel`): claim nothing more.
    pub cancelled: bool,
    /// What the other live and past workers of the run reported spending.
    pub others_cost: f64,
}

/// Where the run's slots stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotCounts {
    /// Waiting for a claim.
    pub pending: u64,
    /// Claimed (lease live or expired).
    pub leased: u64,
    /// Stored.
    pub done: u64,
    /// Out of attempts.
    pub failed: u64,
}

impl SlotCounts {
    /// Slots still to be made (pending or leased).
    pub fn open(&self) -> u64 {
        self.pending + self.leased
    }
}

/// A shared pool of a run's dialog slots, leased to workers.
///
/// Nothing here holds a transaction, lock or connection while a dialog runs: a claim
/// and a completion are each one short statement.
#[async_trait]
pub trait Slots: Send + Sync + std::fmt::Debug {
    /// The run's name.
    fn run_id(&self) -> &str;

    /// How long a lease lasts without a heartbeat.
    fn lease(&self) -> Duration;

    /// Starts joining: takes the run's setup lock and returns its record when another
    /// worker created it. Follow with [`create`](Slots::create) (the first worker) or
    /// [`end_setup`](Slots::end_setup).
    async fn begin_setup(&self) -> Result<Option<RunRecord>, StorageError>;

    /// Creates the run: its record and `count` slots; ends the setup.
    async fn create(&self, record: &RunRecord, count: u64) -> Result<(), StorageError>;

    /// Ends the setup without creating anything (the run existed).
    async fn end_setup(&self) -> Result<(), StorageError>;

    /// Claims up to `max` slots, each with a new attempt and a fresh lease.
    async fn claim(&self, max: usize) -> Result<Vec<Slot>, StorageError>;

    /// Stores `row` and marks the slot done, atomically, if the slot still belongs to
    /// this attempt.
    async fn complete(&self, slot: Slot, row: &ConversationRow)
    -> Result<Completion, StorageError>;

    /// Gives a failed attempt's slot back for a new attempt (or marks it failed when
    /// it has used its attempts).
    async fn fail(&self, slot: Slot, cause: &str) -> Result<(), StorageError>;

    /// Hands back every slot this worker holds (a graceful stop), returning how many.
    async fn release_all(&self) -> Result<u64, StorageError>;

    /// Renews this worker's leases and reports it alive.
    async fn renew(&self, report: WorkerReport) -> Result<Renewal, StorageError>;

    /// Where the run's slots stand.
    async fn counts(&self) -> Result<SlotCounts, StorageError>;

    /// Slots still to be made (pending or leased); cheaper than
    /// [`counts`](Slots::counts) where a backend can count only those.
    async fn open(&self) -> Result<u64, StorageError> {
        Ok(self.counts().await?.open())
    }
}
