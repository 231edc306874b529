//! The checks [`GenerateOptions`] owns: whether a run they describe can start.

use crate::GenerateOptions;

/// Why [`GenerateOptions`] describe no run that can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionsError {
    /// `num_dialogs(0)`.
    #[error("num_dialogs is 0: ask for at least one dialog")]
    ZeroDialogs,
    /// A turn rule of 0 turns.
    #[error("max_turns is 0: a dialog needs at least one turn")]
    ZeroTurns,
    /// `max_concurrency(0)`.
    #[error("max_concurrency is 0: allow at least one dialog at a time")]
    ZeroConcurrency,
    /// Neither a count nor a stopping criterion.
    #[error("nothing tells the run when to stop: set num_dialogs or add a stopping criterion")]
    NoStop,
    /// `oversample` below 1.0, or not a finite number.
    #[error(
        "oversample must be a number of at least 1.0 (1.0: no spare dialogs; 1.2: up to 20% more dialogs under way than rows missing)"
    )]
    Oversample,
}

impl GenerateOptions {
    /// Checks that the options describe a run that can start: at least one dialog,
    /// turn and slot, something that ends it, and an oversample factor of at least 1.
    ///
    /// ```
    /// use afterimage_engine::{GenerateOptions, OptionsError};
    ///
    /// assert_eq!(GenerateOptions::new().validate(), Err(OptionsError::NoStop));
    /// assert_eq!(GenerateOptions::new().num_dialogs(3).validate(), Ok(()));
    /// ```
    pub fn validate(&self) -> Result<(), OptionsError> {
        if self.num_dialogs == Some(0) {
            return Err(OptionsError::ZeroDialogs);
        }
        if self.turns.max() == 0 {
            return Err(OptionsError::ZeroTurns);
        }
        if self.max_concurrency == 0 {
            return Err(OptionsError::ZeroConcurrency);
        }
        if self.num_dialogs.is_none() && self.stopping_criteria.is_empty() {
            return Err(OptionsError::NoStop);
        }
        if !self.oversample.is_finite() || self.oversample < 1.0 {
            return Err(OptionsError::Oversample);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use afterimage_core::FixedNumber;

    use super::*;

    #[test]
    fn each_check_names_its_option() {
        let ok = GenerateOptions::new().num_dialogs(1);
        assert_eq!(
            ok.clone().num_dialogs(0).validate(),
            Err(OptionsError::ZeroDialogs)
        );
        assert_eq!(
            ok.clone().max_turns(0).validate(),
            Err(OptionsError::ZeroTurns)
        );
        assert_eq!(
            ok.clone().max_concurrency(0).validate(),
            Err(OptionsError::ZeroConcurrency)
        );
        for bad in [0.99, f64::NAN, f64::INFINITY] {
            assert_eq!(
                ok.clone().oversample(bad).validate(),
                Err(OptionsError::Oversample)
            );
        }
        let criterion = GenerateOptions::new().stopping_criterion(Arc::new(FixedNumber(2)));
        assert_eq!(criterion.validate(), Ok(()));
    }
}
