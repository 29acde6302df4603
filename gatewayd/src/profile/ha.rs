//! High availability: an active/standby pair driven by keepalived (Debian's VRRP engine; gatewayd
//! renders its configuration and never speaks VRRP itself), and bans shared between the pair.
//! Types and their checks only; rendering lives in `system::render`, the ban push in `ha`.

use std::net::IpAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::InterfaceAddress;

/// `[ha]`: this node's half of an active/standby pair. The two nodes' profiles differ only in
/// `priority`, `peer`, the side peers and their own interface addresses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// VRRP priority of this node, 1-254: the higher one holds the virtual addresses.
    pub priority: u8,
    /// The peer's management address: bans are pushed there, and it is the only source the
    /// ban sync port admits.
    pub peer: IpAddr,
    /// UDP port of the ban sync on the management side, on both nodes.
    #[serde(default = "default_sync_port")]
    pub sync_port: u16,
    /// File holding the key that authenticates pushed bans (HMAC-SHA256); the same on both
    /// nodes, at least 16 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans_key_file: Option<PathBuf>,
    /// Lab mode only: the ban sync key inline (or from `GATEWAYD_HA__BANS_KEY`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans_key: Option<String>,
    /// VRRP authentication password (at most 8 characters). VRRPv3 has no authentication, so
    /// setting it makes keepalived speak VRRPv2 with a simple password; the firewall already
    /// admits VRRP from the peer only, so most sites leave it unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrrp_auth: Option<String>,
    /// The virtual address agents reach (one of `public.addresses`).
    pub public: HaSide,
    /// The virtual address the SIP server reaches (`internal.address`).
    pub internal: HaSide,
}

/// One side's VRRP instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HaSide {
    /// The virtual address with its prefix length, e.g. `203.0.113.10/24`.
    pub virtual_address: InterfaceAddress,
    /// VRRP virtual router id, 1-255; the two sides must use different ids.
    pub virtual_router_id: u8,
    /// The peer's own address on this side: adverts are sent there (unicast), and VRRP is
    /// admitted from it only.
    pub peer: IpAddr,
}

fn default_sync_port() -> u16 {
    7960
}

impl Ha {
    /// The ban sync key: the inline value, else the file's content (trimmed), relative to `dir`.
    pub fn load_bans_key(&self, dir: &std::path::Path) -> Result<Vec<u8>, String> {
        if let Some(k) = &self.bans_key {
            return Ok(k.as_bytes().to_vec());
        }
        let Some(file) = &self.bans_key_file else { return Err("ha: no bans_key_file".into()) };
        let path = dir.join(file);
        let text = std::fs::read(&path).map_err(|e| format!("ha.bans_key_file: cannot read {}: {e}", path.display()))?;
        let key = text.trim_ascii().to_vec();
        if key.len() < MIN_BANS_KEY {
            return Err(format!("ha.bans_key_file: {} holds {} bytes; at least {MIN_BANS_KEY} are needed", path.display(), key.len()));
        }
        Ok(key)
    }
}

/// Smallest ban sync key, in bytes.
pub const MIN_BANS_KEY: usize = 16;

/// The `[ha]` checks: each problem as (key, message), for the validator's diagnostics.
pub(super) fn check(p: &super::Profile) -> Vec<(String, String)> {
    let Some(ha) = &p.ha else { return Vec::new() };
    let mut out: Vec<(String, String)> = Vec::new();
    let mut error = |key: &str, message: String| out.push((key.to_owned(), message));
    if ha.priority == 0 || ha.priority == 255 {
        error("ha.priority", "must be 1-254 (255 is reserved for an address owner)".into());
    }
    // The peer is reached over the management side and nowhere else.
    if ha.peer == p.management.address {
        error("ha.peer", format!("{} is this node's own management address; name the other node's", ha.peer));
    } else if !p.management.allow_from.iter().any(|c| c.contains(&ha.peer)) {
        error("ha.peer", format!("{} is not on the management side: it must be inside management.allow_from", ha.peer));
    }
    if p.public.addresses.contains(&ha.peer) || p.internal.address == ha.peer {
        error("ha.peer", format!("{} is a public or internal address; the peer is named by its management address", ha.peer));
    }
    if ha.sync_port == 0 {
        error("ha.sync_port", "must be a port number, not 0".into());
    }
    match (&ha.bans_key, &ha.bans_key_file) {
        (None, None) => error("ha", "shared bans need a key: set bans_key_file (bans_key in lab mode)".into()),
        (Some(_), Some(_)) => error("ha.bans_key", "set bans_key or bans_key_file, not both".into()),
        (Some(_), None) if !p.site.lab_mode => {
            error("ha.bans_key", "plaintext secrets are only allowed with site.lab_mode = true; use bans_key_file".into())
        }
        // Like every secret file, the key file is read when the daemon starts, not here: the
        // profile is validated on machines that do not hold the secrets.
        (Some(k), None) if k.len() < MIN_BANS_KEY => {
            error("ha.bans_key", format!("the key has {} bytes; at least {MIN_BANS_KEY} are needed", k.len()))
        }
        _ => {}
    }
    if let Some(a) = &ha.vrrp_auth {
        if a.is_empty() || a.len() > 8 || !a.bytes().all(|b| b.is_ascii_graphic()) {
            error("ha.vrrp_auth", "must be 1-8 printable characters without spaces (VRRPv2 simple password)".into());
        }
    }
    let public_vip = ha.public.virtual_address.0.addr();
    if !p.public.addresses.contains(&public_vip) {
        error("ha.public.virtual_address", format!("{public_vip} is not one of public.addresses: the listeners bind the virtual address"));
    }
    if p.internal.contains(public_vip) {
        error("ha.public.virtual_address", format!("{public_vip} belongs to the internal side"));
    }
    let internal_vip = ha.internal.virtual_address.0.addr();
    if internal_vip != p.internal.address {
        error("ha.internal.virtual_address", format!("{internal_vip} is not internal.address ({}): SIP binds the virtual address", p.internal.address));
    }
    if p.public.addresses.contains(&internal_vip) {
        error("ha.internal.virtual_address", format!("{internal_vip} is on the public side"));
    }
    for (name, side, vip) in [("public", &ha.public, public_vip), ("internal", &ha.internal, internal_vip)] {
        if side.virtual_router_id == 0 {
            error(&format!("ha.{name}.virtual_router_id"), "must be 1-255".into());
        }
        if side.peer == vip {
            error(&format!("ha.{name}.peer"), format!("{} is the virtual address; name the peer's own address on this side", side.peer));
        }
        if side.peer.is_ipv4() != vip.is_ipv4() {
            error(&format!("ha.{name}.peer"), "must be of the virtual address's family".into());
        } else if !side.virtual_address.0.contains(&side.peer) {
            error(&format!("ha.{name}.peer"), format!("{} is not on the virtual address's network {}", side.peer, side.virtual_address.0.trunc()));
        }
    }
    if ha.public.virtual_router_id == ha.internal.virtual_router_id {
        error("ha.internal.virtual_router_id", format!("{} is also ha.public.virtual_router_id; each side needs its own", ha.internal.virtual_router_id));
    }
    if p.public.interface.as_deref().unwrap_or("").is_empty() {
        error("public.interface", "[ha] needs the interface keepalived moves the public virtual address on".into());
    }
    if p.internal.interface.as_deref().unwrap_or("").is_empty() {
        error("internal.interface", "[ha] needs the interface keepalived moves the internal virtual address on".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    const HA: &str = r#"
[ha]
priority = 150
peer = "127.0.0.2"
bans_key = "0123456789abcdef0123"
[ha.public]
virtual_address = "198.51.100.10/24"
virtual_router_id = 51
peer = "198.51.100.12"
[ha.internal]
virtual_address = "10.1.0.10/24"
virtual_router_id = 52
peer = "10.1.0.12"
"#;

    /// The lab profile made into one node of a pair, its `[ha]` section being `ha`.
    fn pair_node(ha: &str) -> String {
        let lab = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.toml")).unwrap();
        lab.replace("[public]\naddresses = [\"127.0.0.1\"]", "[public]\ninterface = \"pub0\"\naddresses = [\"127.0.0.1\", \"198.51.100.10\"]")
            .replace("[internal]\naddress = \"127.0.0.1\"\nnetworks = [\"127.0.0.0/8\"]", "[internal]\ninterface = \"int0\"\naddress = \"10.1.0.10\"\nnetworks = [\"127.0.0.0/8\", \"10.1.0.0/24\"]")
            + ha
    }

    /// The problems of a pair node, with `edit` applied to the whole text.
    fn check(edit: impl Fn(String) -> String) -> Vec<(String, String)> {
        let text = edit(pair_node(HA));
        match crate::profile::load_str(Path::new("/p/profile.toml"), &text, std::iter::empty()) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.into_iter().map(|d| (d.key, d.message)).collect(),
        }
    }

    fn rejects(edit: impl Fn(String) -> String, key: &str, words: &str) {
        let problems = check(edit);
        assert!(problems.iter().any(|(k, m)| k == key && m.contains(words)), "expected {key}: {words}; got {problems:?}");
    }

    #[test]
    fn a_good_pair_node_validates() {
        assert_eq!(check(|t| t), Vec::new());
    }

    #[test]
    fn the_public_virtual_address_must_be_bound_on_the_public_side() {
        rejects(|t| t.replace("\"198.51.100.10/24\"", "\"198.51.100.11/24\""), "ha.public.virtual_address", "not one of public.addresses");
        rejects(|t| t.replace("\"198.51.100.10/24\"", "\"10.1.0.20/24\""), "ha.public.virtual_address", "internal side");
    }

    #[test]
    fn the_internal_virtual_address_must_be_the_internal_address() {
        rejects(|t| t.replace("\"10.1.0.10/24\"", "\"10.1.0.11/24\""), "ha.internal.virtual_address", "not internal.address");
        rejects(|t| t.replace("\"10.1.0.10/24\"", "\"198.51.100.10/24\""), "ha.internal.virtual_address", "public side");
    }

    #[test]
    fn a_virtual_router_id_is_never_shared_between_sides() {
        rejects(|t| t.replace("virtual_router_id = 52", "virtual_router_id = 51"), "ha.internal.virtual_router_id", "also ha.public.virtual_router_id");
        rejects(|t| t.replace("virtual_router_id = 52", "virtual_router_id = 0"), "ha.internal.virtual_router_id", "1-255");
    }

    #[test]
    fn the_peer_is_on_management_and_not_this_node() {
        rejects(|t| t.replace("peer = \"127.0.0.2\"", "peer = \"192.0.2.1\""), "ha.peer", "not on the management side");
        rejects(|t| t.replace("peer = \"127.0.0.2\"", "peer = \"127.0.0.1\""), "ha.peer", "own management address");
    }

    #[test]
    fn side_peers_are_on_the_virtual_network() {
        rejects(|t| t.replace("peer = \"198.51.100.12\"", "peer = \"203.0.113.12\""), "ha.public.peer", "not on the virtual address's network");
        rejects(|t| t.replace("peer = \"10.1.0.12\"", "peer = \"10.1.0.10\""), "ha.internal.peer", "is the virtual address");
        rejects(|t| t.replace("peer = \"10.1.0.12\"", "peer = \"fd00::12\""), "ha.internal.peer", "family");
    }

    #[test]
    fn priority_and_port_bounds() {
        rejects(|t| t.replace("priority = 150", "priority = 255"), "ha.priority", "1-254");
        rejects(|t| t.replace("priority = 150", "priority = 0"), "ha.priority", "1-254");
        rejects(|t| t.replace("peer = \"127.0.0.2\"", "peer = \"127.0.0.2\"\nsync_port = 0"), "ha.sync_port", "not 0");
    }

    #[test]
    fn the_bans_key_is_required_long_and_inline_only_in_lab_mode() {
        rejects(|t| t.replace("bans_key = \"0123456789abcdef0123\"\n", ""), "ha", "need a key");
        rejects(|t| t.replace("0123456789abcdef0123", "short"), "ha.bans_key", "at least 16");
        rejects(|t| t.replace("lab_mode = true", "lab_mode = false"), "ha.bans_key", "lab_mode");
        rejects(|t| t.replace("bans_key = ", "bans_key_file = \"/nonexistent/key\"\nbans_key = "), "ha.bans_key", "not both");
        assert_eq!(check(|t| t.replace("bans_key = \"0123456789abcdef0123\"", "bans_key_file = \"/etc/gatewayd/ha-bans.key\"")), Vec::new());
    }

    #[test]
    fn vrrp_auth_fits_vrrpv2() {
        rejects(|t| t.replace("priority = 150", "priority = 150\nvrrp_auth = \"longer-than-8\""), "ha.vrrp_auth", "1-8");
        assert_eq!(check(|t| t.replace("priority = 150", "priority = 150\nvrrp_auth = \"s3cret\"")), Vec::new());
    }

    #[test]
    fn keepalived_needs_the_interfaces() {
        rejects(|t| t.replace("interface = \"pub0\"\n", ""), "public.interface", "[ha] needs");
        rejects(|t| t.replace("interface = \"int0\"\n", ""), "internal.interface", "[ha] needs");
    }

    #[test]
    fn the_key_can_come_from_the_environment() {
        let text = pair_node(&HA.replace("0123456789abcdef0123", "short"));
        let env = [("GATEWAYD_HA__BANS_KEY".to_owned(), "\"from-the-environment-0123\"".to_owned())];
        let loaded = crate::profile::load_str(Path::new("/p/profile.toml"), &text, env.into_iter()).unwrap();
        assert_eq!(loaded.profile.ha.unwrap().bans_key.as_deref(), Some("from-the-environment-0123"));
    }
}
