//! Per-socket state, kept in the socket's extensions: who it is, its client, its
//! event-rate bucket, the course rooms it joined, and its token's expiry timer.

use std::{
    num::NonZeroU32,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::DefaultClock};
use serde_json::json;
use socketioxide::extract::SocketRef;
use tokio::sync::watch;
use uuid::Uuid;

use super::gate::ClientId;
use crate::{auth::Identity, error::AppError, store::Timestamp};

/// One clock for every socket's rate limiter: creating one (`DefaultClock::default`)
/// queries the CPU's features, 4 % of the server's time in the handshake profile.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// `session:expiring` goes out this long before the token's `exp`.
const EXPIRY_WARNING_SECS: i64 = 60;

pub struct Session {
    pub user: Identity,
    pub client: ClientId,
    limiter: DefaultDirectRateLimiter,
    burst: u32,
    /// Refused events since the last accepted one; too many and the socket is cut.
    strikes: AtomicU32,
    /// Course rooms this socket joined (for presence on disconnect).
    courses: Mutex<Vec<Uuid>>,
    /// The token's `exp` (seconds); `None` stops the timer (socket gone).
    expiry: watch::Sender<Option<i64>>,
    lifecycle: Mutex<Lifecycle>,
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
            user,
            client,
            limiter: RateLimiter::direct_with_clock(Quota::per_second(rate).allow_burst(burst), CLOCK.clone()),
            burst: burst.get(),
            strikes: AtomicU32::new(0),
            courses: Mutex::new(Vec::new()),
            expiry: watch::Sender::new(Some(user.expires_at)),
            lifecycle: Mutex::new(Lifecycle::Admitted),
        }
    }

    fn lifecycle(&self) -> std::sync::MutexGuard<'_, Lifecycle> {
        self.lifecycle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    fn courses(&self) -> std::sync::MutexGuard<'_, Vec<Uuid>> {
        self.courses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

    /// The token's current `exp` (changes on `reauth`).
    pub fn expires_at(&self) -> i64 {
        self.expiry.borrow().unwrap_or(self.user.expires_at)
    }

    /// Moves the expiry to a new token's `exp`.
    pub fn extend(&self, expires_at: i64) {
        self.expiry.send_replace(Some(expires_at));
    }

    /// Stops the expiry timer.
    pub fn close(&self) {
        self.expiry.send_replace(None);
    }

    /// Emits `session:expiring` 60 s before `exp` (at once if less is left) and
    /// disconnects at `exp`; a `reauth` restarts both for the new `exp`.
    pub fn spawn_expiry_timer(self: &Arc<Self>, socket: SocketRef) {
        let mut expiry = self.expiry.subscribe();
        tokio::spawn(async move {
            loop {
                let Some(exp) = *expiry.borrow_and_update() else { return };
                let until =
                    |at: i64| Duration::from_secs(u64::try_from(at - chrono::Utc::now().timestamp()).unwrap_or(0));
                let expire = async {
                    tokio::time::sleep(until(exp - EXPIRY_WARNING_SECS)).await;
                    let expires_at = Timestamp(exp.saturating_mul(1000)).to_rfc3339();
                    if let Err(err) = socket.emit("session:expiring", &json!({"expiresAt": expires_at})) {
                        tracing::debug!(error = %err, "session:expiring not delivered");
                    }
                    tokio::time::sleep(until(exp)).await;
                };
                tokio::select! {
                    changed = expiry.changed() => if changed.is_err() { return },
                    () = expire => {
                        tracing::info!(socket_id = %socket.id, user_id = %socket_user(&socket), "token expired: disconnecting");
                        if let Err(err) = socket.disconnect() {
                            tracing::debug!(error = %err, "socket already gone at expiry");
                        }
                        return;
                    }
                }
            }
        });
    }
}

fn socket_user(socket: &SocketRef) -> String {
    socket.extensions.get::<Arc<Session>>().map(|s| s.user.id.to_string()).unwrap_or_default()
}
