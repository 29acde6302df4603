//! Observability: logging to journald or stderr, metrics, call detail records, the admin
//! endpoint, HEP capture. It reads state from the other modules and never changes it.

pub mod admin;
pub mod hep;
mod hep_encode;
mod journal;
mod logging;
pub mod metrics;

pub use logging::{init_logging, LogHandle};
