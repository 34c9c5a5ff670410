//! coursecast: the real-time backend of a course-based learning platform.
//!
//! One axum app serves the HTTP JSON API (`http`) and, on the same port, Socket.IO
//! (`realtime`). Storage (`store`) is SQLite by default and PostgreSQL when
//! configured. `app::serve` runs it all from `Settings`; `main.rs` only parses the CLI.

pub mod access;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod http;
pub mod limits;
pub mod realtime;
pub mod seed;
pub mod state;
pub mod store;
pub mod telemetry;

pub use config::Settings;
