//! Typed errors of the media bridge; call control maps them to SIP status codes.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum MediaError {
    /// No free port (or call slot) left: the caller answers 503.
    #[error("media ports exhausted")]
    PortsExhausted,
    /// The configured call limit is reached: the caller answers 503.
    #[error("media call limit reached")]
    TooManyCalls,
    /// The peer's SDP cannot be used (no common codec, malformed, missing fingerprint): 488.
    #[error("unacceptable SDP: {0}")]
    Sdp(String),
    /// The operation does not fit the negotiation state (answer without offer): 500.
    #[error("negotiation state: {0}")]
    State(String),
    #[error("media configuration: {0}")]
    Config(String),
    #[error("DTLS certificate: {0}")]
    Certificate(String),
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    /// The engine has stopped.
    #[error("media engine stopped")]
    Stopped,
}

impl MediaError {
    /// The SIP status code that call control should answer with.
    pub fn sip_status(&self) -> u16 {
        match self {
            MediaError::PortsExhausted | MediaError::TooManyCalls | MediaError::Stopped => 503,
            MediaError::Sdp(_) => 488,
            _ => 500,
        }
    }
}
