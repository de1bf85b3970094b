//! Latency statistics for the demo and the benchmark: recorded operation times, percentiles
//! and the one-line summary `workload=<name> ops_per_s=<n> p50_ms=<x> p99_ms=<y>`.
//!
//! Samples go into an HDR histogram (the `hdrhistogram` crate), so memory stays the same
//! however long a run lasts, at the price of percentiles exact to three significant digits.

use std::time::Duration;

use hdrhistogram::Histogram;

/// The longest latency told apart from longer ones: an operation that took more is counted as
/// taking this long.
const MAX_TRACKED: Duration = Duration::from_secs(3600);
/// Significant decimal digits kept: percentiles are exact below 2048 µs and within 0.1%
/// above, in about 190 KiB per histogram whatever the number of samples.
const SIGNIFICANT_DIGITS: u8 = 3;

/// Latencies of completed operations, in a histogram of microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    histogram: Histogram<u64>,
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// No samples yet.
    pub fn new() -> Self {
        let histogram =
            Histogram::new_with_bounds(1, MAX_TRACKED.as_micros() as u64, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid");
        Latencies { histogram }
    }

    /// Records one operation's latency (to the microsecond; past an hour as an hour).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(micros);
    }

    /// Adds another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.histogram
            .add(&other.histogram)
            .expect("latency histograms share their bounds");
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        usize::try_from(self.histogram.len()).unwrap_or(usize::MAX)
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.histogram.is_empty()
    }

    /// The `p`-th percentile (`p` in 0..=100), by the nearest-rank method, to the histogram's
    /// precision (the top of the sample's bucket); zero if empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.histogram.value_at_quantile(p / 100.0))
    }
}

/// The outcome of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// Its name, e.g. `put_64`.
    pub name: String,
    /// Operations completed.
    pub ops: usize,
    /// Operations it was to run: more than `ops` if its clients gave up (no answer).
    pub planned: usize,
    /// Wall time from the first call to the last return.
    pub elapsed: Duration,
    /// Per-operation latencies.
    pub latencies: Latencies,
}

impl WorkloadResult {
    /// Completed operations per second.
    pub fn ops_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ops as f64 / secs
        } else {
            0.0
        }
    }

    /// `workload=<name> ops_per_s=<n> p50_ms=<x> p99_ms=<y>`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "workload={} ops_per_s={:.0} p50_ms={:.3} p99_ms={:.3}",
            self.name,
            self.ops_per_s(),
            millis(self.latencies.percentile(50.0)),
            millis(self.latencies.percentile(99.0)),
        );
        if !self.is_complete() {
            line.push_str(&format!(" incomplete={}/{}", self.ops, self.planned));
        }
        line
    }

    /// Whether every planned operation completed.
    pub fn is_complete(&self) -> bool {
        self.ops >= self.planned
    }

    /// If the run is incomplete, what happened: its clients gave up after `patience`.
    pub fn gave_up(&self, patience: Duration) -> Option<String> {
        (!self.is_complete()).then(|| {
            format!(
                "{}: {} of {} operations answered; its clients gave up after {patience:?} \
                 without an answer",
                self.name, self.ops, self.planned
            )
        })
    }
}

/// A duration in fractional milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `actual` is `expected` to the histogram's three significant digits.
    fn close(actual: Duration, expected: Duration) -> bool {
        actual.abs_diff(expected) <= expected / 1000
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::new();
        assert_eq!(l.percentile(50.0), Duration::ZERO);
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        // 0.1% apart from the true sample, 2% or more from its neighbours: the rank is right.
        for (p, ms) in [(50.0, 50), (99.0, 99), (100.0, 100), (0.0, 1)] {
            let got = l.percentile(p);
            assert!(close(got, Duration::from_millis(ms)), "p{p}: {got:?}");
        }
        assert_eq!(l.len(), 100);
    }

    #[test]
    fn short_latencies_are_exact_and_long_ones_are_capped() {
        let mut l = Latencies::new();
        for us in [1, 523, 524, 2047] {
            l.record(Duration::from_micros(us));
        }
        assert_eq!(l.percentile(50.0), Duration::from_micros(523));
        assert_eq!(l.percentile(75.0), Duration::from_micros(524));
        assert_eq!(l.percentile(100.0), Duration::from_micros(2047));
        let mut long = Latencies::new();
        long.record(Duration::from_secs(7200));
        l.merge(long);
        assert_eq!(l.len(), 5);
        assert!(close(l.percentile(100.0), MAX_TRACKED));
    }

    #[test]
    fn the_summary_line_has_the_agreed_shape() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_micros(820));
        let result = WorkloadResult {
            name: "seq_put".into(),
            ops: 2000,
            planned: 2000,
            elapsed: Duration::from_secs(2),
            latencies,
        };
        assert_eq!(
            result.line(),
            "workload=seq_put ops_per_s=1000 p50_ms=0.820 p99_ms=0.820"
        );
        let short = WorkloadResult {
            planned: 3000,
            ..result
        };
        assert!(short.line().ends_with(" incomplete=2000/3000"));
    }
}
