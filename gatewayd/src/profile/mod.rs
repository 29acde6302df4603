//! The profile: the one declarative TOML document that drives the whole appliance.
//!
//! Owns the Rust types of the profile (which also yield the JSON Schema and the reference docs),
//! loading (file, then `GATEWAYD_` environment overrides), validation with precise
//! `file:line:col` diagnostics, and the diff between two profiles on reload.
//! It must not start listeners or touch the system: it only describes and checks.

mod diag;
mod diff;
mod edge;
mod ha;
mod load;
mod protection;
mod reference;
mod services;
mod sides;
mod validate;
mod values;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use diag::{Diagnostic, Diagnostics};
pub use diff::{diff, Change, Section};
pub use edge::*;
pub use ha::{Ha, HaSide, MIN_BANS_KEY};
pub use load::{load, load_str, text_sha256, LoadedProfile, ProfileFallback, ENV_PREFIX, ENV_SEPARATOR};
pub use protection::*;
pub use reference::reference_markdown;
pub use services::*;
pub use sides::*;
pub use values::{Cidr, Duration, InterfaceAddress, PortRange};

/// A gatewayd profile: everything the appliance does, in one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "gatewayd profile")]
pub struct Profile {
    pub site: Site,
    pub public: PublicSide,
    pub internal: InternalSide,
    pub management: ManagementSide,
    #[serde(default)]
    pub tls: Tls,
    pub web: Web,
    pub sip: Sip,
    /// Agents: single DNs or ranges.
    #[serde(default)]
    pub agents: Vec<Agent>,
    pub upstream: Upstream,
    pub media: Media,
    /// STUN/TURN; absent means no TURN service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn: Option<Turn>,
    #[serde(default)]
    pub firewall: Firewall,
    #[serde(default)]
    pub bans: Bans,
    pub observe: Observe,
    #[serde(default)]
    pub system: System,
    /// Active/standby pair with keepalived; absent means a single gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<Ha>,
}

/// The JSON Schema of the profile, as `gatewayd schema` prints it.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Profile);
    let mut out = serde_json::to_string_pretty(&schema).expect("schema serializes");
    out.push('\n');
    out
}
