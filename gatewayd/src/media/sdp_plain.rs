//! SDP of the internal leg: one plain RTP/AVP audio stream, G.711 plus telephone-event and
//! comfort noise. Small on purpose: only what a SIP server offers or answers for audio.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use super::config::AudioCodec;
use super::error::MediaError;

/// Media direction as written in SDP, from the point of view of the SDP's author.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl Direction {
    pub fn attr(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }
    /// The direction the other party sees.
    pub fn invert(self) -> Direction {
        match self {
            Direction::SendOnly => Direction::RecvOnly,
            Direction::RecvOnly => Direction::SendOnly,
            d => d,
        }
    }
    pub fn sends(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::SendOnly)
    }
    pub fn receives(self) -> bool {
        matches!(self, Direction::SendRecv | Direction::RecvOnly)
    }
    /// Both constraints at once: what two directions allow together.
    pub fn intersect(self, other: Direction) -> Direction {
        Direction::from_flags(self.sends() && other.sends(), self.receives() && other.receives())
    }
    pub fn from_flags(send: bool, recv: bool) -> Direction {
        match (send, recv) {
            (true, true) => Direction::SendRecv,
            (true, false) => Direction::SendOnly,
            (false, true) => Direction::RecvOnly,
            (false, false) => Direction::Inactive,
        }
    }
}

/// What a payload type carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    Audio(AudioCodec),
    /// RFC 4733 events at 8 kHz, beside G.711.
    TelephoneEvent,
    /// RFC 4733 events at 48 kHz, beside Opus (browser leg only).
    TelephoneEvent48k,
    ComfortNoise,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub pt: u8,
    pub payload: Payload,
}

/// A parsed internal-side description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainSdp {
    /// Where the peer wants RTP; port 0 means the stream was rejected.
    pub rtp: SocketAddr,
    /// Where the peer wants RTCP (port+1 unless a=rtcp says otherwise).
    pub rtcp: SocketAddr,
    pub rtcp_mux: bool,
    /// Formats we understand, in the peer's order; others are left out.
    pub formats: Vec<Format>,
    pub direction: Direction,
}

impl PlainSdp {
    pub fn parse(text: &str) -> Result<PlainSdp, MediaError> {
        let bad = |m: &str| MediaError::Sdp(m.to_owned());
        let mut session_c: Option<IpAddr> = None;
        let mut media_c: Option<IpAddr> = None;
        let mut session_dir = None;
        let mut media_dir = None;
        let mut port = None;
        let mut pts: Vec<u8> = Vec::new();
        let mut rtpmaps: Vec<(u8, String, u32)> = Vec::new();
        let mut rtcp_port = None;
        let mut rtcp_mux = false;
        let mut in_audio = false;
        let mut seen_audio = false;
        for line in text.lines() {
            let line = line.trim_end_matches('\r');
            let Some((kind, value)) = line.split_once('=') else { continue };
            match kind {
                "m" => {
                    in_audio = false;
                    if seen_audio {
                        continue; // only the first audio stream is bridged
                    }
                    let mut f = value.split_whitespace();
                    if f.next() != Some("audio") {
                        continue;
                    }
                    let p: u16 = f.next().and_then(|p| p.split('/').next()?.parse().ok()).ok_or_else(|| bad("m= port"))?;
                    let proto = f.next().ok_or_else(|| bad("m= protocol"))?;
                    if proto != "RTP/AVP" {
                        return Err(bad(&format!("unsupported internal transport {proto}")));
                    }
                    pts = f.filter_map(|x| x.parse().ok()).collect();
                    port = Some(p);
                    in_audio = true;
                    seen_audio = true;
                }
                "c" => {
                    let addr = value.split_whitespace().nth(2).and_then(|a| a.split('/').next()?.parse().ok()).ok_or_else(|| bad("c= address"))?;
                    if in_audio { media_c = Some(addr) } else if !seen_audio { session_c = Some(addr) }
                }
                "a" => {
                    if seen_audio && !in_audio {
                        continue;
                    }
                    let (name, arg) = value.split_once(':').unwrap_or((value, ""));
                    let dir = match name {
                        "sendrecv" => Some(Direction::SendRecv),
                        "sendonly" => Some(Direction::SendOnly),
                        "recvonly" => Some(Direction::RecvOnly),
                        "inactive" => Some(Direction::Inactive),
                        _ => None,
                    };
                    if let Some(d) = dir {
                        if in_audio { media_dir = Some(d) } else { session_dir = Some(d) }
                        continue;
                    }
                    match name {
                        "rtpmap" if in_audio => {
                            let mut it = arg.split_whitespace();
                            let pt = it.next().and_then(|p| p.parse().ok());
                            let enc = it.next().unwrap_or("");
                            let mut e = enc.split('/');
                            if let (Some(pt), Some(n), Some(r)) = (pt, e.next(), e.next().and_then(|r| r.parse().ok())) {
                                rtpmaps.push((pt, n.to_ascii_lowercase(), r));
                            }
                        }
                        "rtcp" if in_audio => rtcp_port = arg.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()),
                        "rtcp-mux" if in_audio => rtcp_mux = true,
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let port = port.ok_or_else(|| bad("no audio stream"))?;
        let addr = media_c.or(session_c).ok_or_else(|| bad("no c= line"))?;
        let mut direction = media_dir.or(session_dir).unwrap_or_default();
        if addr.is_unspecified() {
            // RFC 2543 hold: c=0.0.0.0
            direction = direction.intersect(Direction::SendOnly);
        }
        let formats = pts.iter().filter_map(|&pt| {
            let map = rtpmaps.iter().find(|m| m.0 == pt);
            let payload = match (pt, map) {
                (_, Some((_, n, 8000))) if n == "pcmu" => Payload::Audio(AudioCodec::Pcmu),
                (_, Some((_, n, 8000))) if n == "pcma" => Payload::Audio(AudioCodec::Pcma),
                (_, Some((_, n, 8000))) if n == "telephone-event" => Payload::TelephoneEvent,
                (_, Some((_, n, 8000))) if n == "cn" => Payload::ComfortNoise,
                (0, None) => Payload::Audio(AudioCodec::Pcmu),
                (8, None) => Payload::Audio(AudioCodec::Pcma),
                (13, None) => Payload::ComfortNoise,
                _ => return None,
            };
            Some(Format { pt, payload })
        }).collect();
        Ok(PlainSdp {
            rtp: SocketAddr::new(addr, port),
            rtcp: SocketAddr::new(addr, rtcp_port.unwrap_or(port.saturating_add(1))),
            rtcp_mux,
            formats,
            direction,
        })
    }

    pub fn rejected(&self) -> bool {
        self.rtp.port() == 0
    }

    pub fn first_audio(&self, allowed: &[AudioCodec]) -> Option<Format> {
        self.formats.iter().find(|f| matches!(f.payload, Payload::Audio(c) if allowed.contains(&c))).cloned()
    }

    pub fn find(&self, payload: Payload) -> Option<Format> {
        self.formats.iter().find(|f| f.payload == payload).cloned()
    }
}

/// Session identity kept across re-offers: version goes up by one for each new description.
#[derive(Debug, Clone, Copy)]
pub struct Origin {
    pub id: u64,
    pub version: u64,
}

pub fn build(origin: Origin, addr: IpAddr, port: u16, formats: &[Format], direction: Direction, rtcp_mux: bool) -> String {
    let ip = if addr.is_ipv4() { "IP4" } else { "IP6" };
    let mut s = String::with_capacity(300);
    let _ = write!(s, "v=0\r\no=gatewayd {} {} IN {ip} {addr}\r\ns=-\r\nc=IN {ip} {addr}\r\nt=0 0\r\n", origin.id, origin.version);
    let pts: Vec<String> = formats.iter().map(|f| f.pt.to_string()).collect();
    let _ = write!(s, "m=audio {port} RTP/AVP {}\r\n", pts.join(" "));
    for f in formats {
        match f.payload {
            Payload::Audio(c) => { let _ = write!(s, "a=rtpmap:{} {}/8000\r\n", f.pt, c.name()); }
            Payload::TelephoneEvent => { let _ = write!(s, "a=rtpmap:{} telephone-event/8000\r\na=fmtp:{} 0-16\r\n", f.pt, f.pt); }
            Payload::TelephoneEvent48k => { let _ = write!(s, "a=rtpmap:{} telephone-event/48000\r\na=fmtp:{} 0-16\r\n", f.pt, f.pt); }
            Payload::ComfortNoise => { let _ = write!(s, "a=rtpmap:{} CN/8000\r\n", f.pt); }
        }
    }
    let _ = write!(s, "a=ptime:20\r\n");
    if rtcp_mux {
        s.push_str("a=rtcp-mux\r\n");
    } else {
        let _ = write!(s, "a=rtcp:{}\r\n", port + 1);
    }
    let _ = write!(s, "a={}\r\n", direction.attr());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.5\r\ns=-\r\nc=IN IP4 192.0.2.5\r\nt=0 0\r\n\
        m=audio 4000 RTP/AVP 8 0 18 101 13\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n\
        a=fmtp:101 0-15\r\na=sendonly\r\nm=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=recvonly\r\n";

    #[test]
    fn parses_audio_stream_and_skips_unknown_formats() {
        let s = PlainSdp::parse(OFFER).unwrap();
        assert_eq!(s.rtp, "192.0.2.5:4000".parse().unwrap());
        assert_eq!(s.rtcp.port(), 4001);
        assert_eq!(s.direction, Direction::SendOnly);
        let pts: Vec<u8> = s.formats.iter().map(|f| f.pt).collect();
        assert_eq!(pts, vec![8, 0, 101, 13]);
        assert_eq!(s.first_audio(&[AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap().pt, 8);
        assert_eq!(s.first_audio(&[AudioCodec::Pcmu]).unwrap().pt, 0);
        assert_eq!(s.find(Payload::TelephoneEvent).unwrap().pt, 101);
    }

    #[test]
    fn zero_address_is_hold_and_srtp_is_refused() {
        let held = OFFER.replace("IN IP4 192.0.2.5\r\nt", "IN IP4 0.0.0.0\r\nt").replace("a=sendonly", "a=sendrecv");
        assert_eq!(PlainSdp::parse(&held).unwrap().direction, Direction::SendOnly);
        assert!(matches!(PlainSdp::parse(&OFFER.replace("RTP/AVP 8", "RTP/SAVP 8")), Err(MediaError::Sdp(_))));
        assert!(PlainSdp::parse("v=0\r\n").is_err());
    }

    #[test]
    fn built_sdp_parses_back() {
        let f = vec![Format { pt: 0, payload: Payload::Audio(AudioCodec::Pcmu) }, Format { pt: 101, payload: Payload::TelephoneEvent }];
        let text = build(Origin { id: 7, version: 2 }, "10.1.1.1".parse().unwrap(), 30000, &f, Direction::RecvOnly, false);
        let s = PlainSdp::parse(&text).unwrap();
        assert_eq!((s.rtp.port(), s.rtcp.port(), s.direction, s.formats), (30000, 30001, Direction::RecvOnly, f));
    }
}
