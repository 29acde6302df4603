//! Observability: logging to journald or stderr, metrics, call detail records, the admin
//! endpoint. It reads state from the other modules and never changes it.

pub mod admin;
pub mod exposition;
mod journal;
mod logging;
pub mod live;
pub mod metrics;
pub mod operator;

pub use logging::{init_logging, LogHandle};
