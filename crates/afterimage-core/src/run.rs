//! The run record: what a storage keeps about a run so it can be resumed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{LedgerBook, Persona};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Started and not finished (or killed: resume it).
    #[default]
    Running,
    /// Wrote every row it was asked for.
    Done,
    /// Stopped early on an error.
    Failed,
}

impl RunStatus {
    /// The lower-case name (`running`, `done`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Done => "done",
            RunStatus::Failed => "failed",
        }
    }
}

/// A run's identity and state, stored next to its rows.
///
/// Resuming needs the run id (row ids are `<run_id>-<index>`), the run seed (each
/// dialog's seed derives from it and the index) and the correspondent prompt the run
/// wrote once; with those, a resumed run makes the same choices for the dialogs it
/// still owes. Never holds an API key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunRecord {
    /// The run id.
    pub run_id: String,
    /// The run seed.
    pub seed: u64,
    /// The simulated user's system prompt used by the run.
    pub correspondent_prompt: String,
    /// Personas generated for the run (empty when the run used none).
    #[serde(default)]
    pub personas: Vec<Persona>,
    /// The settings the run was started with, for people reading the store (no keys).
    #[serde(default)]
    pub config: serde_json::Value,
    /// Where the run stands.
    #[serde(default)]
    pub status: RunStatus,
    /// Rows asked for, when the run had a count.
    #[serde(default)]
    pub rows_requested: Option<u64>,
    /// Rows stored so far (as of the last save).
    #[serde(default)]
    pub rows_written: u64,
    /// When the run first started, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_at_ms: u64,
    /// When this record was last saved, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub updated_at_ms: u64,
    /// Dialogs that failed, by cause, summed over the run's sessions. `None` when no
    /// session recorded them (a run killed before its end, or an older afterimage),
    /// which a report shows as unknown rather than as no failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<BTreeMap<String, u64>>,
    /// Every request the run paid for, by model and role, summed over its sessions (as
    /// of the last save: a killed session loses what it spent since then).
    #[serde(default, skip_serializing_if = "LedgerBook::is_empty")]
    pub ledger: LedgerBook,
    /// Why the run's last session ended, in plain words (`None` while it runs, or
    /// from an older afterimage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

impl RunRecord {
    /// Adds one session's failures by cause to the run's (starting the count when the
    /// record had none).
    pub fn add_failures(&mut self, failures: &BTreeMap<String, u64>) {
        let total = self.failures.get_or_insert_with(BTreeMap::new);
        for (cause, count) in failures {
            *total.entry(cause.clone()).or_default() += count;
        }
    }

    /// A running record with this identity, stamped now.
    pub fn new(
        run_id: impl Into<String>,
        seed: u64,
        correspondent_prompt: impl Into<String>,
    ) -> Self {
        let now = unix_ms();
        RunRecord {
            run_id: run_id.into(),
            seed,
            correspondent_prompt: correspondent_prompt.into(),
            personas: Vec::new(),
            config: serde_json::Value::Null,
            status: RunStatus::Running,
            rows_requested: None,
            rows_written: 0,
            created_at_ms: now,
            updated_at_ms: now,
            failures: None,
            ledger: LedgerBook::default(),
            stop_reason: None,
        }
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The run id of a row id `<run_id>-<index>` (`None` when it has no such shape).
pub fn split_row_id(id: &str) -> Option<(&str, u64)> {
    let (run, index) = id.rsplit_once('-')?;
    Some((run, index.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_row_ids_split() {
        let record = RunRecord::new("abc", u64::MAX, "you are a user");
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<RunRecord>(&text).unwrap(), record);
        assert!(!text.contains("failures"), "{text}");
        let mut record = record;
        record.add_failures(&BTreeMap::from([("timeout".to_owned(), 2)]));
        record.add_failures(&BTreeMap::from([("timeout".to_owned(), 1)]));
        assert_eq!(record.failures.as_ref().unwrap()["timeout"], 3);
        assert_eq!(split_row_id("ab-c-000012"), Some(("ab-c", 12)));
        assert_eq!(split_row_id("nope"), None);
    }
}
