//! The engine's live counters in the process-wide [`Metrics`] registry: dialogs by
//! outcome, dialogs in flight, and what the run cost.

use afterimage_core::{Counter, Gauge, Metrics};

/// The handles one run updates.
pub(crate) struct RunMetrics {
    written: Counter,
    failed: Counter,
    cancelled: Counter,
    spare: Counter,
    in_flight: Gauge,
    cost: Counter,
    /// This session's cost as last added to `cost`.
    cost_seen: f64,
}

/// A dialog task's place in `afterimage_dialogs_in_flight`, given back when the task
/// ends or is cancelled.
pub(crate) struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl RunMetrics {
    pub(crate) fn new() -> Self {
        let metrics = Metrics::global();
        let outcome = |outcome| {
            metrics.counter(
                "afterimage_dialogs_total",
                "Dialogs that ended, by outcome: written (a row stored), failed, cancelled (by a stop), spare (discarded once the count was reached).",
                &[("outcome", outcome)],
            )
        };
        RunMetrics {
            written: outcome("written"),
            failed: outcome("failed"),
            cancelled: outcome("cancelled"),
            spare: outcome("spare"),
            in_flight: metrics.gauge("afterimage_dialogs_in_flight", "Dialogs running now.", &[]),
            cost: metrics.counter(
                "afterimage_cost_usd_total",
                "What the models cost, in US dollars (priced models only).",
                &[],
            ),
            cost_seen: 0.0,
        }
    }

    /// A dialog starts: hold the result until it ends.
    pub(crate) fn started(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    pub(crate) fn written(&self) {
        self.written.inc();
    }

    pub(crate) fn failed(&self) {
        self.failed.inc();
    }

    pub(crate) fn cancelled(&self, dialogs: u64) {
        if dialogs > 0 {
            self.cancelled.add(dialogs as f64);
        }
    }

    pub(crate) fn spares(&self, dialogs: u64) {
        if dialogs > 0 {
            self.spare.add(dialogs as f64);
        }
    }

    /// The session's cost now (it only grows): the counter gets what is new.
    pub(crate) fn cost(&mut self, session: Option<f64>) {
        if let Some(cost) = session.filter(|c| *c > self.cost_seen) {
            self.cost.add(cost - self.cost_seen);
            self.cost_seen = cost;
        }
    }
}
