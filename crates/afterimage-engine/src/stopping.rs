//! Stopping criteria beyond `FixedNumber` (which lives in core).

use std::sync::Arc;

use afterimage_core::{RunProgress, StoppingCriterion};

/// Stops when the run's tokens (judge included) reach a limit.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenBudget {
    /// Prompt-token limit.
    pub max_input_tokens: Option<u64>,
    /// Completion-token limit.
    pub max_output_tokens: Option<u64>,
    /// Total-token limit.
    pub max_total_tokens: Option<u64>,
}

impl StoppingCriterion for TokenBudget {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        let usage = progress.usage;
        let over = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
        over(self.max_input_tokens, usage.input_tokens)
            || over(self.max_output_tokens, usage.output_tokens)
            || over(self.max_total_tokens, usage.total())
    }

    fn describe(&self) -> String {
        let limits: Vec<String> = [
            (self.max_input_tokens, " input"),
            (self.max_output_tokens, " output"),
            (self.max_total_tokens, ""),
        ]
        .into_iter()
        .filter_map(|(limit, kind)| limit.map(|l| format!("{l}{kind} tokens")))
        .collect();
        if limits.is_empty() {
            return "token budget (no limit set)".to_owned();
        }
        format!("token budget of {}", limits.join(" or "))
    }
}

/// Keeps the run's cost under `max_cost`, as the run's ledger prices it: every
/// request paid for (failed dialogs, rejected attempts and unreadable answers
/// included, and the earlier sessions of a resumed run). A dialog starts only if the
/// money spent plus the dialogs in flight and the new one, each estimated at twice the
/// mean cost of a finished dialog so far (dialogs vary in turns and regenerations),
/// stays within the budget. Until a dialog has finished, dialogs start one at a time.
/// Without prices ([`RunProgress::cost`] is `None`) it never holds a run back.
#[derive(Debug, Clone, Copy)]
pub struct CostBudget {
    /// The most the run may cost.
    pub max_cost: f64,
}

impl CostBudget {
    /// What the run will have cost once the dialogs in flight and `starting` more
    /// end; `None` before any dialog finished (or without prices).
    fn projected(&self, progress: &RunProgress, starting: u64) -> Option<f64> {
        let spent = progress.cost?;
        let finished = progress.rows_written + progress.dialogs_failed;
        if finished == 0 {
            return None;
        }
        let per_dialog = 2.0 * spent / finished as f64;
        Some(spent + per_dialog * (progress.in_flight + starting) as f64)
    }
}

impl StoppingCriterion for CostBudget {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        progress.cost.is_some_and(|spent| spent >= self.max_cost)
    }

    fn may_start(&self, progress: &RunProgress) -> bool {
        let Some(spent) = progress.cost else {
            return true;
        };
        match self.projected(progress, 1) {
            Some(projected) => projected <= self.max_cost,
            None => progress.in_flight == 0 && spent < self.max_cost,
        }
    }

    fn describe(&self) -> String {
        format!("cost budget of {}", self.max_cost)
    }
}

/// Stops once this many distinct personas appear in stored rows.
#[derive(Debug, Clone, Copy)]
pub struct PersonaUsage(pub u64);

impl StoppingCriterion for PersonaUsage {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        progress.unique_personas >= self.0
    }

    fn describe(&self) -> String {
        format!("{} distinct {}", self.0, plural(self.0, "persona"))
    }
}

/// Stops when the share of failed dialogs reaches `max_error_rate`, once at least
/// `min_samples` dialogs have finished.
#[derive(Debug, Clone, Copy)]
pub struct ErrorRate {
    /// Failed share of finished dialogs, 0..=1.
    pub max_error_rate: f64,
    /// Finished dialogs before the rule applies.
    pub min_samples: u64,
}

impl StoppingCriterion for ErrorRate {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        let finished = progress.rows_written + progress.dialogs_failed;
        finished >= self.min_samples.max(1)
            && progress.dialogs_failed as f64 / finished as f64 >= self.max_error_rate
    }

    fn describe(&self) -> String {
        let samples = self.min_samples.max(1);
        format!(
            "{}% of dialogs failed (after at least {samples} finished)",
            percent(self.max_error_rate)
        )
    }
}

/// Stops when every inner criterion would.
#[derive(Debug, Clone)]
pub struct AllOf(pub Vec<Arc<dyn StoppingCriterion>>);

impl StoppingCriterion for AllOf {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        !self.0.is_empty() && self.0.iter().all(|c| c.should_stop(progress))
    }

    fn may_start(&self, progress: &RunProgress) -> bool {
        // The group stops only when all agree, so each holds back only on its own.
        self.0.iter().any(|c| c.may_start(progress)) || self.0.is_empty()
    }

    fn max_rows(&self) -> Option<u64> {
        // All must hold, so the run may go on until the largest cap.
        self.0
            .iter()
            .map(|c| c.max_rows())
            .collect::<Option<Vec<_>>>()
            .and_then(|caps| caps.into_iter().max())
    }

    fn describe(&self) -> String {
        format!("all of ({})", describe_each(&self.0))
    }
}

/// Stops when any inner criterion would (a stopping list already works this way;
/// this is for nesting inside [`AllOf`]).
#[derive(Debug, Clone)]
pub struct AnyOf(pub Vec<Arc<dyn StoppingCriterion>>);

impl StoppingCriterion for AnyOf {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        self.0.iter().any(|c| c.should_stop(progress))
    }

    fn may_start(&self, progress: &RunProgress) -> bool {
        self.0.iter().all(|c| c.may_start(progress))
    }

    fn max_rows(&self) -> Option<u64> {
        self.0.iter().filter_map(|c| c.max_rows()).min()
    }

    fn describe(&self) -> String {
        format!("any of ({})", describe_each(&self.0))
    }
}

/// Stops once a share of the documents has each been the context of at least
/// `target_visits` stored rows.
///
/// `documents` is how many documents the run samples from. An instruction generator
/// given the same `target_visits` stops picking documents that reached it, so the run
/// spreads over all of them before this fires.
#[derive(Debug, Clone, Copy)]
pub struct ContextCoverage {
    /// Documents in the source.
    pub documents: usize,
    /// Stored rows each document needs to count as covered.
    pub target_visits: u64,
    /// The covered share (0..=1) at which the run stops.
    pub coverage_threshold: f64,
}

impl ContextCoverage {
    /// The share of documents covered so far.
    pub fn coverage(&self, progress: &RunProgress) -> f64 {
        if self.documents == 0 {
            return 1.0;
        }
        let target = self.target_visits.max(1);
        let covered = progress
            .context_visits
            .values()
            .filter(|visits| **visits >= target)
            .count();
        covered.min(self.documents) as f64 / self.documents as f64
    }
}

impl StoppingCriterion for ContextCoverage {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        self.coverage(progress) >= self.coverage_threshold
    }

    fn describe(&self) -> String {
        let visits = self.target_visits.max(1);
        let dialogs = format!("{visits} {}", plural(visits, "dialog"));
        let documents = self.documents as u64;
        let all = format!("{documents} {}", plural(documents, "document"));
        if self.coverage_threshold >= 1.0 {
            format!("every document has {dialogs} ({all})")
        } else {
            format!(
                "{}% of the {all} have {dialogs} each",
                percent(self.coverage_threshold)
            )
        }
    }
}

/// `word`, with an `s` unless there is one.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        word.to_owned()
    } else {
        format!("{word}s")
    }
}

/// A share (0..=1) as a percentage with at most one decimal: `0.5` is `50`, `0.125`
/// is `12.5`.
fn percent(share: f64) -> String {
    let tenths = (share * 1000.0).round() / 10.0;
    format!("{tenths}")
}

/// The descriptions of a group's criteria, comma-separated.
fn describe_each(criteria: &[Arc<dyn StoppingCriterion>]) -> String {
    let parts: Vec<String> = criteria.iter().map(|c| c.describe()).collect();
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use afterimage_core::{FixedNumber, Usage};

    fn progress(rows: u64, failed: u64, tokens: u64) -> RunProgress {
        let mut p = RunProgress::default();
        p.rows_written = rows;
        p.dialogs_failed = failed;
        p.usage = Usage::new(tokens, tokens);
        p
    }

    #[test]
    fn budget_error_rate_and_all() {
        let budget = TokenBudget {
            max_total_tokens: Some(100),
            ..Default::default()
        };
        assert!(!budget.should_stop(&progress(1, 0, 49)));
        assert!(budget.should_stop(&progress(1, 0, 50)));
        let rate = ErrorRate {
            max_error_rate: 0.5,
            min_samples: 4,
        };
        assert!(!rate.should_stop(&progress(1, 2, 0)));
        assert!(rate.should_stop(&progress(2, 2, 0)));
        let all = AllOf(vec![Arc::new(FixedNumber(3)), Arc::new(budget)]);
        assert!(!all.should_stop(&progress(3, 0, 0)));
        assert!(all.should_stop(&progress(3, 0, 50)));
        assert_eq!(all.max_rows(), None);
        let all = AllOf(vec![Arc::new(FixedNumber(3)), Arc::new(FixedNumber(5))]);
        assert_eq!(all.max_rows(), Some(5));
    }

    #[test]
    fn persona_usage_counts_distinct_personas() {
        let rule = PersonaUsage(3);
        let mut p = progress(10, 0, 0);
        p.unique_personas = 2;
        assert!(!rule.should_stop(&p));
        p.unique_personas = 3;
        assert!(rule.should_stop(&p));
        assert_eq!(rule.max_rows(), None);
    }

    #[test]
    fn any_of_fires_on_the_first_and_caps_at_the_smallest() {
        let budget = TokenBudget {
            max_total_tokens: Some(100),
            ..Default::default()
        };
        let any = AnyOf(vec![Arc::new(FixedNumber(5)), Arc::new(budget)]);
        assert!(!any.should_stop(&progress(4, 0, 10)));
        assert!(any.should_stop(&progress(5, 0, 10)));
        assert!(any.should_stop(&progress(1, 0, 50)));
        assert_eq!(any.max_rows(), Some(5));
        let nested = AllOf(vec![Arc::new(any), Arc::new(FixedNumber(2))]);
        assert!(!nested.should_stop(&progress(1, 0, 50)));
        assert!(nested.should_stop(&progress(2, 0, 50)));
    }

    #[test]
    fn context_coverage_counts_documents_at_the_target() {
        let coverage = ContextCoverage {
            documents: 4,
            target_visits: 2,
            coverage_threshold: 0.75,
        };
        let mut p = progress(0, 0, 0);
        assert!(!coverage.should_stop(&p));
        p.context_visits = Arc::new(
            [("a", 2), ("b", 5), ("c", 1), ("d", 0)]
                .into_iter()
                .map(|(id, n)| (id.to_owned(), n))
                .collect(),
        );
        assert_eq!(coverage.coverage(&p), 0.5);
        assert!(!coverage.should_stop(&p));
        Arc::make_mut(&mut p.context_visits).insert("c".to_owned(), 2);
        assert_eq!(coverage.coverage(&p), 0.75);
        assert!(coverage.should_stop(&p));
        // An empty source is covered from the start.
        let empty = ContextCoverage {
            documents: 0,
            ..coverage
        };
        assert!(empty.should_stop(&progress(0, 0, 0)));
    }

    #[test]
    fn criteria_describe_themselves_in_words() {
        let coverage = ContextCoverage {
            documents: 5,
            target_visits: 2,
            coverage_threshold: 1.0,
        };
        assert_eq!(
            coverage.describe(),
            "every document has 2 dialogs (5 documents)"
        );
        let most = ContextCoverage {
            coverage_threshold: 0.8,
            target_visits: 1,
            ..coverage
        };
        assert_eq!(most.describe(), "80% of the 5 documents have 1 dialog each");
        let budget = TokenBudget {
            max_total_tokens: Some(1_000_000),
            ..Default::default()
        };
        assert_eq!(budget.describe(), "token budget of 1000000 tokens");
        let split = TokenBudget {
            max_input_tokens: Some(10),
            max_output_tokens: Some(20),
            ..Default::default()
        };
        assert_eq!(
            split.describe(),
            "token budget of 10 input tokens or 20 output tokens"
        );
        let cost = CostBudget { max_cost: 0.5 };
        assert_eq!(cost.describe(), "cost budget of 0.5");
        assert_eq!(PersonaUsage(3).describe(), "3 distinct personas");
        let rate = ErrorRate {
            max_error_rate: 0.125,
            min_samples: 8,
        };
        assert_eq!(
            rate.describe(),
            "12.5% of dialogs failed (after at least 8 finished)"
        );
        let any = AnyOf(vec![Arc::new(FixedNumber(100)), Arc::new(budget)]);
        assert_eq!(
            any.describe(),
            "any of (100 dialogs, token budget of 1000000 tokens)"
        );
        let all = AllOf(vec![Arc::new(any), Arc::new(PersonaUsage(1))]);
        assert_eq!(
            all.describe(),
            "all of (any of (100 dialogs, token budget of 1000000 tokens), 1 distinct persona)"
        );
    }

    #[test]
    fn cost_budget_holds_back_dialogs_that_could_pass_it() {
        // $1 per million tokens each way: 10 dialogs cost 20_000 tokens = $0.02,
        // estimated at 2 x $0.002 = $0.004 a dialog.
        let budget = CostBudget { max_cost: 0.04 };
        let mut p = progress(10, 0, 10_000);
        p.cost = Some(0.02);
        p.in_flight = 3;
        // 0.02 + 4 x 0.004 = 0.036: one more may start.
        assert!(budget.may_start(&p));
        p.in_flight = 4;
        // 0.02 + 5 x 0.004 = 0.04: still within.
        assert!(budget.may_start(&p));
        p.in_flight = 5;
        assert!(!budget.may_start(&p));
        assert!(!budget.should_stop(&p));
        // Nothing known yet: one at a time.
        let mut start = progress(0, 0, 0);
        start.cost = Some(0.0);
        assert!(budget.may_start(&start));
        start.in_flight = 1;
        assert!(!budget.may_start(&start));
        // Spent is spent, whatever the projection: failed dialogs' cost counts.
        let mut failed = progress(0, 3, 0);
        failed.cost = Some(0.04);
        assert!(budget.should_stop(&failed));
        assert!(!budget.may_start(&failed));
        // Without prices, no money budget holds a run back.
        assert!(budget.may_start(&progress(10, 0, 10_000)));
    }
}
