//! The database's health as this node sees it, and the deadline on every storage
//! call (DESIGN.md principle 4: nothing waits without a deadline).
//!
//! Every query runs through [`Store::bounded`]: past `DATABASE_TIMEOUT_MS` it fails.
//! The first failure that says the database cannot be reached (reset, refused,
//! silent past the deadline: `error::is_database_outage`) marks it down: one WARN
//! line and a metric, then every storage call fails at once with the same outage
//! error instead of each waiting out its own deadline, and a probe asks the
//! database every `PROBE_EVERY` until it answers. Then it is up again (one line and
//! the metric), with no request having waited longer than one deadline.

use std::{
    future::Future,
    io,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use serde::Serialize;

use super::Store;
use crate::{error::is_database_outage, telemetry::metrics};

/// How often a down database is asked whether it answers again.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Whether the database answers; starts up (the store has just connected).
pub(super) struct Health {
    up: AtomicBool,
    /// Times it went down since start.
    outages: AtomicU64,
}

impl Default for Health {
    fn default() -> Self {
        metrics::dependency_up("database", true);
        Self { up: AtomicBool::new(true), outages: AtomicU64::new(0) }
    }
}

/// The database's health as this node sees it (status pages, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DatabaseHealth {
    pub up: bool,
    /// Times it went down since this node started.
    pub outages: u64,
}

impl Health {
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }
}

/// The error of a call refused because the database is down (an outage, so the
/// client is told `UNAVAILABLE`).
fn down() -> sqlx::Error {
    sqlx::Error::Io(io::Error::new(io::ErrorKind::NotConnected, "the database is down"))
}

fn deadline_passed() -> sqlx::Error {
    sqlx::Error::Io(io::Error::new(io::ErrorKind::TimedOut, "the database did not answer in time"))
}

impl Store {
    /// Runs one storage call within the deadline, or refuses it at once while the
    /// database is down.
    pub(crate) async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, sqlx::Error> {
        if !self.health.is_up() {
            return Err(down());
        }
        let outcome = tokio::time::timeout(self.timeout, work).await.unwrap_or_else(|_| Err(deadline_passed()));
        if let Err(err) = &outcome
            && is_database_outage(err)
        {
            self.mark_down(err);
        }
        outcome
    }

    pub fn health(&self) -> DatabaseHealth {
        DatabaseHealth { up: self.health.is_up(), outages: self.health.outages.load(Ordering::Relaxed) }
    }

    /// Whether the database answers a round trip within `limit` (for `/readyz`); a
    /// down database is reported at once.
    pub async fn ready_within(&self, limit: Duration) -> bool {
        if !self.health.is_up() {
            return false;
        }
        match tokio::time::timeout(limit.min(self.timeout), self.ping()).await {
            Ok(Ok(())) => true,
            Ok(Err(err)) => {
                if is_database_outage(&err) {
                    self.mark_down(&err);
                }
                false
            }
            // Slow, not yet known to be down: the deadline of real work decides that.
            Err(_) => false,
        }
    }

    fn mark_down(&self, cause: &sqlx::Error) {
        if !self.health.up.swap(false, Ordering::AcqRel) {
            return;
        }
        self.health.outages.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %cause, "database unavailable: refusing storage work until it answers");
        metrics::dependency_up("database", false);
        let store = self.clone();
        self.runtime.spawn(async move { store.probe_until_up().await });
    }

    async fn probe_until_up(self) {
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            if let Ok(Ok(())) = tokio::time::timeout(self.timeout, self.ping()).await {
                break;
            }
        }
        self.health.up.store(true, Ordering::Release);
        tracing::warn!("database available again");
        metrics::dependency_up("database", true);
    }
}
