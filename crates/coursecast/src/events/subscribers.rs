//! Live delivery to long-lived subscribers (the Server-Sent Events streams): a
//! registry of who listens to which stream, fed by the fan-out like every other
//! transport.
//!
//! Each subscriber has a bounded queue (`SSE_BUFFER_EVENTS`). Delivery never waits
//! on it: an event that finds the queue full ends the subscription as too slow
//! instead (DESIGN.md principle 4: never an unbounded buffer, never a silent drop).
//! Nothing is lost by that: every event is stored before it is delivered, so the
//! subscriber resumes from its last cursor and reads the rest from storage.
//!
//! Admission is bounded too: at most `SSE_MAX_CONNECTIONS` subscribers per node and
//! `SSE_MAX_PER_USER` per user, counted in the same critical section that registers
//! them, so concurrent connects cannot overshoot.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use super::{
    fanout::Sink,
    interest::{Holder, Scope},
};
use crate::{
    error::AppError,
    locks::lock,
    streams::{StoredEvent, StreamKey},
    telemetry::metrics,
};

/// How long a client refused for holding too many streams should wait.
const RETRY_AFTER_SECS: u64 = 5;

/// What a subscriber listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Every event of one stream.
    Stream(StreamKey),
    /// The progress events of one course's analyses (its professor's and ADMINs' view).
    Watch(Uuid),
}

impl Topic {
    /// Whose events the topic carries.
    pub fn scope(self) -> Scope {
        match self {
            Topic::Stream(stream) => Scope::of(stream),
            Topic::Watch(course) => Scope::Course(course),
        }
    }
}

/// Why the registry ended a subscription (the transport says so to its client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Its queue was full when an event came.
    TooSlow,
    /// The user logged out or was deleted: their tokens no longer hold.
    Revoked,
    /// The server is shutting down.
    ShuttingDown,
}

/// The bounds of the registry, from settings.
#[derive(Debug, Clone, Copy)]
pub struct SubscriberLimits {
    pub max_connections: usize,
    pub max_per_user: usize,
    /// Events queued per subscriber at most.
    pub buffer: usize,
}

/// One subscriber as the registry holds it.
struct Feed {
    id: u64,
    user: Uuid,
    queue: mpsc::Sender<StoredEvent>,
    /// Set once, by whoever ends the subscription first; the subscriber wakes on it.
    ending: OnceLock<Ending>,
    ended: Notify,
}

impl Feed {
    fn end(&self, ending: Ending) {
        if self.ending.set(ending).is_ok() {
            self.ended.notify_one();
        }
    }

    /// Queues a copy of `event`, or ends the subscription if its queue is full.
    fn offer(&self, event: &StoredEvent) {
        match self.queue.try_send(event.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.end(Ending::TooSlow),
            // The subscriber is going; its `Drop` is about to unregister it.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
struct Registry {
    topics: HashMap<Topic, HashMap<u64, Arc<Feed>>>,
    /// Each user's open subscriptions (for the per-user bound and for logout).
    users: HashMap<Uuid, Vec<Arc<Feed>>>,
    open: usize,
    stopping: bool,
}

pub struct Subscribers {
    registry: Mutex<Registry>,
    limits: SubscriberLimits,
    next_id: AtomicU64,
}

impl Subscribers {
    pub fn new(limits: SubscriberLimits) -> Arc<Self> {
        Arc::new(Self { registry: Mutex::default(), limits, next_id: AtomicU64::new(0) })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    /// Registers a subscriber of `topics` for `user`: live events of those topics
    /// are queued for it from now on. `RATE_LIMITED` past the user's bound,
    /// `UNAVAILABLE` past the node's or while shutting down.
    pub fn subscribe(self: &Arc<Self>, user: Uuid, topics: &[Topic]) -> Result<Subscription, AppError> {
        let (queue, receiver) = mpsc::channel(self.limits.buffer.max(1));
        let feed = Arc::new(Feed {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            user,
            queue,
            ending: OnceLock::new(),
            ended: Notify::new(),
        });
        let open = {
            let mut registry = self.registry();
            if registry.stopping {
                return Err(AppError::Unavailable("the server is shutting down"));
            }
            if registry.open >= self.limits.max_connections {
                return Err(AppError::Unavailable("this server holds as many event streams as it may"));
            }
            let mine = registry.users.entry(user).or_default();
            if mine.len() >= self.limits.max_per_user {
                if mine.is_empty() {
                    registry.users.remove(&user);
                }
                metrics::rate_limited("sse_per_user");
                return Err(AppError::RateLimited { retry_after_secs: RETRY_AFTER_SECS });
            }
            mine.push(feed.clone());
            for topic in topics {
                registry.topics.entry(*topic).or_default().insert(feed.id, feed.clone());
            }
            registry.open += 1;
            registry.open
        };
        metrics::sse_connections(open);
        Ok(Subscription { feed, receiver, topics: topics.to_vec(), registry: self.clone() })
    }

    /// Ends every subscription of `user` on this node (logout, deletion).
    pub fn end_user(&self, user: Uuid) {
        if let Some(feeds) = self.registry().users.get(&user) {
            feeds.iter().for_each(|feed| feed.end(Ending::Revoked));
        }
    }

    /// Ends every subscription and refuses new ones (shutdown).
    pub fn stop(&self) {
        let mut registry = self.registry();
        registry.stopping = true;
        registry.users.values().flatten().for_each(|feed| feed.end(Ending::ShuttingDown));
    }

    /// Subscriptions open on this node.
    pub fn open(&self) -> usize {
        self.registry().open
    }

    fn unsubscribe(&self, feed: &Feed, topics: &[Topic]) {
        let open = {
            let mut registry = self.registry();
            for topic in topics {
                if let Some(feeds) = registry.topics.get_mut(topic) {
                    feeds.remove(&feed.id);
                    if feeds.is_empty() {
                        registry.topics.remove(topic);
                    }
                }
            }
            if let Some(mine) = registry.users.get_mut(&feed.user) {
                mine.retain(|f| f.id != feed.id);
                if mine.is_empty() {
                    registry.users.remove(&feed.user);
                }
            }
            registry.open -= 1;
            registry.open
        };
        metrics::sse_connections(open);
    }

    /// Queues `event` for every subscriber of its stream and, for progress, of its
    /// course's watch; once per subscriber even if it holds both.
    fn notify(&self, event: &StoredEvent) {
        let registry = self.registry();
        let mut copies = 0;
        let by_stream = registry.topics.get(&Topic::Stream(event.stream));
        if let Some(feeds) = by_stream {
            feeds.values().for_each(|feed| feed.offer(event));
            copies += feeds.len();
        }
        let by_watch = event.watch_course.and_then(|course| registry.topics.get(&Topic::Watch(course)));
        if let Some(feeds) = by_watch {
            feeds.iter().filter(|(id, _)| by_stream.is_none_or(|stream| !stream.contains_key(id))).for_each(
                |(_, feed)| {
                    feed.offer(event);
                    copies += 1;
                },
            );
        }
        if copies > 0 {
            metrics::deliveries("sse", copies);
        }
    }
}

/// Subscribers are a transport like any other: they take every event, from this node
/// or relayed from another.
impl Sink for Subscribers {
    fn deliver<'a>(&'a self, event: &'a StoredEvent) -> BoxFuture<'a, ()> {
        self.notify(event);
        Box::pin(std::future::ready(()))
    }
}

/// Event streams hold their topics' scopes while they are open.
impl Holder for Subscribers {
    fn held(&self) -> BoxFuture<'_, Vec<Scope>> {
        let scopes = self.registry().topics.keys().map(|topic| topic.scope()).collect();
        Box::pin(std::future::ready(scopes))
    }
}

/// A registered subscriber's end: its queue and how it ended. Dropping it
/// unregisters the subscriber.
pub struct Subscription {
    feed: Arc<Feed>,
    receiver: mpsc::Receiver<StoredEvent>,
    topics: Vec<Topic>,
    registry: Arc<Subscribers>,
}

impl Subscription {
    /// The next queued event, or the subscription's end, whichever comes first.
    pub async fn next(&mut self) -> Next {
        let (feed, receiver) = (&self.feed, &mut self.receiver);
        tokio::select! {
            biased;
            ending = ended(feed) => Next::Ended(ending),
            event = receiver.recv() => match event {
                Some(event) => Next::Event(event),
                // Cannot happen: the feed holds the sending end as long as we do.
                None => Next::Ended(Ending::ShuttingDown),
            },
        }
    }

    /// The next queued event, if one is there now.
    pub fn try_recv(&mut self) -> Option<StoredEvent> {
        self.receiver.try_recv().ok()
    }

    /// Why the registry ended this subscription, if it has.
    pub fn ending(&self) -> Option<Ending> {
        self.feed.ending.get().copied()
    }
}

/// What a subscriber gets next.
#[derive(Debug)]
pub enum Next {
    Event(StoredEvent),
    Ended(Ending),
}

/// Resolves once the registry ends the feed's subscription.
async fn ended(feed: &Feed) -> Ending {
    loop {
        if let Some(ending) = feed.ending.get() {
            return *ending;
        }
        feed.ended.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.unsubscribe(&self.feed, &self.topics);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::value::RawValue;

    use super::*;

    fn limits(buffer: usize) -> SubscriberLimits {
        SubscriberLimits { max_connections: 3, max_per_user: 2, buffer }
    }

    fn event(stream: StreamKey, seq: i64, watch_course: Option<Uuid>) -> StoredEvent {
        let payload = Arc::from(RawValue::from_string(format!("{{\"seq\":{seq}}}")).unwrap());
        StoredEvent { stream, seq, payload, watch_course }
    }

    #[tokio::test]
    async fn bounds_per_user_and_per_node_and_frees_on_drop() {
        let subscribers = Subscribers::new(limits(4));
        let (ann, ben) = (Uuid::now_v7(), Uuid::now_v7());
        let a1 = subscribers.subscribe(ann, &[]).unwrap();
        let _a2 = subscribers.subscribe(ann, &[]).unwrap();
        assert_eq!(subscribers.subscribe(ann, &[]).err().map(|e| e.code().as_str()), Some("RATE_LIMITED"));
        let _b1 = subscribers.subscribe(ben, &[]).unwrap();
        assert_eq!(subscribers.subscribe(ben, &[]).err().map(|e| e.code().as_str()), Some("UNAVAILABLE"));
        drop(a1);
        assert_eq!(subscribers.open(), 2);
        assert!(subscribers.subscribe(ann, &[]).is_ok());
    }

    #[tokio::test]
    async fn a_full_queue_ends_the_subscription_as_too_slow() {
        let subscribers = Subscribers::new(limits(2));
        let stream = StreamKey::messages(Uuid::now_v7());
        let mut sub = subscribers.subscribe(Uuid::now_v7(), &[Topic::Stream(stream)]).unwrap();
        for seq in 1..=2 {
            subscribers.notify(&event(stream, seq, None));
        }
        assert_eq!(sub.ending(), None);
        subscribers.notify(&event(stream, 3, None));
        assert_eq!(sub.ending(), Some(Ending::TooSlow));
        assert!(matches!(sub.next().await, Next::Ended(Ending::TooSlow)), "the end comes before what is queued");
        assert_eq!(sub.try_recv().map(|e| e.seq), Some(1), "what was queued stays readable");
    }

    #[tokio::test]
    async fn a_progress_event_reaches_a_subscriber_of_its_stream_and_its_watch_once() {
        let subscribers = Subscribers::new(limits(8));
        let (owner, course) = (Uuid::now_v7(), Uuid::now_v7());
        let progress = StreamKey::progress(owner);
        let mut both = subscribers.subscribe(owner, &[Topic::Stream(progress), Topic::Watch(course)]).unwrap();
        let mut watcher = subscribers.subscribe(Uuid::now_v7(), &[Topic::Watch(course)]).unwrap();
        subscribers.notify(&event(progress, 1, Some(course)));
        subscribers.notify(&event(StreamKey::progress(Uuid::now_v7()), 1, None));
        assert_eq!(both.try_recv().map(|e| e.seq), Some(1));
        assert!(both.try_recv().is_none(), "delivered once");
        assert_eq!(watcher.try_recv().map(|e| e.stream), Some(progress));
        assert!(watcher.try_recv().is_none());
    }

    #[tokio::test]
    async fn logout_and_shutdown_end_subscriptions() {
        let subscribers = Subscribers::new(limits(8));
        let (ann, ben) = (Uuid::now_v7(), Uuid::now_v7());
        let mut a = subscribers.subscribe(ann, &[]).unwrap();
        let mut b = subscribers.subscribe(ben, &[]).unwrap();
        subscribers.end_user(ann);
        assert!(matches!(a.next().await, Next::Ended(Ending::Revoked)));
        assert_eq!(b.ending(), None);
        subscribers.stop();
        assert!(matches!(b.next().await, Next::Ended(Ending::ShuttingDown)));
        assert!(subscribers.subscribe(ben, &[]).is_err());
    }
}
