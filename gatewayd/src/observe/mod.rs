//! Observability: logging to journald or stderr, the live figures and their metrics (OpenMetrics
//! or Prometheus text by `Accept`), call detail records, the admin endpoint, HEP capture, and the
//! operator commands that read the admin endpoint. It reads state from the other modules and
//! never changes it.

pub mod admin;
pub mod exposition;
pub mod hep;
mod hep_encode;
mod hep_rtcp;
mod journal;
mod logging;
pub mod live;
pub mod metrics;
pub mod operator;

pub use logging::{init_logging, LogHandle};
