//! Exponential backoff with full jitter: the delay before each reconnect (and before each
//! retried subscribe) is drawn uniformly from `0..=min(max, initial * 2^attempt)`.
//!
//! Full jitter spreads a crowd of clients that lost the same relay over the whole window, so
//! they do not reconnect in lockstep (see "Exponential Backoff And Jitter", AWS Architecture
//! Blog, 2015).

use std::time::Duration;

use rand::Rng;

/// Backoff settings. Every field has a default; see [`BackoffConfig::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first delay. Default: 100 ms.
    pub initial: Duration,
    /// Largest ceiling; the exponential growth stops here. Default: 10 s.
    pub max: Duration,
    /// Give up after this many consecutive failed attempts; `None` retries forever.
    /// Default: `None`.
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

/// The state of one backoff sequence: how many attempts failed in a row.
#[derive(Debug, Clone)]
pub struct Backoff {
    config: BackoffConfig,
    /// Consecutive failures since the last [`Backoff::reset`].
    attempt: u32,
}

impl Backoff {
    /// A fresh sequence.
    pub fn new(config: BackoffConfig) -> Self {
        Self { config, attempt: 0 }
    }

    /// Consecutive failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The upper bound of the next delay: `min(max, initial * 2^attempts)`, without jitter.
    pub fn ceiling(&self) -> Duration {
        // 2^20 * 100 ms is already 29 hours; capping the exponent avoids overflow.
        let factor = 1u32 << self.attempt.min(20);
        self.config
            .initial
            .checked_mul(factor)
            .unwrap_or(self.config.max)
            .min(self.config.max)
    }

    /// Records a failure and returns the delay before the next attempt, or `None` when
    /// `max_attempts` failures happened in a row.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self
            .config
            .max_attempts
            .is_some_and(|max| self.attempt >= max)
        {
            return None;
        }
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jittered = rand::thread_rng().gen_range(0..=nanos);
        Some(Duration::from_nanos(jittered))
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_attempts: Option<u32>) -> BackoffConfig {
        BackoffConfig {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_attempts,
        }
    }

    #[test]
    fn delays_stay_within_the_growing_ceiling() {
        let mut backoff = Backoff::new(config(None));
        let expected_ceilings = [100, 200, 400, 800, 1600, 2000, 2000, 2000];
        for expected in expected_ceilings {
            let ceiling = backoff.ceiling();
            assert_eq!(ceiling, Duration::from_millis(expected));
            for _ in 0..50 {
                let mut probe = backoff.clone();
                let delay = probe.next_delay().expect("retries forever");
                assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            }
            backoff.next_delay().expect("retries forever");
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let backoff = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(1),
            ..config(None)
        });
        let delays: std::collections::HashSet<Duration> = (0..20)
            .map(|_| backoff.clone().next_delay().expect("retries forever"))
            .collect();
        assert!(
            delays.len() > 10,
            "full jitter should rarely repeat a delay"
        );
    }

    #[test]
    fn reset_starts_over_and_attempts_are_bounded() {
        let mut backoff = Backoff::new(config(Some(3)));
        assert!(backoff.next_delay().is_some());
        assert!(backoff.next_delay().is_some());
        assert!(backoff.next_delay().is_some());
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.attempts(), 3);
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_millis(100));
        assert!(backoff.next_delay().is_some());
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut backoff = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(u64::MAX / 4),
            max: Duration::MAX,
            max_attempts: None,
        });
        for _ in 0..100 {
            assert!(backoff.next_delay().is_some());
        }
        assert_eq!(backoff.ceiling(), Duration::MAX);
    }
}
