//! Exponential backoff with full jitter, sans-IO: the one reconnect delay rule of the native
//! client, the browser client, the relay's LISTEN connection and the load tools.
//!
//! The delay before attempt `n` (counted from 0 since the last success) is drawn uniformly
//! from `0..=min(max, initial * 2^n)`. Full jitter spreads a crowd that lost the same relay
//! over the whole window instead of sending it back in lockstep ("Exponential Backoff And
//! Jitter", AWS Architecture Blog, 2015). The caller draws the random number (this crate
//! does no I/O and owns no random source), so the rule is deterministic under test.

use core::time::Duration;

/// The state of one backoff sequence.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tidewire_shared::backoff::Backoff;
/// let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// assert_eq!(backoff.next_delay(0.5), Some(Duration::from_millis(50)));
/// assert_eq!(backoff.next_delay(0.5), Some(Duration::from_millis(100)));
/// backoff.reset();
/// assert_eq!(backoff.ceiling(), Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first delay.
    initial: Duration,
    /// Largest ceiling; the doubling stops here.
    max: Duration,
    /// Give up after this many failures in a row; `None` retries forever.
    max_attempts: Option<u32>,
    /// Failures since the last [`Backoff::reset`].
    attempt: u32,
}

impl Backoff {
    /// A sequence whose first ceiling is `initial` (at least 1 ms) and whose ceilings double
    /// up to `max` (at least `initial`); it retries forever.
    pub fn new(initial: Duration, max: Duration) -> Self {
        let initial = initial.max(Duration::from_millis(1));
        Self {
            initial,
            max: max.max(initial),
            max_attempts: None,
            attempt: 0,
        }
    }

    /// Gives up (`next_delay` returns `None`) after `max_attempts` failures in a row.
    #[must_use]
    pub fn with_max_attempts(mut self, max_attempts: Option<u32>) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Failures since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The ceiling of the next delay, `min(max, initial * 2^attempts)`, without jitter.
    pub fn ceiling(&self) -> Duration {
        // 2^20 times even 1 ms is 17 minutes: capping the exponent avoids overflow.
        self.initial
            .checked_mul(1u32 << self.attempt.min(20))
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Counts a failure and returns the delay before the next attempt, given `random`
    /// uniform in `[0, 1)` (clamped into it); `None` once `max_attempts` failures happened
    /// in a row.
    pub fn next_delay(&mut self, random: f64) -> Option<Duration> {
        if self
            .max_attempts
            .is_some_and(|max_attempts| self.attempt >= max_attempts)
        {
            return None;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let random = if random.is_finite() {
            random.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // Rounding may push a huge ceiling's product past what a `Duration` holds.
        let delay = Duration::try_from_secs_f64(ceiling.as_secs_f64() * random).unwrap_or(ceiling);
        Some(delay.min(ceiling))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(value: u64) -> Duration {
        Duration::from_millis(value)
    }

    #[test]
    fn ceilings_double_up_to_the_max_and_delays_stay_below_them() {
        let mut backoff = Backoff::new(millis(100), millis(2000));
        for expected in [100, 200, 400, 800, 1600, 2000, 2000, 2000] {
            assert_eq!(backoff.ceiling(), millis(expected));
            for random in [0.0, 0.25, 0.5, 0.999] {
                let delay = backoff.clone().next_delay(random).expect("forever");
                assert!(delay <= millis(expected), "{delay:?} > {expected} ms");
            }
            assert_eq!(backoff.next_delay(1.0), Some(millis(expected)));
        }
    }

    #[test]
    fn jitter_is_the_random_fraction_of_the_ceiling() {
        let mut backoff = Backoff::new(millis(1000), millis(10_000));
        assert_eq!(backoff.next_delay(0.0), Some(Duration::ZERO));
        assert_eq!(backoff.next_delay(0.5), Some(millis(1000)));
        assert_eq!(backoff.next_delay(f64::NAN), Some(Duration::ZERO));
        assert_eq!(backoff.next_delay(7.0), Some(millis(8000)));
    }

    #[test]
    fn attempts_are_bounded_and_reset_starts_over() {
        let mut backoff = Backoff::new(millis(100), millis(2000)).with_max_attempts(Some(3));
        for _ in 0..3 {
            assert!(backoff.next_delay(0.5).is_some());
        }
        assert_eq!(backoff.next_delay(0.5), None);
        assert_eq!(backoff.attempts(), 3);
        backoff.reset();
        assert_eq!(backoff.ceiling(), millis(100));
        assert!(backoff.next_delay(0.5).is_some());
    }

    #[test]
    fn degenerate_settings_are_made_sane() {
        let backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(backoff.ceiling(), millis(1));
        let mut huge = Backoff::new(Duration::from_secs(u64::MAX / 4), Duration::MAX);
        for _ in 0..40 {
            assert!(huge.next_delay(1.0).is_some());
        }
    }
}
