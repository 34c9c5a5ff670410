//! Long polling: requests that found nothing wait on their stream's head until a new
//! event is committed, the wait ends, or the server shuts down.
//!
//! One `watch` channel per polled stream, created on demand, carrying the stream's
//! newest events (its tail): thousands of waiters woken by one event answer from
//! memory instead of each querying the database for the event that woke them, and
//! a poll whose cursor is in the tail needs no query at all. Channels outlive their
//! waiters (clients poll again at once) up to `WATCHED_STREAMS`; past it, those
//! without waiters are dropped. Waiters are bounded by a semaphore (`UNAVAILABLE`
//! past it).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use tokio::sync::{Semaphore, watch};

use super::{
    fanout::Sink,
    interest::{Holder, Interest, Scope},
};
use crate::{
    error::AppError,
    locks::lock,
    store::Store,
    streams::{StoredEvent, StreamKey, StreamPage},
    telemetry::metrics,
};

/// Events kept per watched stream: enough for any burst between two polls.
const TAIL: usize = 64;
/// Streams whose tail is kept while nobody waits on them (at most `TAIL` events each).
const WATCHED_STREAMS: usize = 1024;

/// The newest events of a stream committed while it had waiters, oldest first.
type Tail = Arc<Vec<(i64, Arc<RawValue>)>>;

pub struct Waiters {
    heads: Mutex<HashMap<StreamKey, watch::Sender<Tail>>>,
    permits: Arc<Semaphore>,
    max: usize,
    /// Flips to true once at shutdown; every waiter returns at once.
    stopping: watch::Sender<bool>,
    /// Polls that had to query storage (the rest were answered from tails).
    storage_reads: AtomicU64,
    /// Where this node says which streams its polling clients wait on.
    interest: Arc<Interest>,
}

impl Waiters {
    pub fn new(max: usize, interest: Arc<Interest>) -> Self {
        Self {
            heads: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            max,
            stopping: watch::Sender::new(false),
            storage_reads: AtomicU64::new(0),
            interest,
        }
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, HashMap<StreamKey, watch::Sender<Tail>>> {
        lock(&self.heads)
    }

    /// Wakes the stream's waiters with an event that was just committed.
    fn notify(&self, event: &StoredEvent) {
        if let Some(head) = self.heads().get(&event.stream) {
            metrics::deliveries("long_poll", head.receiver_count());
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

    /// How many polls have queried storage so far.
    pub fn storage_reads(&self) -> u64 {
        self.storage_reads.load(Ordering::Relaxed)
    }

    async fn read(&self, store: &Store, stream: StreamKey, since: i64, limit: u32) -> Result<StreamPage, AppError> {
        self.storage_reads.fetch_add(1, Ordering::Relaxed);
        store.read_stream(stream, since, limit).await
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
            return self.read(store, stream, since, limit).await;
        }
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            // No room to wait; a request with something to return is still answered.
            let page = self.read(store, stream, since, limit).await?;
            return if page.events.is_empty() {
                Err(AppError::Unavailable("too many requests are waiting"))
            } else {
                Ok(page)
            };
        };
        metrics::long_poll_waiters(self.waiting());
        // Before the tail and storage are looked at: other nodes' events for the
        // stream reach the tail from then on.
        self.interest.want(Scope::of(stream)).await;
        let mut head = {
            let mut heads = self.heads();
            if heads.len() >= WATCHED_STREAMS && !heads.contains_key(&stream) {
                heads.retain(|_, head| head.receiver_count() > 0);
            }
            heads.entry(stream).or_insert_with(|| watch::Sender::new(Tail::default())).subscribe()
        };
        let result = self.wait_for_news(store, stream, since, limit, wait, &mut head).await;
        drop(head);
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
        // Subscribed first, looked second: an event committed in between wakes us.
        let known = {
            let tail = head.borrow_and_update();
            if reaches(&tail, since) { from_tail(&tail, since, limit) } else { News::Unknown }
        };
        match known {
            News::Page(page) => return Ok(page),
            News::Nothing => {}
            News::Unknown => {
                let page = self.read(store, stream, since, limit).await?;
                if !page.events.is_empty() {
                    return Ok(page);
                }
            }
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
        self.read(store, stream, since, limit).await
    }
}

/// Long polls are a transport like any other: they take every event, from this
/// node or relayed from another.
impl Sink for Waiters {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, ()> {
        self.notify(event);
        Box::pin(std::future::ready(()))
    }
}

/// Long polls hold the scopes of the streams whose tails are kept: a tail must not
/// miss events committed elsewhere, or it would answer from stale memory.
impl Holder for Waiters {
    fn held(&self) -> BoxFuture<'_, Vec<Scope>> {
        let scopes = self.heads().keys().map(|stream| Scope::of(*stream)).collect();
        Box::pin(std::future::ready(scopes))
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

/// Whether the tail holds the cursor's own event (and so every event this node was
/// told of after it): then it answers a poll without a query.
fn reaches(tail: &[(i64, Arc<RawValue>)], since: i64) -> bool {
    tail.iter().any(|(seq, _)| *seq == since)
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

    #[test]
    fn only_a_tail_holding_the_cursor_answers_without_storage() {
        assert!(reaches(&tail(&[3, 4, 5]), 4));
        assert!(reaches(&tail(&[3, 4, 5]), 5));
        assert!(!reaches(&tail(&[3, 4, 5]), 2), "events before 3 may exist");
        assert!(!reaches(&tail(&[3, 4, 5]), 6), "the cursor is ahead of what this node saw");
        assert!(!reaches(&tail(&[]), 0));
    }
}
