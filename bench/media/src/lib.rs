//! Pieces of the media bridge load client: call setup per engine, batched sockets with
//! kernel timestamps, the audio of the transcoding mode, and the figures a run reports.

pub mod audio;
pub mod control;
pub mod net;
pub mod report;
