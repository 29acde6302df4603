//! What agents meet: TLS, the web listeners, SIP (agent registrar and the internal SIP
//! listeners) and the agents themselves.

use std::net::SocketAddr;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::Duration;

/// Where the public certificate comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsSource {
    /// PEM files named by `certificate` and `key`.
    #[default]
    Files,
    /// Generated at first start into the state directory (lab mode only).
    SelfSigned,
    /// Obtained and renewed from an ACME CA for `acme.domains`.
    Acme,
}

/// Certificates for HTTPS/WSS and TURN over TLS.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    #[serde(default)]
    pub source: TlsSource,
    /// PEM certificate chain (source = "files"); relative to the profile's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<PathBuf>,
    /// PEM private key (source = "files"); relative to the profile's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Names and addresses in a generated self-signed certificate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<Acme>,
}

/// ACME account and domains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Acme {
    /// Directory URL of the CA.
    #[serde(default = "default_acme_directory")]
    pub directory: String,
    /// Account contact, e.g. `mailto:noc@example.com`.
    pub contact: String,
    /// The names the certificate is for; they must resolve to this gateway's public side.
    pub domains: Vec<String>,
    /// How the CA checks that the names are ours: `http-01` answers on a `web.http_redirect`
    /// listener (port 80 for a public CA), `tls-alpn-01` on the HTTPS listener (port 443).
    #[serde(default)]
    pub challenge: AcmeChallenge,
    /// A PEM CA certificate trusted for the ACME directory's own HTTPS (a private CA, or
    /// Pebble in tests); relative to the profile's directory. Without it, the system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory_ca: Option<PathBuf>,
    /// External account binding (RFC 8555 section 7.3.4), for CAs that require one (ZeroSSL,
    /// Google Trust Services, Sectigo): used once, when the account is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_account: Option<ExternalAccount>,
}

/// The key identifier and MAC key a CA hands out for binding an ACME account.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalAccount {
    pub key_id: String,
    /// A file holding the MAC key as the CA gives it (base64url); relative to the profile's
    /// directory. Never inline: it would leak with the profile.
    pub hmac_key_file: PathBuf,
}

impl ExternalAccount {
    /// The raw MAC key from its file.
    pub fn hmac_key(&self, resolve: impl Fn(&std::path::Path) -> PathBuf) -> Result<Vec<u8>, String> {
        use base64::Engine;
        let path = resolve(&self.hmac_key_file);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text = text.trim().trim_end_matches('=');
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| format!("{} is not a base64url MAC key: {e}", path.display()))
            .and_then(|k| if k.is_empty() { Err(format!("{} holds an empty MAC key", path.display())) } else { Ok(k) })
    }
}

/// The ACME challenge the gateway answers (RFC 8555 section 8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AcmeChallenge {
    /// A file under `/.well-known/acme-challenge/` on a plain HTTP listener.
    #[default]
    #[serde(rename = "http-01")]
    Http01,
    /// A validation certificate on the HTTPS listener (RFC 8737; port 443 for a public CA),
    /// for sites where port 80 stays closed.
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
}

fn default_acme_directory() -> String {
    "https://acme-v02.api.letsencrypt.org/directory".into()
}

/// The HTTPS side: softphone page and SIP over WebSocket (`/ws`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// HTTPS + WSS listeners (public side).
    pub https: Vec<SocketAddr>,
    /// Plain HTTP listeners that only redirect to HTTPS (and answer ACME challenges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http_redirect: Vec<SocketAddr>,
    /// Serve the agent softphone at `/`.
    #[serde(default = "yes")]
    pub softphone: bool,
    /// Origins allowed to open `/ws` (exact scheme://host[:port]). The gateway's own origin is
    /// always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Largest accepted WebSocket message.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: u32,
    /// Concurrent connections allowed from one source address.
    #[serde(default = "default_connections_per_source")]
    pub max_connections_per_source: u32,
}

fn yes() -> bool {
    true
}
fn default_max_message_bytes() -> u32 {
    65_536
}
fn default_connections_per_source() -> u32 {
    20
}

/// SIP transport toward the SIP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
}

/// One internal SIP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SipListen {
    pub address: SocketAddr,
    pub transport: Transport,
}

/// SIP: the internal listeners, the agent registrar and digest authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sip {
    /// Internal-side SIP listeners (never on the public side).
    pub listen: Vec<SipListen>,
    /// A number the gateway answers itself with an audio echo, for agents to test their setup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_number: Option<String>,
    #[serde(default)]
    pub registrar: Registrar,
    #[serde(default)]
    pub auth: Auth,
}

/// What happens when a DN registers from a second connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum DuplicateRegistration {
    /// The newer connection takes the DN; the older binding is dropped.
    #[default]
    Replace,
    /// The newer registration is refused while the older one lives.
    Reject,
}

/// The agent registrar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Registrar {
    /// Shortest registration accepted (shorter gets 423 Interval Too Brief).
    #[serde(default = "default_min_expires")]
    pub min_expires: Duration,
    /// Longest registration granted (longer is shortened).
    #[serde(default = "default_max_expires")]
    pub max_expires: Duration,
    /// Used when the REGISTER asks for none.
    #[serde(default = "default_expires")]
    pub default_expires: Duration,
    #[serde(default)]
    pub duplicate: DuplicateRegistration,
}

impl Default for Registrar {
    fn default() -> Self {
        Self {
            min_expires: default_min_expires(),
            max_expires: default_max_expires(),
            default_expires: default_expires(),
            duplicate: DuplicateRegistration::default(),
        }
    }
}

fn default_min_expires() -> Duration {
    Duration::secs(60)
}
fn default_max_expires() -> Duration {
    Duration::secs(3600)
}
fn default_expires() -> Duration {
    Duration::secs(600)
}

/// Digest authentication of agents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// How long a nonce stays valid before the client is told `stale=true`.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: Duration,
    /// Digest algorithms challenged, one WWW-Authenticate each, in this order. RFC 8760 clients
    /// take the first they support, so SHA-256 leads; JsSIP (the softphone's SIP stack) keeps
    /// only the last challenge and speaks only MD5, so MD5 must stay last while it is in use.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<DigestAlgorithm>,
}

impl Default for Auth {
    fn default() -> Self {
        Self { nonce_lifetime: default_nonce_lifetime(), algorithms: default_algorithms() }
    }
}

/// A digest algorithm (RFC 7616, RFC 8760).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DigestAlgorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

fn default_algorithms() -> Vec<DigestAlgorithm> {
    vec![DigestAlgorithm::Sha256, DigestAlgorithm::Md5]
}

fn default_nonce_lifetime() -> Duration {
    Duration::secs(300)
}

/// When the softphone answers by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum AutoAnswer {
    /// Never, whatever the SIP server asks.
    Never,
    /// When the SIP server asks for it (Call-Info answer-after / Alert-Info).
    #[default]
    OnRequest,
    /// Every inbound call.
    Always,
}

/// One agent DN or a range of DNs sharing the same options.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// A DN (`"5001"`) or an inclusive range (`"5001-5020"`).
    pub dn: String,
    /// Lab mode only: plaintext password; `{dn}` is replaced by each DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// H(dn:realm:password) with MD5, hex (`gatewayd hash-password`). Single DN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_md5: Option<String>,
    /// H(dn:realm:password) with SHA-256, hex. Single DN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha1_sha256: Option<String>,
    /// Display name; `{dn}` is replaced by each DN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default)]
    pub auto_answer: AutoAnswer,
    /// Destinations this agent may dial in addition to `upstream.outbound.patterns` (regexes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_destinations: Vec<String>,
    /// Registration mode `register`, lab mode only: the password toward the SIP server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_password: Option<String>,
    /// Registration mode `register`: MD5 HA1 toward the SIP server's realm. Single DN only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ha1_md5: Option<String>,
}

impl Agent {
    /// The DNs this entry names, or why it names none.
    pub fn dns(&self) -> Result<Vec<String>, String> {
        expand_dn_range(&self.dn)
    }
}

/// Expands `"5001"` or `"5001-5020"` into DNs, keeping leading zeros and width.
pub fn expand_dn_range(spec: &str) -> Result<Vec<String>, String> {
    let is_dn = |s: &str| !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit());
    match spec.split_once('-') {
        None if is_dn(spec) => Ok(vec![spec.to_owned()]),
        None => Err(format!("`{spec}` is not a DN: expected digits like \"5001\" or a range \"5001-5020\"")),
        Some((a, b)) if is_dn(a) && is_dn(b) && a.len() == b.len() => {
            let (first, last): (u64, u64) = (a.parse().map_err(|_| "DN too long")?, b.parse().map_err(|_| "DN too long")?);
            if last < first {
                return Err(format!("DN range `{spec}` is inverted: {a} comes after {b}"));
            }
            if last - first >= 100_000 {
                return Err(format!("DN range `{spec}` names more than 100000 DNs"));
            }
            Ok((first..=last).map(|n| format!("{n:0width$}", width = a.len())).collect())
        }
        Some(_) => Err(format!("`{spec}` is not a DN range: expected two DNs of the same length like \"5001-5020\"")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_ranges_expand_with_width() {
        assert_eq!(expand_dn_range("5001-5003").unwrap(), ["5001", "5002", "5003"]);
        assert_eq!(expand_dn_range("0098-0100").unwrap(), ["0098", "0099", "0100"]);
        assert_eq!(expand_dn_range("5001").unwrap(), ["5001"]);
        assert!(expand_dn_range("5003-5001").unwrap_err().contains("inverted"));
        assert!(expand_dn_range("50a1").is_err());
        assert!(expand_dn_range("5001-600").is_err());
    }
}
