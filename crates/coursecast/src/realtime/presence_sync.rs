//! Keeps each room's view of the other nodes' users current (`cluster::presence`
//! says where it lives in Redis): a room that opens on this node reads the others'
//! sets at once, and every `SYNC_EVERY` each room with sockets here rewrites this
//! node's set and reads the others' again, which repairs a missed change and drops
//! a node that died without a goodbye. While Redis is unreachable each node falls
//! back to its own users (and says so: `/readyz` shows Redis down, and one WARN
//! line); the next sync after it answers brings the others back.

use std::{sync::Arc, time::Duration};

use uuid::Uuid;

use super::{Namespace, Presence};
use crate::{
    cluster::{Cluster, PresenceChange},
    periodic,
    telemetry::metrics,
};

/// How often every room is synchronised with Redis.
const SYNC_EVERY: Duration = Duration::from_secs(10);

/// Another node's change, heard on the course's channel.
pub fn heard(presence: &Arc<Presence>, node: Uuid, namespace: &str, course: Uuid, change: &PresenceChange) {
    if let Some(namespace) = Namespace::from_path(namespace) {
        presence.apply_remote((namespace, course), node, change);
    }
}

/// Synchronises every room every `SYNC_EVERY` for as long as presence exists.
pub fn start(presence: &Arc<Presence>, cluster: Arc<Cluster>) {
    periodic::every(SYNC_EVERY, Arc::downgrade(presence), move |presence| {
        let cluster = cluster.clone();
        async move { sync_all(&presence, &cluster).await }
    });
}

/// Every room with sockets here: this node's set rewritten, the others' read.
pub async fn sync_all(presence: &Arc<Presence>, cluster: &Cluster) {
    for ((namespace, course), users) in presence.local_rooms() {
        cluster.rewrite_presence(namespace.path(), course, users);
        sync_room(presence, cluster, namespace, course).await;
    }
}

/// Reads the other live nodes' users of one room (at once when it opens here).
pub async fn sync_room(presence: &Arc<Presence>, cluster: &Cluster, namespace: Namespace, course: Uuid) {
    if !cluster.is_up() {
        return;
    }
    match cluster.presence_snapshot(namespace.path(), course).await {
        Ok(snapshot) => presence.replace_remote((namespace, course), &snapshot),
        Err(err) => {
            metrics::cluster_fallback("presence");
            tracing::debug!(error = %err, %course, "other nodes' presence not read");
        }
    }
}
