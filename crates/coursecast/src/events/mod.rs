//! The event pipeline (DESIGN.md principle 1): every door (socket event, HTTP
//! request, service call) calls [`commands::Commands`], which validates, authorises
//! and hands the append to the [`publisher::Publisher`]; once a batch commits, the
//! [`fanout::Fanout`] hands each event to every transport's [`fanout::Sink`] and only
//! then is the caller answered.
//!
//! The pipeline sits between the transports above (`realtime`, `http`, `cluster`) and
//! storage below; it knows no transport by name.

pub mod commands;
pub mod fanout;
mod handoff;
pub mod interest;
pub mod publisher;
pub mod sequencer;
pub mod subscribers;
pub mod waiters;
