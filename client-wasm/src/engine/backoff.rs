//! Reconnection delays: exponential backoff with full jitter, reset after a success.
//!
//! The engine asks [`Backoff::next_delay`] after every failed attempt and calls
//! [`Backoff::reset`] once the client is live again. "Full jitter" (a uniformly random delay
//! between zero and the exponential cap) spreads the reconnections of many tabs after a relay
//! restart, so they do not all arrive in the same millisecond.

/// Exponential backoff with full jitter. Attempts never stop; the cap bounds each delay.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    /// Cap of the first retry, in milliseconds. Default: 500.
    initial_ms: f64,
    /// Largest cap, in milliseconds. Default: 15 000.
    max_ms: f64,
    /// Failed attempts since the last success.
    attempt: u32,
}

impl Backoff {
    /// Default cap of the first retry, in milliseconds.
    pub(crate) const DEFAULT_INITIAL_MS: f64 = 500.0;
    /// Default largest delay, in milliseconds.
    pub(crate) const DEFAULT_MAX_MS: f64 = 15_000.0;

    /// A backoff starting at `initial_ms` and capped at `max_ms` (both at least 1 ms).
    pub(crate) fn new(initial_ms: f64, max_ms: f64) -> Self {
        let initial_ms = if initial_ms.is_finite() {
            initial_ms.max(1.0)
        } else {
            Self::DEFAULT_INITIAL_MS
        };
        let max_ms = if max_ms.is_finite() {
            max_ms.max(initial_ms)
        } else {
            Self::DEFAULT_MAX_MS
        };
        Self {
            initial_ms,
            max_ms,
            attempt: 0,
        }
    }

    /// Failed attempts since the last success.
    pub(crate) fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt, given a uniform random number in `[0, 1)`; counts
    /// the attempt.
    pub(crate) fn next_delay(&mut self, random: f64) -> u32 {
        let exponent = i32::try_from(self.attempt.min(30)).unwrap_or(30);
        let cap = (self.initial_ms * 2f64.powi(exponent)).min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        let delay = (random.clamp(0.0, 1.0) * cap).floor();
        // `delay` lies in [0, max_ms], and max_ms came from a JS number: clamp, then convert.
        delay.clamp(0.0, f64::from(u32::MAX)) as u32
    }

    /// Forgets past failures (after the client went live).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Self::DEFAULT_INITIAL_MS, Self::DEFAULT_MAX_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_then_stop_and_reset() {
        let mut backoff = Backoff::new(100.0, 1000.0);
        let caps: Vec<u32> = (0..6).map(|_| backoff.next_delay(0.999_999)).collect();
        assert_eq!(caps, vec![99, 199, 399, 799, 999, 999]);
        assert_eq!(backoff.attempt(), 6);
        backoff.reset();
        assert_eq!(backoff.next_delay(0.5), 50);
    }

    #[test]
    fn jitter_can_be_zero_and_bad_input_is_tamed() {
        let mut backoff = Backoff::new(f64::NAN, f64::INFINITY);
        assert_eq!(backoff.next_delay(0.0), 0);
        assert!(backoff.next_delay(2.0) <= 1000);
        for _ in 0..100 {
            assert!(backoff.next_delay(1.0) <= 15_000);
        }
    }
}
