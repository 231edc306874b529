//! Token usage.

use serde::{Deserialize, Serialize};

/// Tokens spent by one or more model calls, as providers bill them.
///
/// `input_tokens` counts every prompt token; `cached_input_tokens` (read from the
/// provider's prompt cache, billed at a discount) and `cache_write_tokens` (written to
/// it, billed at a premium by some providers) are the parts of it billed apart, so the
/// uncached rest is [`uncached_input_tokens`](Self::uncached_input_tokens).
/// `output_tokens` includes reasoning; `reasoning_tokens` is that part. Providers that
/// report input apart from cache reads (Anthropic) are normalised to this shape by
/// their client. The three detail fields are left out of rows when zero, so rows of
/// runs without caching keep their old shape.
///
/// ```
/// use afterimage_core::Usage;
///
/// let usage = Usage::new(1000, 50).cached(800).reasoning(20);
/// assert_eq!(usage.uncached_input_tokens(), 200);
/// assert_eq!((usage + usage).cached_input_tokens, 1600);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens, cached ones included.
    pub input_tokens: u64,
    /// Completion tokens (reasoning included, as providers bill them).
    pub output_tokens: u64,
    /// The part of `input_tokens` read from the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cached_input_tokens: u64,
    /// The part of `input_tokens` written to the provider's prompt cache.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_write_tokens: u64,
    /// The part of `output_tokens` spent on reasoning.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Usage of one call, without cache or reasoning detail.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Usage {
            input_tokens,
            output_tokens,
            ..Usage::default()
        }
    }

    /// With `tokens` of the input read from the prompt cache.
    pub fn cached(mut self, tokens: u64) -> Self {
        self.cached_input_tokens = tokens;
        self
    }

    /// With `tokens` of the input written to the prompt cache.
    pub fn cache_writes(mut self, tokens: u64) -> Self {
        self.cache_write_tokens = tokens;
        self
    }

    /// With `tokens` of the output spent on reasoning.
    pub fn reasoning(mut self, tokens: u64) -> Self {
        self.reasoning_tokens = tokens;
        self
    }

    /// Input plus output tokens.
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }

    /// Input tokens billed at the full rate: neither read from nor written to a cache.
    pub fn uncached_input_tokens(&self) -> u64 {
        self.input_tokens
            .saturating_sub(self.cached_input_tokens)
            .saturating_sub(self.cache_write_tokens)
    }

    /// What was used since `earlier` (a snapshot of the same running total); never
    /// below zero.
    pub fn minus(self, earlier: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens.saturating_sub(earlier.input_tokens),
            output_tokens: self.output_tokens.saturating_sub(earlier.output_tokens),
            cached_input_tokens: self
                .cached_input_tokens
                .saturating_sub(earlier.cached_input_tokens),
            cache_write_tokens: self
                .cache_write_tokens
                .saturating_sub(earlier.cache_write_tokens),
            reasoning_tokens: self
                .reasoning_tokens
                .saturating_sub(earlier.reasoning_tokens),
        }
    }
}

impl std::ops::Add for Usage {
    type Output = Usage;
    fn add(self, rhs: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + rhs.input_tokens,
            output_tokens: self.output_tokens + rhs.output_tokens,
            cached_input_tokens: self.cached_input_tokens + rhs.cached_input_tokens,
            cache_write_tokens: self.cache_write_tokens + rhs.cache_write_tokens,
            reasoning_tokens: self.reasoning_tokens + rhs.reasoning_tokens,
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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
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
            usage: self.usage.minus(earlier.usage),
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
