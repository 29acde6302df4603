//! Observability: logging to journald or stderr, metrics, call detail records, the admin
//! endpoint. It reads state from the other modules and never changes it.

pub mod admin;
mod journal;
mod logging;
pub mod metrics;

pub use logging::{init_logging, LogHandle};
