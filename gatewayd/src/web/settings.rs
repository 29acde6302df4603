//! What the web side takes from the profile, computed once per profile and swapped whole on
//! reload: connections read it when they are accepted or upgrade, so existing ones keep theirs.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rustls::server::ServerConfig;

use super::origin::OriginPolicy;
use super::turn_credentials::{self, TurnCredentials};
use crate::profile::{LoadedProfile, TlsSource};
use crate::tls::{self, CertifiedPem};

/// The one ALPN protocol offered: WebSocket upgrades need HTTP/1.1.
pub const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Why the profile's web side cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("tls.source = \"files\" needs tls.certificate and tls.key")]
    MissingFiles,
    #[error("{key}: {source}")]
    Pair { key: &'static str, source: tls::PairError },
    #[error("cannot create the self-signed certificate in {dir}: {source}")]
    SelfSigned { dir: String, source: std::io::Error },
}

/// The web side's view of one profile.
#[derive(Debug)]
pub struct Settings {
    pub tls: Arc<ServerConfig>,
    /// SHA-256 of the leaf certificate (DER), hex: says which certificate is served.
    pub certificate_sha256: String,
    /// When the leaf certificate expires (Unix seconds), when it parses.
    pub certificate_not_after: Option<i64>,
    pub origins: OriginPolicy,
    pub softphone: bool,
    pub max_message_bytes: usize,
    pub max_connections_per_source: usize,
    /// `[bans]`: the per-source rate limits, office ranges and the allowlist.
    pub bans: crate::profile::Bans,
    /// `GET /config.json`, ready to send.
    pub config_json: Bytes,
    pub https: Vec<SocketAddr>,
    pub http_redirect: Vec<SocketAddr>,
    /// SHA-256 of the profile these settings come from.
    pub profile_sha256: String,
    /// `GET /turn-credentials`; `None` (404) without `[turn]` or without a shared secret.
    pub(crate) turn_credentials: Option<TurnCredentials>,
}

impl Settings {
    /// Reads the certificate (or generates the lab one into `state_dir`) and the web settings.
    pub fn from_profile(loaded: &LoadedProfile, state_dir: &Path) -> Result<Settings, SettingsError> {
        let p = &loaded.profile;
        let pem = certificate(loaded, state_dir)?;
        let answers_tls_alpn = p.tls.source == crate::profile::TlsSource::Acme && p.tls.acme.as_ref().is_some_and(|a| a.challenge == crate::profile::AcmeChallenge::TlsAlpn01);
        let tls = if answers_tls_alpn { tls::server_config_answering_tls_alpn(&pem, ALPN, state_dir) } else { tls::server_config(&pem, ALPN) };
        let tls = tls.map_err(|e| SettingsError::Pair { key: e.key(), source: e })?;
        let certificate_sha256 = leaf_sha256(&pem);
        let certificate_not_after = leaf_not_after(&pem);
        let turn_credentials = TurnCredentials::from_profile(loaded);
        let config = serde_json::json!({
            "site": p.site.name,
            "sip_domain": p.site.sip_domain,
            "ws_path": "/ws",
            "echo_number": p.sip.echo_number,
            // Where the softphone puts a CRM's click-to-dial token (`?dial=N&token=T`).
            "token_header": p.upstream.outbound.token_header,
            // Static ICE servers; TURN credentials come from `turn_credentials` after login.
            "ice_servers": [],
            // Where the softphone gets TURN credentials with the agent's SIP password (null: none).
            "turn_credentials": turn_credentials.is_some().then_some(turn_credentials::PATH),
        });
        Ok(Settings {
            tls,
            certificate_sha256,
            certificate_not_after,
            origins: OriginPolicy::new(&p.web.allowed_origins),
            softphone: p.web.softphone,
            max_message_bytes: p.web.max_message_bytes as usize,
            max_connections_per_source: p.web.max_connections_per_source as usize,
            bans: p.bans.clone(),
            config_json: Bytes::from(serde_json::to_vec(&config).expect("config.json serializes")),
            https: p.web.https.clone(),
            http_redirect: p.web.http_redirect.clone(),
            profile_sha256: loaded.sha256.clone(),
            turn_credentials,
        })
    }
}

fn certificate(loaded: &LoadedProfile, state_dir: &Path) -> Result<CertifiedPem, SettingsError> {
    let t = &loaded.profile.tls;
    match t.source {
        TlsSource::Files => {
            let (Some(cert), Some(key)) = (&t.certificate, &t.key) else { return Err(SettingsError::MissingFiles) };
            let read = |p: &Path| {
                let path = loaded.resolve(p);
                std::fs::read(&path).map_err(|source| SettingsError::Read { path: path.display().to_string(), source })
            };
            Ok(CertifiedPem { chain: read(cert)?, key: read(key)? })
        }
        TlsSource::SelfSigned => tls::load_or_create_self_signed(state_dir, "web", &t.names)
            .map_err(|source| SettingsError::SelfSigned { dir: state_dir.display().to_string(), source }),
        TlsSource::Acme => acme_certificate(loaded, state_dir),
    }
}

/// Where the ACME client keeps the certificate it obtained, under the state directory.
pub use crate::tls::acme::DIR as ACME_DIR;

/// The certificate obtained by ACME (`<state>/acme/web.{crt,key}`) when there is one. Until
/// then a self-signed placeholder for the ACME domains is served, so the listeners (and the
/// HTTP listener that must answer http-01 challenges) are up; browsers refuse it, so nothing
/// is weakened, and the next profile reload picks up the real one.
fn acme_certificate(loaded: &LoadedProfile, state_dir: &Path) -> Result<CertifiedPem, SettingsError> {
    let dir = state_dir.join(ACME_DIR);
    if let (Ok(chain), Ok(key)) = (std::fs::read(dir.join("web.crt")), std::fs::read(dir.join("web.key"))) {
        if tls::check_pair(&chain, &key).is_ok() {
            return Ok(CertifiedPem { chain, key });
        }
    }
    let domains = loaded.profile.tls.acme.as_ref().map(|a| a.domains.clone()).unwrap_or_default();
    tracing::warn!(dir = %dir.display(), "web: no ACME certificate yet; serving a self-signed placeholder that browsers will refuse");
    tls::load_or_create_self_signed(state_dir, "acme-placeholder", &domains)
        .map_err(|source| SettingsError::SelfSigned { dir: state_dir.display().to_string(), source })
}

/// The notAfter of the first certificate in a PEM chain, in Unix seconds.
pub fn leaf_not_after(pem: &CertifiedPem) -> Option<i64> {
    tls::renewal::Validity::of_leaf(&pem.chain).map(|v| v.not_after)
}

/// SHA-256 of the first certificate in a PEM chain, hex; empty when there is none.
pub fn leaf_sha256(pem: &CertifiedPem) -> String {
    use sha2::{Digest, Sha256};
    match rustls_pemfile::certs(&mut &pem.chain[..]).next() {
        Some(Ok(der)) => hex::encode(Sha256::digest(der.as_ref())),
        _ => String::new(),
    }
}

impl Settings {
    /// Concurrent connections allowed from `ip`: its office's limit, or the profile's.
    pub fn max_connections_from(&self, ip: std::net::IpAddr) -> usize {
        let ip = crate::guard::canonical(ip);
        self.bans.rate_limits.office_of(ip).map_or(self.max_connections_per_source, |o| o.max_connections_per_source as usize)
    }
}
