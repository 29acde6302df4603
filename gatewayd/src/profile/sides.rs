//! Identity and the three sides of the box: public (agents on the internet), internal (the SIP
//! server's network) and management (operators), plus the OS-level settings of the appliance.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{Cidr, InterfaceAddress};

/// Who this gateway is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Short site name, used in logs, metrics and the softphone title.
    pub name: String,
    /// The SIP domain agents register in (`sip:5001@DOMAIN`).
    pub sip_domain: String,
    /// Digest authentication realm; defaults to `sip_domain`. HA1 values are computed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// Lab mode allows plaintext passwords, self-signed certificates and all sides on one
    /// address. Never enable it on a box that faces the internet.
    #[serde(default)]
    pub lab_mode: bool,
    /// Where generated state lives (self-signed certificates, DTLS identity, bans, ACME state).
    /// Relative paths resolve against the profile's directory. Overridden by `--state-dir` and by
    /// systemd's `$STATE_DIRECTORY`; defaults to `/var/lib/gatewayd` for root, else
    /// `$XDG_STATE_HOME/gatewayd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
}

impl Site {
    pub fn realm(&self) -> &str {
        self.realm.as_deref().unwrap_or(&self.sip_domain)
    }
}

/// The internet-facing side: HTTPS/WSS, TURN and browser media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublicSide {
    /// Network interface of this side (used by the firewall and the image's network setup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Addresses the gateway binds on this side.
    pub addresses: Vec<IpAddr>,
    /// 1:1 NAT: a bound private address and the public address browsers must be told instead.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nat: Vec<NatMapping>,
}

impl PublicSide {
    /// The address browsers are told for a bound address: its NAT mapping, or itself.
    pub fn advertised(&self, bound: IpAddr) -> IpAddr {
        self.nat.iter().find(|m| m.private == bound).map_or(bound, |m| m.public)
    }

    /// Every address that ends up in ICE candidates and SDP toward browsers.
    pub fn advertised_addresses(&self) -> Vec<IpAddr> {
        self.addresses.iter().map(|a| self.advertised(*a)).collect()
    }
}

/// One 1:1 NAT mapping of the public side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NatMapping {
    /// The address bound on the box.
    pub private: IpAddr,
    /// The address the internet reaches it by.
    pub public: IpAddr,
}

/// The side toward the SIP server: SIP and plain RTP only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InternalSide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The gateway's address toward the SIP server; SIP and internal RTP bind here.
    pub address: IpAddr,
    /// Internal networks (the SIP server's LAN and anything behind it). Upstream servers must be
    /// inside them; TURN never relays into them; the public side is never forwarded to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Cidr>,
}

impl InternalSide {
    /// Whether `addr` belongs to the internal side (its address or one of its networks).
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr == self.address || self.networks.iter().any(|n| n.contains(&addr))
    }
}

/// The operators' side: admin API, metrics and SSH.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagementSide {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// The gateway's management address.
    pub address: IpAddr,
    /// Sources allowed to reach admin, metrics and SSH.
    pub allow_from: Vec<Cidr>,
    /// Run SSH on the management side (appliance image only).
    #[serde(default)]
    pub ssh: bool,
    /// Public keys allowed to log in over SSH.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

/// Operating-system settings the appliance image applies at boot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct System {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// NTP servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ntp: Vec<String>,
    /// DNS resolvers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
    /// Interface addressing (systemd-networkd files are generated from it at boot).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    /// Ship the journal to a collector (systemd-journal-upload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_upload: Option<JournalUpload>,
}

/// Static addressing of one network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    pub name: String,
    /// Addresses with prefix length, e.g. `203.0.113.10/24`.
    pub addresses: Vec<InterfaceAddress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// Journal upload target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JournalUpload {
    /// Collector URL, e.g. `https://logs.example.net:19532`.
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// A listening socket address on one side.
pub type Listen = SocketAddr;
