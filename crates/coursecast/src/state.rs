//! The state every HTTP handler and socket handler shares, safe to use from any
//! task. Cloning it copies one pointer: every socket keeps a clone per event
//! handler, so this keeps per-connection memory small.

use std::{ops::Deref, sync::Arc, time::Instant};

use uuid::Uuid;

use crate::{
    auth::{Authenticator, LoginFailures, PasswordHasher},
    config::Settings,
    events::{commands::Commands, interest::Interest, subscribers::Subscribers, waiters::Waiters},
    realtime::Realtime,
    store::Store,
    telemetry::live::LiveStats,
};

#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Ends every live connection of `user` (sockets and event streams) on every
    /// node: their tokens stopped holding (logout, deletion).
    pub async fn disconnect_user(&self, user: Uuid) {
        self.subscribers.end_user(user);
        self.realtime.disconnect_user(user).await;
    }
}

pub struct Shared {
    /// Read-only after start-up.
    pub settings: Arc<Settings>,
    /// Pools inside; every query goes through it.
    pub store: Store,
    /// Token verification plus the revocation check against `store`.
    pub auth: Authenticator,
    /// Argon2 on the blocking pool, with the dummy hash for unknown accounts.
    pub passwords: PasswordHasher,
    /// Failed logins per address and per account (only failures are charged).
    pub login_failures: LoginFailures,
    /// The one command path every door calls: validate, authorise, then publish
    /// (group commit, then fan-out).
    pub commands: Commands,
    /// Long-poll requests waiting for their stream to move.
    pub waiters: Arc<Waiters>,
    /// Server-Sent Events streams and their bounded live queues.
    pub subscribers: Arc<Subscribers>,
    /// The Socket.IO server and its connection manager.
    pub realtime: Realtime,
    /// The courses and users this node's clients listen to (routing between nodes).
    pub interest: Arc<Interest>,
    /// Recent delivery figures for the admin dashboard.
    pub stats: Arc<LiveStats>,
    /// When the process started serving, for `uptimeSeconds`.
    pub started_at: Instant,
}
