//! How the box protects and reports on itself: the firewall, bans and observability.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{Cidr, Duration, PortRange};

/// The nftables ruleset gatewayd owns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// Apply the ruleset and bans with nftables (needs CAP_NET_ADMIN).
    #[serde(default = "yes")]
    pub manage: bool,
    /// Name of the nftables table (family inet) gatewayd owns; nothing else is touched.
    #[serde(default = "default_table")]
    pub table: String,
    /// ICMP accepted on every side.
    #[serde(default)]
    pub icmp: IcmpPolicy,
    /// Extra openings beyond what the enabled services need.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<FirewallAllow>,
    /// Log dropped packets (rate limited).
    #[serde(default)]
    pub log_drops: bool,
}

impl Default for Firewall {
    fn default() -> Self {
        Self { manage: true, table: default_table(), icmp: IcmpPolicy::default(), allow: Vec::new(), log_drops: false }
    }
}

fn yes() -> bool {
    true
}
fn default_table() -> String {
    "gatewayd".into()
}

/// Which ICMP the firewall accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum IcmpPolicy {
    /// Path MTU discovery and errors, plus rate-limited echo requests.
    #[default]
    Essential,
    /// Path MTU discovery and errors only.
    Minimal,
}

/// Which side of the box a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Public,
    Internal,
    Management,
}

/// Transport protocol of a firewall opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// An extra opening.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FirewallAllow {
    pub side: Side,
    pub protocol: Protocol,
    pub ports: PortRange,
    /// Sources allowed; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Cidr>,
}

/// Failure events the ban engine counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// Wrong password or unknown user in SIP digest authentication.
    DigestFailure,
    /// WebSocket upgrade from an Origin not allowed.
    OriginRejected,
    /// Unparsable SIP.
    MalformedSip,
    /// Failed TLS handshake.
    TlsHandshake,
    /// TURN authentication failure.
    TurnAuth,
    /// HTTP request answered 4xx.
    Http4xx,
    /// A per-source rate limit was exceeded.
    RateLimited,
}

/// fail2ban-style banning, carried out by nftables sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Bans {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sources never banned (loopback always is).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlist: Vec<Cidr>,
    #[serde(default = "default_rules")]
    pub rules: Vec<BanRule>,
    /// Each repeat offence multiplies the ban time by this factor.
    #[serde(default = "default_escalation")]
    pub escalation_factor: u32,
    /// Upper bound of an escalated ban.
    #[serde(default = "default_max_ban_time")]
    pub max_ban_time: Duration,
    #[serde(default)]
    pub rate_limits: RateLimits,
}

impl Default for Bans {
    fn default() -> Self {
        Self {
            enabled: true,
            allowlist: Vec::new(),
            rules: default_rules(),
            escalation_factor: default_escalation(),
            max_ban_time: default_max_ban_time(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// maxretry failures of the listed kinds within findtime ban the source for bantime.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BanRule {
    pub name: String,
    pub events: Vec<FailureKind>,
    pub max_retry: u32,
    pub find_time: Duration,
    pub ban_time: Duration,
}

fn default_rules() -> Vec<BanRule> {
    use FailureKind::*;
    vec![
        BanRule {
            name: "auth".into(),
            events: vec![DigestFailure, OriginRejected, TlsHandshake, TurnAuth],
            max_retry: 5,
            find_time: Duration::secs(600),
            ban_time: Duration::secs(3600),
        },
        BanRule {
            name: "abuse".into(),
            events: vec![MalformedSip, Http4xx, RateLimited],
            max_retry: 20,
            find_time: Duration::secs(60),
            ban_time: Duration::secs(3600),
        },
    ]
}
fn default_escalation() -> u32 {
    2
}
fn default_max_ban_time() -> Duration {
    Duration::secs(7 * 24 * 3600)
}

/// Per-source rate limits (what nginx limit_req and Kamailio pike did).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// New TCP/TLS connections per second from one source.
    #[serde(default = "default_conn_rate")]
    pub new_connections_per_second: u32,
    /// SIP requests per second from one source.
    #[serde(default = "default_sip_rate")]
    pub sip_requests_per_second: u32,
    /// Short bursts allowed above the rates.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Office networks whose addresses each carry many agents (a NAT address), with their own
    /// per-source limits instead of the ones above. The first range that holds a source wins.
    /// Sizing for N agents behind one address: `max_connections_per_source` at least N plus a
    /// tenth (each softphone holds one WebSocket; a reconnect briefly holds two);
    /// `burst` at least 2 x N, so that every agent can log in at once after a gateway restart
    /// (a login is a REGISTER, its challenge and the authorised REGISTER, and the connection
    /// itself); `new_connections_per_second` at least N / 30 and `sip_requests_per_second` at
    /// least N / 10, so the backlog of a restart clears within 30 s and re-registrations
    /// (two requests per agent per re-registration interval) stay far below the rate.
    /// 300 agents: 330 connections, burst 600, 10 connections/s, 30 requests/s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub offices: Vec<Office>,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            new_connections_per_second: default_conn_rate(),
            sip_requests_per_second: default_sip_rate(),
            burst: default_burst(),
            offices: Vec::new(),
        }
    }
}

/// Per-source limits for an office range: every address in `networks` gets these limits
/// (see `RateLimits::offices` for how to size them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Office {
    /// A name for logs.
    pub name: String,
    /// The office's public (NAT) addresses or ranges.
    pub networks: Vec<Cidr>,
    /// New TCP/TLS connections per second from one address of the office.
    pub new_connections_per_second: u32,
    /// SIP requests per second from one address of the office.
    pub sip_requests_per_second: u32,
    /// Short bursts allowed above the rates (connections and requests each).
    pub burst: u32,
    /// Concurrent connections allowed from one address of the office (instead of
    /// `web.max_connections_per_source`).
    pub max_connections_per_source: u32,
}

impl RateLimits {
    /// The office range that holds `ip`, if any.
    pub fn office_of(&self, ip: std::net::IpAddr) -> Option<&Office> {
        self.offices.iter().find(|o| o.networks.iter().any(|n| n.contains(&ip)))
    }
}

fn default_conn_rate() -> u32 {
    10
}
fn default_sip_rate() -> u32 {
    50
}
fn default_burst() -> u32 {
    40
}

/// Logs, metrics, the admin endpoint, call records and SIP capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Observe {
    /// Log filter (`info`, `debug`, `gatewayd::sip=debug,info`, ...).
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Admin endpoint (health, running profile, bans) on the management side.
    pub admin: SocketAddr,
    /// Prometheus metrics listener on the management side; defaults to the admin listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<SocketAddr>,
    /// Also append call detail records as JSON lines to this file (they always go to the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cdr_file: Option<PathBuf>,
    /// Mirror SIP and RTCP of both sides (the agent's decrypted out of WSS and SRTCP) and each
    /// call's quality summary to a HEP v3 collector (Homer's heplify-server, `sngrep -L`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hep: Option<Hep>,
    /// SIP headers whose values, when the SIP server sends them on a call, go into the call's
    /// record (`upstream_ids`), so it can be matched with the server's own records.
    #[serde(default = "default_record_headers")]
    pub record_headers: Vec<String>,
}

fn default_log_level() -> String {
    "info".into()
}

fn default_record_headers() -> Vec<String> {
    vec!["X-Genesys-CallUUID".into()]
}

/// HEP v3 capture target. Packets go over UDP through a bounded queue: a collector that is
/// down or slow costs dropped captures (counted in metrics), never call handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Hep {
    /// The collector's UDP address.
    pub collector: SocketAddr,
    /// Capture agent id (HEP chunk 0x000c), telling this gateway's packets apart at the collector.
    #[serde(default = "default_hep_id")]
    pub id: u32,
    /// The password the collector expects (HEP chunk 0x000e). HEP carries it in the clear.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_key: Option<String>,
    /// What is captured at start; the admin API (`/capture`) switches it at run time.
    #[serde(default)]
    pub capture: CaptureMode,
    /// Header naming a call's first-leg Call-ID in the captured copies of its second leg's
    /// messages, which is how sngrep and Homer join two dialogs into one flow. It is added to
    /// the capture only, never to the SIP sent. Empty: messages are captured unchanged.
    #[serde(default = "default_link_header")]
    pub link_header: String,
}

/// Which messages HEP capture sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum CaptureMode {
    /// Every SIP message and call quality summary.
    #[default]
    All,
    /// Only those of the agents (DNs) and Call-IDs selected through the admin API.
    Selected,
    /// Nothing, until switched on through the admin API.
    Off,
}

fn default_hep_id() -> u32 {
    2001
}

fn default_link_header() -> String {
    "X-CID".into()
}
