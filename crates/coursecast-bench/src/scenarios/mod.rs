//! One module per scenario; each parses its own flags and reports one JSON line.

pub mod connect;
pub mod fanout;
pub mod idle;
pub mod polling;
pub mod rooms;
pub mod sse;
