//! The JSON answers of the HTTP API that handlers build, typed so that the OpenAPI
//! document (`openapi.rs`) describes exactly what they serialise.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{ObjectBuilder, RefOr, Schema, Type},
};
use uuid::Uuid;

use crate::{
    realtime::{connections::ConnectionStats, presence::TopRooms},
    store::{BackendKind, Course, Member, User},
    streams::{NotificationEvent, Timestamp},
    telemetry::live::LatencySummary,
};

/// `ok` of an answer: always `true` (a refusal has the error shape instead).
#[derive(Debug, Clone, Copy)]
pub struct True;

impl Serialize for True {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl PartialSchema for True {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([true])).into()
    }
}

impl ToSchema for True {}

/// `{ok: true}`
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Done {
    pub ok: True,
}

pub const DONE: Done = Done { ok: True };

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserAnswer {
    pub user: User,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CourseAnswer {
    pub course: Course,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Courses {
    pub courses: Vec<Course>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberAnswer {
    pub member: Member,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Members {
    pub members: Vec<Member>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnalysisStarted {
    pub analysis_id: Uuid,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Ping {
    pub ok: True,
    pub server_time: Timestamp,
    pub websocket: WebsocketAvailable,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebsocketAvailable {
    pub available: bool,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Status {
    pub websocket: WebsocketStatus,
    pub fallback: FallbackStatus,
    pub uptime_seconds: u64,
    pub version: &'static str,
}

/// `connections` counts clients (Engine.IO sessions), `byNamespace` sockets.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebsocketStatus {
    pub enabled: bool,
    pub connections: usize,
    pub by_namespace: BTreeMap<&'static str, usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FallbackStatus {
    pub enabled: bool,
    pub polling_interval_ms: u64,
}

/// The dashboard's figures; counters are totals since the process started (the page
/// turns them into rates), read from the same recorder as `/metrics`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminStats {
    /// Copies of stored events handed to clients, by transport.
    pub deliveries: BTreeMap<String, u64>,
    /// Refusals by contract code, whatever the door (HTTP, socket events, handshakes).
    pub refusals: BTreeMap<String, u64>,
    pub slow_consumers: SlowConsumers,
    pub dependencies: Dependencies,
    pub rooms: TopRooms,
    pub connections: ConnectionStats,
    /// Stored events fanned out (each once, whatever its audience).
    pub events_delivered: u64,
    pub latency: LatencySummary,
    pub long_poll_waiters: usize,
    pub uptime_seconds: u64,
    pub server_time: Timestamp,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SlowConsumers {
    pub broadcast_misses: u64,
    pub answers_deferred: u64,
    pub answers_lost: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Dependencies {
    pub database: DatabaseFigures,
    pub redis: RedisFigures,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatabaseFigures {
    pub up: bool,
    pub outages: u64,
    pub queries: RoundTrips,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedisFigures {
    pub configured: bool,
    /// Absent meaning: this node runs without Redis.
    pub up: Option<bool>,
    pub round_trips: RoundTrips,
    pub relay_dropped: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RoundTrips {
    pub count: u64,
    pub seconds_sum: f64,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    pub ok: True,
    pub database: BackendKind,
    pub redis: RedisState,
}

/// `off` when this node runs alone; Redis down does not fail the check.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RedisState {
    Up,
    Down,
    Off,
}

// Answers that pass stored events through as stored (serialised once, when stored:
// `events/commands.rs`), so no Rust type holds them at the door; described here, and
// checked against real answers by `tests/api/openapi.rs` and the conformance run.

/// The answer of a write to a stream: the stored event (as the socket ack).
#[derive(ToSchema)]
#[expect(dead_code, reason = "only described: handlers send the stored JSON as it is")]
#[serde(deny_unknown_fields)]
pub struct EventReply<E> {
    pub ok: True,
    pub event: E,
}

/// One event per recipient.
#[derive(ToSchema)]
#[expect(dead_code, reason = "only described: handlers send the stored JSON as it is")]
#[serde(deny_unknown_fields)]
pub struct NotificationEvents {
    pub events: Vec<NotificationEvent>,
}
