//! Call control: the back-to-back user agent between agents on WSS and the internal SIP server,
//! plus the internal SIP transport driver. It asks `media` for each call's media and never
//! handles RTP itself.

pub mod active;
pub mod agent_view;
pub mod agents;
mod awaiting;
mod build;
mod call_life;
mod deadlines;
pub mod config;
pub mod control;
mod flows;
mod in_dialog;
pub mod in_progress;
pub mod media_bridge;
pub mod media_port;
mod registration;
mod routing;
mod session_timer;
pub mod token;
pub mod driver;
pub mod internal;
pub mod upstream;

#[cfg(test)]
mod tests;
