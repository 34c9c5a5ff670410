//! The per-user socket limit across nodes, and the registry of live nodes it rests on.
//!
//! Each node keeps, per user and namespace, its own socket count in one Redis hash
//! (`{REDIS_CHANNEL}:sockets:{namespace}:{user}`, field = node), written as an
//! absolute value whenever it changes, so a lost or repeated write is repaired by
//! the next. A node proves it is alive by a heartbeat in `{REDIS_CHANNEL}:nodes`
//! (node -> Redis time of its last beat); counts of a node not heard for `NODE_TTL`
//! are ignored and deleted, so a node that dies without a goodbye stops counting
//! within that time.
//!
//! Admitting a socket is one script run (`ADMIT`): the other live nodes' counts plus
//! this node's must be below the limit, and this node's count is raised in the same
//! step, so two nodes cannot both admit the last slot. Without an answer within
//! `ADMIT_WITHIN` (Redis down or slow) the node admits on its own view, and says so
//! (`coursecast_cluster_fallbacks_total`, and `/readyz` shows Redis down).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use redis::{AsyncCommands, Script};
use uuid::Uuid;

use super::{Cluster, Outgoing};
use crate::{locks::lock, telemetry::metrics};

/// A node not heard for this long counts as gone.
pub const NODE_TTL: Duration = Duration::from_secs(15);
/// How often a node says it is alive.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Every this many beats a node rewrites all its counts (refreshing their expiry).
const REWRITE_EVERY_BEATS: u32 = 120;
/// A user's counts vanish this long after their last write: the rewrite keeps the
/// counts of connected users, and the rest need no clean-up.
const COUNTS_EXPIRE: Duration = Duration::from_secs(3600);
/// The longest an admission waits for Redis before the node decides alone.
const ADMIT_WITHIN: Duration = Duration::from_millis(250);

/// KEYS: the user's counts, the live nodes. ARGV: this node, its sockets of the
/// user now, the limit, NODE_TTL in ms, COUNTS_EXPIRE in ms. 1: admitted.
const ADMIT: &str = r"
local now = redis.call('TIME')
local live_after = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[4])
local others = 0
local counts = redis.call('HGETALL', KEYS[1])
for i = 1, #counts, 2 do
  if counts[i] ~= ARGV[1] then
    local seen = redis.call('ZSCORE', KEYS[2], counts[i])
    if seen and tonumber(seen) >= live_after then
      others = others + tonumber(counts[i + 1])
    else
      redis.call('HDEL', KEYS[1], counts[i])
    end
  end
end
local mine = tonumber(ARGV[2])
if others + mine >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], mine + 1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// KEYS: the live nodes. ARGV: this node, how long a gone node is kept listed (ms).
const HEARTBEAT: &str = r"
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[1], ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - tonumber(ARGV[2]))
return 1
";

/// Whether a new socket fits the user's limit across nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The user holds the limit's sockets across the nodes.
    Full,
    /// Redis did not answer in time: the node's own check is all there is.
    Unchecked,
}

/// What this node holds now, per (namespace, user): the source of the rewrites.
pub trait LocalSockets: Send + Sync {
    fn sockets_per_user(&self) -> Vec<(&'static str, Uuid, u32)>;
}

/// One user's count on this node, as written to Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketCount {
    key: String,
    count: u32,
}

/// The cluster's side of socket counting.
#[derive(Default)]
pub struct SocketCounts {
    local: OnceLock<Arc<dyn LocalSockets>>,
    /// Counts the relay could not write (Redis down), by key: written on recovery.
    unwritten: Mutex<HashMap<String, u32>>,
}

impl Cluster {
    fn sockets_key(&self, namespace: &str, user: Uuid) -> String {
        format!("{}:sockets:{}:{user}", self.channel, namespace.trim_start_matches('/'))
    }

    pub(super) fn nodes_key(&self) -> String {
        format!("{}:nodes", self.channel)
    }

    /// Says where this node's socket counts come from, and starts its heartbeat.
    pub fn count_sockets_of(self: &Arc<Self>, local: Arc<dyn LocalSockets>) {
        if self.sockets.local.set(local).is_ok() {
            tokio::spawn(heartbeat(Arc::downgrade(self)));
        }
    }

    /// Whether one more socket of `user` in `namespace` fits `limit` across the
    /// nodes, this node holding `mine` of them now; if so it is counted at once.
    pub async fn admit_socket(&self, namespace: &str, user: Uuid, mine: u32, limit: usize) -> Admission {
        if !self.is_up() {
            metrics::cluster_fallback("socket_limit");
            return Admission::Unchecked;
        }
        let mut conn = self.publisher.clone();
        let script = Script::new(ADMIT);
        let mut invocation = script.key(self.sockets_key(namespace, user));
        invocation
            .key(self.nodes_key())
            .arg(self.node.to_string())
            .arg(mine)
            .arg(limit)
            .arg(NODE_TTL.as_millis() as u64)
            .arg(COUNTS_EXPIRE.as_millis() as u64);
        match tokio::time::timeout(ADMIT_WITHIN, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(1)) => Admission::Admitted,
            Ok(Ok(_)) => Admission::Full,
            Ok(Err(_)) | Err(_) => {
                metrics::cluster_fallback("socket_limit");
                Admission::Unchecked
            }
        }
    }

    /// Records this node's count of `user`'s sockets in `namespace` (never waits:
    /// the relay writes it in order with everything else).
    pub fn set_sockets(&self, namespace: &str, user: Uuid, count: u32) {
        let key = self.sockets_key(namespace, user);
        if self.outbox.try_send(Outgoing::Sockets(SocketCount { key: key.clone(), count })).is_err() {
            self.sockets_unwritten(key, count);
        }
    }

    fn sockets_unwritten(&self, key: String, count: u32) {
        lock(&self.sockets.unwritten).insert(key, count);
    }

    /// Writes one count: absolute, so the latest write wins.
    pub(super) async fn write_sockets(&self, SocketCount { key, count }: SocketCount) -> Result<(), String> {
        let mut conn = self.publisher.clone();
        let mut pipe = redis::pipe();
        if count == 0 {
            pipe.hdel(&key, self.node.to_string());
        } else {
            pipe.hset(&key, self.node.to_string(), count).pexpire(&key, COUNTS_EXPIRE.as_millis() as i64);
        }
        match tokio::time::timeout(super::PUBLISH_WITHIN, pipe.exec_async(&mut conn)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                self.sockets_unwritten(key, count);
                Err(err.to_string())
            }
            Err(_) => {
                self.sockets_unwritten(key, count);
                Err("no answer within the deadline".to_owned())
            }
        }
    }

    /// A count the relay dropped while Redis was down.
    pub(super) fn sockets_dropped(&self, count: SocketCount) {
        self.sockets_unwritten(count.key, count.count);
    }

    /// Rewrites every count this node holds, then those it could not write.
    async fn rewrite_sockets(&self) -> Result<(), String> {
        let Some(local) = self.sockets.local.get() else { return Ok(()) };
        let mut counts: HashMap<String, u32> = std::mem::take(&mut *lock(&self.sockets.unwritten));
        for (namespace, user, count) in local.sockets_per_user() {
            counts.insert(self.sockets_key(namespace, user), count);
        }
        for (key, count) in counts {
            self.write_sockets(SocketCount { key, count }).await?;
        }
        Ok(())
    }

    async fn beat(&self) -> Result<(), String> {
        let mut conn = self.publisher.clone();
        let script = Script::new(HEARTBEAT);
        let mut invocation = script.key(self.nodes_key());
        invocation.arg(self.node.to_string()).arg((NODE_TTL * 20).as_millis() as u64);
        match tokio::time::timeout(super::PUBLISH_WITHIN, invocation.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err("no answer within the deadline".to_owned()),
        }
    }

    /// Says goodbye: other nodes stop counting this node's sockets, and forget its
    /// users' presence, at once.
    pub async fn leave_nodes(&self) {
        self.enqueue(self.channel.clone(), &super::Message::NodeLeft { node: self.node });
        let mut conn = self.publisher.clone();
        let goodbye = conn.zrem::<_, _, i64>(self.nodes_key(), self.node.to_string());
        drop(tokio::time::timeout(super::PUBLISH_WITHIN, goodbye).await);
    }
}

/// Beats every `HEARTBEAT_EVERY` while the cluster lives; after a beat that failed
/// (Redis down: other nodes may have dropped this node's counts) and every
/// `REWRITE_EVERY_BEATS`, rewrites every count.
async fn heartbeat(cluster: std::sync::Weak<Cluster>) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    let (mut rewrite, mut beats) = (true, 0u32);
    loop {
        every.tick().await;
        let Some(cluster) = cluster.upgrade() else { return };
        if cluster.beat().await.is_err() {
            rewrite = true;
            continue;
        }
        beats += 1;
        if rewrite || beats.is_multiple_of(REWRITE_EVERY_BEATS) {
            rewrite = cluster.rewrite_sockets().await.is_err();
        }
    }
}
