//! Every setting of the server, read from the environment (and `.env`), with defaults.
//!
//! `.env.example` at the repository root lists the same variables; keep the two in step.

use std::{fmt, net::IpAddr, path::PathBuf, time::Duration};

use clap::Args;

use crate::http::client_ip::TrustedProxies;

/// How the server runs. Each field names its environment variable.
#[derive(Clone, Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Port for the HTTP API and Socket.IO (one port for both).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// Directory for the SQLite file and the generated JWT secret.
    #[arg(long, env = "DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// `postgres://...` or `sqlite://...`; unset: SQLite in `DATA_DIR`.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum database connections in the pool.
    #[arg(long, env = "DATABASE_MAX_CONNECTIONS", default_value_t = 16)]
    pub database_max_connections: u32,

    /// Longest wait for a database connection or query, milliseconds. Past it the
    /// request is answered `UNAVAILABLE` and the database counts as down until a
    /// probe gets an answer again (nothing waits on it meanwhile).
    #[arg(long, env = "DATABASE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_timeout_ms: u64,

    /// `redis://...`; unset: one node, in-process fan-out.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis pub/sub channel the nodes of one deployment share.
    #[arg(long, env = "REDIS_CHANNEL", default_value = "coursecast")]
    pub redis_channel: String,

    /// HS256 secret for tokens; unset: generated once and kept in `DATA_DIR`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of tokens this server issues, in seconds.
    #[arg(long, env = "JWT_TTL", default_value_t = 86_400)]
    pub jwt_ttl_secs: u64,

    /// Expected `iss` claim; checked only when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Expected `aud` claim; checked only when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Comma-separated origins allowed by CORS and the socket Origin check (exact match).
    #[arg(long, env = "WEBSOCKET_CORS_ORIGIN", default_value = "http://localhost:5173", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Engine.IO ping interval, milliseconds.
    #[arg(long, env = "WEBSOCKET_PING_INTERVAL", default_value_t = 25_000)]
    pub ping_interval_ms: u64,

    /// Engine.IO ping timeout, milliseconds.
    #[arg(long, env = "WEBSOCKET_PING_TIMEOUT", default_value_t = 60_000)]
    pub ping_timeout_ms: u64,

    /// Socket.IO clients (Engine.IO sessions) this node accepts at once.
    #[arg(long, env = "WEBSOCKET_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,

    /// Sockets one user may hold in one namespace at once.
    #[arg(long, env = "WEBSOCKET_MAX_SOCKETS_PER_USER", default_value_t = 10)]
    pub max_sockets_per_user: usize,

    /// Largest Socket.IO packet, bytes, on both transports.
    #[arg(long, env = "WEBSOCKET_MAX_PAYLOAD", default_value_t = 64 * 1024)]
    pub max_socket_payload: usize,

    /// Sustained client->server events per second per socket.
    #[arg(long, env = "SOCKET_EVENTS_PER_SECOND", default_value_t = 20)]
    pub socket_events_per_sec: u32,

    /// Burst of client->server events per socket.
    #[arg(long, env = "SOCKET_EVENTS_BURST", default_value_t = 40)]
    pub socket_events_burst: u32,

    /// Packets queued per socket before broadcasts to it are skipped (its send buffer).
    #[arg(long, env = "WEBSOCKET_BUFFER_PACKETS", default_value_t = 256)]
    pub socket_buffer_packets: usize,

    /// How long joins and leaves of a course room are gathered into one `presence`
    /// diff, milliseconds (one broadcast per room per window, not one per join).
    #[arg(long, env = "PRESENCE_WINDOW", default_value_t = 1000)]
    pub presence_window_ms: u64,

    /// Largest room whose `presence` diffs list user ids; bigger rooms get the count only.
    #[arg(long, env = "PRESENCE_LIST_MAX", default_value_t = 200)]
    pub presence_list_max: usize,

    /// The window of rooms above `PRESENCE_LIST_MAX`, milliseconds, counted from the
    /// room's last count or its first member: their count goes to thousands of
    /// sockets, so it is announced less often than a small room's list.
    #[arg(long, env = "PRESENCE_COUNT_WINDOW", default_value_t = 5000)]
    pub presence_count_window_ms: u64,

    /// Shortest time between two relayed `typing` events of one user in one course, milliseconds.
    #[arg(long, env = "TYPING_INTERVAL", default_value_t = 3000)]
    pub typing_interval_ms: u64,

    /// Shortest time between two relayed `cursor` events of one user in one course, milliseconds.
    #[arg(long, env = "CURSOR_INTERVAL", default_value_t = 100)]
    pub cursor_interval_ms: u64,

    /// Relayed `typing` and `cursor` events per course room per second, all users together.
    #[arg(long, env = "EPHEMERAL_ROOM_PER_SECOND", default_value_t = 20)]
    pub ephemeral_room_per_sec: u32,

    /// Socket handshakes per second per client IP.
    #[arg(long, env = "SOCKET_CONNECTS_PER_SECOND_PER_IP", default_value_t = 200)]
    pub socket_connects_per_sec_per_ip: u32,

    /// Whether the HTTP polling fallback endpoints are served.
    #[arg(long, env = "ENABLE_WEBSOCKET_FALLBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub enable_fallback: bool,

    /// Long-poll requests that may wait at once on this node (`UNAVAILABLE` past it).
    #[arg(long, env = "LONG_POLL_MAX_WAITERS", default_value_t = 10_000)]
    pub long_poll_max_waiters: usize,

    /// Server-Sent Events streams this node holds open at once (`UNAVAILABLE` past it).
    #[arg(long, env = "SSE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub sse_max_connections: usize,

    /// Server-Sent Events streams one user may hold open on this node (`RATE_LIMITED` past it).
    #[arg(long, env = "SSE_MAX_PER_USER", default_value_t = 10)]
    pub sse_max_per_user: usize,

    /// Stream specs one Server-Sent Events connection may name.
    #[arg(long, env = "SSE_MAX_STREAMS_PER_CONNECTION", default_value_t = 32)]
    pub sse_max_streams_per_connection: usize,

    /// Live events queued per Server-Sent Events connection; a reader that falls this
    /// far behind is sent `end` `UNAVAILABLE` and closed (it resumes from its last id).
    #[arg(long, env = "SSE_BUFFER_EVENTS", default_value_t = 1024)]
    pub sse_buffer_events: usize,

    /// Seconds between two `: ping` comments on a Server-Sent Events stream (keeps
    /// proxies from closing an idle stream).
    #[arg(long, env = "SSE_HEARTBEAT_SECS", default_value_t = 15)]
    pub sse_heartbeat_secs: u64,

    /// Polling interval advertised to clients by `/api/realtime/status`, milliseconds.
    #[arg(long, env = "POLLING_INTERVAL", default_value_t = 5_000)]
    pub polling_interval_ms: u64,

    /// Longest chat message, in characters after trimming.
    #[arg(long, env = "MESSAGE_MAX_CHARS", default_value_t = 4000)]
    pub message_max_chars: usize,

    /// Largest request body, bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,

    /// Sustained registrations per second per IP (`POST /api/auth/register`).
    #[arg(long, env = "AUTH_RATE_PER_SECOND", default_value_t = 5)]
    pub auth_rate_per_sec: u32,

    /// Burst of registrations per IP.
    #[arg(long, env = "AUTH_RATE_BURST", default_value_t = 20)]
    pub auth_rate_burst: u32,

    /// Failed logins per client address per minute (also the burst); past it, that
    /// address's logins are refused `RATE_LIMITED` until the budget refills.
    /// Successful logins, `/me` and logout cost nothing.
    #[arg(long, env = "LOGIN_FAILURES_PER_IP_PER_MINUTE", default_value_t = 30)]
    pub login_failures_per_ip_per_minute: u32,

    /// Failed logins per account (email) per minute (also the burst), from anywhere.
    #[arg(long, env = "LOGIN_FAILURES_PER_ACCOUNT_PER_MINUTE", default_value_t = 5)]
    pub login_failures_per_account_per_minute: u32,

    /// Reverse proxies whose `X-Forwarded-For` names the client: comma-separated IP
    /// addresses and CIDR ranges (IPv4 and IPv6). A request from one of them counts
    /// against the address the proxies appended to the header, read from the right
    /// (http/client_ip.rs); from anyone else, against its TCP peer. Empty: no proxy is
    /// trusted and the header is ignored.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "", value_parser = TrustedProxies::parse)]
    pub trusted_proxies: TrustedProxies,

    /// Open TCP connections per TCP peer at most; further ones are closed at once (0:
    /// no cap). Counted as a connection is accepted, before any request (and any
    /// `X-Forwarded-For`) is read: behind a reverse proxy it counts the proxy's
    /// connections, so set it 0 or high there and let the proxy bound clients.
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 1000)]
    pub max_connections_per_ip: usize,

    /// A new connection that sends nothing within this many seconds is closed.
    #[arg(long, env = "HTTP_FIRST_BYTE_TIMEOUT", default_value_t = 5)]
    pub http_first_byte_timeout_secs: u64,

    /// A request head not complete within this many seconds of the connection's
    /// start (or of the previous response on a kept-alive connection) closes it.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", default_value_t = 10)]
    pub http_header_timeout_secs: u64,

    /// Longest time a request may take (long polls wait at most 30 s), seconds.
    #[arg(long, env = "REQUEST_TIMEOUT", default_value_t = 45)]
    pub request_timeout_secs: u64,

    /// Directory of the built demo page (clients/js), served at `/demo/` when it exists.
    #[arg(long, env = "DEMO_DIR", default_value = "clients/js/demo/dist")]
    pub demo_dir: PathBuf,

    /// Serve `/metrics` on this port instead of the main one (unset: the main port).
    #[arg(long, env = "METRICS_PORT")]
    pub metrics_port: Option<u16>,

    /// Longest a graceful shutdown may take before the process exits anyway, seconds.
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,

    /// `json` for one JSON object per line; anything else: human-readable.
    #[arg(long, env = "LOG_FORMAT", default_value = "pretty")]
    pub log_format: String,

    /// Log filter, as `RUST_LOG` (for example `info,coursecast=debug`).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Settings {
    /// The environment variable of every setting (for checks that `.env.example` and
    /// the deployment files name only real settings).
    pub fn env_names() -> Vec<String> {
        let command = <Settings as clap::Args>::augment_args(clap::Command::new("coursecast"));
        command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.ping_interval_ms)
    }

    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }

    pub fn presence_window(&self) -> Duration {
        Duration::from_millis(self.presence_window_ms)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs)
    }

    pub fn sse_heartbeat(&self) -> Duration {
        Duration::from_secs(self.sse_heartbeat_secs.max(1))
    }

    pub fn database_timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms.max(1))
    }

    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.shutdown_timeout_secs)
    }

    /// Settings with every default, as a fresh start with an empty environment would have.
    pub fn defaults() -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            settings: Settings,
        }
        <Wrapper as clap::Parser>::parse_from(["coursecast"]).settings
    }
}

/// Secrets stay out of logs: `Debug` redacts them.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |set: bool| if set { "[redacted]" } else { "unset" };
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("data_dir", &self.data_dir)
            .field("database_url", &self.database_url.as_ref().map(|url| redact_url(url)))
            .field("redis_url", &self.redis_url.as_ref().map(|url| redact_url(url)))
            .field("jwt_secret", &redacted(self.jwt_secret.is_some()))
            .field("jwt_ttl_secs", &self.jwt_ttl_secs)
            .field("cors_origins", &self.cors_origins)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("max_connections", &self.max_connections)
            .field("enable_fallback", &self.enable_fallback)
            .finish_non_exhaustive()
    }
}

/// Drops the password from a connection URL, keeping scheme, user, host and path.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(redact_url("postgres://u:secret@h:5432/db"), "postgres://u:***@h:5432/db");
        assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }

    #[test]
    fn defaults_match_the_contract() {
        let mut s = Settings::defaults();
        assert_eq!(s.port, 3000);
        assert_eq!(s.max_connections, 1000);
        assert_eq!(s.ping_interval_ms, 25_000);
        assert_eq!(s.cors_origins, vec!["http://localhost:5173".to_owned()]);
        assert!(s.enable_fallback);
        s.jwt_secret = Some("hunter2-value".into());
        s.database_url = Some("postgres://app:pw-hunter2@db/app".into());
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    /// `.env.example` is where operators look for settings: every variable the
    /// server reads is there, set or commented out.
    #[test]
    fn every_setting_is_listed_in_env_example() {
        let example = include_str!("../../../.env.example");
        let listed =
            |name: &str| example.lines().any(|line| line.trim_start_matches("# ").starts_with(&format!("{name}=")));
        let missing: Vec<String> = Settings::env_names().into_iter().filter(|name| !listed(name)).collect();
        assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    }
}
