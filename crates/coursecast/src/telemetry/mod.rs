//! Observability: logs (`logging`), Prometheus metrics (`metrics`), and the admin
//! dashboard's figures: read back from the metrics (`figures`), plus recent delivery
//! latencies (`live`).

pub mod figures;
pub mod live;
mod logging;
pub mod metrics;
mod sampling;

pub use logging::init_logging;
