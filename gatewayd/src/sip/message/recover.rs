//! The 400 for a request rsip could not parse or `parse` refused. RFC 3261 section 8.2 wants
//! malformed requests answered rather than dropped, but a response is only useful when the
//! sender can match it: that takes the request line, Via, From, To, Call-ID and CSeq. These are
//! recovered by a forgiving line scan that does not trust the rest of the message.

use super::{sanitize_reason, ParseError};
use crate::sip::headers::to_tag_of;
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Response};

/// Header values pulled out of a message too broken for the real parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredHeaders {
    pub method: String,
    pub vias: Vec<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub call_id: Option<String>,
    pub cseq: Option<String>,
}

impl RecoveredHeaders {
    /// Scans `bytes` for a request line and the headers a response needs. `None` when the start
    /// line is not a request line (responses and garbage get no answer).
    pub fn scan(bytes: &[u8]) -> Option<Self> {
        let head_end = find(bytes, b"\r\n\r\n").unwrap_or(bytes.len());
        let head = String::from_utf8_lossy(&bytes[..head_end]);
        let mut lines = head.split("\r\n").flat_map(|l| l.split('\n'));
        let start = lines.next()?.trim();
        let method = request_line_method(start)?;
        let mut found = RecoveredHeaders {
            method,
            ..Default::default()
        };
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if value.is_empty() || value.chars().any(|c| c.is_control()) {
                continue;
            }
            let name = name.trim().to_ascii_lowercase();
            match name.as_str() {
                "via" | "v" => found.vias.push(value.to_owned()),
                "from" | "f" => set_once(&mut found.from, value),
                "to" | "t" => set_once(&mut found.to, value),
                "call-id" | "i" => set_once(&mut found.call_id, value),
                "cseq" => set_once(&mut found.cseq, value),
                _ => {}
            }
        }
        Some(found)
    }

    /// True when a response built from these headers can be matched by the sender.
    pub fn answerable(&self) -> bool {
        !self.vias.is_empty()
            && self.from.is_some()
            && self.to.is_some()
            && self.call_id.is_some()
            && self.cseq.is_some()
            && !self.method.eq_ignore_ascii_case("ACK")
    }
}

fn set_once(slot: &mut Option<String>, value: &str) {
    slot.get_or_insert_with(|| value.to_owned());
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `METHOD SP Request-URI SP SIP/2.0` gives METHOD; anything else gives `None`.
fn request_line_method(line: &str) -> Option<String> {
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let _uri = parts.next()?;
    let version = parts.next()?;
    let is_token = !method.is_empty()
        && method
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c));
    (is_token && version.eq_ignore_ascii_case("SIP/2.0") && parts.next().is_none())
        .then(|| method.to_owned())
}

/// The `400 Bad Request` (`501` for an unknown method) for `bytes`, with `error` named in the
/// reason phrase, or `None` when the request cannot be answered (not a request, an ACK, or a
/// header a response needs is missing). `to_tag` is added when the To carries none.
pub fn bad_request_for(bytes: &[u8], error: &ParseError, to_tag: &str) -> Option<Response> {
    let found = RecoveredHeaders::scan(bytes)?;
    if !found.answerable() {
        return None;
    }
    let mut headers = Headers::default();
    for via in &found.vias {
        headers.push(Header::Via(rsip::headers::Via::new(via.clone())));
    }
    headers.push(Header::From(rsip::headers::From::new(found.from?)));
    let to = found.to?;
    let to = match to_tag_of(&to) {
        Some(_) => to,
        None => format!("{to};tag={tag}", tag = sanitize_reason(to_tag)),
    };
    headers.push(Header::To(rsip::headers::To::new(to)));
    headers.push(Header::CallId(rsip::headers::CallId::new(found.call_id?)));
    headers.push(Header::CSeq(rsip::headers::CSeq::new(found.cseq?)));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Some(Response {
        status_code: rsip::StatusCode::Other(error.status_code(), error.reason_phrase()),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsip::message::HeadersExt;

    const BROKEN_CSEQ: &[u8] = b"OPTIONS sip:600@gw SIP/2.0\r\n\
        Via: SIP/2.0/WSS a.invalid;branch=z9hG4bKabc\r\n\
        Via: SIP/2.0/UDP b.invalid;branch=z9hG4bKdef\r\n\
        From: <sip:5001@gw>;tag=f1\r\nTo: <sip:600@gw>\r\nCall-ID: c1\r\nCSeq: x OPTIONS\r\n\r\n";

    #[test]
    fn answers_a_request_whose_cseq_is_broken() {
        let error = super::super::parse(BROKEN_CSEQ).unwrap_err();
        assert!(
            matches!(error, ParseError::InvalidHeader { name: "CSeq", .. }),
            "{error:?}"
        );
        let response = bad_request_for(BROKEN_CSEQ, &error, "t9").unwrap();
        assert_eq!(response.status_code.code(), 400);
        let text = response.to_string();
        assert!(
            text.starts_with("SIP/2.0 400 Bad Request (invalid CSeq header"),
            "{text}"
        );
        let vias: Vec<_> = response
            .headers
            .iter()
            .filter(|h| matches!(h, Header::Via(_)))
            .collect();
        assert_eq!(vias.len(), 2);
        assert!(text.contains("Via: SIP/2.0/WSS a.invalid;branch=z9hG4bKabc\r\nVia: SIP/2.0/UDP"));
        assert_eq!(response.to_header().unwrap().value(), "<sip:600@gw>;tag=t9");
        assert_eq!(response.call_id_header().unwrap().value(), "c1");
    }

    #[test]
    fn keeps_an_existing_to_tag_and_reads_compact_forms() {
        let bytes =
            b"INFO sip:x SIP/2.0\r\nv: SIP/2.0/TCP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\n\
            t: <sip:c@d>;tag=2\r\ni: id\r\nCSeq: 1 INF\r\n\r\n";
        let error = ParseError::Syntax("x".into());
        let response = bad_request_for(bytes, &error, "new").unwrap();
        assert_eq!(response.to_header().unwrap().value(), "<sip:c@d>;tag=2");
    }

    #[test]
    fn refuses_when_a_needed_header_is_missing() {
        let bytes = b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/WSS h;branch=z9hG4bK1\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let error = super::super::parse(bytes).unwrap_err();
        assert_eq!(error, ParseError::MissingHeader("Call-ID"));
        assert!(bad_request_for(bytes, &error, "t").is_none());
    }

    #[test]
    fn never_answers_ack_responses_or_garbage() {
        let ack =
            b"ACK sip:x SIP/2.0\r\nVia: SIP/2.0/WSS h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:c@d>\r\nCall-ID: i\r\nCSeq: 1 ACK\r\nMax-Forwards: x\r\n\r\n";
        let error = ParseError::Syntax("x".into());
        assert!(bad_request_for(ack, &error, "t").is_none());
        let response = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/WSS h;branch=z9hG4bK1\r\n\r\n";
        assert!(bad_request_for(response, &error, "t").is_none());
        assert!(bad_request_for(b"\x00\x01\xff garbage", &error, "t").is_none());
        assert!(bad_request_for(b"", &error, "t").is_none());
    }

    #[test]
    fn reason_phrase_carries_no_line_breaks() {
        let error = ParseError::Syntax("a\r\nInjected: yes".into());
        assert!(!error.reason_phrase().contains('\n'));
        assert!(!error.reason_phrase().contains('\r'));
    }
}
