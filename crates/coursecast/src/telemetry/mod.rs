//! Observability: logs (`logging`), Prometheus metrics (`metrics`), and the live
//! figures behind the admin dashboard (`live`).

pub mod live;
mod logging;
pub mod metrics;
mod sampling;

pub use logging::init_logging;
