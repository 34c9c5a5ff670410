//! coursecast: the real-time backend of a course-based learning platform.
//!
//! One axum app serves the HTTP JSON API (`http`) and, on the same port, Socket.IO
//! (`realtime`). `app::serve` runs it all from `Settings`; `main.rs` only parses the CLI.
//!
//! The layers, each importing only those below it:
//!
//! ```text
//! app                         wiring: settings -> state -> a listening server
//! http, realtime, cluster     transports: HTTP + long polls, Socket.IO, other nodes
//! events                      the pipeline: Commands -> Publisher -> Fanout -> every Sink
//! access, auth                who the caller is and what they may do
//! store                       SQL, both backends (SQLite, PostgreSQL)
//! streams                     stream kinds and keys, stored events, payloads, cursors
//! domain, error, config, telemetry, limits, locks
//! ```
//!
//! A chat message goes down once and never back up: a socket handler or HTTP
//! endpoint calls `events::commands::Commands`, which validates and authorises, and
//! the publisher commits it in a batch through `store`; then the fan-out hands it to
//! each transport through `events::fanout::Sink` (implemented by the Socket.IO
//! broadcaster, the long-poll waiters and the cluster relay), and only then answers.

pub mod access;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod healthcheck;
pub mod http;
pub mod limits;
mod locks;
mod periodic;
pub mod realtime;
pub mod seed;
pub mod state;
pub mod store;
pub mod streams;
pub mod telemetry;

pub use config::Settings;
