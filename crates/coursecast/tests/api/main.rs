//! Integration tests: each test starts the real server on an ephemeral port and talks
//! to it over real HTTP (and Socket.IO). With `TEST_DATABASE_URL=postgres://...` the
//! same suite runs on PostgreSQL, each test in a schema of its own.

mod helpers;

mod accounts;
mod asyncapi;
mod big_rooms;
mod chat;
mod client_ip;
mod cluster;
mod connections;
mod courses;
mod crash;
mod deploy;
mod faults;
mod fuzz;
mod hostile;
mod listener;
mod login_limits;
mod middleware;
mod observability;
mod openapi;
mod polling;
mod process;
mod proxy;
mod seed;
mod session;
mod sockets;
mod sse;
mod sse_reader;
mod streams;
mod tokens;
