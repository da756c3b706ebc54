//! [`Histogram`]: a lock-free log-linear histogram of microsecond values (end-to-end latency,
//! publish round trips), shared by every connection task of a load generator process and
//! summarised as p50/p99/p99.9/max. Relative error below 1% (128 sub-buckets per octave).

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Sub-bucket bits: values below `2^SUB_BITS` are exact, above that each octave has
/// `2^(SUB_BITS - 1)` buckets.
const SUB_BITS: u32 = 7;
const EXACT: u64 = 1 << SUB_BITS;
const HALF: u64 = EXACT / 2;
/// Buckets needed for every `u64`.
const BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64) * HALF) as usize;

/// A histogram that many tasks record into concurrently (relaxed atomics).
#[derive(Debug)]
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    max: AtomicU64,
    sum: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(value: u64) -> usize {
    if value < EXACT {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let group = u64::from(msb + 1 - SUB_BITS);
    let mantissa = value >> group;
    (EXACT + (group - 1) * HALF + (mantissa - HALF)) as usize
}

/// The smallest value that falls in bucket `index`.
fn lower_bound(index: usize) -> u64 {
    let index = index as u64;
    if index < EXACT {
        return index;
    }
    let group = (index - EXACT) / HALF + 1;
    let mantissa = (index - EXACT) % HALF + HALF;
    mantissa << group
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            max: AtomicU64::new(0),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        self.counts[index(value)].fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(value, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Adds every value of `other`.
    pub fn merge(&self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter().zip(other.counts.iter()) {
            let count = theirs.load(Ordering::Relaxed);
            if count > 0 {
                mine.fetch_add(count, Ordering::Relaxed);
            }
        }
        self.max
            .fetch_max(other.max.load(Ordering::Relaxed), Ordering::Relaxed);
        self.sum
            .fetch_add(other.sum.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
    }

    /// The value at quantile `q` (0.0..=1.0): the lower bound of its bucket, 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        // The rank of the value wanted, 1-based; q = 1.0 is the maximum.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= rank {
                return lower_bound(bucket).min(self.max.load(Ordering::Relaxed));
            }
        }
        self.max.load(Ordering::Relaxed)
    }

    /// The bucket counts now, to pass later to [`Histogram::window`].
    pub fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// The values recorded since `before` (an earlier [`Histogram::counts`]) as their own
    /// histogram: what one window of a run looked like. Its max is its highest bucket's
    /// lower bound (within 1%).
    pub fn window(&self, before: &[u64]) -> Histogram {
        let window = Histogram::new();
        let mut highest = 0;
        for (bucket, (now, earlier)) in self.counts.iter().zip(before).enumerate() {
            let count = now.load(Ordering::Relaxed).saturating_sub(*earlier);
            if count > 0 {
                window.counts[bucket].store(count, Ordering::Relaxed);
                highest = lower_bound(bucket);
            }
        }
        window.max.store(highest, Ordering::Relaxed);
        window
    }

    /// Values recorded in `[low, high)` (by bucket: exact below 128, within 1% above).
    pub fn count_between(&self, low: u64, high: u64) -> u64 {
        self.counts
            .iter()
            .enumerate()
            .filter(|(bucket, _)| (low..high).contains(&lower_bound(*bucket)))
            .map(|(_, count)| count.load(Ordering::Relaxed))
            .sum()
    }

    /// Count, mean, p50, p90, p99, p99.9 and max.
    pub fn summary(&self) -> Summary {
        let count = self.count();
        Summary {
            count,
            mean: if count == 0 {
                0.0
            } else {
                self.sum.load(Ordering::Relaxed) as f64 / count as f64
            },
            p50: self.quantile(0.50),
            p90: self.quantile(0.90),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's headline numbers (same unit as the values recorded, microseconds here).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Summary {
    /// `p50/p99/p99.9/max` in milliseconds with two decimals, for tables.
    pub fn millis(&self) -> String {
        let ms = |micros: u64| micros as f64 / 1000.0;
        format!(
            "{:.2}/{:.2}/{:.2}/{:.2}",
            ms(self.p50),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_holds_only_what_came_after_its_start() {
        let histogram = Histogram::new();
        for value in [10, 20, 5_000] {
            histogram.record(value);
        }
        let before = histogram.counts();
        for value in [30, 40, 90_000] {
            histogram.record(value);
        }
        let window = histogram.window(&before);
        assert_eq!(window.count(), 3);
        assert_eq!(window.quantile(0.0), 30);
        assert_eq!(window.quantile(0.5), 40);
        let max = window.quantile(1.0);
        assert!((89_000..=90_000).contains(&max), "window max {max}");
        assert_eq!(histogram.window(&histogram.counts()).count(), 0);
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous = 0;
        for value in (0..5000u64).chain([1 << 20, (1 << 20) + 1, u64::MAX / 2, u64::MAX]) {
            let bucket = index(value);
            assert!(bucket < BUCKETS, "{value} -> {bucket}");
            assert!(lower_bound(bucket) <= value, "{value}");
            if value < 5000 {
                assert!(bucket >= previous);
                assert!(bucket <= previous + 1, "bucket skipped at {value}");
                previous = bucket;
            }
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let histogram = Histogram::new();
        for value in 1..=100_000u64 {
            histogram.record(value);
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 100_000);
        assert_eq!(summary.max, 100_000);
        for (got, want) in [
            (summary.p50, 50_000.0),
            (summary.p99, 99_000.0),
            (summary.p999, 99_900.0),
        ] {
            let error = (got as f64 - want).abs() / want;
            assert!(error < 0.01, "got {got}, want {want}");
        }
        let empty = Histogram::new();
        assert_eq!(empty.summary().p99, 0);
    }

    #[test]
    fn merge_adds_counts() {
        let one = Histogram::new();
        let two = Histogram::new();
        one.record(10);
        two.record(1000);
        two.record(3);
        one.merge(&two);
        assert_eq!(one.count(), 3);
        assert_eq!(one.summary().max, 1000);
        assert_eq!(one.quantile(0.0), 3);
        assert_eq!(one.count_between(0, 11), 2);
        assert_eq!(one.count_between(11, 2000), 1);
    }
}
