//! Logging set-up: human-readable by default, one JSON object per line with
//! `LOG_FORMAT=json`; the filter comes from `LOG_LEVEL` (same syntax as `RUST_LOG`),
//! and lines that unauthenticated input can cause are sampled (`sampling`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use super::sampling::Sampled;

pub fn init_logging(format: &str, level: &str) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter).with(Sampled::default());
    let result = if format.eq_ignore_ascii_case("json") {
        registry.with(fmt::layer().json().flatten_event(true).with_current_span(true)).try_init()
    } else {
        registry.with(fmt::layer()).try_init()
    };
    if let Err(e) = result {
        eprintln!("logging was already initialised: {e}");
    }
}
