//! What every received message goes through before a transaction, the registrar or call control
//! sees it, on the agents' WebSockets and on the internal UDP/TCP side alike: the start line
//! (SIP version, Request-URI scheme), `message::parse` (the mandatory headers), and for requests
//! the extensions they require and their hop count. Each refusal is a `Rejection`, which names
//! its status code, its reason phrase and a fixed label to count it by; `refusal_for` builds the
//! response from the raw bytes, so a request too broken to parse is answered the same way as one
//! turned down after parsing.
//!
//! Choices the RFCs leave open:
//! - `tel:` Request-URIs get 416: nothing routes them (agents and the SIP server use SIP URIs).
//! - OPTIONS is always answered by the gateway itself (never forwarded), so one with
//!   `Max-Forwards: 0` gets its normal answer (RFC 3261 sections 11 and 16.3 step 3); every other
//!   request with `Max-Forwards: 0` gets 483. ACK is never answered, and goes on.
//! - 421 Extension Required is never sent: nothing the gateway does needs an extension of its
//!   peer (when a peer cannot refresh a session timer, the gateway refreshes, RFC 4028 section 9).

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, SipMessage};

use super::headers::split_header_list;
use super::message::{self, refusal, ParseError};

/// The option tags the gateway supports in a `Require` (RFC 3261 section 8.2.2.3): RFC 4028
/// session timers. 100rel, replaces and the rest are not implemented, so they are refused.
pub const SUPPORTED: &[&str] = &["timer"];

/// Why a received message is turned down before anything acts on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The start line names a SIP version other than 2.0.
    #[error("SIP version {0} not supported")]
    VersionNotSupported(String),
    /// The Request-URI's scheme is not `sip` or `sips`.
    #[error("Request-URI scheme {0:?} not supported")]
    UnsupportedScheme(String),
    /// Not a well-formed SIP message (a mandatory header missing or unreadable...).
    #[error(transparent)]
    Malformed(#[from] ParseError),
    /// `Require` lists option tags the gateway does not support.
    #[error("unsupported extensions required: {}", .0.join(", "))]
    BadExtension(Vec<String>),
    /// `Max-Forwards: 0` on a request the gateway would have to handle.
    #[error("Max-Forwards is 0")]
    TooManyHops,
}

impl Rejection {
    pub fn status_code(&self) -> u16 {
        match self {
            Rejection::VersionNotSupported(_) => 505,
            Rejection::UnsupportedScheme(_) => 416,
            Rejection::Malformed(e) => e.status_code(),
            Rejection::BadExtension(_) => 420,
            Rejection::TooManyHops => 483,
        }
    }

    /// The reason phrase for the status line.
    pub fn reason_phrase(&self) -> String {
        match self {
            Rejection::Malformed(e) => e.reason_phrase(),
            other => other.reason().to_owned(),
        }
    }

    /// A fixed label (the reason phrase without detail) to count rejections by.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::VersionNotSupported(_) => "Version Not Supported",
            Rejection::UnsupportedScheme(_) => "Unsupported URI Scheme",
            Rejection::Malformed(e) => e.reason(),
            Rejection::BadExtension(_) => "Bad Extension",
            Rejection::TooManyHops => "Too Many Hops",
        }
    }

    /// True for what the ban engine counts as malformed SIP: a message that is not well-formed,
    /// as opposed to a well-formed request asking for what the gateway does not do.
    pub fn is_malformed(&self) -> bool {
        matches!(self, Rejection::VersionNotSupported(_) | Rejection::Malformed(_))
    }

    /// Headers the response must carry besides the copied ones.
    fn extra_headers(&self) -> Vec<Header> {
        match self {
            // RFC 3261 section 8.2.2.3: the 420 lists what was not understood.
            Rejection::BadExtension(tags) => {
                vec![Header::Unsupported(rsip::headers::Unsupported::new(tags.join(", ")))]
            }
            _ => Vec::new(),
        }
    }
}

/// Checks and parses one complete message (a WebSocket frame, a datagram, or one message cut
/// from a TCP stream). Responses are only parsed: they are never answered.
pub fn screen(bytes: &[u8]) -> Result<SipMessage, Rejection> {
    check_start_line(bytes)?;
    let message = message::parse(bytes)?;
    if let SipMessage::Request(request) = &message {
        check_request(request)?;
    }
    Ok(message)
}

/// The response to send for `rejection` of the request in `bytes`, or `None` when there is none
/// to send (a response, an ACK, or a message without a readable Via).
pub fn refusal_for(bytes: &[u8], rejection: &Rejection, to_tag: &str) -> Option<rsip::Response> {
    let reason = rejection.reason_phrase();
    refusal(bytes, rejection.status_code(), &reason, rejection.extra_headers(), to_tag)
}

/// The start line's SIP version and, for a request, its Request-URI scheme. Checked on the raw
/// bytes: rsip reads `SIP/2.1` as 2.0 and refuses some URI schemes with a syntax error.
pub fn check_start_line(bytes: &[u8]) -> Result<(), Rejection> {
    let end = bytes.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(bytes.len());
    let Ok(line) = std::str::from_utf8(&bytes[..end]) else { return Ok(()) };
    let parts: Vec<&str> = line.trim().split(' ').collect();
    let is_version = |p: &str| p.len() > 4 && p.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/");
    let (version, uri) = match parts.as_slice() {
        // A response: `SIP/2.0 200 OK`.
        [version, ..] if is_version(version) => (*version, None),
        [_method, uri, version] if is_version(version) => (*version, Some(*uri)),
        // Not a start line at all: `parse` says why.
        _ => return Ok(()),
    };
    if !version.eq_ignore_ascii_case("SIP/2.0") {
        return Err(Rejection::VersionNotSupported(short(version)));
    }
    if let Some(uri) = uri {
        let scheme = uri.split_once(':').map_or(uri, |(s, _)| s);
        if !scheme.eq_ignore_ascii_case("sip") && !scheme.eq_ignore_ascii_case("sips") {
            return Err(Rejection::UnsupportedScheme(short(scheme)));
        }
    }
    Ok(())
}

/// What a well-formed request asks of the gateway: the extensions it requires, and a hop left.
pub fn check_request(request: &Request) -> Result<(), Rejection> {
    // RFC 3261 section 8.2.2.3: Require is ignored on CANCEL and ACK.
    if matches!(request.method, Method::Ack | Method::Cancel) {
        return Ok(());
    }
    let unsupported = unsupported_required(request);
    if !unsupported.is_empty() {
        return Err(Rejection::BadExtension(unsupported));
    }
    if request.method != Method::Options && max_forwards(request) == Some(0) {
        return Err(Rejection::TooManyHops);
    }
    Ok(())
}

/// The option tags of every `Require` header that `SUPPORTED` does not list, each once.
pub fn unsupported_required(request: &Request) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for header in request.headers.iter() {
        let Header::Require(require) = header else { continue };
        for tag in split_header_list(require.value()) {
            let known = SUPPORTED.iter().any(|s| s.eq_ignore_ascii_case(tag));
            if !known && !out.iter().any(|t| t.eq_ignore_ascii_case(tag)) && out.len() < 8 {
                out.push(short(tag));
            }
        }
    }
    out
}

fn max_forwards(request: &Request) -> Option<u32> {
    request.headers.iter().find_map(|h| match h {
        Header::MaxForwards(m) => m.value().trim().parse().ok(),
        _ => None,
    })
}

/// Echoed text stays short and printable.
fn short(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(32).collect()
}

#[cfg(test)]
mod tests;
