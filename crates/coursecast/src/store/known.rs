//! Facts storage remembers to spare a query per request, each with the reason it
//! may be trusted without asking the database again.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use super::{Course, UserAuthState};
use crate::{locks::lock, streams::StreamKey};

/// Courses are never edited or deleted and enrolments never removed (ids are never
/// reused), so a course once read and a membership once seen stay true; the sets
/// are cleared when they grow past a bound rather than kept in order.
///
/// Users' token state (role, revocation) does change, on logout and deletion: it is
/// forgotten at once on this node when it changes here, and when another node says
/// so (`forget_user`). With other nodes it is remembered for `AUTH_STATE_TTL` at
/// most, in case their notice is lost; a single node makes every change itself, so
/// it remembers the state until it changes (`trust_auth_until_changed`).
#[derive(Default)]
pub(super) struct Known {
    courses: Mutex<HashMap<Uuid, Course>>,
    members: Mutex<HashSet<(Uuid, Uuid)>>,
    auth: Mutex<HashMap<Uuid, (UserAuthState, Instant)>>,
    /// Streams' heads as this node delivered them; they only grow.
    heads: Mutex<HashMap<StreamKey, i64>>,
    /// Bumped by every `forget_user`: a state read before it is not remembered after.
    auth_epoch: AtomicU64,
    /// This node is the only one: token states need no expiry.
    auth_exact: AtomicBool,
}

/// How long a user's token state is trusted without a query. Bounds how long a
/// logout on another node can go unnoticed here if its notice is lost.
const AUTH_STATE_TTL: Duration = Duration::from_secs(5);

/// Entries each cache holds at most before it starts over.
pub(super) const KNOWN_MAX: usize = 100_000;

impl Known {
    pub(super) fn course(&self, id: Uuid) -> Option<Course> {
        lock(&self.courses).get(&id).cloned()
    }

    pub(super) fn remember_course(&self, course: &Course) {
        let mut courses = lock(&self.courses);
        if courses.len() >= KNOWN_MAX {
            courses.clear();
        }
        courses.insert(course.id, course.clone());
    }

    pub(super) fn auth_state(&self, user: Uuid) -> Option<UserAuthState> {
        let exact = self.auth_exact.load(Ordering::Relaxed);
        let auth = lock(&self.auth);
        auth.get(&user).filter(|(_, at)| exact || at.elapsed() < AUTH_STATE_TTL).map(|(state, _)| *state)
    }

    /// From now on token states are kept until `forget_user`, not `AUTH_STATE_TTL`.
    pub(super) fn trust_auth_until_changed(&self) {
        self.auth_exact.store(true, Ordering::Relaxed);
    }

    pub(super) fn auth_epoch(&self) -> u64 {
        self.auth_epoch.load(Ordering::Acquire)
    }

    /// Remembers a state read when the epoch was `epoch`, unless a user was forgotten since.
    pub(super) fn remember_auth_state(&self, user: Uuid, state: UserAuthState, epoch: u64) {
        let mut auth = lock(&self.auth);
        if self.auth_epoch() != epoch {
            return;
        }
        if auth.len() >= KNOWN_MAX {
            auth.retain(|_, (_, at)| at.elapsed() < AUTH_STATE_TTL);
            if auth.len() >= KNOWN_MAX {
                auth.clear();
            }
        }
        auth.insert(user, (state, Instant::now()));
    }

    pub(super) fn forget_user(&self, user: Uuid) {
        let mut auth = lock(&self.auth);
        self.auth_epoch.fetch_add(1, Ordering::AcqRel);
        auth.remove(&user);
    }

    pub(super) fn head(&self, stream: StreamKey) -> Option<i64> {
        lock(&self.heads).get(&stream).copied()
    }

    /// Raises the remembered head to `seq` (never lowers it); returns the head.
    pub(super) fn remember_head(&self, stream: StreamKey, seq: i64) -> i64 {
        let mut heads = lock(&self.heads);
        if heads.len() >= KNOWN_MAX && !heads.contains_key(&stream) {
            heads.clear();
        }
        let head = heads.entry(stream).or_insert(seq);
        *head = (*head).max(seq);
        *head
    }

    pub(super) fn is_member(&self, course: Uuid, user: Uuid) -> bool {
        lock(&self.members).contains(&(course, user))
    }

    pub(super) fn remember_member(&self, course: Uuid, user: Uuid) {
        let mut members = lock(&self.members);
        if members.len() >= KNOWN_MAX {
            members.clear();
        }
        members.insert((course, user));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_heads_only_grow() {
        let known = Known::default();
        let stream = StreamKey::messages(Uuid::now_v7());
        assert_eq!(known.head(stream), None);
        assert_eq!(known.remember_head(stream, 5), 5);
        assert_eq!(known.remember_head(stream, 3), 5, "a late storage read must not lower the head");
        assert_eq!(known.remember_head(stream, 6), 6);
        assert_eq!(known.head(stream), Some(6));
    }
}
