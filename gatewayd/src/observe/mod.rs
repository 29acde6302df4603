//! Observability: logging to journald or stderr, the live figures and their metrics (OpenMetrics
//! or Prometheus text by `Accept`), call detail records, the admin endpoint, and the operator
//! commands that read it. It reads state from the other modules and never changes it.

pub mod admin;
pub mod exposition;
mod journal;
mod logging;
pub mod live;
pub mod metrics;
pub mod operator;

pub use logging::{init_logging, LogHandle};
