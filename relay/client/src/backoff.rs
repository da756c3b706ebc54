//! The native client's reconnect settings, and its source of jitter for the shared backoff
//! rule ([`tidewire_shared::backoff`]): the delay before each reconnect (and before each
//! retried subscribe) is drawn uniformly from `0..=min(max, initial * 2^attempt)`.

use std::time::Duration;

use rand::Rng;
pub use tidewire_shared::backoff::Backoff;

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

impl From<BackoffConfig> for Backoff {
    fn from(config: BackoffConfig) -> Self {
        Backoff::new(config.initial, config.max).with_max_attempts(config.max_attempts)
    }
}

/// Counts a failure of `backoff` and draws the delay before the next attempt (`None` when
/// the attempts allowed ran out).
pub(crate) fn next_delay(backoff: &mut Backoff) -> Option<Duration> {
    backoff.next_delay(rand::thread_rng().gen::<f64>())
}
