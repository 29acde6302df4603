//! gatewayd: one hardened daemon between browser softphones on the internet and an internal SIP
//! server. Each module owns one part of the appliance; see the module docs.

pub mod call;
pub mod daemon;
mod deadlines;
pub mod firewall;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod guard;
pub mod ha;
pub mod media;
pub mod observe;
pub mod profile;
pub mod sip;
pub mod system;
pub mod tls;
pub mod turn;
pub mod web;
