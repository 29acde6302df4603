//! Building the SIP messages call control sends: initial INVITEs for each leg, responses with a
//! body and Contact, header pass-through. Text in, parsed out, so what we send is what rsip reads.

use rand::Rng;
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response, SipMessage};

use crate::sip::message::{self, new_branch, new_call_id, new_tag};

/// Headers copied from one leg's INVITE to the other's: caller identity, auto-answer hints and
/// the SIP server's own call data (Genesys puts call UUIDs and attached data in X- headers).
pub fn passes_through(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    matches!(n.as_str(), "call-info" | "alert-info" | "p-asserted-identity" | "user-to-user" | "subject" | "priority") || n.starts_with("x-")
}

/// The headers of `headers` that go on to the other leg, as name and value.
pub fn passed_through(headers: &rsip::Headers) -> Vec<(String, String)> {
    headers.iter().filter_map(name_value).filter(|(n, _)| passes_through(n)).collect()
}

/// The header name and value of an untyped or typed header, as text.
pub fn name_value(h: &Header) -> Option<(String, String)> {
    let text = h.to_string();
    let (name, value) = text.split_once(':')?;
    Some((name.trim().to_owned(), value.trim().to_owned()))
}

/// The value of the first header called `name` (case-insensitive).
pub fn header(headers: &rsip::Headers, name: &str) -> Option<String> {
    headers.iter().filter_map(name_value).find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
}

/// The user part of a request's URI.
pub fn uri_user(uri: &rsip::Uri) -> Option<String> {
    uri.auth.as_ref().map(|a| a.user.clone())
}

/// The methods we take inside a call, as our INVITEs and 2xx answers list them.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY";

/// What a new outgoing INVITE needs.
pub struct InviteSpec<'a> {
    pub request_uri: &'a str,
    pub via_transport: &'a str,
    pub via_sent_by: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub contact: &'a str,
    pub max_forwards: u32,
    pub extra: &'a [(String, String)],
    pub sdp: Option<&'a str>,
}

/// A request built from what a peer sent (a From, a destination, passed-through headers) that
/// does not parse back: the call is refused with a 500 instead of sending it.
#[derive(Debug, thiserror::Error)]
#[error("the request built from the peer's headers does not parse: {0}")]
pub struct BuildError(String);

impl BuildError {
    pub fn status_code(&self) -> u16 {
        500
    }
}

/// A new INVITE (new Call-ID, From tag, branch). Returns it with its From tag.
pub fn invite(spec: &InviteSpec<'_>, rng: &mut impl Rng) -> Result<(Request, String), BuildError> {
    let tag = new_tag(rng);
    // Supported names only what we implement, as `sip::conformance::SUPPORTED` does for Require.
    let mut text = format!(
        "INVITE {} SIP/2.0\r\nVia: SIP/2.0/{} {};branch={}{}\r\nMax-Forwards: {}\r\nFrom: {};tag={tag}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\nContact: {}\r\nAllow: {ALLOW}\r\nSupported: timer\r\nUser-Agent: gatewayd\r\n",
        spec.request_uri,
        spec.via_transport,
        spec.via_sent_by,
        new_branch(rng),
        if spec.via_transport == "UDP" { ";rport" } else { "" },
        spec.max_forwards,
        spec.from,
        spec.to,
        new_call_id(rng),
        spec.contact,
    );
    for (name, value) in spec.extra {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    push_body(&mut text, spec.sdp);
    Ok((parse_request(&text)?, tag))
}

fn push_body(text: &mut String, sdp: Option<&str>) {
    match sdp {
        Some(sdp) => text.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())),
        None => text.push_str("Content-Length: 0\r\n\r\n"),
    }
}

fn parse_request(text: &str) -> Result<Request, BuildError> {
    match message::parse(text.as_bytes()) {
        Ok(SipMessage::Request(r)) => Ok(r),
        Ok(SipMessage::Response(_)) => Err(BuildError("it reads as a response".into())),
        Err(e) => Err(BuildError(e.to_string())),
    }
}

/// A response to `request` with our To tag, a Contact and an optional SDP body.
pub fn response(request: &Request, code: u16, reason: Option<&str>, to_tag: &str, contact: Option<&str>, sdp: Option<&str>) -> Response {
    let mut r = message::response_to(request, code, reason, Some(to_tag));
    if let Some(contact) = contact {
        insert_before_length(&mut r.headers, Header::Contact(rsip::headers::Contact::new(contact)));
    }
    if let Some(sdp) = sdp {
        set_sdp(&mut r.headers, &mut r.body, sdp);
    }
    r
}

/// Puts an SDP body on a message, fixing Content-Type and Content-Length.
pub fn set_sdp(headers: &mut rsip::Headers, body: &mut Vec<u8>, sdp: &str) {
    set_body(headers, body, "application/sdp", sdp.as_bytes());
}

/// Puts a body of `content_type` on a message, fixing Content-Type and Content-Length.
pub fn set_body(headers: &mut rsip::Headers, body: &mut Vec<u8>, content_type: &str, bytes: &[u8]) {
    let mut kept: Vec<Header> = headers.iter().filter(|h| !matches!(h, Header::ContentLength(_) | Header::ContentType(_))).cloned().collect();
    kept.push(Header::ContentType(rsip::headers::ContentType::new(content_type)));
    kept.push(Header::ContentLength(rsip::headers::ContentLength::new(bytes.len().to_string())));
    *headers = kept.into();
    *body = bytes.to_vec();
}

/// Adds a header, keeping Content-Length last where it reads best.
pub fn insert_before_length(headers: &mut rsip::Headers, header: Header) {
    let mut all: Vec<Header> = headers.iter().cloned().collect();
    let at = all.iter().position(|h| matches!(h, Header::ContentLength(_))).unwrap_or(all.len());
    all.insert(at, header);
    *headers = all.into();
}

/// The SDP body of a message, if it carries one.
pub fn sdp_of(headers: &rsip::Headers, body: &[u8]) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let ct = header(headers, "Content-Type").unwrap_or_default().to_ascii_lowercase();
    (ct.is_empty() || ct.starts_with("application/sdp")).then(|| String::from_utf8_lossy(body).into_owned())
}

/// The CSeq number of a message.
pub fn cseq_number(headers: &rsip::Headers) -> u32 {
    header(headers, "CSeq").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(1)
}

/// Max-Forwards of a received request, minus one for our hop.
pub fn next_max_forwards(request: &Request) -> Option<u32> {
    let mf = request.headers.iter().find_map(|h| match h {
        Header::MaxForwards(v) => v.value().trim().parse::<u32>().ok(),
        _ => None,
    });
    match mf {
        Some(0) => None,
        Some(n) => Some(n - 1),
        None => Some(69),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(request_uri: &'a str, extra: &'a [(String, String)]) -> InviteSpec<'a> {
        InviteSpec {
            request_uri,
            via_transport: "UDP",
            via_sent_by: "192.0.2.1:5060",
            from: "<sip:5001@example.com>",
            to: "<sip:600@example.com>",
            contact: "<sip:5001@192.0.2.1:5060>",
            max_forwards: 70,
            extra,
            sdp: None,
        }
    }

    #[test]
    fn a_request_that_does_not_parse_back_is_an_error_not_a_crash() {
        let mut rng = rand::rng();
        let (ok, tag) = invite(&spec("sip:600@192.0.2.9", &[("X-Genesys-CallUUID".into(), "ABC".into())]), &mut rng).expect("a plain INVITE builds");
        assert!(!tag.is_empty() && header(&ok.headers, "X-Genesys-CallUUID").as_deref() == Some("ABC"));
        // A destination a peer chose that breaks the request line.
        let err = invite(&spec("sip:600@192.0.2.9 SIP/3.0\r\nbroken", &[]), &mut rng).expect_err("refused");
        assert_eq!(err.status_code(), 500);
    }
}
