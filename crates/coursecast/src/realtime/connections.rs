//! The connection manager: who is connected, per client, per namespace and per user
//! (course rooms are `presence`'s). Every record is removed when its socket disconnects, so the maps
//! hold only live connections (`stats` shows their sizes; a test checks they drain).
//!
//! One `std::sync::Mutex` guards all maps: every operation is a few hash-map updates
//! and the lock is never held across an `.await`.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard},
};

use serde::Serialize;
use uuid::Uuid;

use super::{Namespace, gate::ClientId};
use crate::{cluster::LocalSockets, error::ErrorCode, locks::lock, telemetry::metrics};

pub struct Connections {
    max_clients: usize,
    max_sockets_per_user: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Sockets per Engine.IO client; a client counts while it has one.
    clients: HashMap<ClientId, u32>,
    /// Sockets per namespace.
    by_namespace: HashMap<Namespace, usize>,
    /// Sockets per user per namespace (the per-user limit).
    per_user: HashMap<(Namespace, Uuid), u32>,
}

/// Sizes of every map, for `/api/realtime/status` and the drain test.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionStats {
    pub clients: usize,
    pub sockets: usize,
    #[schema(value_type = std::collections::BTreeMap<String, usize>)]
    pub by_namespace: HashMap<Namespace, usize>,
    pub user_entries: usize,
}

impl Connections {
    pub fn new(max_clients: usize, max_sockets_per_user: usize) -> Self {
        Self { max_clients, max_sockets_per_user, inner: Mutex::new(Inner::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: keep serving.
        lock(&self.inner)
    }

    /// Whether a new socket of `user` from `client` fits the limits (`SERVER_FULL`).
    pub fn check(&self, namespace: Namespace, client: ClientId, user: Uuid) -> Result<(), ErrorCode> {
        let inner = self.lock();
        if !inner.clients.contains_key(&client) && inner.clients.len() >= self.max_clients {
            return Err(ErrorCode::ServerFull);
        }
        let sockets = inner.per_user.get(&(namespace, user)).copied().unwrap_or(0);
        if sockets as usize >= self.max_sockets_per_user {
            return Err(ErrorCode::ServerFull);
        }
        Ok(())
    }

    /// The user's sockets in the namespace on this node.
    pub fn user_sockets(&self, namespace: Namespace, user: Uuid) -> u32 {
        self.lock().per_user.get(&(namespace, user)).copied().unwrap_or(0)
    }

    /// Counts a socket in; returns the user's sockets in the namespace now.
    pub fn register(&self, namespace: Namespace, client: ClientId, user: Uuid) -> u32 {
        let mut inner = self.lock();
        *inner.clients.entry(client).or_default() += 1;
        *inner.by_namespace.entry(namespace).or_default() += 1;
        let sockets = inner.per_user.entry((namespace, user)).or_default();
        *sockets += 1;
        let sockets = *sockets;
        inner.publish_gauges(namespace);
        sockets
    }

    /// Counts a socket out; returns the user's sockets in the namespace now.
    pub fn release(&self, namespace: Namespace, client: ClientId, user: Uuid) -> u32 {
        let mut inner = self.lock();
        decrement(&mut inner.clients, client);
        if let Some(count) = inner.by_namespace.get_mut(&namespace) {
            *count = count.saturating_sub(1);
        }
        decrement(&mut inner.per_user, (namespace, user));
        let sockets = inner.per_user.get(&(namespace, user)).copied().unwrap_or(0);
        inner.publish_gauges(namespace);
        sockets
    }

    pub fn stats(&self) -> ConnectionStats {
        let inner = self.lock();
        ConnectionStats {
            clients: inner.clients.len(),
            sockets: inner.by_namespace.values().sum(),
            by_namespace: Namespace::ALL
                .into_iter()
                .map(|ns| (ns, inner.by_namespace.get(&ns).copied().unwrap_or(0)))
                .collect(),
            user_entries: inner.per_user.len(),
        }
    }
}

/// The counts the cluster rewrites into Redis after an outage.
impl LocalSockets for Connections {
    fn sockets_per_user(&self) -> Vec<(&'static str, Uuid, u32)> {
        self.lock().per_user.iter().map(|(&(namespace, user), &count)| (namespace.path(), user, count)).collect()
    }
}

impl Inner {
    fn publish_gauges(&self, namespace: Namespace) {
        metrics::clients(self.clients.len());
        metrics::sockets(namespace.path(), self.by_namespace.get(&namespace).copied().unwrap_or(0));
    }
}

/// Counts one down, removing the entry at zero; true if it reached zero.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32>, key: K) -> bool {
    match map.get_mut(&key) {
        Some(count) if *count > 1 => {
            *count -= 1;
            false
        }
        Some(_) => {
            map.remove(&key);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_clients_and_sockets_per_user() {
        let conns = Connections::new(2, 2);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        conns.register(Namespace::Chat, ClientId(1), alice);
        conns.register(Namespace::Notifications, ClientId(1), alice);
        assert_eq!(conns.check(Namespace::Chat, ClientId(1), alice), Ok(()));
        conns.register(Namespace::Chat, ClientId(2), alice);
        assert_eq!(conns.check(Namespace::Chat, ClientId(2), alice), Err(ErrorCode::ServerFull), "per user");
        assert_eq!(conns.check(Namespace::Chat, ClientId(3), bob), Err(ErrorCode::ServerFull), "global");
        assert_eq!(conns.check(Namespace::Chat, ClientId(2), bob), Ok(()), "an existing client may add sockets");
        assert_eq!(conns.stats().clients, 2);
        assert_eq!(conns.stats().sockets, 3);
    }

    #[test]
    fn records_drain() {
        let conns = Connections::new(10, 10);
        let alice = Uuid::new_v4();
        conns.register(Namespace::Chat, ClientId(1), alice);
        conns.release(Namespace::Chat, ClientId(1), alice);
        let stats = conns.stats();
        assert_eq!((stats.clients, stats.sockets, stats.user_entries), (0, 0, 0));
    }
}
