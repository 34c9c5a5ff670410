//! What this node's clients listen to, so that with several nodes each receives only
//! the events of courses and users it serves (interest-based routing), not every
//! event of the platform.
//!
//! Every stream belongs to a [`Scope`]: a course (its messages, annotations and the
//! progress of its analyses, for watchers) or a user (notifications, progress). The
//! transports say when a client starts to hold a scope ([`Interest::want`]); the
//! cluster relay subscribes to that scope's channel and confirms. Letting go needs
//! no call: every `SWEEP_EVERY` the transports are asked what they still hold
//! ([`Holder`]), and scopes nobody held for `LINGER` are given up. The linger keeps
//! a long-poll client, which holds its stream only while a request waits, and a
//! socket that reconnects, subscribed between requests.
//!
//! On one node (no `REDIS_URL`) there is nothing to route: `want` returns at once.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::{
    locks::lock,
    periodic,
    streams::{Owner, StoredEvent, StreamKey},
    telemetry::metrics,
};

/// How often the transports are asked what they hold.
const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long a scope nobody holds stays subscribed.
const LINGER: Duration = Duration::from_secs(30);
/// The longest a client waits for its scope's subscription before it reads the
/// stream: past it (Redis slow or down) it goes on, and repairs a missed event by
/// its `seq` gap, as after any relay loss.
const SUBSCRIBE_WITHIN: Duration = Duration::from_millis(250);

/// Whose events a client listens to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Course(Uuid),
    User(Uuid),
}

impl Scope {
    /// The scope a stream belongs to.
    pub fn of(stream: StreamKey) -> Self {
        match stream.kind.owner() {
            Owner::Course => Self::Course(stream.id),
            Owner::User => Self::User(stream.id),
        }
    }

    /// The scopes whose listeners an event reaches: its stream's, and for progress
    /// events its analysis's course (the professors and ADMINs watching it).
    pub fn reached_by(event: &StoredEvent) -> impl Iterator<Item = Scope> {
        std::iter::once(Self::of(event.stream)).chain(event.watch_course.map(Self::Course))
    }
}

/// A change the cluster relay applies to its subscriptions, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Subscribe(Scope),
    Unsubscribe(Scope),
}

/// A transport that holds scopes for its clients (sockets in rooms, event streams,
/// long-poll streams), asked at every sweep.
pub trait Holder: Send + Sync {
    fn held(&self) -> BoxFuture<'_, Vec<Scope>>;
}

struct Wanted {
    last_held: Instant,
    /// Whether the relay confirmed the subscription (reset when its link drops).
    subscribed: Arc<Subscribed>,
}

#[derive(Default)]
struct Subscribed {
    done: AtomicBool,
    notify: Notify,
}

impl Subscribed {
    fn set(&self, done: bool) {
        self.done.store(done, Ordering::Release);
        if done {
            self.notify.notify_waiters();
        }
    }

    async fn within(&self, limit: Duration) {
        let notified = self.notify.notified();
        if self.done.load(Ordering::Acquire) {
            return;
        }
        drop(tokio::time::timeout(limit, notified).await);
    }
}

/// This node's interest, shared by the transports (which add to it) and the
/// cluster relay (which subscribes to it).
pub struct Interest {
    /// `None` on a single node: nothing to route.
    changes: Option<mpsc::UnboundedSender<Change>>,
    wanted: Mutex<HashMap<Scope, Wanted>>,
    /// Whether the relay is subscribed at all: while it is not (Redis down), a
    /// client has nothing to wait for.
    linked: AtomicBool,
}

impl Interest {
    /// A single node's interest: every call is a no-op.
    pub fn single_node() -> Arc<Self> {
        Arc::new(Self { changes: None, wanted: Mutex::default(), linked: AtomicBool::new(false) })
    }

    /// Interest routed to other nodes: the receiver takes the changes to apply.
    pub fn routed() -> (Arc<Self>, mpsc::UnboundedReceiver<Change>) {
        let (changes, receiver) = mpsc::unbounded_channel();
        let interest = Self { changes: Some(changes), wanted: Mutex::default(), linked: AtomicBool::new(false) };
        (Arc::new(interest), receiver)
    }

    /// Says a client of this node now listens to `scope`; returns once the relay
    /// has subscribed to it, or after `SUBSCRIBE_WITHIN`. Call it before reading the
    /// stream, so that an event committed elsewhere meanwhile is read or relayed.
    pub async fn want(&self, scope: Scope) {
        let Some(changes) = &self.changes else { return };
        let subscribed = {
            let mut wanted = lock(&self.wanted);
            match wanted.get_mut(&scope) {
                Some(entry) => {
                    entry.last_held = Instant::now();
                    entry.subscribed.clone()
                }
                None => {
                    let subscribed = Arc::new(Subscribed::default());
                    wanted.insert(scope, Wanted { last_held: Instant::now(), subscribed: subscribed.clone() });
                    metrics::cluster_scopes(wanted.len());
                    // The receiver lives as long as the relay; without it the
                    // subscription is simply never confirmed.
                    let _ = changes.send(Change::Subscribe(scope));
                    subscribed
                }
            }
        };
        if self.linked.load(Ordering::Acquire) {
            subscribed.within(SUBSCRIBE_WITHIN).await;
        }
    }

    /// Whether a client of this node listens to `scope`.
    pub fn holds(&self, scope: Scope) -> bool {
        lock(&self.wanted).contains_key(&scope)
    }

    /// Every scope wanted now (what the relay subscribes to after reconnecting).
    pub fn wanted(&self) -> Vec<Scope> {
        lock(&self.wanted).keys().copied().collect()
    }

    /// The relay confirms the subscriptions to `scopes`.
    pub fn confirm(&self, scopes: &[Scope]) {
        let wanted = lock(&self.wanted);
        for scope in scopes {
            if let Some(entry) = wanted.get(scope) {
                entry.subscribed.set(true);
            }
        }
    }

    /// The relay's subscription link came up or went down; down withdraws every
    /// confirmation (they are made again after resubscribing).
    pub fn linked(&self, up: bool) {
        self.linked.store(up, Ordering::Release);
        if !up {
            for entry in lock(&self.wanted).values() {
                entry.subscribed.set(false);
            }
        }
    }

    /// Keeps the scopes the holders hold, and gives up those nobody held for
    /// `LINGER`, every `SWEEP_EVERY`, for as long as the interest exists.
    pub fn start_sweeping(self: &Arc<Self>, holders: Vec<Arc<dyn Holder>>) {
        if self.changes.is_none() {
            return;
        }
        // Held weakly: the waiters hold this interest, so a strong hold here would
        // keep the sweep (and them) alive after the app is gone.
        let holders: Arc<[Weak<dyn Holder>]> = holders.iter().map(Arc::downgrade).collect();
        periodic::every(SWEEP_EVERY, Arc::downgrade(self), move |interest| {
            let holders = holders.clone();
            async move {
                let mut held = HashSet::new();
                for holder in holders.iter().filter_map(Weak::upgrade) {
                    held.extend(holder.held().await);
                }
                interest.sweep(&held, Instant::now());
            }
        });
    }

    fn sweep(&self, held: &HashSet<Scope>, now: Instant) {
        let Some(changes) = &self.changes else { return };
        let mut wanted = lock(&self.wanted);
        for scope in held {
            if !wanted.contains_key(scope) {
                // Held without a `want` (it should not happen): route it anyway.
                wanted.insert(*scope, Wanted { last_held: now, subscribed: Arc::default() });
                let _ = changes.send(Change::Subscribe(*scope));
            }
        }
        wanted.retain(|scope, entry| {
            if held.contains(scope) {
                entry.last_held = now;
                return true;
            }
            let keep = now.duration_since(entry.last_held) < LINGER;
            if !keep {
                let _ = changes.send(Change::Unsubscribe(*scope));
            }
            keep
        });
        metrics::cluster_scopes(wanted.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(receiver: &mut mpsc::UnboundedReceiver<Change>) -> Vec<Change> {
        std::iter::from_fn(|| receiver.try_recv().ok()).collect()
    }

    #[tokio::test]
    async fn a_scope_is_subscribed_once_and_given_up_after_nobody_held_it_for_the_linger() {
        let (interest, mut changes) = Interest::routed();
        let course = Scope::Course(Uuid::now_v7());
        interest.want(course).await;
        interest.want(course).await;
        assert_eq!(drain(&mut changes), [Change::Subscribe(course)]);

        let start = Instant::now();
        interest.sweep(&HashSet::from([course]), start + LINGER * 2);
        assert!(interest.holds(course), "held at the sweep");
        interest.sweep(&HashSet::new(), start + LINGER * 2 + LINGER / 2);
        assert!(interest.holds(course), "within the linger");
        interest.sweep(&HashSet::new(), start + LINGER * 4);
        assert!(!interest.holds(course));
        assert_eq!(drain(&mut changes), [Change::Unsubscribe(course)]);
    }

    #[tokio::test]
    async fn want_returns_when_confirmed_or_after_its_deadline_and_at_once_while_unlinked() {
        let (interest, _changes) = Interest::routed();
        let (user, other) = (Scope::User(Uuid::now_v7()), Scope::User(Uuid::now_v7()));
        let started = Instant::now();
        interest.want(user).await;
        assert!(started.elapsed() < SUBSCRIBE_WITHIN / 2, "no link: nothing to wait for");

        interest.linked(true);
        let started = Instant::now();
        interest.want(other).await;
        assert!(started.elapsed() >= SUBSCRIBE_WITHIN, "unconfirmed: waits out the deadline");

        interest.confirm(&[user]);
        let started = Instant::now();
        interest.want(user).await;
        assert!(started.elapsed() < SUBSCRIBE_WITHIN / 2, "confirmed: no wait");
    }

    #[tokio::test]
    async fn a_single_node_routes_nothing() {
        let interest = Interest::single_node();
        interest.want(Scope::Course(Uuid::now_v7())).await;
        assert!(interest.wanted().is_empty());
    }

    #[test]
    fn progress_reaches_its_user_and_its_course_watchers() {
        let (user, course) = (Uuid::now_v7(), Uuid::now_v7());
        let payload: Arc<serde_json::value::RawValue> =
            serde_json::value::RawValue::from_string("{}".into()).unwrap().into();
        let event = StoredEvent { stream: StreamKey::progress(user), seq: 1, payload, watch_course: Some(course) };
        assert_eq!(Scope::reached_by(&event).collect::<Vec<_>>(), [Scope::User(user), Scope::Course(course)]);
    }
}
