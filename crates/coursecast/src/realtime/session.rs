//! Per-socket state, kept in the socket's extensions: who it is, its client, its
//! event-rate bucket, the course rooms it joined, and its token's expiry.

use std::{
    num::NonZeroU32,
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering},
    },
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::DefaultClock};
use uuid::Uuid;

use super::{answers::Backlog, gate::ClientId};
use crate::{auth::Identity, error::AppError, locks::lock};

/// One clock for every socket's rate limiter: creating one (`DefaultClock::default`)
/// queries the CPU's features, 4 % of the server's time in the handshake profile.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// Numbers sessions (distinct where socket ids of two namespaces need not be).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

pub struct Session {
    id: u64,
    pub user: Identity,
    pub client: ClientId,
    limiter: DefaultDirectRateLimiter,
    burst: u32,
    /// Refused events since the last accepted one; too many and the socket is cut.
    strikes: AtomicU32,
    /// Set once the socket is being cut for flooding (the cut happens once).
    cut: AtomicBool,
    /// Course rooms this socket joined (for presence on disconnect).
    courses: Mutex<Vec<Uuid>>,
    /// The token's `exp` (unix seconds); moved by `reauth`.
    expires_at: AtomicI64,
    lifecycle: Mutex<Lifecycle>,
    /// Answers the socket's full buffer could not take yet (`answers`).
    pub backlog: Backlog,
}

/// Where a socket is between the handshake and its disconnect. Socket.IO runs the
/// connect handler in a task of its own, so a disconnect may come first; the
/// connection manager must then neither count it nor leave it counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lifecycle {
    Admitted,
    Counted,
    Closed,
}

impl Session {
    pub fn new(user: Identity, client: ClientId, events_per_sec: u32, burst: u32) -> Self {
        let rate = NonZeroU32::new(events_per_sec).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(rate);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            user,
            client,
            limiter: RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), CLOCK.clone()),
            burst: burst.get(),
            strikes: AtomicU32::new(0),
            cut: AtomicBool::new(false),
            courses: Mutex::new(Vec::new()),
            expires_at: AtomicI64::new(user.expires_at),
            lifecycle: Mutex::new(Lifecycle::Admitted),
            backlog: Backlog::default(),
        }
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        lock(&self.lifecycle)
    }

    /// Runs `count` once the socket is connected, unless it is already gone.
    pub fn count_in(&self, count: impl FnOnce()) {
        let mut lifecycle = self.lifecycle();
        if *lifecycle == Lifecycle::Admitted {
            count();
            *lifecycle = Lifecycle::Counted;
        }
    }

    /// Runs `uncount` at disconnect if the socket was counted; it is gone either way.
    pub fn count_out(&self, uncount: impl FnOnce()) {
        let mut lifecycle = self.lifecycle();
        if *lifecycle == Lifecycle::Counted {
            uncount();
        }
        *lifecycle = Lifecycle::Closed;
    }

    /// Takes one event from the bucket. `Ok(false)`: refused; `Err`: refused so often
    /// that the socket should be disconnected.
    pub fn take_event(&self) -> Result<bool, AppError> {
        if self.limiter.check().is_ok() {
            self.strikes.store(0, Ordering::Relaxed);
            return Ok(true);
        }
        let strikes = self.strikes.fetch_add(1, Ordering::Relaxed) + 1;
        if strikes > self.burst.saturating_mul(2) {
            return Err(AppError::RateLimited { retry_after_secs: 1 });
        }
        Ok(false)
    }

    /// True for the first caller only: that one cuts the flooding client.
    pub fn begin_cut(&self) -> bool {
        !self.cut.swap(true, Ordering::AcqRel)
    }

    fn courses(&self) -> std::sync::MutexGuard<'_, Vec<Uuid>> {
        lock(&self.courses)
    }

    /// Notes a joined course; false if it was already joined.
    pub fn join_course(&self, course: Uuid) -> bool {
        let mut courses = self.courses();
        if courses.contains(&course) {
            return false;
        }
        courses.push(course);
        true
    }

    /// Forgets a joined course; false if it was not joined.
    pub fn leave_course(&self, course: Uuid) -> bool {
        let mut courses = self.courses();
        let before = courses.len();
        courses.retain(|c| *c != course);
        courses.len() != before
    }

    pub fn has_joined(&self, course: Uuid) -> bool {
        self.courses().contains(&course)
    }

    /// Takes every joined course (on disconnect).
    pub fn take_courses(&self) -> Vec<Uuid> {
        std::mem::take(&mut *self.courses())
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The token's current `exp` (changes on `reauth`).
    pub fn expires_at(&self) -> i64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// Moves the expiry to a new token's `exp`.
    pub fn extend(&self, expires_at: i64) {
        self.expires_at.store(expires_at, Ordering::Relaxed);
    }
}
