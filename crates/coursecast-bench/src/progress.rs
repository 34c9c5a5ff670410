//! Shared counters and the once-a-second progress line on stderr.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use crate::procfs;

/// A counter shared by the tasks of a scenario.
#[derive(Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A shared maximum (the highest `seq` acked, ...).
#[derive(Clone, Default)]
pub struct Max(Arc<AtomicI64>);

impl Max {
    pub fn observe(&self, v: i64) {
        self.0.fetch_max(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// Prints `[label scenario] t=..s name=value (+rate/s) ... cpu gen ..% srv ..%` every
/// second until dropped (`srv`: the server's processes together, one per node).
pub struct Progress {
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub fn start(title: String, counters: Vec<(&'static str, Counter)>, server_pids: Vec<u32>) -> Self {
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut last: Vec<u64> = counters.iter().map(|(_, c)| c.get()).collect();
            let mut cpu = procfs::CpuMeter::start(&server_pids);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut line = format!("[{title}] t={:>3}s", started.elapsed().as_secs());
                for ((name, counter), prev) in counters.iter().zip(last.iter_mut()) {
                    let now = counter.get();
                    line.push_str(&format!("  {name}={now} (+{}/s)", now.saturating_sub(*prev)));
                    *prev = now;
                }
                let use_ = cpu.read();
                cpu = procfs::CpuMeter::start(&server_pids);
                let pct = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}%"));
                line.push_str(&format!("  cpu gen {} srv {}", pct(use_.generator_pct), pct(use_.server_pct)));
                let rss: Option<u64> = server_pids.iter().map(|&pid| procfs::rss_kib(Some(pid))).sum();
                if let Some(rss) = rss.filter(|_| !server_pids.is_empty()) {
                    line.push_str(&format!(" srv-rss {}MiB", rss / 1024));
                }
                eprintln!("{line}");
            }
        });
        Self { task }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}
