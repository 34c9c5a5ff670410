//! A bound on the log lines that input can cause (DESIGN.md principle 4): lines that
//! a client can trigger without proving who it is (refused handshakes, floods, bad
//! requests, and whatever socketioxide and engineioxide log about a connection's
//! packets) pass through a token bucket per call site. A flood from one connection,
//! or from many, then costs a few lines a second, not one line per packet; what is
//! held back is counted in `coursecast_log_lines_suppressed_total`.
//!
//! A call site opts in with a `sampled = true` field; the two Socket.IO crates'
//! warnings and errors are sampled whatever they say.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use tracing::{Metadata, Subscriber, callsite::Identifier};
use tracing_subscriber::layer::{Context, Layer};

use super::metrics;
use crate::locks::lock;

/// Lines one call site may write in a burst, and the pace it refills at.
const BURST: f64 = 20.0;
const PER_SECOND: f64 = 2.0;

/// Call sites are static code, so the map is bounded by the program's size.
#[derive(Default)]
pub struct Sampled {
    buckets: Mutex<HashMap<Identifier, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Sampled {
    fn sampled(metadata: &Metadata<'_>) -> bool {
        let target = metadata.target();
        let from_socket_io = (target.starts_with("socketioxide") || target.starts_with("engineioxide"))
            && *metadata.level() <= tracing::Level::WARN;
        from_socket_io || metadata.fields().field("sampled").is_some()
    }

    /// Takes a token for the call site; false when its bucket is empty.
    fn admit(&self, metadata: &'static Metadata<'static>, now: Instant) -> bool {
        let mut buckets = lock(&self.buckets);
        let bucket = buckets.entry(metadata.callsite()).or_insert(Bucket { tokens: BURST, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * PER_SECOND;
        bucket.tokens = (bucket.tokens + refill).min(BURST);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// As a layer, it vetoes an event for every other layer of the subscriber.
impl<S: Subscriber> Layer<S> for Sampled {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if !Self::sampled(metadata) || self.admit(metadata, Instant::now()) {
            return true;
        }
        metrics::log_line_suppressed(metadata.target());
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// How long an emptied bucket takes to admit a line again.
    const REFILL: Duration = Duration::from_millis((1000.0 / PER_SECOND) as u64);

    #[test]
    fn a_call_site_writes_a_burst_then_a_few_lines_a_second() {
        let site = tracing::callsite!(
            name: "packet error",
            kind: tracing::metadata::Kind::EVENT,
            target: "socketioxide::client",
            level: tracing::Level::ERROR,
            fields: []
        );
        let meta = tracing::callsite::Callsite::metadata(site);
        let sampled = Sampled::default();
        let start = Instant::now();
        let burst = (0..1000).filter(|_| sampled.admit(meta, start)).count();
        assert_eq!(burst, BURST as usize);
        assert!(!sampled.admit(meta, start + REFILL / 2));
        assert!(sampled.admit(meta, start + REFILL));
        let a_minute =
            (1..=600).filter(|i| sampled.admit(meta, start + REFILL + Duration::from_millis(100 * i))).count();
        assert!(a_minute <= 121, "{a_minute} lines in a minute");
        assert!(Sampled::sampled(meta));
    }
}
