//! How long to wait before polling a batch again.

use std::time::Duration;

/// The first wait between polls.
pub const POLL_INITIAL: Duration = Duration::from_secs(15);
/// The longest wait between polls.
pub const POLL_MAX: Duration = Duration::from_secs(300);

/// The wait before poll number `attempt` (0 for the first) of a batch whose phase has
/// not changed: 15 s doubling to 5 minutes, then spread by `jitter` (a draw in
/// `[0, 1)`, clamped) over plus or minus a tenth, so many runs do not poll in step.
/// Reset `attempt` to 0 when the phase changes.
///
/// ```
/// use std::time::Duration;
/// use afterimage_batch::poll_delay;
///
/// assert_eq!(poll_delay(0, 0.5), Duration::from_secs(15));
/// assert_eq!(poll_delay(1, 0.5), Duration::from_secs(30));
/// assert_eq!(poll_delay(50, 0.5), Duration::from_secs(300));
/// ```
pub fn poll_delay(attempt: u32, jitter: f64) -> Duration {
    let base = POLL_INITIAL
        .checked_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .map_or(POLL_MAX, |d| d.min(POLL_MAX));
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.5
    };
    base.mul_f64(0.9 + 0.2 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_jitter_stays_within_a_tenth() {
        let waits: Vec<u64> = (0..7).map(|a| poll_delay(a, 0.5).as_secs()).collect();
        assert_eq!(waits, [15, 30, 60, 120, 240, 300, 300]);
        assert_eq!(poll_delay(0, 0.0), Duration::from_millis(13_500));
        assert_eq!(poll_delay(5, 1.0), Duration::from_secs(330));
        assert_eq!(poll_delay(u32::MAX, f64::NAN), POLL_MAX);
    }
}
