//! The browser client's reconnect settings, in milliseconds as JavaScript gives them, mapped
//! onto the shared backoff rule ([`tidewire_shared::backoff`]: exponential, full jitter, the
//! same rule the native client follows). The engine asks for a delay after every failed
//! attempt and resets the sequence once the client is live again.

use std::time::Duration;

pub(crate) use tidewire_shared::backoff::Backoff;

/// Default ceiling of the first retry, in milliseconds.
pub(crate) const DEFAULT_INITIAL_MS: f64 = 500.0;
/// Default largest delay, in milliseconds.
pub(crate) const DEFAULT_MAX_MS: f64 = 15_000.0;

/// A backoff starting at `initial_ms` and capped at `max_ms`; a value that is not a finite
/// number falls back to its default.
pub(crate) fn from_ms(initial_ms: f64, max_ms: f64) -> Backoff {
    let millis = |value: f64, default: f64| {
        let value = if value.is_finite() { value } else { default };
        Duration::from_secs_f64(value.clamp(0.0, 1e12) / 1000.0)
    };
    Backoff::new(
        millis(initial_ms, DEFAULT_INITIAL_MS),
        millis(max_ms, DEFAULT_MAX_MS),
    )
}

/// Counts a failure and returns the delay before the next attempt in whole milliseconds,
/// given a uniform random number in `[0, 1)`.
pub(crate) fn next_delay_ms(backoff: &mut Backoff, random: f64) -> u32 {
    // This backoff retries forever (no attempt limit): `None` cannot happen.
    let delay = backoff.next_delay(random).unwrap_or(Duration::ZERO);
    u32::try_from(delay.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_grow_then_stop_and_reset() {
        let mut backoff = from_ms(100.0, 1000.0);
        let caps: Vec<u32> = (0..6)
            .map(|_| next_delay_ms(&mut backoff, 0.999_999))
            .collect();
        assert_eq!(caps, vec![99, 199, 399, 799, 999, 999]);
        assert_eq!(backoff.attempts(), 6);
        backoff.reset();
        assert_eq!(next_delay_ms(&mut backoff, 0.5), 50);
    }

    #[test]
    fn jitter_can_be_zero_and_bad_input_is_tamed() {
        let mut backoff = from_ms(f64::NAN, f64::INFINITY);
        assert_eq!(next_delay_ms(&mut backoff, 0.0), 0);
        assert!(next_delay_ms(&mut backoff, 2.0) <= 1000);
        for _ in 0..100 {
            assert!(next_delay_ms(&mut backoff, 1.0) <= 15_000);
        }
    }
}
