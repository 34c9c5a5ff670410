//! Recent delivery latencies for the admin dashboard's percentiles, kept in memory
//! (Prometheus's histogram has buckets, not exact recent percentiles). Counts come
//! from the metrics themselves (`figures`).

use std::{collections::VecDeque, sync::Mutex, time::Duration};

use serde::Serialize;

use crate::locks::lock;

/// Latency samples kept for the percentiles.
const SAMPLES: usize = 4096;

#[derive(Default)]
pub struct LiveStats {
    latencies_us: Mutex<VecDeque<u32>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySummary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LiveStats {
    pub fn delivered(&self, latency: Duration) {
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        let mut samples = lock(&self.latencies_us);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(micros);
    }

    pub fn latency(&self) -> LatencySummary {
        let mut sorted: Vec<u32> = lock(&self.latencies_us).iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() - 1) as f64 * q).round() as usize;
            f64::from(sorted[index]) / 1000.0
        };
        LatencySummary { samples: sorted.len(), p50_ms: at(0.5), p99_ms: at(0.99), max_ms: at(1.0) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_the_recent_window() {
        let stats = LiveStats::default();
        assert_eq!(stats.latency().samples, 0);
        for ms in 1..=100 {
            stats.delivered(Duration::from_millis(ms));
        }
        let summary = stats.latency();
        assert_eq!(summary.samples, 100);
        assert!((summary.p50_ms - 50.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() <= 1.0, "{summary:?}");
        assert_eq!(summary.max_ms, 100.0);
    }
}
