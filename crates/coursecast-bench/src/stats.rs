//! Latency histograms (microseconds, HDR, 3 significant digits) and their summaries.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded (larger values are clamped to it): 5 minutes.
const MAX_MICROS: u64 = 300_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl std::fmt::Debug for Latency {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary().fmt(f)
    }
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid histogram bounds"))
    }

    pub fn record_micros(&mut self, micros: u64) {
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.record_micros(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at quantile `q` (0..=1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.0.is_empty() { 0.0 } else { self.0.value_at_quantile(q) as f64 / 1000.0 }
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |v: f64| (v * 1000.0).round() / 1000.0;
        LatencySummary {
            count: self.count(),
            p50_ms: ms(self.quantile_ms(0.50)),
            p90_ms: ms(self.quantile_ms(0.90)),
            p99_ms: ms(self.quantile_ms(0.99)),
            p999_ms: ms(self.quantile_ms(0.999)),
            max_ms: ms(if self.0.is_empty() { 0.0 } else { self.0.max() as f64 / 1000.0 }),
            mean_ms: ms(if self.0.is_empty() { 0.0 } else { self.0.mean() / 1000.0 }),
        }
    }

    /// (percentile, latency ms) points for a percentile-distribution plot.
    pub fn percentile_curve(&self) -> Vec<(f64, f64)> {
        const NINES: [f64; 14] =
            [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0];
        NINES.iter().map(|&q| (q, self.quantile_ms(q))).collect()
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// The median of some figures (NaN-free input), `None` for none.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_uniform_spread() {
        let mut latency = Latency::new();
        for ms in 1..=1000u64 {
            latency.record(Duration::from_millis(ms));
        }
        let s = latency.summary();
        assert_eq!(s.count, 1000);
        let close = |got: f64, want: f64| (got - want).abs() <= want * 0.002 + 0.001;
        assert!(close(s.p50_ms, 500.0), "{s:?}");
        assert!(close(s.p90_ms, 900.0), "{s:?}");
        assert!(close(s.p99_ms, 990.0), "{s:?}");
        assert!(close(s.p999_ms, 999.0), "{s:?}");
        assert!(close(s.max_ms, 1000.0), "{s:?}");
        assert!(close(s.mean_ms, 500.5), "{s:?}");
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_tail() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        for _ in 0..99 {
            a.record_micros(1_000);
        }
        b.record_micros(250_000);
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 100);
        assert!((s.p50_ms - 1.0).abs() < 0.01);
        assert!((s.max_ms - 250.0).abs() < 0.5);
        assert!((s.p999_ms - 250.0).abs() < 0.5, "the one slow sample is the 99.9th percentile");
    }

    #[test]
    fn empty_and_out_of_range() {
        assert_eq!(Latency::new().summary().p99_ms, 0.0);
        let mut l = Latency::new();
        l.record_micros(0);
        l.record(Duration::from_secs(3600));
        assert_eq!(l.count(), 2);
        assert!(l.summary().max_ms >= 299_000.0);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
    }
}
