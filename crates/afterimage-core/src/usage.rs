//! Token usage.

use serde::{Deserialize, Serialize};

/// Tokens spent by one or more model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens (reasoning included, as providers bill them).
    pub output_tokens: u64,
}

impl Usage {
    /// Usage of one call.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
        }
    }

    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, rhs: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + rhs.input_tokens,
            output_tokens: self.output_tokens + rhs.output_tokens,
        }
    }
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, rhs: Usage) {
        *self = *self + rhs;
    }
}

/// Model requests and the tokens they used: what a step of a run cost.
///
/// ```
/// use afterimage_core::{Spent, Usage};
///
/// let mut total = Spent::default();
/// total += Spent::new(1, Usage::new(100, 20));
/// total += Spent::new(2, Usage::new(50, 10));
/// assert_eq!(total, Spent::new(3, Usage::new(150, 30)));
/// assert_eq!(total.minus(Spent::new(1, Usage::new(100, 20))), Spent::new(2, Usage::new(50, 10)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Spent {
    /// Model requests made.
    pub requests: u32,
    /// Tokens those requests used.
    pub usage: Usage,
}

impl Spent {
    /// `requests` requests that used `usage`.
    pub fn new(requests: u32, usage: Usage) -> Self {
        Spent { requests, usage }
    }

    /// One request that used `usage`.
    pub fn one(usage: Usage) -> Self {
        Spent::new(1, usage)
    }

    /// What was spent since `earlier` (a snapshot of the same running total); never
    /// below zero.
    pub fn minus(self, earlier: Spent) -> Spent {
        Spent {
            requests: self.requests.saturating_sub(earlier.requests),
            usage: Usage::new(
                self.usage
                    .input_tokens
                    .saturating_sub(earlier.usage.input_tokens),
                self.usage
                    .output_tokens
                    .saturating_sub(earlier.usage.output_tokens),
            ),
        }
    }
}

impl std::ops::Add for Spent {
    type Output = Spent;
    fn add(self, rhs: Spent) -> Spent {
        Spent {
            requests: self.requests + rhs.requests,
            usage: self.usage + rhs.usage,
        }
    }
}

impl std::ops::AddAssign for Spent {
    fn add_assign(&mut self, rhs: Spent) {
        *self = *self + rhs;
    }
}
