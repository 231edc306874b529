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
}

/// Stops once this many distinct personas appear in stored rows.
#[derive(Debug, Clone, Copy)]
pub struct PersonaUsage(pub u64);

impl StoppingCriterion for PersonaUsage {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        progress.unique_personas >= self.0
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
}

/// Stops when every inner criterion would.
#[derive(Debug, Clone)]
pub struct AllOf(pub Vec<Arc<dyn StoppingCriterion>>);

impl StoppingCriterion for AllOf {
    fn should_stop(&self, progress: &RunProgress) -> bool {
        !self.0.is_empty() && self.0.iter().all(|c| c.should_stop(progress))
    }

    fn max_rows(&self) -> Option<u64> {
        // All must hold, so the run may go on until the largest cap.
        self.0
            .iter()
            .map(|c| c.max_rows())
            .collect::<Option<Vec<_>>>()
            .and_then(|caps| caps.into_iter().max())
    }
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
}
