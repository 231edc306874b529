//! What a run did, for people and for scripts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::LedgerSummary;

/// The result of a run: rows written, failures by cause, requests, tokens, time, and
/// the run's ledger.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunReport {
    /// The run's id (row ids are `<run_id>-<index>`).
    pub run_id: String,
    /// Rows stored by this call.
    pub rows_written: u64,
    /// Rows a resumed run found already stored (and kept).
    pub rows_resumed: u64,
    /// Rows asked for, when the run had a count.
    pub rows_requested: Option<u64>,
    /// Dialogs that failed (and were replaced while the budget allowed).
    pub dialogs_failed: u64,
    /// Failed dialogs by cause (`respondent: rate_limited`, ...).
    pub failures: BTreeMap<String, u64>,
    /// Dialogs regenerated because the checks or the judge rejected them.
    pub regenerations: u64,
    /// Rejected attempts by cause (the cheap checks' causes, and `duplicate_question`
    /// for first questions skipped as near duplicates).
    pub rejections: BTreeMap<String, u64>,
    /// Generated first questions discarded by the instruction checks before any dialog
    /// was spent on them, by cause (`too_short`, `placeholder`, `mime_type`, `url`,
    /// `echo`, `document_copy`, `empty`).
    pub instructions_rejected: BTreeMap<String, u64>,
    /// Attempts the judge could not grade (never counted as passing).
    pub unjudged: u64,
    /// Spare dialogs discarded because the count was reached before they could store
    /// a row (see [`GenerateOptions::oversample`](crate::GenerateOptions::oversample)):
    /// cancelled while running, or finished too late. What they spent is in the
    /// [`ledger`](Self::ledger) (the cancelled ones' requests are not in
    /// [`requests`](Self::requests)).
    pub spares: u64,
    /// Model requests made (instructions, both dialog roles, judge).
    pub requests: u64,
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
    /// Wall time in seconds.
    pub elapsed_secs: f64,
    /// Rows written per second.
    pub dialogs_per_sec: f64,
    /// What this call's requests cost, when prices were given (models without a
    /// price count nothing; [`ledger`](Self::ledger) names them).
    pub cost: Option<f64>,
    /// Every request the whole run paid for, over all its sessions (a resumed run's
    /// earlier ones included), by model and role, priced.
    pub ledger: LedgerSummary,
    /// Whether the run was stopped by its stop handle (Ctrl-C) before its count.
    pub interrupted: bool,
    /// Why the run ended.
    pub stop_reason: String,
    /// Where the rows went.
    pub output: String,
}

impl RunReport {
    /// The wall time as a `Duration`.
    pub fn elapsed(&self) -> Duration {
        Duration::from_secs_f64(self.elapsed_secs)
    }

    /// The instruction checks' rejections in one line, most frequent cause first:
    /// `12 (too_short 7, mime_type 3, echo 2)`; `None` when there were none.
    ///
    /// ```
    /// let mut report = afterimage_engine::RunReport::default();
    /// assert_eq!(report.instructions_rejected_summary(), None);
    /// report.instructions_rejected.insert("echo".into(), 2);
    /// report.instructions_rejected.insert("too_short".into(), 7);
    /// assert_eq!(
    ///     report.instructions_rejected_summary().as_deref(),
    ///     Some("9 (too_short 7, echo 2)")
    /// );
    /// ```
    pub fn instructions_rejected_summary(&self) -> Option<String> {
        let total: u64 = self.instructions_rejected.values().sum();
        if total == 0 {
            return None;
        }
        let mut causes: Vec<(&String, &u64)> = self.instructions_rejected.iter().collect();
        causes.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let causes: Vec<String> = causes
            .iter()
            .map(|(cause, n)| format!("{cause} {n}"))
            .collect();
        Some(format!("{total} ({})", causes.join(", ")))
    }
}
