//! The refusal for a request rsip could not parse, `parse` refused or the conformance checks
//! turned down. RFC 3261 section 8.2 wants such requests answered rather than dropped, and a
//! response is only useful when the sender can match it: that takes a Via it can read (the
//! branch), and From, To, Call-ID and CSeq for the parsers that insist on them. These are
//! recovered by a forgiving line scan that does not trust the rest of the message; a request
//! that lacks one of them still gets its answer, with a stand-in value so the response parses.

use super::{sanitize_reason, ParseError};
use crate::sip::headers::{split_header_list, to_tag_of, ViaEntry};
use rsip::headers::UntypedHeader;
use rsip::{Header, Headers, Response};

/// From and To of a refusal whose request had none (RFC 3261 section 8.1.1.3 anonymous form).
const ANONYMOUS: &str = "<sip:anonymous@anonymous.invalid>";

/// Header values pulled out of a message too broken for the real parser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveredHeaders {
    pub method: String,
    /// The Request-URI as written.
    pub uri: String,
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
        let (method, uri) = request_line(start)?;
        let mut found = RecoveredHeaders {
            method,
            uri,
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

    /// True when a response built from these headers can be matched by the sender: its top Via
    /// is readable, and it is not an ACK (never answered, RFC 3261 section 17.2.1).
    pub fn answerable(&self) -> bool {
        let top = self
            .vias
            .first()
            .and_then(|v| split_header_list(v).next());
        top.and_then(ViaEntry::parse).is_some() && !self.method.eq_ignore_ascii_case("ACK")
    }

    /// The CSeq to answer with: the request's when it reads as `number method`, else one built
    /// from the request line so the sender's parser can still match the response.
    fn cseq_for_response(&self) -> String {
        let given = self.cseq.as_deref().unwrap_or_default();
        let mut parts = given.split_whitespace();
        let number = parts.next().filter(|n| n.parse::<u32>().is_ok());
        let method = parts.next().filter(|m| is_token(m));
        match (number, method, parts.next()) {
            (Some(_), Some(_), None) => given.to_owned(),
            _ => format!("{} {}", number.unwrap_or("1"), self.method),
        }
    }
}

fn set_once(slot: &mut Option<String>, value: &str) {
    slot.get_or_insert_with(|| value.to_owned());
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.!%*_+`'~".contains(c))
}

/// `METHOD SP Request-URI SP SIP/x.y` gives METHOD and the URI; anything else gives `None`.
/// Any SIP version is taken, so that another version can still be told 505.
fn request_line(line: &str) -> Option<(String, String)> {
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    let version = parts.next()?;
    let sip_version = version.len() > 4 && version.as_bytes()[..4].eq_ignore_ascii_case(b"SIP/");
    (is_token(method) && !uri.is_empty() && sip_version && parts.next().is_none())
        .then(|| (method.to_owned(), uri.to_owned()))
}

/// The To of a refusal whose request had none: the Request-URI, which is what an out-of-dialog
/// To names, when it is plain enough to put between angle brackets.
fn stand_in_to(uri: &str) -> String {
    let plain = uri.contains(':')
        && uri.len() <= 256
        && !uri
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "<>\"".contains(c));
    if plain {
        format!("<{uri}>")
    } else {
        ANONYMOUS.to_owned()
    }
}

/// The `400 Bad Request` (`501` for an unknown method) for `bytes`, with `error` named in the
/// reason phrase, or `None` when the request cannot be answered (not a request, an ACK, or no
/// readable Via). `to_tag` is added when the To carries none.
pub fn bad_request_for(bytes: &[u8], error: &ParseError, to_tag: &str) -> Option<Response> {
    refusal(bytes, error.status_code(), &error.reason_phrase(), Vec::new(), to_tag)
}

/// A final response with `code` and `reason` to the request in `bytes`, with `extra` headers
/// (such as `Unsupported`) before Content-Length; `None` when it cannot be answered.
pub fn refusal(
    bytes: &[u8],
    code: u16,
    reason: &str,
    extra: Vec<Header>,
    to_tag: &str,
) -> Option<Response> {
    let found = RecoveredHeaders::scan(bytes)?;
    if !found.answerable() {
        return None;
    }
    let tag = sanitize_reason(to_tag);
    let mut headers = Headers::default();
    for via in &found.vias {
        headers.push(Header::Via(rsip::headers::Via::new(via.clone())));
    }
    let from = found.from.clone().unwrap_or_else(|| ANONYMOUS.to_owned());
    headers.push(Header::From(rsip::headers::From::new(from)));
    let to = found.to.clone().unwrap_or_else(|| stand_in_to(&found.uri));
    let to = match to_tag_of(&to) {
        Some(_) => to,
        None => format!("{to};tag={tag}"),
    };
    headers.push(Header::To(rsip::headers::To::new(to)));
    let call_id = found
        .call_id
        .clone()
        .unwrap_or_else(|| format!("{tag}@gatewayd.invalid"));
    headers.push(Header::CallId(rsip::headers::CallId::new(call_id)));
    headers.push(Header::CSeq(rsip::headers::CSeq::new(
        found.cseq_for_response(),
    )));
    for header in extra {
        headers.push(header);
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Some(Response {
        status_code: rsip::StatusCode::Other(code, sanitize_reason(reason)),
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
        assert!(text.starts_with("SIP/2.0 400 Bad CSeq header\r\n"), "{text}");
        // The unreadable CSeq is rebuilt from the request line so the sender can match it.
        assert!(text.contains("CSeq: 1 OPTIONS\r\n"), "{text}");
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
    fn answers_with_stand_ins_for_what_the_request_lacks() {
        let bytes = b"OPTIONS sip:600@gw SIP/2.0\r\nVia: SIP/2.0/WSS h;branch=z9hG4bK1\r\n\r\n";
        let error = super::super::parse(bytes).unwrap_err();
        let response = bad_request_for(bytes, &error, "t7").unwrap();
        let text = response.to_string();
        assert!(text.starts_with("SIP/2.0 400 Missing From header\r\n"), "{text}");
        assert_eq!(response.to_header().unwrap().value(), "<sip:600@gw>;tag=t7");
        assert_eq!(response.from_header().unwrap().value(), ANONYMOUS);
        assert_eq!(response.call_id_header().unwrap().value(), "t7@gatewayd.invalid");
        assert_eq!(response.cseq_header().unwrap().value(), "1 OPTIONS");
        // What we send must be what a strict parser (ours) reads.
        assert!(super::super::parse(text.as_bytes()).is_ok(), "{text}");
        // A Request-URI that cannot stand in for a To gives the anonymous one.
        let odd = b"OPTIONS x<y:z SIP/2.0\r\nVia: SIP/2.0/WSS h;branch=z9hG4bK1\r\n\r\n";
        let response = refusal(odd, 416, "Unsupported URI Scheme", Vec::new(), "t").unwrap();
        assert_eq!(response.to_header().unwrap().value(), format!("{ANONYMOUS};tag=t"));
    }

    #[test]
    fn needs_a_readable_via() {
        let no_via = b"OPTIONS sip:x SIP/2.0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\n\
            Call-ID: i\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let error = super::super::parse(no_via).unwrap_err();
        assert_eq!(error, ParseError::MissingHeader("Via"));
        assert!(bad_request_for(no_via, &error, "t").is_none());
        let bad_via = b"OPTIONS sip:x SIP/2.0\r\nVia: nonsense\r\nFrom: <sip:a@b>;tag=1\r\n\
            To: <sip:c@d>\r\nCall-ID: i\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let error = super::super::parse(bad_via).unwrap_err();
        assert!(bad_request_for(bad_via, &error, "t").is_none());
    }

    #[test]
    fn another_sip_version_is_still_a_request_line() {
        let bytes = b"OPTIONS sip:x SIP/3.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\
            From: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: i\r\nCSeq: 1 OPTIONS\r\n\r\n";
        let response = refusal(bytes, 505, "Version Not Supported", Vec::new(), "t").unwrap();
        assert!(response.to_string().starts_with("SIP/2.0 505 Version Not Supported\r\n"));
        assert!(RecoveredHeaders::scan(b"OPTIONS sip:x HTTP/1.1\r\n\r\n").is_none());
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
