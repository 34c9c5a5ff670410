//! Long polling: requests that found nothing wait on their stream's head until a new
//! event is committed, the wait ends, or the server shuts down.
//!
//! One `watch` channel per stream that has waiters, created on demand and removed
//! when its last waiter leaves, so the map is bounded by the waiters, and they by a
//! semaphore (`UNAVAILABLE` past it).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::{Semaphore, watch};

use super::StreamKey;
use crate::{
    error::AppError,
    store::{Store, StreamPage},
    telemetry::metrics,
};

pub struct Waiters {
    heads: Mutex<HashMap<StreamKey, watch::Sender<i64>>>,
    permits: Arc<Semaphore>,
    max: usize,
    /// Flips to true once at shutdown; every waiter returns at once.
    stopping: watch::Sender<bool>,
}

impl Waiters {
    pub fn new(max: usize) -> Self {
        Self {
            heads: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            max,
            stopping: watch::Sender::new(false),
        }
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, watch::Sender<i64>>> {
        self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the stream's waiters: `seq` was just committed.
    pub fn notify(&self, stream: StreamKey, seq: i64) {
        if let Some(head) = self.heads().get(&stream) {
            head.send_replace(seq);
        }
    }

    /// Requests waiting right now.
    pub fn waiting(&self) -> usize {
        self.max - self.permits.available_permits()
    }

    /// Releases every waiter and refuses new waits (shutdown).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// A page after `since`; if it is empty and `wait` is not zero, waits up to `wait`
    /// for the stream to move and reads again.
    pub async fn poll(
        &self,
        store: &Store,
        stream: StreamKey,
        since: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<StreamPage, AppError> {
        let page = store.read_stream(stream, since, limit).await?;
        if !page.events.is_empty() || wait.is_zero() || *self.stopping.borrow() {
            return Ok(page);
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| AppError::Unavailable("too many requests are waiting"))?;
        metrics::long_poll_waiters(self.waiting());
        let mut head = self.heads().entry(stream).or_insert_with(|| watch::Sender::new(0)).subscribe();
        let result = self.wait_for_news(store, stream, since, limit, wait, &mut head).await;
        drop(head);
        let mut heads = self.heads();
        if heads.get(&stream).is_some_and(|h| h.receiver_count() == 0) {
            heads.remove(&stream);
        }
        drop(heads);
        drop(permit);
        metrics::long_poll_waiters(self.waiting());
        result
    }

    async fn wait_for_news(
        &self,
        store: &Store,
        stream: StreamKey,
        since: i64,
        limit: u32,
        wait: Duration,
        head: &mut watch::Receiver<i64>,
    ) -> Result<StreamPage, AppError> {
        // Subscribed first, read second: an event committed in between is not missed.
        let page = store.read_stream(stream, since, limit).await?;
        if !page.events.is_empty() {
            return Ok(page);
        }
        let mut stopping = self.stopping.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let moved = tokio::select! {
                changed = head.changed() => changed.is_ok() && *head.borrow_and_update() > since,
                () = tokio::time::sleep_until(deadline) => break,
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => break,
            };
            if moved {
                let page = store.read_stream(stream, since, limit).await?;
                if !page.events.is_empty() {
                    return Ok(page);
                }
            }
        }
        store.read_stream(stream, since, limit).await
    }
}
