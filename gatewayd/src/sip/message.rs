//! Message helpers over rsip: strict parsing with a typed error, the 400 we can still send for a
//! request we could not parse, responses built from a request, branches, tags and Max-Forwards.
//!
//! rsip parses leniently (every header is an opaque string until asked for), so `parse` adds the
//! checks RFC 3261 section 8.2 and 16.3 rely on: the five headers every transaction needs must be
//! present and well formed, CSeq must name the request method, and Content-Length must fit.

use crate::sip::headers::{name_addr_uri_text, to_tag_of, top_via, ViaError};
use rand::Rng;
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::message::HeadersExt;
use rsip::{Header, Headers, Request, Response, SipMessage, StatusCode};

/// Magic cookie every RFC 3261 branch starts with (section 8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";
/// Max-Forwards we put on requests that arrive without one (RFC 3261 section 8.1.1.6).
pub const DEFAULT_MAX_FORWARDS: u32 = 70;

/// Why bytes are not an acceptable SIP message. Each maps to a status code and a reason phrase
/// that names the problem, so the sender can see what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("empty message")]
    Empty,
    #[error("method {0} not implemented")]
    UnknownMethod(String),
    #[error("malformed message: {0}")]
    Syntax(String),
    #[error("missing {0} header")]
    MissingHeader(&'static str),
    #[error("invalid {name} header: {detail}")]
    InvalidHeader { name: &'static str, detail: String },
    #[error("CSeq method {cseq} does not match request method {method}")]
    CSeqMethodMismatch { cseq: String, method: String },
    #[error("body is {actual} bytes, Content-Length says {declared}")]
    ShortBody { declared: usize, actual: usize },
}

impl ParseError {
    /// The status code this error calls for when the message was a request.
    pub fn status_code(&self) -> u16 {
        match self {
            ParseError::UnknownMethod(_) => 501,
            _ => 400,
        }
    }

    /// A reason phrase naming what is wrong (`Missing To header`, `Bad CSeq header`), safe to
    /// put on a status line. Only what rsip could not read at all keeps its detail.
    pub fn reason_phrase(&self) -> String {
        match self {
            ParseError::Syntax(detail) => sanitize_reason(&format!("Bad Request ({detail})")),
            _ => self.reason().to_owned(),
        }
    }

    /// The reason as a fixed label, for counting rejections by reason.
    pub fn reason(&self) -> &'static str {
        match self {
            ParseError::Empty | ParseError::Syntax(_) => "Bad Request",
            ParseError::UnknownMethod(_) => "Not Implemented",
            ParseError::MissingHeader(name) => header_reason(name, true),
            ParseError::InvalidHeader { name, .. } => header_reason(name, false),
            ParseError::CSeqMethodMismatch { .. } => header_reason("CSeq", false),
            ParseError::ShortBody { .. } => header_reason("Content-Length", false),
        }
    }
}

/// The headers `parse` insists on, with the reason phrases for a missing and a bad one.
const CHECKED_HEADERS: [(&str, &str, &str); 7] = [
    ("Via", "Missing Via header", "Bad Via header"),
    ("From", "Missing From header", "Bad From header"),
    ("To", "Missing To header", "Bad To header"),
    ("Call-ID", "Missing Call-ID header", "Bad Call-ID header"),
    ("CSeq", "Missing CSeq header", "Bad CSeq header"),
    ("Max-Forwards", "Missing Max-Forwards header", "Bad Max-Forwards header"),
    ("Content-Length", "Missing Content-Length header", "Bad Content-Length header"),
];

fn header_reason(name: &str, missing: bool) -> &'static str {
    match CHECKED_HEADERS.iter().find(|(n, _, _)| *n == name) {
        Some((_, m, _)) if missing => m,
        Some((_, _, b)) => b,
        None => "Bad Request",
    }
}

/// Reason phrases must not carry CR, LF or other control characters, and stay short.
fn sanitize_reason(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect()
}

/// Parses one complete SIP message (one WebSocket frame, one datagram or one framed stream
/// message) and checks the headers the transaction layer relies on.
pub fn parse(bytes: &[u8]) -> Result<SipMessage, ParseError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ParseError::Empty);
    }
    let mut message = SipMessage::try_from(bytes).map_err(|e| match unknown_method(bytes) {
        Some(method) => ParseError::UnknownMethod(method),
        None => ParseError::Syntax(short_error(&e)),
    })?;
    if matches!(message, SipMessage::Response(_)) && !status_code_is_3digit(bytes) {
        return Err(ParseError::Syntax("status code is not three digits in 100-699".into()));
    }
    expand_compact_headers(message_headers_mut(&mut message));
    validate(&mut message)?;
    Ok(message)
}

/// Whether a status line's code is three digits in 100-699 (RFC 3261 7.2, Status-Code is
/// 3DIGIT and the first digit is the class). rsip reads `000` or `0100` as numbers.
fn status_code_is_3digit(bytes: &[u8]) -> bool {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let code = line.split(|b| *b == b' ').nth(1).unwrap_or_default();
    code.len() == 3 && code.iter().all(u8::is_ascii_digit) && (b'1'..=b'6').contains(&code[0])
}

/// The method of a request line whose method rsip does not know (it refuses the message).
fn unknown_method(bytes: &[u8]) -> Option<String> {
    let line_end = bytes.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&bytes[..line_end]).ok()?;
    let mut parts = line.split(' ');
    let (method, _uri, version) = (parts.next()?, parts.next()?, parts.next()?);
    let token = !method.is_empty()
        && method
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b));
    let request_line = token && version == "SIP/2.0" && parts.next().is_none();
    (request_line && method.parse::<rsip::Method>().is_err()).then(|| sanitize_reason(method))
}

fn short_error(error: &rsip::Error) -> String {
    let text = error.to_string();
    sanitize_reason(text.lines().next().unwrap_or("unparsable"))
}

fn message_headers_mut(message: &mut SipMessage) -> &mut Headers {
    match message {
        SipMessage::Request(r) => &mut r.headers,
        SipMessage::Response(r) => &mut r.headers,
    }
}

/// Full header name for a compact form (RFC 3261 section 7.3.3), lowercase input.
pub fn compact_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "v" => "Via",
        "f" => "From",
        "t" => "To",
        "i" => "Call-ID",
        "m" => "Contact",
        "l" => "Content-Length",
        "c" => "Content-Type",
        "k" => "Supported",
        "e" => "Content-Encoding",
        "s" => "Subject",
        "o" => "Event",
        "x" => "Session-Expires",
        _ => return None,
    })
}

/// rsip keeps compact header names as `Other`; turn the ones we act on into their typed variants.
fn expand_compact_headers(headers: &mut Headers) {
    for header in headers.iter_mut() {
        let Header::Other(name, value) = header else {
            continue;
        };
        if name.len() != 1 {
            continue;
        }
        let value = value.clone();
        let expanded = match compact_name(&name.to_ascii_lowercase()) {
            Some("Via") => Header::Via(rsip::headers::Via::new(value)),
            Some("From") => Header::From(rsip::headers::From::new(value)),
            Some("To") => Header::To(rsip::headers::To::new(value)),
            Some("Call-ID") => Header::CallId(rsip::headers::CallId::new(value)),
            Some("Contact") => Header::Contact(rsip::headers::Contact::new(value)),
            Some("Content-Length") => {
                Header::ContentLength(rsip::headers::ContentLength::new(value))
            }
            Some("Content-Type") => Header::ContentType(rsip::headers::ContentType::new(value)),
            Some("Supported") => Header::Supported(rsip::headers::Supported::new(value)),
            Some("Content-Encoding") => {
                Header::ContentEncoding(rsip::headers::ContentEncoding::new(value))
            }
            Some("Subject") => Header::Subject(rsip::headers::Subject::new(value)),
            Some("Event") => Header::Event(rsip::headers::Event::new(value)),
            // rsip has no typed Session-Expires (RFC 4028); the long name is enough.
            Some("Session-Expires") => Header::Other("Session-Expires".into(), value),
            _ => continue,
        };
        *header = expanded;
    }
}

fn invalid(name: &'static str, detail: impl ToString) -> ParseError {
    ParseError::InvalidHeader {
        name,
        detail: sanitize_reason(&detail.to_string()),
    }
}

fn validate(message: &mut SipMessage) -> Result<(), ParseError> {
    let headers = match message {
        SipMessage::Request(r) => &r.headers,
        SipMessage::Response(r) => &r.headers,
    };
    repeated_single_header(headers)?;
    match top_via(headers) {
        Ok(_) => {}
        Err(ViaError::Missing) => return Err(ParseError::MissingHeader("Via")),
        Err(ViaError::Invalid) => return Err(invalid("Via", "unreadable top entry")),
    }
    let from = message
        .from_header()
        .map_err(|_| ParseError::MissingHeader("From"))?;
    name_addr_uri_text(from.value()).ok_or_else(|| invalid("From", "no URI"))?;
    let to = message
        .to_header()
        .map_err(|_| ParseError::MissingHeader("To"))?;
    name_addr_uri_text(to.value()).ok_or_else(|| invalid("To", "no URI"))?;
    let call_id = message
        .call_id_header()
        .map_err(|_| ParseError::MissingHeader("Call-ID"))?;
    if call_id.value().trim().is_empty() {
        return Err(invalid("Call-ID", "empty"));
    }
    let cseq = message
        .cseq_header()
        .map_err(|_| ParseError::MissingHeader("CSeq"))?;
    let cseq = cseq.typed().map_err(|e| invalid("CSeq", e))?;
    if let SipMessage::Request(request) = &*message {
        if cseq.method != request.method {
            return Err(ParseError::CSeqMethodMismatch {
                cseq: cseq.method.to_string(),
                method: request.method.to_string(),
            });
        }
        if let Ok(max_forwards) = request.max_forwards_header() {
            // RFC 3261 section 20.22: an integer from 0 to 255.
            let hops = max_forwards.value().trim();
            let digits = !hops.is_empty() && hops.len() <= 3 && hops.bytes().all(|b| b.is_ascii_digit());
            if !digits || hops.parse::<u8>().is_err() {
                return Err(invalid("Max-Forwards", hops));
            }
        }
    }
    let declared = content_length(message)?;
    let body = message.body_mut();
    if let Some(declared) = declared {
        if declared > body.len() {
            return Err(ParseError::ShortBody {
                declared,
                actual: body.len(),
            });
        }
        // Bytes past Content-Length are not part of this message (RFC 3261 section 18.3).
        body.truncate(declared);
    }
    Ok(())
}

/// To, From, Call-ID, CSeq, Max-Forwards and Content-Length take one value (RFC 3261 section
/// 7.3.1): two of them leave it open which one the sender meant, so the message is refused.
fn repeated_single_header(headers: &Headers) -> Result<(), ParseError> {
    let mut seen = [0u8; 6];
    for header in headers.iter() {
        let slot = match header {
            Header::To(_) => 0,
            Header::From(_) => 1,
            Header::CallId(_) => 2,
            Header::CSeq(_) => 3,
            Header::MaxForwards(_) => 4,
            Header::ContentLength(_) => 5,
            _ => continue,
        };
        seen[slot] += 1;
        if seen[slot] > 1 {
            let name = ["To", "From", "Call-ID", "CSeq", "Max-Forwards", "Content-Length"][slot];
            return Err(invalid(name, "repeated"));
        }
    }
    Ok(())
}

fn content_length(message: &SipMessage) -> Result<Option<usize>, ParseError> {
    use rsip::message::HasHeaders;
    let found = message.headers().iter().find_map(|h| match h {
        Header::ContentLength(v) => Some(v.value().trim().to_owned()),
        _ => None,
    });
    match found {
        None => Ok(None),
        Some(text) => text
            .parse::<usize>()
            .map(Some)
            .map_err(|_| invalid("Content-Length", text)),
    }
}

/// Builds a response to `request`: Via (all, in order), From, To, Call-ID and CSeq copied, a To
/// tag added when the To carries none and the status is above 100, `Content-Length: 0`.
/// Record-Route is copied too when the response can create a dialog (101-299 to INVITE or
/// SUBSCRIBE, RFC 3261 section 12.1.1). `reason` overrides the standard reason phrase.
pub fn response_to(
    request: &Request,
    code: u16,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    let mut headers = Headers::default();
    let creates_dialog = (101..300).contains(&code)
        && matches!(
            request.method,
            rsip::Method::Invite | rsip::Method::Subscribe
        );
    for header in request.headers.iter() {
        match header {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(header.clone())
            }
            Header::RecordRoute(_) if creates_dialog => headers.push(header.clone()),
            Header::To(to) => headers.push(Header::To(with_to_tag(to, code, to_tag))),
            _ => {}
        }
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Response {
        status_code: status_code(code, reason),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// A status code with either the standard or a custom reason phrase.
pub fn status_code(code: u16, reason: Option<&str>) -> StatusCode {
    match reason {
        Some(reason) => StatusCode::Other(code, sanitize_reason(reason)),
        None => StatusCode::from(code),
    }
}

fn with_to_tag(to: &rsip::headers::To, code: u16, to_tag: Option<&str>) -> rsip::headers::To {
    let Some(tag) = to_tag else { return to.clone() };
    if code <= 100 || to_tag_of(to.value()).is_some() {
        return to.clone();
    }
    rsip::headers::To::new(format!("{};tag={}", to.value().trim_end(), tag))
}

/// Adds or replaces `Content-Length` to match the body; call before serialising.
pub fn set_content_length(headers: &mut Headers, body_len: usize) {
    headers.unique_push(Header::ContentLength(rsip::headers::ContentLength::new(
        body_len.to_string(),
    )));
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    (0..len)
        .map(|_| ALPHABET[(rng.next_u32() % ALPHABET.len() as u32) as usize] as char)
        .collect()
}

/// A fresh RFC 3261 branch: the magic cookie and 22 random characters (~130 bits).
pub fn new_branch(rng: &mut impl Rng) -> String {
    format!("{BRANCH_COOKIE}{}", random_token(rng, 22))
}

/// A fresh From/To tag (~95 bits).
pub fn new_tag(rng: &mut impl Rng) -> String {
    random_token(rng, 16)
}

/// A fresh Call-ID, globally unique by randomness (~180 bits).
pub fn new_call_id(rng: &mut impl Rng) -> String {
    random_token(rng, 30)
}

/// What Max-Forwards allows for a request we are about to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MaxForwardsError {
    /// Max-Forwards reached zero: answer 483 Too Many Hops (RFC 3261 section 16.3 step 3).
    #[error("too many hops")]
    TooManyHops,
}

impl MaxForwardsError {
    pub fn status_code(&self) -> u16 {
        483
    }
}

/// Decrements Max-Forwards before a request is sent on (inserting 70 when absent).
/// Zero is refused with `TooManyHops`; an unparsable value was already refused by `parse`.
pub fn decrement_max_forwards(request: &mut Request) -> Result<u32, MaxForwardsError> {
    let current = match request.max_forwards_header() {
        Ok(header) => header.num().unwrap_or(0),
        Err(_) => DEFAULT_MAX_FORWARDS + 1,
    };
    if current == 0 {
        return Err(MaxForwardsError::TooManyHops);
    }
    let next = current - 1;
    request
        .headers
        .unique_push(Header::MaxForwards(rsip::headers::MaxForwards::from(next)));
    Ok(next)
}

mod recover;
pub use recover::{bad_request_for, refusal, RecoveredHeaders};

#[cfg(test)]
mod tests;
