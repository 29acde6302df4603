//! Load client for TURN relays: see `src/bin/turn-load.rs` and `run.sh`.
pub mod net;
pub mod report;
pub mod stun;
pub mod tls;
