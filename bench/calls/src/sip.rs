//! Just enough SIP for an answering softphone: a message split into start line, headers and
//! body; responses that copy the dialog headers of a request; REGISTER requests; SDP answers
//! without media. Text in, text out: a load agent must stay cheaper than what it measures.

use std::hash::{BuildHasher, Hasher};

pub struct Message<'a> {
    pub start: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: &'a str,
}

/// A header's long name: compact forms (RFC 3261) through the daemon's own table.
fn long_name(name: &str) -> &str {
    if name.len() != 1 {
        return name;
    }
    gatewayd::sip::message::compact_name(&name.to_ascii_lowercase()).unwrap_or(name)
}

pub fn parse(text: &str) -> Option<Message<'_>> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let start = lines.next()?;
    let mut headers = Vec::with_capacity(16);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        headers.push((long_name(name.trim()), value.trim()));
    }
    Some(Message { start, headers, body })
}

impl<'a> Message<'a> {
    /// The request method, or `None` for a response.
    pub fn method(&self) -> Option<&'a str> {
        (!self.start.starts_with("SIP/2.0")).then(|| self.start.split(' ').next().unwrap_or(""))
    }

    pub fn status(&self) -> Option<u16> {
        self.start.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
    }

    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    pub fn all(&self, name: &'a str) -> impl Iterator<Item = &'a str> + '_ {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| *v)
    }

    pub fn has_to_tag(&self) -> bool {
        self.header("To").is_some_and(|t| t.contains(";tag="))
    }
}

/// A response to `req` copying Via, Record-Route, From, To (tagged), Call-ID and CSeq.
pub fn response(req: &Message, code: u16, reason: &str, to_tag: &str, contact: Option<&str>, sdp: Option<&str>) -> String {
    let mut out = String::with_capacity(1024 + sdp.map_or(0, str::len));
    out.push_str(&format!("SIP/2.0 {code} {reason}\r\n"));
    for name in ["Via", "Record-Route"] {
        for v in req.all(name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    for name in ["From", "Call-ID", "CSeq"] {
        if let Some(v) = req.header(name) {
            out.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = req.header("To").unwrap_or("");
    if to.contains(";tag=") || to_tag.is_empty() {
        out.push_str(&format!("To: {to}\r\n"));
    } else {
        out.push_str(&format!("To: {to};tag={to_tag}\r\n"));
    }
    if let Some(c) = contact {
        out.push_str(&format!("Contact: {c}\r\n"));
    }
    match sdp {
        Some(body) => out.push_str(&format!("Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}", body.len())),
        None => out.push_str("Content-Length: 0\r\n\r\n"),
    }
    out
}

pub struct Register<'a> {
    pub dn: &'a str,
    pub domain: &'a str,
    pub cseq: u32,
    pub contact: &'a str,
    pub expires: u32,
    pub authorization: Option<&'a str>,
}

pub fn register(r: &Register) -> String {
    let Register { dn, domain, cseq, contact, expires, .. } = r;
    let mut out = format!(
        "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/WSS agent{dn}.invalid;branch=z9hG4bK{}\r\nMax-Forwards: 70\r\nTo: <sip:{dn}@{domain}>\r\nFrom: <sip:{dn}@{domain}>;tag=r{dn}\r\nCall-ID: reg-{dn}-{}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact};expires={expires}\r\n",
        token(),
        std::process::id()
    );
    if let Some(a) = r.authorization {
        out.push_str(&format!("Authorization: {a}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

/// A random token (tags, ICE credentials, branches).
pub fn token() -> String {
    format!("{:016x}", random())
}

pub fn random() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0));
    h.finish()
}

/// A fixed fingerprint for signalling-only answers: 32 random bytes, sha-256 notation.
pub fn fake_fingerprint() -> String {
    let bytes: Vec<String> = (0..4).flat_map(|_| random().to_be_bytes()).map(|b| format!("{b:02X}")).collect();
    bytes.join(":")
}

/// What a browser would answer, without media behind it: WebRTC (ICE, DTLS active, rtcp-mux)
/// to a WebRTC offer, plain RTP to a plain offer (a proxy that passes the SIP server's SDP on).
pub fn signalling_answer(offer: &str, fingerprint: &str) -> String {
    let mid = offer.lines().find_map(|l| l.strip_prefix("a=mid:")).unwrap_or("0").trim();
    let pt = offer
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .find(|l| l.contains("PCMU/8000"))
        .and_then(|l| l.split(' ').next())
        .unwrap_or("0");
    let session = random() >> 2;
    if offer.contains("UDP/TLS/RTP/SAVPF") {
        let (ufrag, pwd) = (&token()[..8], token() + &token()[..8]);
        format!(
            "v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {mid}\r\na=msid-semantic: WMS\r\n\
             m=audio 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n\
             a=fingerprint:sha-256 {fingerprint}\r\na=setup:active\r\na=mid:{mid}\r\na=sendrecv\r\na=rtcp-mux\r\n\
             a=rtpmap:{pt} PCMU/8000\r\na=ssrc:{} cname:bench\r\n",
            session as u32
        )
    } else {
        format!("v=0\r\no=- {session} 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 9 RTP/AVP {pt}\r\na=rtpmap:{pt} PCMU/8000\r\na=sendrecv\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:6000@x.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/WSS a;branch=z9hG4bK1\r\nv: SIP/2.0/UDP b;branch=z9hG4bK2\r\nRecord-Route: <sip:p;lr>\r\nf: <sip:c@d>;tag=1\r\nTo: <sip:6000@d>\r\ni: abc\r\nCSeq: 7 INVITE\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn a_response_copies_the_dialog_headers_and_tags_the_to() {
        let req = parse(INVITE).unwrap();
        assert_eq!(req.method(), Some("INVITE"));
        let r = response(&req, 180, "Ringing", "xyz", None, None);
        let resp = parse(&r).unwrap();
        assert_eq!(resp.status(), Some(180));
        assert_eq!(resp.all("Via").count(), 2);
        assert_eq!(resp.header("To"), Some("<sip:6000@d>;tag=xyz"));
        assert_eq!(resp.header("CSeq"), Some("7 INVITE"));
        assert_eq!(resp.header("Record-Route"), Some("<sip:p;lr>"));
    }

    #[test]
    fn the_answer_follows_the_offer_kind() {
        let webrtc = signalling_answer("m=audio 1 UDP/TLS/RTP/SAVPF 0 8\r\na=mid:a1\r\na=rtpmap:0 PCMU/8000\r\n", "AA");
        assert!(webrtc.contains("a=mid:a1") && webrtc.contains("a=setup:active") && webrtc.contains("a=rtcp-mux"));
        let plain = signalling_answer("m=audio 1 RTP/AVP 8 0\r\n", "AA");
        assert!(plain.contains("RTP/AVP 0") && plain.contains("c=IN IP4"));
    }
}
