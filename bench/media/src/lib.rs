//! Pieces of the media bridge load client: call setup per engine, batched sockets with
//! kernel timestamps, and the figures a run reports.

pub mod control;
pub mod net;
pub mod report;
