//! Long polling: requests that found nothing wait on their stream's head until a new
//! event is committed, the wait ends, or the server shuts down.
//!
//! One `watch` channel per stream that has waiters, created on demand and removed
//! when its last waiter leaves, so the map is bounded by the waiters, and they by a
//! semaphore (`UNAVAILABLE` past it). The channel carries the stream's newest events
//! (its tail), so thousands of waiters woken by one event answer from memory
//! instead of each querying the database for the event that woke them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};

use super::{StoredEvent, StreamKey};
use crate::{
    error::AppError,
    store::{Store, StreamPage},
    telemetry::metrics,
};

/// Events kept per watched stream: enough for any burst between two polls.
const TAIL: usize = 64;

/// The newest events of a stream committed while it had waiters, oldest first.
type Tail = Arc<Vec<(i64, Arc<RawValue>)>>;

pub struct Waiters {
    heads: Mutex<HashMap<StreamKey, watch::Sender<Tail>>>,
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

    fn heads(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, watch::Sender<Tail>>> {
        self.heads.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Wakes the stream's waiters with an event that was just committed.
    pub fn notify(&self, event: &StoredEvent) {
        if let Some(head) = self.heads().get(&event.stream) {
            head.send_modify(|tail| {
                let mut events = Vec::with_capacity(TAIL);
                let keep = tail.len().min(TAIL - 1);
                events.extend_from_slice(&tail[tail.len() - keep..]);
                events.push((event.seq, event.payload.clone()));
                *tail = Arc::new(events);
            });
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
    /// for the stream to move. One database read per request unless woken by an
    /// event the tail cannot answer.
    pub async fn poll(
        &self,
        store: &Store,
        stream: StreamKey,
        since: i64,
        limit: u32,
        wait: Duration,
    ) -> Result<StreamPage, AppError> {
        if wait.is_zero() || *self.stopping.borrow() {
            return store.read_stream(stream, since, limit).await;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // No room to wait; a request with something to return is still answered.
            let page = store.read_stream(stream, since, limit).await?;
            return if page.events.is_empty() {
                Err(AppError::Unavailable("too many requests are waiting"))
            } else {
                Ok(page)
            };
        };
        metrics::long_poll_waiters(self.waiting());
        let mut head = self.heads().entry(stream).or_insert_with(|| watch::Sender::new(Tail::default())).subscribe();
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
        head: &mut watch::Receiver<Tail>,
    ) -> Result<StreamPage, AppError> {
        // Subscribed first, read second: an event committed in between is not missed.
        let page = store.read_stream(stream, since, limit).await?;
        if !page.events.is_empty() {
            return Ok(page);
        }
        let mut stopping = self.stopping.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let news = tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    from_tail(&head.borrow_and_update(), since, limit)
                }
                () = tokio::time::sleep_until(deadline) => break,
                () = async { drop(stopping.wait_for(|stop| *stop).await) } => break,
            };
            match news {
                News::Nothing => continue,
                News::Page(page) => return Ok(page),
                News::Unknown => break,
            }
        }
        // Woken by what the tail cannot answer, or out of time: ask storage once.
        store.read_stream(stream, since, limit).await
    }
}

/// What a woken waiter learns from the tail.
#[derive(Debug)]
enum News {
    /// Nothing after the waiter's cursor (woken by an older event).
    Nothing,
    /// Every event after the cursor, from memory.
    Page(StreamPage),
    /// The tail does not reach back to the cursor: ask the database.
    Unknown,
}

fn from_tail(tail: &[(i64, Arc<RawValue>)], since: i64, limit: u32) -> News {
    let mut newer: Vec<&(i64, Arc<RawValue>)> = tail.iter().filter(|(seq, _)| *seq > since).collect();
    if newer.is_empty() {
        return News::Nothing;
    }
    // Events from other nodes may arrive out of order: only a gap-free run from the
    // cursor on is an answer.
    newer.sort_unstable_by_key(|(seq, _)| *seq);
    let contiguous = newer.iter().enumerate().all(|(i, (seq, _))| *seq == since + 1 + i as i64);
    if !contiguous {
        return News::Unknown;
    }
    let has_more = newer.len() > limit as usize;
    newer.truncate(limit as usize);
    let cursor = newer.last().map_or(since, |(seq, _)| *seq);
    News::Page(StreamPage { events: newer.into_iter().map(|(_, payload)| payload.clone()).collect(), cursor, has_more })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tail(seqs: &[i64]) -> Vec<(i64, Arc<RawValue>)> {
        seqs.iter().map(|seq| (*seq, Arc::from(RawValue::from_string(format!("{{\"seq\":{seq}}}")).unwrap()))).collect()
    }

    #[test]
    fn the_tail_answers_only_gap_free_runs_after_the_cursor() {
        assert!(matches!(from_tail(&tail(&[3, 4]), 4, 10), News::Nothing));
        let News::Page(page) = from_tail(&tail(&[3, 4, 5, 6]), 4, 10) else { panic!("expected a page") };
        assert_eq!((page.events.len(), page.cursor, page.has_more), (2, 6, false));
        let News::Page(page) = from_tail(&tail(&[6, 5, 7]), 4, 2) else { panic!("out of order is sorted") };
        assert_eq!((page.events[0].get(), page.cursor, page.has_more), ("{\"seq\":5}", 6, true));
        assert!(matches!(from_tail(&tail(&[6, 7]), 4, 10), News::Unknown), "seq 5 is missing");
        assert!(matches!(from_tail(&tail(&[5, 7]), 4, 10), News::Unknown), "seq 6 is missing");
    }
}
