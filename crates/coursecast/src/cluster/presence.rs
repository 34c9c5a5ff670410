//! Presence across nodes, kept in Redis with expiry: per room and node, a set of
//! the users that node holds (`{REDIS_CHANNEL}:presence:{namespace}:{course}:{node}`).
//! Its node updates it every presence window and rewrites it, with a fresh expiry,
//! at every sync; each window's change also goes to the room's course channel, so
//! the other nodes with sockets in the room hear it at once. A node reads the other
//! live nodes' sets (`SNAPSHOT`; live as in `sockets`) when a room opens on it and at
//! every sync, which repairs what it missed and drops nodes that died.

use std::collections::{HashMap, HashSet};

use redis::Script;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Cluster, Message, Outgoing, sockets::NODE_TTL};
use crate::events::interest::Scope;

/// A node's set outlives its last rewrite by this much (several syncs): it
/// vanishes within it after its node dies.
const SET_EXPIRE_MS: i64 = 60_000;

/// KEYS: the live nodes. ARGV: the room's key prefix, this node, NODE_TTL in ms.
/// Returns node, count, users..., node, count, users... for every other live node.
const SNAPSHOT: &str = r"
local now = redis.call('TIME')
local live_after = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3])
local out = {}
for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], live_after, '+inf')) do
  if node ~= ARGV[2] then
    local users = redis.call('SMEMBERS', ARGV[1] .. node)
    table.insert(out, node)
    table.insert(out, tostring(#users))
    for _, user in ipairs(users) do table.insert(out, user) end
  end
end
return out
";

/// One node's net change in a room over one presence window.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub came: Vec<Uuid>,
    pub went: Vec<Uuid>,
}

/// A write to this node's set of a room.
pub(super) enum SetWrite {
    Change { key: String, change: PresenceChange },
    Rewrite { key: String, users: Vec<Uuid> },
}

/// The users each other live node holds in a room.
pub type RoomSnapshot = HashMap<Uuid, HashSet<Uuid>>;

impl Cluster {
    /// The prefix of a room's per-node sets (the node's id completes a key).
    fn room_prefix(&self, namespace: &str, course: Uuid) -> String {
        format!("{}:presence:{}:{course}:", self.channel, namespace.trim_start_matches('/'))
    }

    /// Tells the other nodes this node's change in a room, and records it in this
    /// node's set (never waits: the relay writes both in order).
    pub fn relay_presence(&self, namespace: &str, course: Uuid, change: &PresenceChange) {
        let key = format!("{}{}", self.room_prefix(namespace, course), self.node);
        self.write_set(SetWrite::Change { key, change: change.clone() });
        let message =
            Message::Presence { node: self.node, namespace: namespace.to_owned(), course, change: change.clone() };
        self.enqueue(self.scope_channel(Scope::Course(course)), &message);
    }

    /// Rewrites this node's set of a room (at every sync: repairs writes lost while
    /// Redis was down and renews the expiry).
    pub fn rewrite_presence(&self, namespace: &str, course: Uuid, users: Vec<Uuid>) {
        let key = format!("{}{}", self.room_prefix(namespace, course), self.node);
        self.write_set(SetWrite::Rewrite { key, users });
    }

    fn write_set(&self, write: SetWrite) {
        // A full outbox loses this write; the next sync's rewrite repairs it.
        if self.outbox.try_send(Outgoing::Presence(write)).is_err() {
            crate::telemetry::metrics::cluster_relay_dropped("outbox_full");
        }
    }

    pub(super) async fn write_presence(&self, write: SetWrite) -> Result<(), String> {
        let mut pipe = redis::pipe();
        pipe.atomic();
        let key = match write {
            SetWrite::Change { key, change } => {
                if !change.came.is_empty() {
                    pipe.sadd(&key, ids(&change.came)).ignore();
                }
                if !change.went.is_empty() {
                    pipe.srem(&key, ids(&change.went)).ignore();
                }
                key
            }
            SetWrite::Rewrite { key, users } => {
                pipe.del(&key).ignore();
                if !users.is_empty() {
                    pipe.sadd(&key, ids(&users)).ignore();
                }
                key
            }
        };
        pipe.pexpire(&key, SET_EXPIRE_MS).ignore();
        let mut conn = self.publisher.clone();
        super::within(pipe.exec_async(&mut conn)).await.map_err(|err| err.to_string())
    }

    /// The users every other live node holds in a room, read from Redis (within
    /// `PUBLISH_WITHIN`).
    pub async fn presence_snapshot(&self, namespace: &str, course: Uuid) -> anyhow::Result<RoomSnapshot> {
        let script = Script::new(SNAPSHOT);
        let mut invocation = script.key(self.nodes_key());
        invocation.arg(self.room_prefix(namespace, course)).arg(self.node.to_string()).arg(NODE_TTL.as_millis() as u64);
        let mut conn = self.publisher.clone();
        let flat: Vec<String> =
            tokio::time::timeout(super::PUBLISH_WITHIN, invocation.invoke_async(&mut conn)).await??;
        parse_snapshot(&flat)
    }
}

fn ids(users: &[Uuid]) -> Vec<String> {
    users.iter().map(Uuid::to_string).collect()
}

/// node, count, users..., repeated.
fn parse_snapshot(flat: &[String]) -> anyhow::Result<RoomSnapshot> {
    let mut snapshot = RoomSnapshot::new();
    let mut rest = flat;
    while let [node, count, tail @ ..] = rest {
        let count: usize = count.parse()?;
        anyhow::ensure!(tail.len() >= count, "a presence snapshot ended early");
        let users = tail[..count].iter().map(|user| Uuid::parse_str(user)).collect::<Result<HashSet<_>, _>>()?;
        snapshot.insert(Uuid::parse_str(node)?, users);
        rest = &tail[count..];
    }
    anyhow::ensure!(rest.is_empty(), "a presence snapshot ended early");
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_parse_per_node_and_refuse_a_truncated_answer() {
        let (a, b, u, v) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let flat: Vec<String> =
            [a.to_string(), "2".into(), u.to_string(), v.to_string(), b.to_string(), "0".into()].into();
        let snapshot = parse_snapshot(&flat).unwrap();
        assert_eq!(snapshot[&a], HashSet::from([u, v]));
        assert!(snapshot[&b].is_empty());
        assert!(parse_snapshot(&flat[..3]).is_err());
    }
}
