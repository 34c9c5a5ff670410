//! Token expiry of every live socket, kept by one task: `session:expiring` goes out
//! 60 s before the token's `exp` (at once if less is left), the socket is cut at
//! `exp`, and a `reauth` moves both. A timer task per socket cost about 1 KiB per idle
//! connection; here a socket costs two map entries.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use serde_json::json;
use socketioxide::extract::SocketRef;
use tokio::sync::Notify;

use super::{Session, catalog};
use crate::{locks::lock, streams::Timestamp};

/// `session:expiring` goes out this long before the token's `exp`.
const WARNING_SECS: i64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Warn,
    Cut,
}

struct Entry<S> {
    socket: S,
    exp: i64,
    stage: Stage,
}

/// Entries ordered by when they are due (unix seconds), then by session; `S` is the
/// socket (generic for the unit tests).
struct Queue<S> {
    due: BTreeMap<(i64, u64), Entry<S>>,
    /// When each session's entry is due, to find it on `reauth` and disconnect.
    index: HashMap<u64, i64>,
}

impl<S> Default for Queue<S> {
    fn default() -> Self {
        Self { due: BTreeMap::new(), index: HashMap::new() }
    }
}

impl<S: Clone> Queue<S> {
    fn remove(&mut self, session: u64) {
        if let Some(at) = self.index.remove(&session) {
            self.due.remove(&(at, session));
        }
    }

    /// Schedules the session's next step for a token expiring at `exp`; true if it
    /// is now the first entry due (the task must wake to sleep less).
    fn schedule(&mut self, session: u64, socket: S, exp: i64, stage: Stage) -> bool {
        self.remove(session);
        let at = match stage {
            Stage::Warn => exp - WARNING_SECS,
            Stage::Cut => exp,
        };
        self.due.insert((at, session), Entry { socket, exp, stage });
        self.index.insert(session, at);
        self.due.first_key_value().is_some_and(|(first, _)| *first == (at, session))
    }

    /// Takes every entry due at `now`. A warning's socket is scheduled again, in the
    /// same critical section, to be cut at `exp`, so a disconnect or `reauth` racing
    /// with the firing always finds an entry to remove.
    fn take_due(&mut self, now: i64) -> Vec<Entry<S>> {
        let later = self.due.split_off(&(now + 1, 0));
        let due = std::mem::replace(&mut self.due, later);
        let mut fired = Vec::with_capacity(due.len());
        for ((_, session), entry) in due {
            self.index.remove(&session);
            if entry.stage == Stage::Warn {
                self.schedule(session, entry.socket.clone(), entry.exp, Stage::Cut);
            }
            fired.push(entry);
        }
        fired
    }
}

pub struct Expiries {
    queue: Mutex<Queue<SocketRef>>,
    wake: Arc<Notify>,
}

impl Expiries {
    /// Starts the task; it ends once the returned value is dropped.
    pub fn start() -> Arc<Self> {
        let expiries = Arc::new(Self { queue: Mutex::default(), wake: Arc::new(Notify::new()) });
        tokio::spawn(run(Arc::downgrade(&expiries), expiries.wake.clone()));
        expiries
    }

    fn queue(&self) -> MutexGuard<'_, Queue<SocketRef>> {
        lock(&self.queue)
    }

    /// Watches a connected socket's token (and again after each `reauth`).
    pub fn watch(&self, session: &Session, socket: SocketRef) {
        if self.queue().schedule(session.id(), socket, session.expires_at(), Stage::Warn) {
            self.wake.notify_one();
        }
    }

    /// Stops watching a socket (it disconnected).
    pub fn forget(&self, session: &Session) {
        self.queue().remove(session.id());
    }
}

impl Drop for Expiries {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

async fn run(expiries: Weak<Expiries>, wake: Arc<Notify>) {
    loop {
        let Some(strong) = expiries.upgrade() else { return };
        let now_ms = chrono::Utc::now().timestamp_millis();
        let now = now_ms.div_euclid(1000);
        let fired = strong.queue().take_due(now);
        fired.into_iter().for_each(fire);
        let next = strong.queue().due.first_key_value().map(|((at, _), _)| *at);
        drop(strong);
        let sleep = next.map_or(Duration::MAX, |at| {
            Duration::from_millis(u64::try_from(at.saturating_mul(1000) - now_ms).unwrap_or(0))
        });
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(sleep.min(Duration::from_secs(86_400))) => {}
        }
    }
}

fn fire(entry: Entry<SocketRef>) {
    let Some(session) = entry.socket.extensions.get::<Arc<Session>>() else { return };
    // A `reauth` since the entry was taken moved the expiry; it is scheduled anew.
    if session.expires_at() != entry.exp {
        return;
    }
    match entry.stage {
        Stage::Warn => {
            let expires_at = Timestamp(entry.exp.saturating_mul(1000)).to_rfc3339();
            if let Err(err) = entry.socket.emit(catalog::server::SESSION_EXPIRING, &json!({"expiresAt": expires_at})) {
                tracing::debug!(error = %err, "session:expiring not delivered");
            }
        }
        Stage::Cut => {
            tracing::info!(socket_id = %entry.socket.id, user_id = %session.user.id, "token expired: disconnecting");
            if let Err(err) = entry.socket.disconnect() {
                tracing::debug!(error = %err, "socket already gone at expiry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn due(queue: &Queue<&'static str>) -> Vec<(i64, u64, &'static str, Stage)> {
        queue.due.iter().map(|((at, id), e)| (*at, *id, e.socket, e.stage)).collect()
    }

    #[test]
    fn warns_then_cuts_and_forgets() {
        let mut queue = Queue::default();
        assert!(queue.schedule(1, "a", 1_000, Stage::Warn), "the only entry is first");
        assert!(!queue.schedule(2, "b", 2_000, Stage::Warn), "a later entry is not first");
        assert_eq!(due(&queue), [(940, 1, "a", Stage::Warn), (1_940, 2, "b", Stage::Warn)]);

        assert!(queue.take_due(939).is_empty());
        let fired = queue.take_due(940);
        assert_eq!(fired.iter().map(|e| (e.socket, e.stage, e.exp)).collect::<Vec<_>>(), [("a", Stage::Warn, 1_000)]);
        assert_eq!(due(&queue), [(1_000, 1, "a", Stage::Cut), (1_940, 2, "b", Stage::Warn)]);

        queue.remove(1);
        assert_eq!(due(&queue), [(1_940, 2, "b", Stage::Warn)]);
        assert_eq!(queue.index.len(), 1);
    }

    #[test]
    fn reauth_replaces_the_entry() {
        let mut queue = Queue::default();
        queue.schedule(7, "a", 1_000, Stage::Warn);
        queue.take_due(950);
        assert_eq!(due(&queue), [(1_000, 7, "a", Stage::Cut)]);
        queue.schedule(7, "a", 5_000, Stage::Warn);
        assert_eq!(due(&queue), [(4_940, 7, "a", Stage::Warn)]);
        assert_eq!(queue.index.len(), 1);
    }

    #[test]
    fn an_expired_token_is_warned_then_cut_at_once() {
        let mut queue = Queue::default();
        queue.schedule(3, "a", 100, Stage::Warn);
        let first = queue.take_due(200);
        let second = queue.take_due(200);
        assert_eq!(first.iter().map(|e| e.stage).collect::<Vec<_>>(), [Stage::Warn]);
        assert_eq!(second.iter().map(|e| e.stage).collect::<Vec<_>>(), [Stage::Cut]);
        assert!(queue.due.is_empty() && queue.index.is_empty());
    }
}
