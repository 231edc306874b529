//! Batch mode's part of the run report: rounds, batches, submissions per request, the
//! synchronous tail, what resume replayed and adopted, and cost batch against sync.

use afterimage_batch::BatchReport;
use afterimage_core::split_batch_ledger_name;
use afterimage_engine::LedgerSummary;
use serde::Serialize;

/// What batch mode did in one `generate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct BatchSummary {
    /// Rounds formed (batch and synchronous).
    pub(crate) rounds: u64,
    /// Provider batches created.
    pub(crate) batches: u64,
    /// Requests sent in batches (each submission counts).
    pub(crate) requests_submitted: u64,
    /// The most submissions of one request (1 when none was retried).
    pub(crate) submissions_max: u32,
    /// Submissions per request, on average.
    pub(crate) submissions_mean: f64,
    /// Requests sent through the synchronous API (small rounds).
    pub(crate) sync_requests: u64,
    /// Requests put back for another round.
    pub(crate) retried: u64,
    /// Requests that failed for good.
    pub(crate) permanent_failures: u64,
    /// Requests a resumed run answered from the journal without calling the API.
    pub(crate) replayed: u64,
    /// Batches a resumed run found at the provider and adopted.
    pub(crate) adopted: u64,
    /// What the batched requests cost (the whole run's ledger), when priced.
    pub(crate) batch_cost: Option<f64>,
    /// Requests the provider's batch API answered (the ledger's count).
    pub(crate) batch_answered: u64,
    /// What the synchronous requests cost (tail, instructions, personas, ...).
    pub(crate) sync_cost: Option<f64>,
    /// Requests the synchronous API answered (the ledger's count).
    pub(crate) sync_answered: u64,
}

impl BatchSummary {
    /// The figures of `report` and the split of `ledger` by ledger names ending in
    /// ` (batch)`.
    pub(crate) fn of(report: &BatchReport, ledger: &LedgerSummary) -> Self {
        let counts: Vec<u32> = report.submissions.values().copied().collect();
        let mut summary = BatchSummary {
            rounds: report.rounds,
            batches: report.batches_submitted,
            requests_submitted: report.requests_submitted,
            submissions_max: counts.iter().copied().max().unwrap_or(0),
            submissions_mean: if counts.is_empty() {
                0.0
            } else {
                counts.iter().map(|&n| f64::from(n)).sum::<f64>() / counts.len() as f64
            },
            sync_requests: report.sync_requests,
            retried: report.retried,
            permanent_failures: report.permanent_failures,
            replayed: report.replayed,
            adopted: report.adopted,
            ..BatchSummary::default()
        };
        for (name, spend) in &ledger.by_model {
            let (cost, answered) = if split_batch_ledger_name(name).1 {
                (&mut summary.batch_cost, &mut summary.batch_answered)
            } else {
                (&mut summary.sync_cost, &mut summary.sync_answered)
            };
            *answered += spend.total.requests;
            if let Some(c) = spend.total.cost {
                *cost = Some(cost.unwrap_or(0.0) + c);
            }
        }
        summary
    }

    /// The report's lines.
    pub(crate) fn lines(&self) -> Vec<String> {
        vec![
            format!(
                "batch: {} rounds, {} batches, {} requests submitted ({:.2} submissions per request, at most {}); {} requests of small rounds through the synchronous API",
                self.rounds,
                self.batches,
                self.requests_submitted,
                self.submissions_mean,
                self.submissions_max,
                self.sync_requests
            ),
            format!(
                "batch: {} retried, {} failed for good; resume replayed {} answers and adopted {} batches",
                self.retried, self.permanent_failures, self.replayed, self.adopted
            ),
            format!(
                "batch: cost {} for {} batched answers, {} for {} synchronous ones",
                money(self.batch_cost),
                self.batch_answered,
                money(self.sync_cost),
                self.sync_answered
            ),
        ]
    }
}

fn money(cost: Option<f64>) -> String {
    cost.map_or("unknown".to_owned(), |c| format!("{c:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_engine::{ModelSpend, SpendFigures};

    #[test]
    fn submissions_and_cost_are_split() {
        let mut report = BatchReport {
            rounds: 3,
            ..BatchReport::default()
        };
        report.submissions.insert("a".into(), 1);
        report.submissions.insert("b".into(), 3);
        let mut ledger = LedgerSummary::default();
        let spend = |cost, requests| ModelSpend {
            total: SpendFigures {
                cost: Some(cost),
                requests,
                ..SpendFigures::default()
            },
            ..ModelSpend::default()
        };
        ledger.by_model.insert("m (batch)".into(), spend(0.5, 4));
        ledger.by_model.insert("m".into(), spend(2.0, 3));
        let summary = BatchSummary::of(&report, &ledger);
        assert_eq!(
            (summary.submissions_max, summary.submissions_mean),
            (3, 2.0)
        );
        assert_eq!((summary.batch_cost, summary.batch_answered), (Some(0.5), 4));
        assert_eq!((summary.sync_cost, summary.sync_answered), (Some(2.0), 3));
        assert!(summary.lines()[0].starts_with("batch: 3 rounds"));
    }
}
