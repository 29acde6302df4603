//! Settings the media bridge runs with; the profile owner maps the TOML profile into them.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use super::error::MediaError;

/// One public address the browser reaches: bound locally, advertised in ICE candidates.
/// Behind 1:1 NAT `bind` is the private interface address and `advertise` the public one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicAddr {
    pub bind: IpAddr,
    pub advertise: IpAddr,
}

/// Audio codecs of the bridge. G.711 passes through untouched when both legs use it; Opus is
/// for the browser leg only and is transcoded to the SIP server's G.711.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Pcmu,
    Pcma,
    Opus,
}

impl AudioCodec {
    /// The static payload type, or for Opus the dynamic one we offer.
    pub fn static_pt(self) -> u8 {
        match self {
            AudioCodec::Pcmu => 0,
            AudioCodec::Pcma => 8,
            AudioCodec::Opus => 111,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            AudioCodec::Pcmu => "PCMU",
            AudioCodec::Pcma => "PCMA",
            AudioCodec::Opus => "opus",
        }
    }
    pub fn from_name(name: &str) -> Option<AudioCodec> {
        match name.to_ascii_uppercase().as_str() {
            "PCMU" => Some(AudioCodec::Pcmu),
            "PCMA" => Some(AudioCodec::Pcma),
            "OPUS" => Some(AudioCodec::Opus),
            _ => None,
        }
    }
    pub fn is_g711(self) -> bool {
        matches!(self, AudioCodec::Pcmu | AudioCodec::Pcma)
    }
    /// RTP clock rate (RFC 7587: Opus always 48 kHz).
    pub fn clock_rate(self) -> u32 {
        if self == AudioCodec::Opus { 48_000 } else { 8000 }
    }
}

/// Where the DTLS certificate comes from. Its fingerprint must stay stable across restarts.
#[derive(Debug, Clone)]
pub enum DtlsIdentity {
    /// PEM file holding certificate and private key; created on first start when absent.
    Path(PathBuf),
    /// Certificate and PKCS#8 private key as PEM text, persisted by the caller.
    Pem { cert: String, key: String },
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Browser-facing addresses (at least one).
    pub public: Vec<PublicAddr>,
    /// SIP-server-facing address; internal RTP is bound here only.
    pub internal_bind: IpAddr,
    /// Ports for browser legs when no single public port is configured.
    pub public_ports: RangeInclusive<u16>,
    /// Ports for internal legs (even RTP port, RTCP on port+1).
    pub internal_ports: RangeInclusive<u16>,
    /// All browser media on this one port, demultiplexed by ICE ufrag and source address.
    pub single_public_port: Option<u16>,
    /// Codecs toward the SIP server (G.711 only), in preference order.
    pub codecs: Vec<AudioCodec>,
    /// Codecs toward the browser, in preference order; empty means the same as `codecs`.
    /// Opus here is transcoded to the SIP server's G.711; a G.711 entry must also be in `codecs`.
    pub agent_codecs: Vec<AudioCodec>,
    /// RFC 4733 telephone-event on both legs.
    pub telephone_event: bool,
    /// DSCP code point for sent packets (46 = EF).
    pub dscp: Option<u8>,
    /// A leg that received nothing for this long is reported once.
    pub no_media_timeout: Duration,
    /// Concurrent calls (echo included) before create_call fails.
    pub max_calls: usize,
    pub dtls: DtlsIdentity,
}

impl MediaConfig {
    pub fn validate(&self) -> Result<(), MediaError> {
        let bad = |m: &str| Err(MediaError::Config(m.to_owned()));
        if self.public.is_empty() {
            return bad("at least one public address is required");
        }
        if self.codecs.is_empty() {
            return bad("at least one codec is required");
        }
        if self.codecs.iter().any(|c| !c.is_g711()) {
            return bad("the SIP server side speaks G.711 only (PCMU, PCMA)");
        }
        if self.agent_codecs.iter().any(|c| c.is_g711() && !self.codecs.contains(c)) {
            return bad("a G.711 codec toward the browser must also be allowed toward the SIP server (only Opus is transcoded)");
        }
        if self.public_ports.is_empty() && self.single_public_port.is_none() {
            return bad("public port range is empty");
        }
        if self.internal_ports.clone().count() < 2 {
            return bad("internal port range needs at least two ports (RTP and RTCP)");
        }
        if self.dscp.is_some_and(|d| d > 63) {
            return bad("dscp must be 0..=63");
        }
        if self.max_calls == 0 {
            return bad("max_calls must be positive");
        }
        for p in &self.public {
            if p.advertise.is_unspecified() {
                return bad("advertised public address must be a concrete address");
            }
        }
        Ok(())
    }

    /// A configuration for tests and benchmarks on loopback.
    /// The browser side's codecs in preference order.
    pub fn browser_codecs(&self) -> Vec<AudioCodec> {
        if self.agent_codecs.is_empty() { self.codecs.clone() } else { self.agent_codecs.clone() }
    }

    pub fn loopback(dtls: DtlsIdentity) -> MediaConfig {
        let lo: IpAddr = [127, 0, 0, 1].into();
        MediaConfig {
            public: vec![PublicAddr { bind: lo, advertise: lo }],
            internal_bind: lo,
            public_ports: 20000..=29999,
            internal_ports: 30000..=39999,
            single_public_port: None,
            codecs: vec![AudioCodec::Pcmu, AudioCodec::Pcma],
            agent_codecs: Vec::new(),
            telephone_event: true,
            dscp: Some(46),
            no_media_timeout: Duration::from_secs(30),
            max_calls: 1000,
            dtls,
        }
    }
}
