//! STUN/TURN server for browsers behind restrictive NATs (UDP, TCP and TLS listeners).
//! It must never relay to loopback, private or internal ranges unless the profile allows it.
//!
//! The protocol core (`server`) is a synchronous state machine: datagrams and stream frames
//! from clients, data from peers and the current time go in; replies, relayed packets and
//! events (guard reports, allocation records) come out. `driver` owns the sockets. The core
//! never touches a socket, a clock or the profile file; the driver never parses STUN.

pub(crate) mod allocation;
mod auth;
mod conn;
pub(crate) mod datagrams;
pub mod credentials;
mod driver;
pub mod metrics;
mod plane;
mod policy;
mod reply;
mod requests;
pub mod server;
#[cfg(test)]
mod server_tests;
pub(crate) mod stream;

pub use driver::{shared_tls, start, TurnHandle};
pub use stream::starts_turn;
