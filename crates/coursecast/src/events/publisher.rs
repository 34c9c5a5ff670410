//! The one publish path (DESIGN.md principle 1): every door (socket event, HTTP POST,
//! service call) hands its append to `Publisher::publish`, which queues it for the
//! writer task. The writer takes everything queued (up to a batch) and stores it in
//! one transaction (group commit); the delivery task then fans the new events out
//! and only then answers each caller. Nothing is delivered before it is committed.
//! The two tasks overlap: a batch commits while the one before it is delivered, and
//! batches are delivered in commit order.
//!
//! On SQLite the writer runs on a thread of its own (see `Publisher::start`).

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use tokio::sync::{mpsc, oneshot};

use super::fanout::Fanout;
use crate::{
    error::AppError,
    store::{Append, Appended, BackendKind, Store},
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

type Reply = oneshot::Sender<Result<Appended, AppError>>;

/// A committed batch: each append's outcome with its caller, and when it committed.
struct Committed {
    outcomes: Vec<(Result<Appended, AppError>, Reply)>,
    at: Instant,
}

/// Cheap to clone; every clone feeds the same writer.
#[derive(Clone)]
pub struct Publisher {
    queue: mpsc::Sender<(Append, Reply)>,
    /// Appends handed in and not yet answered (queued, in a batch, or fanning out).
    pending: Arc<AtomicUsize>,
}

impl Publisher {
    /// Starts the writer and delivery tasks; they run until every `Publisher` clone
    /// is dropped.
    ///
    /// On SQLite the writer gets a thread and a single-threaded runtime of its own.
    /// Each of a batch's statements is a round trip to sqlx's SQLite worker thread,
    /// and on the shared runtime the writer waited for a worker behind the socket
    /// tasks at every one of them: the SQLite thread sat idle while the queue filled.
    /// Measured in `rooms` (BENCHMARKS.md, What changed): about 12 % more stored
    /// events per second, for about 2 ms more p99 at light load (a thread wake per
    /// round trip). PostgreSQL's connections belong to the runtime that opened them
    /// and the pool is shared with readers, so its writer stays a task there (no
    /// gain measured either).
    pub fn start(store: Store, fanout: Fanout) -> std::io::Result<Self> {
        let (queue, rx) = mpsc::channel(QUEUE);
        let (deliveries, committed) = mpsc::channel(DELIVERY_QUEUE);
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
        Ok(Self { queue, pending: Arc::new(AtomicUsize::new(0)) })
    }

    /// Resolves once every append handed in so far has been stored and delivered
    /// (shutdown waits for this before closing storage).
    pub async fn drained(&self) {
        while self.pending.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Stores `op`, delivers its events, and returns them. A retry with a used
    /// `clientMsgId` returns the original event and delivers nothing again.
    pub async fn publish(&self, op: Append) -> Result<Appended, AppError> {
        let (reply, answer) = oneshot::channel();
        let stopping = || AppError::Unavailable("the server is shutting down");
        self.pending.fetch_add(1, Ordering::AcqRel);
        let outcome = match self.queue.try_send((op, reply)) {
            Ok(()) => answer.await.map_err(|_| stopping()).and_then(|outcome| outcome),
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::publish_refused();
                Err(AppError::Unavailable("the server is overloaded; retry with the same clientMsgId"))
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(stopping()),
        };
        self.pending.fetch_sub(1, Ordering::AcqRel);
        outcome
    }
}

async fn write_loop(store: Store, mut rx: mpsc::Receiver<(Append, Reply)>, deliveries: mpsc::Sender<Committed>) {
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
                        Err(err) => Err(AppError::internal(err)),
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

async fn deliver_loop(fanout: Fanout, mut committed: mpsc::Receiver<Committed>) {
    while let Some(Committed { outcomes, at }) = committed.recv().await {
        for (outcome, reply) in outcomes {
            if let Ok(appended) = &outcome
                && !appended.duplicate
            {
                for event in &appended.events {
                    fanout.deliver(event, at).await;
                }
            }
            // The caller may have gone away (socket closed); the event is stored anyway.
            let _ = reply.send(outcome);
        }
    }
}
