//! Latency statistics for the demo and the benchmark: recorded operation times, percentiles
//! and the one-line summary `workload=<name> ops_per_s=<n> p50_ms=<x> p99_ms=<y>`.

use std::time::Duration;

/// Latencies of completed operations.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
}

impl Latencies {
    /// No samples yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one operation's latency.
    pub fn record(&mut self, latency: Duration) {
        self.samples.push(latency);
    }

    /// Adds another set of samples.
    pub fn merge(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// True if nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `p`-th percentile (`p` in 0..=100), by the nearest-rank method; zero if empty.
    pub fn percentile(&self, p: f64) -> Duration {
        if self.samples.is_empty() {
            return Duration::ZERO;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }
}

/// The outcome of one workload.
#[derive(Debug, Clone)]
pub struct WorkloadResult {
    /// Its name, e.g. `put_64`.
    pub name: String,
    /// Operations completed.
    pub ops: usize,
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
        format!(
            "workload={} ops_per_s={:.0} p50_ms={:.3} p99_ms={:.3}",
            self.name,
            self.ops_per_s(),
            millis(self.latencies.percentile(50.0)),
            millis(self.latencies.percentile(99.0)),
        )
    }
}

/// A duration in fractional milliseconds.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l = Latencies::new();
        assert_eq!(l.percentile(50.0), Duration::ZERO);
        for ms in (1..=100).rev() {
            l.record(Duration::from_millis(ms));
        }
        assert_eq!(l.percentile(50.0), Duration::from_millis(50));
        assert_eq!(l.percentile(99.0), Duration::from_millis(99));
        assert_eq!(l.percentile(100.0), Duration::from_millis(100));
        assert_eq!(l.percentile(0.0), Duration::from_millis(1));
    }

    #[test]
    fn the_summary_line_has_the_agreed_shape() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_micros(820));
        let result = WorkloadResult {
            name: "seq_put".into(),
            ops: 2000,
            elapsed: Duration::from_secs(2),
            latencies,
        };
        assert_eq!(
            result.line(),
            "workload=seq_put ops_per_s=1000 p50_ms=0.820 p99_ms=0.820"
        );
    }
}
