//! Who is online in each course room (per namespace), and what the room hears about
//! it: coalesced `presence` diffs, pages of online users, and the throttles of the
//! ephemeral events (`typing`, `cursor`). PROTOCOL.md section 3.
//!
//! With several nodes a room also holds, per other node, the users online there
//! (`presence_sync` keeps them current), and a user is online while any node holds
//! one of their sockets. This node's own changes of each window are handed to the
//! cluster with the diff, so the other nodes hear them once per window too.
//!
//! Every operation costs O(1) in the room's size (a page is a bounded range of an
//! ordered map), so filling a course of N costs N times a course of one. Joins and
//! leaves only mark a room's pending diff; one timer task per active room sends it
//! once per window (`PRESENCE_WINDOW`), so a burst of joins becomes one broadcast.
//!
//! One `std::sync::Mutex` guards the map: each call is a few map updates and the lock
//! is never held across an `.await`.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound,
    sync::{Arc, LazyLock, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use serde::Serialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use uuid::Uuid;

use super::{Namespace, catalog, rooms};
use crate::{
    cluster::{Cluster, PresenceChange, RoomSnapshot},
    config::Settings,
    locks::lock,
    telemetry::metrics,
};

/// The bounds of presence, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct PresenceLimits {
    pub window: Duration,
    /// Rooms larger than this get counts, not lists, in their diffs.
    pub list_max: usize,
    /// The window of those larger rooms.
    pub count_window: Duration,
    pub typing_every: Duration,
    pub cursor_every: Duration,
    /// Ephemeral relays per room per second, all users together.
    pub room_relays_per_sec: u32,
}

impl PresenceLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            window: settings.presence_window(),
            list_max: settings.presence_list_max,
            count_window: Duration::from_millis(settings.presence_count_window_ms),
            typing_every: Duration::from_millis(settings.typing_interval_ms),
            cursor_every: Duration::from_millis(settings.cursor_interval_ms),
            room_relays_per_sec: settings.ephemeral_room_per_sec,
        }
    }
}

/// Online users in a `join` ack: a bounded first page, whatever the room's size.
pub const FIRST_PAGE: usize = 100;

/// The `join` ack's view of a room: how many are online and the first page of them,
/// serialized (`[userId, ...]`); the page is empty in a room above `list_max`.
pub struct FirstPage {
    pub count: usize,
    pub online: Arc<RawValue>,
}

/// A room's first page as last serialized, shared by every join until a user on it
/// comes or goes: in a big room almost every join and leave falls past its end.
struct CachedPage {
    online: Arc<RawValue>,
    /// The page's last user when it is full; `None`: it lists everybody online.
    last: Option<Uuid>,
}

impl CachedPage {
    /// Whether `user` coming or going changes the page.
    fn covers(&self, user: Uuid) -> bool {
        self.last.is_none_or(|last| user <= last)
    }
}

/// The ephemeral events a room relays without storing them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ephemeral {
    Typing,
    Cursor,
}

/// One page of a room's online users, ordered by user id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OnlinePage {
    pub count: usize,
    pub online: Vec<Uuid>,
    pub has_more: bool,
}

/// The `presence` event: the net change of one window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceDiff {
    pub course_id: Uuid,
    /// Absent when the room is above `PRESENCE_LIST_MAX` (count only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online: Option<Vec<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offline: Option<Vec<Uuid>>,
    pub count: usize,
}

pub type RoomKey = (Namespace, Uuid);

/// What a room's timer does when it fires.
enum Flush {
    Announce(PresenceDiff),
    /// A big room's count is not due yet: wait this much more.
    Later(Duration),
    Nothing,
}

/// One room as the dashboard shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomFigures {
    #[schema(value_type = String)]
    pub namespace: Namespace,
    pub course_id: Uuid,
    /// Online users.
    pub members: usize,
    pub sockets: usize,
    /// Stored events broadcast to it since it opened.
    pub events: u64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopRooms {
    pub by_members: Vec<RoomFigures>,
    pub by_traffic: Vec<RoomFigures>,
}

pub struct Presence {
    limits: PresenceLimits,
    io: SocketIo,
    rooms: Mutex<HashMap<RoomKey, Room>>,
    /// The other nodes, which hear this node's changes (`None` on one node).
    cluster: Option<Arc<Cluster>>,
}

#[derive(Default)]
struct Room {
    /// Present users, on this node or another, ordered so that a page is a range.
    users: BTreeMap<Uuid, Member>,
    /// Net changes since the last diff: a user who came and went is in neither.
    came: HashSet<Uuid>,
    went: HashSet<Uuid>,
    /// This node's own net changes since the last window, for the other nodes.
    local: NetChange,
    /// The users online on each other node.
    remote: HashMap<Uuid, HashSet<Uuid>>,
    /// The count the last diff announced (a window with no net change sends nothing).
    announced: usize,
    /// A diff is due: its timer task is running (one per room at most).
    flush_due: bool,
    /// When the room last announced, or opened: a room above `list_max` waits
    /// `count_window` from then, so a lecture filling up hears one count, not one a
    /// window.
    announced_at: Option<Instant>,
    /// Ephemeral relays in the current one-second window, and when it started.
    relays: u32,
    relays_since: Option<Instant>,
    /// Sockets in the room (a user's several sockets each count): the copies a
    /// broadcast to the room makes.
    sockets: usize,
    /// Stored events broadcast to the room since it opened (the dashboard's traffic).
    events: u64,
    first_page: Option<CachedPage>,
}

/// Users who came and went, net: one who came and went again is in neither.
#[derive(Default)]
struct NetChange {
    came: HashSet<Uuid>,
    went: HashSet<Uuid>,
}

impl NetChange {
    fn came(&mut self, user: Uuid) {
        if !self.went.remove(&user) {
            self.came.insert(user);
        }
    }

    fn went(&mut self, user: Uuid) {
        if !self.came.remove(&user) {
            self.went.insert(user);
        }
    }

    fn take(&mut self) -> Option<PresenceChange> {
        if self.came.is_empty() && self.went.is_empty() {
            return None;
        }
        Some(PresenceChange {
            came: sorted(std::mem::take(&mut self.came)),
            went: sorted(std::mem::take(&mut self.went)),
        })
    }
}

fn sorted(set: HashSet<Uuid>) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = set.into_iter().collect();
    ids.sort_unstable();
    ids
}

#[derive(Default)]
struct Member {
    /// This user's sockets in the room on this node.
    sockets: u32,
    /// Other nodes holding a socket of this user in the room. The user is online
    /// while either is above zero.
    nodes: u32,
    last_typing: Option<Instant>,
    last_cursor: Option<Instant>,
}

impl Member {
    fn present(&self) -> bool {
        self.sockets > 0 || self.nodes > 0
    }
}

impl Room {
    /// Net changes as this node's sockets see them.
    fn appeared(&mut self, user: Uuid) {
        self.first_page.take_if(|page| page.covers(user));
        if !self.went.remove(&user) {
            self.came.insert(user);
        }
    }

    fn vanished(&mut self, user: Uuid) {
        self.users.remove(&user);
        self.first_page.take_if(|page| page.covers(user));
        if !self.came.remove(&user) {
            self.went.insert(user);
        }
    }

    /// `node` holds `user` now; true if that changed anything.
    fn add_remote(&mut self, node: Uuid, user: Uuid) -> bool {
        if !self.remote.entry(node).or_default().insert(user) {
            return false;
        }
        let member = self.users.entry(user).or_default();
        let was_present = member.present();
        member.nodes += 1;
        if !was_present {
            self.appeared(user);
        }
        true
    }

    /// `node` holds `user` no longer; true if that changed anything.
    fn remove_remote(&mut self, node: Uuid, user: Uuid) -> bool {
        let Some(users) = self.remote.get_mut(&node) else { return false };
        if !users.remove(&user) {
            return false;
        }
        if users.is_empty() {
            self.remote.remove(&node);
        }
        let Some(member) = self.users.get_mut(&user) else { return true };
        member.nodes = member.nodes.saturating_sub(1);
        if !member.present() {
            self.vanished(user);
        }
        true
    }

    /// Replaces `node`'s users with `users`; true if that changed anything.
    fn replace_remote(&mut self, node: Uuid, users: &HashSet<Uuid>) -> bool {
        let held = self.remote.get(&node).cloned().unwrap_or_default();
        let mut changed = false;
        for user in held.difference(users) {
            changed |= self.remove_remote(node, *user);
        }
        for user in users.difference(&held) {
            changed |= self.add_remote(node, *user);
        }
        changed
    }

    /// The users online on this node.
    fn local_users(&self) -> Vec<Uuid> {
        self.users.iter().filter(|(_, member)| member.sockets > 0).map(|(id, _)| *id).collect()
    }
}

impl Presence {
    pub fn new(io: SocketIo, limits: PresenceLimits, cluster: Option<Arc<Cluster>>) -> Self {
        Self { limits, io, rooms: Mutex::new(HashMap::new()), cluster }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomKey, Room>> {
        lock(&self.rooms)
    }

    /// One more socket of `user` in the room; their first makes them online. True
    /// if the room opened on this node with it (its other nodes' users are not
    /// known yet).
    pub fn enter(self: &Arc<Self>, namespace: Namespace, course: Uuid, user: Uuid) -> bool {
        let mut rooms = self.lock();
        let opened = rooms.get(&(namespace, course)).is_none_or(|room| room.sockets == 0);
        let room = rooms.entry((namespace, course)).or_default();
        room.announced_at.get_or_insert_with(Instant::now);
        room.sockets += 1;
        let member = room.users.entry(user).or_default();
        let was_present = member.present();
        member.sockets += 1;
        if member.sockets == 1 {
            // Only other nodes need this node's own changes.
            if self.cluster.is_some() {
                room.local.came(user);
            }
            if !was_present {
                room.appeared(user);
            }
            self.schedule(room, (namespace, course));
        }
        opened
    }

    /// One socket fewer; the user's last makes them offline. Leaving twice is harmless.
    pub fn leave(self: &Arc<Self>, namespace: Namespace, course: Uuid, user: Uuid) {
        let mut rooms = self.lock();
        let key = (namespace, course);
        let Some(room) = rooms.get_mut(&key) else { return };
        let Some(member) = room.users.get_mut(&user) else { return };
        if member.sockets == 0 {
            return;
        }
        room.sockets -= 1;
        member.sockets -= 1;
        if member.sockets > 0 {
            return;
        }
        let present = member.present();
        if self.cluster.is_some() {
            room.local.went(user);
        }
        if !present {
            room.vanished(user);
        }
        self.schedule(room, key);
    }

    /// Another node's change in a room this node has sockets in (others are not
    /// followed: nobody here would hear of them).
    pub fn apply_remote(self: &Arc<Self>, key: RoomKey, node: Uuid, change: &PresenceChange) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&key).filter(|room| room.sockets > 0) else { return };
        let mut changed = false;
        for user in &change.came {
            changed |= room.add_remote(node, *user);
        }
        for user in &change.went {
            changed |= room.remove_remote(node, *user);
        }
        if changed {
            self.schedule(room, key);
        }
    }

    /// The users each other node holds in a room, as read from Redis: nodes absent
    /// from `nodes` hold nobody there.
    pub fn replace_remote(self: &Arc<Self>, key: RoomKey, nodes: &RoomSnapshot) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&key).filter(|room| room.sockets > 0) else { return };
        let gone: Vec<Uuid> = room.remote.keys().filter(|node| !nodes.contains_key(node)).copied().collect();
        let empty = HashSet::new();
        let mut changed = false;
        for node in gone {
            changed |= room.replace_remote(node, &empty);
        }
        for (node, users) in nodes {
            changed |= room.replace_remote(*node, users);
        }
        if changed {
            self.schedule(room, key);
        }
    }

    /// Forgets other nodes' users: one node (`Some`) that left, or all of them
    /// (`None`: Redis is down, and this node falls back to its own view).
    pub fn forget_remote(self: &Arc<Self>, node: Option<Uuid>) {
        let mut rooms = self.lock();
        let empty = HashSet::new();
        for (key, room) in rooms.iter_mut() {
            let nodes: Vec<Uuid> = match node {
                Some(node) => vec![node],
                None => room.remote.keys().copied().collect(),
            };
            let mut changed = false;
            for node in nodes {
                changed |= room.replace_remote(node, &empty);
            }
            if changed {
                self.schedule(room, *key);
            }
        }
    }

    /// The rooms with sockets on this node, and this node's users in each.
    pub fn local_rooms(&self) -> Vec<(RoomKey, Vec<Uuid>)> {
        self.lock().iter().filter(|(_, room)| room.sockets > 0).map(|(key, room)| (*key, room.local_users())).collect()
    }

    /// Counts one stored event broadcast to the room; returns the room's sockets (the
    /// copies the broadcast makes, before any it misses).
    pub fn broadcast_to(&self, namespace: Namespace, course: Uuid) -> usize {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(namespace, course)) else { return 0 };
        room.events += 1;
        room.sockets
    }

    /// The `n` biggest rooms by online users, and the `n` busiest by events.
    pub fn top_rooms(&self, n: usize) -> TopRooms {
        let rooms = self.lock();
        let figure = |(&(namespace, course_id), room): (&RoomKey, &Room)| RoomFigures {
            namespace,
            course_id,
            members: room.users.len(),
            sockets: room.sockets,
            events: room.events,
        };
        let top = |key: fn(&RoomFigures) -> u64| {
            let mut all: Vec<RoomFigures> = rooms.iter().map(figure).collect();
            all.sort_unstable_by_key(|r| std::cmp::Reverse(key(r)));
            all.truncate(n);
            all
        };
        TopRooms { by_members: top(|r| r.members as u64), by_traffic: top(|r| r.events) }
    }

    /// Starts the room's timer unless one is already running.
    fn schedule(self: &Arc<Self>, room: &mut Room, key: RoomKey) {
        if room.flush_due {
            return;
        }
        room.flush_due = true;
        let (this, mut wait) = (self.clone(), self.limits.window);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(wait).await;
                let (flush, local) = this.take_diff(key);
                if let (Some(cluster), Some(local)) = (&this.cluster, local) {
                    cluster.relay_presence(key.0.path(), key.1, &local);
                }
                match flush {
                    Flush::Announce(diff) => break this.announce(key.0, diff).await,
                    Flush::Later(more) => wait = more,
                    Flush::Nothing => break,
                }
            }
        });
    }

    /// Takes the room's pending diff, and this node's own change for the other
    /// nodes (every window, whatever the room's size); drops the room once no
    /// socket of this node is in it and it has nothing left to say. A room above
    /// `list_max` defers its diff until `count_window` after its last count: that
    /// count goes to every member, and at 10,000 members one a second would add a
    /// tenth to a course chatting at 10 msg/s.
    fn take_diff(&self, key: RoomKey) -> (Flush, Option<PresenceChange>) {
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&key) else { return (Flush::Nothing, None) };
        let local = room.local.take();
        let since = room.announced_at.map_or(Duration::MAX, |at| at.elapsed());
        if room.users.len() > self.limits.list_max && since < self.limits.count_window && room.sockets > 0 {
            return (Flush::Later(self.limits.count_window - since), local);
        }
        room.flush_due = false;
        let came = std::mem::take(&mut room.came);
        let went = std::mem::take(&mut room.went);
        let count = room.users.len();
        let changed = !came.is_empty() || !went.is_empty() || count != room.announced;
        room.announced = count;
        if changed {
            room.announced_at = Some(Instant::now());
        }
        if room.sockets == 0 {
            // Nobody here hears the room: forget it, other nodes' users included.
            rooms.remove(&key);
            return (Flush::Nothing, local);
        }
        if !changed {
            return (Flush::Nothing, local);
        }
        let listed = count <= self.limits.list_max && came.len() + went.len() <= self.limits.list_max;
        let diff = PresenceDiff {
            course_id: key.1,
            online: listed.then(|| sorted(came)),
            offline: listed.then(|| sorted(went)),
            count,
        };
        (Flush::Announce(diff), local)
    }

    /// One broadcast per window. Presence is refreshed by the next diff or a page, so
    /// sockets behind on their buffer are skipped first (`rooms::ephemeral_except`).
    async fn announce(&self, namespace: Namespace, diff: PresenceDiff) {
        let Some(operators) = self.io.of(namespace.path()) else { return };
        let room = rooms::course(diff.course_id);
        if let Err(err) =
            operators.to(room).except(rooms::ephemeral_except()).emit(catalog::server::PRESENCE, &diff).await
        {
            tracing::debug!(error = %err, "presence diff not delivered to every socket");
        }
        metrics::event_emitted(namespace.path(), catalog::server::PRESENCE);
    }

    /// Online users after `after` (from the start without it), at most `limit`.
    pub fn page(&self, namespace: Namespace, course: Uuid, after: Option<Uuid>, limit: usize) -> OnlinePage {
        let rooms = self.lock();
        let Some(room) = rooms.get(&(namespace, course)) else {
            return OnlinePage { count: 0, online: Vec::new(), has_more: false };
        };
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut range = room.users.range((start, Bound::Unbounded)).map(|(id, _)| *id);
        let online: Vec<Uuid> = range.by_ref().take(limit).collect();
        OnlinePage { count: room.users.len(), online, has_more: range.next().is_some() }
    }

    /// The room's online count and first page, as the `join` ack shows them. A room
    /// above `list_max` shows its count only, as its diffs do: a client could not keep
    /// a list current from counts, and in a lecture filling up a page of 100 ids
    /// (4 KB) in every join ack was a tenth of the cost of joining. Whoever wants the
    /// names pages them (`page`).
    pub fn first_page(&self, namespace: Namespace, course: Uuid) -> FirstPage {
        static NOBODY: LazyLock<Arc<RawValue>> = LazyLock::new(|| serialized(&[]));
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(namespace, course)) else {
            return FirstPage { count: 0, online: NOBODY.clone() };
        };
        let count = room.users.len();
        if count > self.limits.list_max {
            return FirstPage { count, online: NOBODY.clone() };
        }
        let page = room.first_page.get_or_insert_with(|| {
            let online: Vec<Uuid> = room.users.keys().take(FIRST_PAGE).copied().collect();
            let last = (online.len() == FIRST_PAGE).then(|| online[FIRST_PAGE - 1]);
            CachedPage { online: serialized(&online), last }
        });
        FirstPage { count, online: page.online.clone() }
    }

    /// Whether `user`'s ephemeral event may be relayed now: at most one per user per
    /// interval, and at most `EPHEMERAL_ROOM_PER_SECOND` per room, so a big room
    /// cannot be flooded. A refused event is simply not relayed.
    pub fn may_relay(&self, namespace: Namespace, course: Uuid, user: Uuid, kind: Ephemeral) -> bool {
        let now = Instant::now();
        let mut rooms = self.lock();
        let Some(room) = rooms.get_mut(&(namespace, course)) else { return false };
        let (every, room_budget) = match kind {
            Ephemeral::Typing => (self.limits.typing_every, self.limits.room_relays_per_sec),
            Ephemeral::Cursor => (self.limits.cursor_every, self.limits.room_relays_per_sec),
        };
        let Some(member) = room.users.get_mut(&user) else { return false };
        let last = match kind {
            Ephemeral::Typing => &mut member.last_typing,
            Ephemeral::Cursor => &mut member.last_cursor,
        };
        if last.is_some_and(|at| now.duration_since(at) < every) {
            return false;
        }
        if room.relays_since.is_none_or(|since| now.duration_since(since) >= Duration::from_secs(1)) {
            room.relays_since = Some(now);
            room.relays = 0;
        }
        if room.relays >= room_budget {
            return false;
        }
        room.relays += 1;
        *last = Some(now);
        true
    }

    /// Rooms with a present user or a diff still to send (the drain test).
    pub fn rooms(&self) -> usize {
        self.lock().len()
    }
}

fn serialized(users: &[Uuid]) -> Arc<RawValue> {
    Arc::from(serde_json::value::to_raw_value(users).unwrap_or_else(|_| unreachable!("user ids always serialize")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn presence(list_max: usize) -> Arc<Presence> {
        presence_counting(list_max, Duration::ZERO)
    }

    fn presence_counting(list_max: usize, count_window: Duration) -> Arc<Presence> {
        let (_, io) = SocketIo::new_svc();
        Arc::new(Presence::new(
            io,
            PresenceLimits {
                window: Duration::from_secs(3600),
                list_max,
                count_window,
                typing_every: Duration::from_secs(3600),
                cursor_every: Duration::ZERO,
                room_relays_per_sec: 3,
            },
            None,
        ))
    }

    /// The chat room's pending diff, which must be due.
    fn due_diff(p: &Presence, course: Uuid) -> Option<PresenceDiff> {
        match p.take_diff((Namespace::Chat, course)).0 {
            Flush::Announce(diff) => Some(diff),
            Flush::Nothing => None,
            Flush::Later(wait) => panic!("the diff was deferred by {wait:?}"),
        }
    }

    #[tokio::test]
    async fn a_big_rooms_count_waits_for_the_count_window() {
        let p = presence_counting(1, Duration::from_secs(3600));
        let course = Uuid::new_v4();
        p.enter(Namespace::Chat, course, Uuid::new_v4());
        assert!(due_diff(&p, course).is_some(), "a small room's diff is due at once");
        p.enter(Namespace::Chat, course, Uuid::new_v4());
        assert!(
            matches!(p.take_diff((Namespace::Chat, course)).0, Flush::Later(wait) if wait > Duration::from_secs(3500)),
            "a big room counts once per count window"
        );
    }

    #[tokio::test]
    async fn a_user_with_several_sockets_is_online_once() {
        let p = presence(10);
        let (course, alice) = (Uuid::new_v4(), Uuid::new_v4());
        p.enter(Namespace::Chat, course, alice);
        p.enter(Namespace::Chat, course, alice);
        assert_eq!(p.page(Namespace::Chat, course, None, 10).online, vec![alice]);
        p.leave(Namespace::Chat, course, alice);
        assert_eq!(p.page(Namespace::Chat, course, None, 10).count, 1);
        p.leave(Namespace::Chat, course, alice);
        p.leave(Namespace::Chat, course, alice);
        assert_eq!(p.page(Namespace::Chat, course, None, 10).count, 0);
        assert_eq!(due_diff(&p, course), None, "came and went within one window");
        assert_eq!(p.rooms(), 0, "an empty room is dropped once its diff is taken");
    }

    #[tokio::test]
    async fn diffs_are_net_changes_and_counts_only_above_the_threshold() {
        let p = presence(2);
        let course = Uuid::new_v4();
        let mut users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        users.sort_unstable();
        p.enter(Namespace::Chat, course, users[0]);
        p.enter(Namespace::Chat, course, users[1]);
        let diff = due_diff(&p, course).unwrap();
        assert_eq!((diff.online, diff.offline, diff.count), (Some(users[..2].to_vec()), Some(vec![]), 2));
        p.leave(Namespace::Chat, course, users[0]);
        p.enter(Namespace::Chat, course, users[0]);
        assert_eq!(due_diff(&p, course), None, "left and came back: no change");
        p.enter(Namespace::Chat, course, users[2]);
        let diff = due_diff(&p, course).unwrap();
        assert_eq!((diff.online, diff.offline, diff.count), (None, None, 3), "above the threshold: the count");
    }

    #[tokio::test]
    async fn other_nodes_users_count_once_and_a_node_missing_from_a_snapshot_drops_out() {
        let p = presence(10);
        let (course, node) = (Uuid::new_v4(), Uuid::new_v4());
        let key = (Namespace::Chat, course);
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        p.apply_remote(key, node, &PresenceChange { came: vec![bob], went: vec![] });
        assert_eq!(p.page(Namespace::Chat, course, None, 10).count, 0, "a room without sockets here is not followed");

        assert!(p.enter(Namespace::Chat, course, alice), "the room opens here");
        assert!(!p.enter(Namespace::Chat, course, alice), "and is open");
        p.take_diff(key);
        p.apply_remote(key, node, &PresenceChange { came: vec![alice, bob], went: vec![] });
        assert_eq!(p.page(Namespace::Chat, course, None, 10).count, 2, "alice here and there is online once");
        assert!(matches!(p.take_diff(key).0, Flush::Announce(diff) if diff.online == Some(vec![bob])));

        p.replace_remote(key, &RoomSnapshot::new());
        assert_eq!(p.page(Namespace::Chat, course, None, 10).online, vec![alice], "the node is gone, alice is here");
        p.leave(Namespace::Chat, course, alice);
        p.leave(Namespace::Chat, course, alice);
        p.take_diff(key);
        assert_eq!(p.rooms(), 0, "no socket here: the room is dropped");
    }

    /// A `/chat` room's count and first page, as the `join` ack shows them.
    fn first_page_of(p: &Presence, course: Uuid) -> (usize, Vec<Uuid>) {
        let page = p.first_page(Namespace::Chat, course);
        (page.count, serde_json::from_str(page.online.get()).unwrap())
    }

    #[tokio::test]
    async fn the_first_page_follows_the_users_on_it_and_ignores_the_rest() {
        let p = presence(FIRST_PAGE * 2);
        let course = Uuid::new_v4();
        let first_page = |p: &Presence| first_page_of(p, course);
        assert_eq!(first_page(&p), (0, vec![]));
        let mut users: Vec<Uuid> = (0..FIRST_PAGE + 50).map(|_| Uuid::new_v4()).collect();
        users.sort_unstable();
        for user in &users[1..] {
            p.enter(Namespace::Chat, course, *user);
        }
        assert_eq!(first_page(&p), (FIRST_PAGE + 49, users[1..=FIRST_PAGE].to_vec()));
        // Past the page's end: the same page, a new count.
        p.leave(Namespace::Chat, course, users[FIRST_PAGE + 20]);
        assert_eq!(first_page(&p), (FIRST_PAGE + 48, users[1..=FIRST_PAGE].to_vec()));
        // On it: a user before its first, and one of its own leaving.
        p.enter(Namespace::Chat, course, users[0]);
        assert_eq!(first_page(&p), (FIRST_PAGE + 49, users[..FIRST_PAGE].to_vec()));
        p.leave(Namespace::Chat, course, users[5]);
        let expected: Vec<Uuid> = users[..=FIRST_PAGE].iter().copied().filter(|user| *user != users[5]).collect();
        assert_eq!(first_page(&p), (FIRST_PAGE + 48, expected));
    }

    #[tokio::test]
    async fn a_room_above_the_list_threshold_shows_its_count_only() {
        let p = presence(2);
        let course = Uuid::new_v4();
        let first_page = |p: &Presence| first_page_of(p, course);
        let mut users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
        users.sort_unstable();
        p.enter(Namespace::Chat, course, users[0]);
        p.enter(Namespace::Chat, course, users[1]);
        assert_eq!(first_page(&p), (2, users[..2].to_vec()));
        p.enter(Namespace::Chat, course, users[2]);
        assert_eq!(first_page(&p), (3, vec![]), "above the threshold: the count only");
        assert_eq!(p.page(Namespace::Chat, course, None, 10).online, users, "the names are still paged");
        p.leave(Namespace::Chat, course, users[0]);
        assert_eq!(first_page(&p), (2, users[1..].to_vec()), "listed again at the threshold");
    }

    #[tokio::test]
    async fn pages_are_ordered_ranges() {
        let p = presence(10);
        let course = Uuid::new_v4();
        let mut users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        users.sort_unstable();
        for user in &users {
            p.enter(Namespace::Collaboration, course, *user);
        }
        let first = p.page(Namespace::Collaboration, course, None, 2);
        assert_eq!((first.count, first.online.clone(), first.has_more), (5, users[..2].to_vec(), true));
        let last = p.page(Namespace::Collaboration, course, Some(users[3]), 2);
        assert_eq!((last.online, last.has_more), (vec![users[4]], false));
        assert_eq!(p.page(Namespace::Chat, course, None, 2).count, 0, "namespaces are separate");
    }

    #[tokio::test]
    async fn ephemeral_events_are_throttled_per_user_and_per_room() {
        let p = presence(10);
        let course = Uuid::new_v4();
        let users: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for user in &users {
            p.enter(Namespace::Chat, course, *user);
        }
        assert!(p.may_relay(Namespace::Chat, course, users[0], Ephemeral::Typing));
        assert!(!p.may_relay(Namespace::Chat, course, users[0], Ephemeral::Typing), "once per interval");
        assert!(p.may_relay(Namespace::Chat, course, users[1], Ephemeral::Typing));
        assert!(p.may_relay(Namespace::Chat, course, users[2], Ephemeral::Cursor));
        assert!(!p.may_relay(Namespace::Chat, course, users[3], Ephemeral::Typing), "the room's budget is spent");
        assert!(!p.may_relay(Namespace::Chat, Uuid::new_v4(), users[0], Ephemeral::Typing), "not in the room");
    }
}
