//! What the gateway does between the sides: the upstream SIP servers, the media bridge and TURN.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::edge::Transport;
use super::values::{Cidr, Duration, PortRange};

/// Whether the gateway registers agents' DNs with the SIP server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RegistrationMode {
    /// The SIP server is configured with the gateway as the DNs' contact.
    #[default]
    None,
    /// Each registered agent's DN is registered with the SIP server (Contact = the gateway).
    Register,
}

/// The internal SIP server(s).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub servers: Vec<UpstreamServer>,
    #[serde(default)]
    pub registration: RegistrationMode,
    /// Expiry asked for when registering DNs upstream.
    #[serde(default = "default_register_expires")]
    pub register_expires: Duration,
    /// Session timer (RFC 4028) asked for on calls the gateway places with the SIP server; the
    /// server's own request wins on calls it places. At least 90 s.
    #[serde(default = "default_session_expires")]
    pub session_expires: Duration,
    /// How long a call's INVITE may wait for any answer (even 100 Trying) from a SIP server
    /// before the next server is tried, or the agent gets 503: a server that is down fails a
    /// call in seconds instead of after the 32 s of a SIP transaction timeout.
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout: Duration,
    /// Digest realm of the SIP server, for `upstream_ha1_md5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_realm: Option<String>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub outbound: Outbound,
}

fn default_register_expires() -> Duration {
    Duration::secs(3600)
}

fn default_session_expires() -> Duration {
    Duration::secs(1800)
}

fn default_reply_timeout() -> Duration {
    Duration::secs(2)
}

/// One SIP server. Lower priority is tried first; weight spreads load within a priority.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServer {
    pub address: SocketAddr,
    #[serde(default = "default_transport")]
    pub transport: Transport,
    #[serde(default = "default_priority")]
    pub priority: u16,
    #[serde(default = "default_weight")]
    pub weight: u16,
}

fn default_transport() -> Transport {
    Transport::Udp
}
fn default_priority() -> u16 {
    1
}
fn default_weight() -> u16 {
    100
}

/// OPTIONS health checks of the upstream servers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    /// Consecutive failed checks before a server is skipped.
    #[serde(default = "default_failures")]
    pub failures: u32,
}

impl Default for Health {
    fn default() -> Self {
        Self { interval: default_health_interval(), failures: default_failures() }
    }
}

fn default_health_interval() -> Duration {
    Duration::secs(10)
}
fn default_failures() -> u32 {
    3
}

/// Which calls agents may place through the SIP server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Outbound {
    /// Destinations agents may dial (regular expressions matched against the whole user part).
    /// Empty: agents may only call the echo number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// File holding the HMAC secret a CRM uses to sign click-to-dial tokens. When set, an
    /// outbound INVITE needs a valid token header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_file: Option<PathBuf>,
    /// Lab mode only: the token secret inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<String>,
    /// Header carrying the token.
    #[serde(default = "default_token_header")]
    pub token_header: String,
    /// How old a token may be.
    #[serde(default = "default_token_max_age")]
    pub token_max_age: Duration,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            patterns: Vec::new(),
            token_secret_file: None,
            token_secret: None,
            token_header: default_token_header(),
            token_max_age: default_token_max_age(),
        }
    }
}

fn default_token_header() -> String {
    "X-Gatewayd-Token".into()
}
fn default_token_max_age() -> Duration {
    Duration::secs(300)
}

/// The media bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Media {
    /// UDP ports for browser media on the public side (one per call).
    pub public_ports: PortRange,
    /// UDP ports for plain RTP toward the SIP server (two per call: RTP and RTCP).
    pub internal_ports: PortRange,
    /// Put all browser media on this one public UDP port (demultiplexed by ICE username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_port: Option<u16>,
    /// Codecs toward the SIP server, in order of preference (G.711 only).
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Codec>,
    /// Codecs toward the agents' browsers, in order of preference. `opus` is transcoded to the
    /// SIP server's G.711 (in-band FEC keeps calls on lossy home networks intelligible); a G.711
    /// codec listed here passes through untouched when the server uses it too and must also be
    /// in `codecs`. Empty: the same as `codecs`, nothing is transcoded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub agent_codecs: Vec<AgentCodec>,
    /// Pass RFC 4733 telephone-events (DTMF) both ways.
    #[serde(default = "yes")]
    pub telephone_event: bool,
    /// DSCP value for sent RTP (46 = EF); 0 leaves packets unmarked.
    #[serde(default = "default_dscp")]
    pub dscp: u8,
    /// Concurrent calls accepted; more get 503.
    pub max_calls: u32,
    /// A leg without media for this long is reported and the call ended.
    #[serde(default = "default_no_media_timeout")]
    pub no_media_timeout: Duration,
}

/// A G.711 codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Codec {
    PCMU,
    PCMA,
}

/// A codec toward the browser: `opus` (48 kHz, RFC 7587, in-band FEC on, DTX off; transcoded
/// to G.711) or a G.711 codec passed through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum AgentCodec {
    #[serde(rename = "opus")]
    Opus,
    PCMU,
    PCMA,
}

fn yes() -> bool {
    true
}
fn default_codecs() -> Vec<Codec> {
    vec![Codec::PCMU, Codec::PCMA]
}
fn default_dscp() -> u8 {
    46
}
fn default_no_media_timeout() -> Duration {
    Duration::secs(30)
}

/// STUN/TURN for browsers behind restrictive networks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_udp: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_tcp: Vec<SocketAddr>,
    /// TURN over TLS listeners (certificate from `[tls]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen_tls: Vec<SocketAddr>,
    pub realm: String,
    /// File holding the shared secret for ephemeral credentials (TURN REST API); the softphone
    /// gets credentials minted from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret_file: Option<PathBuf>,
    /// Lab mode only: the shared secret inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared_secret: Option<String>,
    /// Lifetime of minted credentials.
    #[serde(default = "default_credential_lifetime")]
    pub credential_lifetime: Duration,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<TurnUser>,
    /// Relay ports on the public side.
    pub relay_ports: PortRange,
    /// Peer ranges TURN may relay to even though they are private (never loopback or internal).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_peers: Vec<Cidr>,
    /// Extra peer ranges TURN never relays to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_peers: Vec<Cidr>,
    /// What one user, one source and all clients together may hold.
    #[serde(default)]
    pub limits: TurnLimits,
}

/// Bounds on TURN allocations: a flood or a leaked credential costs bounded memory and bandwidth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnLimits {
    /// Allocations held by all clients together.
    #[serde(default = "default_max_allocations")]
    pub max_allocations: u32,
    /// Allocations one username may hold. A browser takes one per TURN URI and local interface for
    /// each call (three URIs on a laptop with Wi-Fi and a VPN: six), and the network check as many.
    #[serde(default = "default_allocations_per_user")]
    pub per_user: u32,
    /// Allocations one source address may hold. An office puts all its agents behind one NAT
    /// address: size this for the largest office (about six per agent on a call).
    #[serde(default = "default_allocations_per_source")]
    pub per_source: u32,
    /// Longest lifetime granted by one Allocate or Refresh.
    #[serde(default = "default_max_lifetime")]
    pub max_lifetime: Duration,
    /// Relayed traffic one allocation may carry, both directions together, in kbit/s; excess is dropped.
    #[serde(default = "default_bandwidth_kbps")]
    pub bandwidth_kbps: u32,
    /// Peer addresses one allocation may hold permissions for.
    #[serde(default = "default_permissions")]
    pub permissions: u32,
}

impl Default for TurnLimits {
    fn default() -> Self {
        Self {
            max_allocations: default_max_allocations(),
            per_user: default_allocations_per_user(),
            per_source: default_allocations_per_source(),
            max_lifetime: default_max_lifetime(),
            bandwidth_kbps: default_bandwidth_kbps(),
            permissions: default_permissions(),
        }
    }
}

fn default_max_allocations() -> u32 {
    4000
}
fn default_allocations_per_user() -> u32 {
    24
}
fn default_allocations_per_source() -> u32 {
    512
}
fn default_max_lifetime() -> Duration {
    Duration::secs(3600)
}
fn default_bandwidth_kbps() -> u32 {
    512
}
fn default_permissions() -> u32 {
    32
}

fn default_credential_lifetime() -> Duration {
    Duration::secs(12 * 3600)
}

/// A static TURN user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TurnUser {
    pub username: String,
    /// MD5(username:realm:password), hex: the long-term credential key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_md5: Option<String>,
    /// Lab mode only: plaintext password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}
