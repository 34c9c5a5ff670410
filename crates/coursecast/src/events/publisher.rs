//! The one publish path (DESIGN.md principle 1): every door (socket event, HTTP POST,
//! service call) hands its append to `Publisher::publish`, which queues it for the
//! writer task. The writer takes everything queued (up to a batch) and stores it in
//! one transaction (group commit); the delivery task then fans the new events out
//! and only then answers each caller. Nothing is delivered before it is committed.
//! The two tasks overlap: a batch commits while the one before it is delivered, and
//! batches are delivered in commit order.
//!
//! On SQLite the writer runs on a thread of its own (see `Publisher::start`).
//! Committed batches reach the delivery task through `handoff` on both backends: it
//! wakes that task in a worker's own queue, not behind a big room's broadcast.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{Notify, mpsc, oneshot};

use super::{fanout::Fanout, handoff};
use crate::{
    error::{AppError, is_database_outage},
    store::{BackendKind, Store},
    streams::{Append, Appended},
    telemetry::metrics,
};

/// Appends queued at most; past it, publishing is refused at once with
/// `UNAVAILABLE` (a fast, typed refusal beats acks that come half a minute late).
const QUEUE: usize = 16 * 1024;
/// Appends stored in one transaction at most. Large batches amortise the pages a
/// commit rewrites (many events share each stream's index pages: rooms on SQLite
/// 16,700 stored events/s with 2,048, 19,300 with 4,096); the bulk statements stay
/// under both backends' bind-parameter limits (6 per event: 24,576 of SQLite's
/// 32,766 and PostgreSQL's 65,535).
pub const MAX_BATCH: usize = 4096;
/// Committed batches waiting for delivery at most; past it the writer waits, so a
/// slow fan-out slows commits instead of piling up memory.
const DELIVERY_QUEUE: usize = 4;

/// Where an append's outcome goes, with its place in the in-flight count.
struct Reply {
    answer: oneshot::Sender<Result<Appended, AppError>>,
    _counted: Ticket,
}

/// A committed batch: each append's outcome with its caller, and when it committed.
struct Committed {
    outcomes: Vec<(Result<Appended, AppError>, Reply)>,
    at: Instant,
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<(Append, Reply)>,
    in_flight: Arc<InFlight>,
}

/// Appends handed in and not yet answered (queued, in a batch, or fanning out), and
/// a wake-up for whoever waits for that count to reach zero.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// One append counted in flight until dropped. It travels with the append's reply,
/// not with the caller, so an append whose caller went away is still counted until
/// the writer is done with it, and however it ends (answered, refused at the queue,
/// dropped unanswered) it is counted out exactly once.
struct Ticket(Arc<InFlight>);

impl Ticket {
    fn new(in_flight: &Arc<InFlight>) -> Self {
        in_flight.count.fetch_add(1, Ordering::AcqRel);
        Self(in_flight.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Publisher {
    /// Starts the writer and delivery tasks; they run until every `Publisher` clone
    /// is dropped.
    ///
    /// On SQLite the writer gets a thread and a single-threaded runtime of its own.
    /// Each of a batch's statements is a round trip to sqlx's SQLite worker thread,
    /// and on the shared runtime the writer waited for a worker behind the socket
    /// tasks at every one of them: the SQLite thread sat idle while the queue filled.
    /// Measured in `rooms` (bench/runs/README.md, What changed): about 12 % more stored
    /// events per second, for about 2 ms more p99 at light load (a thread wake per
    /// round trip). PostgreSQL's connections belong to the runtime that opened them
    /// and the pool is shared with readers, so its writer stays a task there (no
    /// gain measured either).
    pub fn start(store: Store, fanout: Fanout) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let (deliveries, committed) = handoff::channel(DELIVERY_QUEUE)?;
        match store.kind() {
            BackendKind::Sqlite => {
                let writer = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                std::thread::Builder::new()
                    .name("coursecast-writer".into())
                    .spawn(move || writer.block_on(write_loop(store, rx, deliveries)))?;
            }
            BackendKind::Postgres => {
                tokio::spawn(write_loop(store, rx, deliveries));
            }
        }
        tokio::spawn(deliver_loop(fanout, committed));
        Ok(Self { queue, in_flight: Arc::default() })
    }

    /// Resolves once every append handed in so far has been stored and delivered
    /// (shutdown waits for this before closing storage).
    pub async fn drained(&self) {
        loop {
            // Registered before the count is read, so a ticket dropped in between still wakes it.
            let idle = self.in_flight.idle.notified();
            let mut idle = std::pin::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.count.load(Ordering::Acquire) == 0 {
                return;
            }
            idle.await;
        }
    }

    /// Stores `op`, delivers its events, and returns them. A retry with a used
    /// `clientMsgId` returns the original event and delivers nothing again.
    pub async fn publish(&self, op: Append) -> Result<Appended, AppError> {
        let (answer, outcome) = oneshot::channel();
        let reply = Reply { answer, _counted: Ticket::new(&self.in_flight) };
        let stopping = || AppError::Unavailable("the server is shutting down");
        match self.queue.try_send((op, reply)) {
            Ok(()) => outcome.await.map_err(|_| stopping()).and_then(|outcome| outcome),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::publish_refused();
                Err(AppError::Unavailable("the server is overloaded; retry with the same clientMsgId"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopping()),
        }
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<(Append, Reply)>, deliveries: handoff::Sender<Committed>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let (ops, replies): (Vec<Append>, Vec<Reply>) = jobs.drain(..).unzip();
        let started = Instant::now();
        let outcomes = match store.append_batch(&ops).await {
            Ok(outcomes) => outcomes,
            // Storage is closing (shutdown): nothing queued can be stored any more.
            Err(sqlx::Error::PoolClosed) => {
                ops.iter().map(|_| Err(AppError::Unavailable("the server is shutting down"))).collect()
            }
            // The database is unreachable: nothing in the batch was stored, and each
            // retried alone would only wait out the deadline again.
            Err(err) if is_database_outage(&err) => {
                ops.iter().map(|_| Err(AppError::Unavailable("the database is unavailable; retry shortly"))).collect()
            }
            Err(err) => {
                // One bad append (or a conflict with another node) must not fail its
                // neighbours: store each alone, so only the culprit sees the error.
                tracing::warn!(error = %err, batch = ops.len(), "batch failed; storing its appends one by one");
                let mut outcomes = Vec::with_capacity(ops.len());
                for op in &ops {
                    outcomes.push(match store.append_batch(std::slice::from_ref(op)).await {
                        Ok(mut single) => {
                            single.pop().unwrap_or_else(|| Err(AppError::internal(anyhow::anyhow!("empty outcome"))))
                        }
                        Err(err) => Err(err.into()),
                    });
                }
                outcomes
            }
        };
        let at = Instant::now();
        metrics::batch_committed(ops.len(), at - started);
        let committed = Committed { outcomes: outcomes.into_iter().zip(replies).collect(), at };
        if deliveries.send(committed).await.is_err() {
            break;
        }
    }
    tracing::debug!("publisher stopped");
}

async fn deliver_loop(fanout: Fanout, mut committed: handoff::Receiver<Committed>) {
    while let Some(Committed { outcomes, at }) = committed.recv().await {
        for (outcome, reply) in outcomes {
            if let Ok(appended) = &outcome
                && !appended.duplicate
            {
                for event in &appended.events {
                    fanout.deliver_committed(event, at).await;
                }
            }
            // The caller may have gone away (socket closed); the event is stored anyway.
            let _ = reply.answer.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_has_a_size_bucket_of_its_own() {
        let top = metrics::BATCH_SIZE_BUCKETS.last().copied().unwrap_or_default();
        assert_eq!(top, MAX_BATCH as f64, "the batch-size histogram must reach MAX_BATCH");
        let below = metrics::BATCH_SIZE_BUCKETS.iter().rev().nth(1).copied().unwrap_or_default();
        assert!(below < MAX_BATCH as f64);
    }
}
