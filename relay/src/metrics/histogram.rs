//! [`Histogram`]: a lock-free, fixed-bucket latency histogram in seconds, rendered as a
//! Prometheus `histogram` by [`super::text`].
//!
//! Observations are one relaxed atomic add on the matching bucket plus one on the sum, cheap
//! enough for every publish. Per-delivery observations (a million a second at full fan-out)
//! go through a connection's own [`LocalHistogram`] first and are added in one go when the
//! connection runs out of work, so the hot path touches no shared cache line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in nanoseconds (0.5 ms to 5 s), with the `le` label text of
/// each, written out so that the exposition never depends on float formatting.
const BOUNDS: [(u64, &str); 13] = [
    (500_000, "0.0005"),
    (1_000_000, "0.001"),
    (2_500_000, "0.0025"),
    (5_000_000, "0.005"),
    (10_000_000, "0.01"),
    (25_000_000, "0.025"),
    (50_000_000, "0.05"),
    (100_000_000, "0.1"),
    (250_000_000, "0.25"),
    (500_000_000, "0.5"),
    (1_000_000_000, "1"),
    (2_500_000_000, "2.5"),
    (5_000_000_000, "5"),
];

/// Number of buckets including the final `+Inf` one.
const BUCKETS: usize = BOUNDS.len() + 1;

/// A latency histogram with fixed buckets from 0.5 ms to 5 s (plus `+Inf`).
///
/// Every method takes `&self` and never blocks: counts are relaxed atomics. A reader may see
/// an observation's bucket before its sum; [`Histogram::snapshot`] derives the count from the
/// buckets, so the rendered `+Inf` bucket always equals `_count`.
#[derive(Debug)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS],
    /// Sum of every observation in nanoseconds (overflows after ~584 years of latency).
    sum_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A plain copy of a [`Histogram`], with cumulative bucket counts.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(le label, cumulative count)` for every finite bound, ascending.
    pub buckets: Vec<(&'static str, u64)>,
    /// Total number of observations (the `+Inf` bucket).
    pub count: u64,
    /// Sum of the observations in seconds.
    pub sum_seconds: f64,
}

/// The bucket of an observation of `nanos`: at most `BOUNDS.len()` (== `BUCKETS - 1`).
fn bucket(nanos: u64) -> usize {
    BOUNDS
        .iter()
        .position(|(bound, _)| nanos <= *bound)
        .unwrap_or(BOUNDS.len())
}

/// Observations kept by one connection before they are added to a shared [`Histogram`] with
/// [`Histogram::merge`]: plain integers, no atomics.
#[derive(Debug, Default, Clone)]
pub struct LocalHistogram {
    buckets: [u32; BUCKETS],
    sum_nanos: u64,
    count: u32,
}

impl LocalHistogram {
    /// Records one observation of `nanos`.
    pub fn observe_nanos(&mut self, nanos: u64) {
        let index = bucket(nanos);
        self.buckets[index] = self.buckets[index].saturating_add(1);
        self.sum_nanos = self.sum_nanos.saturating_add(nanos);
        self.count = self.count.saturating_add(1);
    }

    /// Observations recorded since the last merge.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// Whether nothing was recorded since the last merge.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, duration: Duration) {
        let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Adds `local`'s observations and empties it.
    pub fn merge(&self, local: &mut LocalHistogram) {
        if local.is_empty() {
            return;
        }
        for (shared, count) in self.buckets.iter().zip(local.buckets) {
            if count > 0 {
                shared.fetch_add(u64::from(count), Ordering::Relaxed);
            }
        }
        self.sum_nanos.fetch_add(local.sum_nanos, Ordering::Relaxed);
        *local = LocalHistogram::default();
    }

    /// Copies the histogram with cumulative counts, as Prometheus wants them.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(BOUNDS.len());
        for (index, (_, label)) in BOUNDS.iter().enumerate() {
            cumulative = cumulative.saturating_add(self.buckets[index].load(Ordering::Relaxed));
            buckets.push((*label, cumulative));
        }
        let count = cumulative.saturating_add(self.buckets[BOUNDS.len()].load(Ordering::Relaxed));
        // Precision loss only past 2^53 ns (104 days of summed latency): fine for a metric.
        #[allow(clippy::cast_precision_loss)] // see the comment above
        let sum_seconds = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        HistogramSnapshot {
            buckets,
            count,
            sum_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(millis: f64) -> Duration {
        Duration::from_secs_f64(millis / 1000.0)
    }

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let histogram = Histogram::default();
        histogram.observe(Duration::ZERO);
        histogram.observe(ms(0.5)); // exactly on the first bound: counted there
        histogram.observe(ms(0.6));
        histogram.observe(ms(30.0));
        histogram.observe(Duration::from_secs(5));
        histogram.observe(Duration::from_secs(60)); // only in +Inf
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.count, 6);
        let get = |label: &str| {
            snapshot
                .buckets
                .iter()
                .find(|(le, _)| *le == label)
                .map(|(_, count)| *count)
        };
        assert_eq!(get("0.0005"), Some(2));
        assert_eq!(get("0.001"), Some(3));
        assert_eq!(get("0.025"), Some(3));
        assert_eq!(get("0.05"), Some(4));
        assert_eq!(get("5"), Some(5));
        assert!(
            (snapshot.sum_seconds - 65.0311).abs() < 1e-6,
            "{}",
            snapshot.sum_seconds
        );
        let counts: Vec<u64> = snapshot.buckets.iter().map(|(_, count)| *count).collect();
        assert!(counts.windows(2).all(|pair| pair[0] <= pair[1]));
    }

    #[test]
    fn bounds_ascend_and_labels_match() {
        for pair in BOUNDS.windows(2) {
            assert!(pair[0].0 < pair[1].0);
        }
        for (nanos, label) in BOUNDS {
            let seconds: f64 = label.parse().expect("label is a number");
            assert!((seconds * 1e9 - nanos as f64).abs() < 1.0, "{label}");
        }
    }

    #[test]
    fn huge_durations_do_not_panic() {
        let histogram = Histogram::default();
        histogram.observe(Duration::MAX);
        assert_eq!(histogram.snapshot().count, 1);
    }

    #[test]
    fn concurrent_observations_all_count() {
        let histogram = std::sync::Arc::new(Histogram::default());
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let histogram = std::sync::Arc::clone(&histogram);
                std::thread::spawn(move || {
                    for index in 0..1000u64 {
                        histogram.observe(Duration::from_micros(thread * 1000 + index));
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("observer thread");
        }
        assert_eq!(histogram.snapshot().count, 4000);
    }
}
