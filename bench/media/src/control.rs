//! Setting calls up on the bridge under test: gatewayd's bench bridge over its TCP line
//! protocol, or rtpengine over its ng control protocol (bencode over UDP). Each call ends as
//! the browser offer the load client answers, plus the addresses the bridge uses for the call.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use str0m::change::SdpOffer;
use str0m::media::Mid;
use str0m::Rtc;

/// What the client needs to run one call once it is set up.
pub struct CallSetup {
    pub mid: Option<Mid>,
    /// Where the bridge's browser-side packets for this call come from.
    pub bridge_public: SocketAddr,
    /// Where the bridge wants (and sends) this call's plain RTP.
    pub bridge_internal: SocketAddr,
    /// The payload type of Opus in the browser offer, if it has Opus.
    pub opus_pt: Option<u8>,
}

pub enum Control {
    Gatewayd { tcp: TcpStream, lines: BufReader<TcpStream> },
    /// `transcode`: the browser side gets Opus only, the plain side keeps PCMU.
    Rtpengine { sock: UdpSocket, server: SocketAddr, transcode: bool },
}

impl Control {
    /// gatewayd's bench bridge is told to transcode on its command line (media-bridge opus).
    pub fn connect(mode: &str, addr: &str, transcode: bool) -> Control {
        match mode {
            "gatewayd" => {
                let tcp = TcpStream::connect(addr).expect("bridge control");
                tcp.set_nodelay(true).unwrap();
                let lines = BufReader::new(tcp.try_clone().unwrap());
                Control::Gatewayd { tcp, lines }
            }
            "rtpengine" => {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                Control::Rtpengine { sock, server: addr.parse().expect("rtpengine ng address"), transcode }
            }
            m => panic!("unknown mode {m}"),
        }
    }

    /// Sets up call `i` whose plain side is at `plain_port`; `rtc` answers the browser offer.
    pub fn setup(&mut self, i: usize, plain_port: u16, rtc: &mut Rtc) -> CallSetup {
        match self {
            Control::Gatewayd { tcp, lines } => {
                writeln!(tcp, "CALL {plain_port}").unwrap();
                let offer = reply(lines, "OFFER ").replace("\\n", "\r\n");
                let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
                writeln!(tcp, "ANSWER {}", answer.to_sdp_string().replace("\r\n", "\\n")).unwrap();
                let internal = reply(lines, "OK ").parse().unwrap();
                CallSetup { mid: mid_of(&offer), bridge_public: candidate_of(&offer), bridge_internal: internal, opus_pt: opus_pt_of(&offer) }
            }
            Control::Rtpengine { sock, server, transcode } => {
                let (cid, ft, tt) = (format!("bench-{i}-{}", std::process::id()), format!("f{i}"), format!("t{i}"));
                let mut offer_flags = vec![
                    ("command".into(), s("offer")),
                    ("call-id".into(), s(&cid)),
                    ("from-tag".into(), s(&ft)),
                    ("sdp".into(), s(&plain_offer(plain_port))),
                    ("ICE".into(), s("force")),
                    ("DTLS".into(), s("passive")),
                    ("transport-protocol".into(), s("UDP/TLS/RTP/SAVPF")),
                    ("rtcp-mux".into(), B::L(vec![s("require")])),
                    ("SDES".into(), B::L(vec![s("off")])),
                ];
                if *transcode {
                    // Opus (mono, 24 kbit/s: what gatewayd sends) is added toward the browser
                    // and PCMU masked there: still accepted on the plain side, so rtpengine
                    // transcodes between the two.
                    offer_flags.push(("codec".into(), B::D(vec![("transcode".into(), B::L(vec![s(&std::env::var("MEDIA_LOAD_RTPENGINE_OPUS").unwrap_or_else(|_| OPUS_FOR_RTPENGINE.to_owned()))])), ("mask".into(), B::L(vec![s("PCMU")]))])));
                }
                let r = ng(sock, *server, &format!("o{i}"), B::D(offer_flags));
                let offer = with_mid(&bdec_str(&r, "sdp").unwrap_or_else(|| panic!("rtpengine offer: {}", String::from_utf8_lossy(&r))));
                let mid = mid_of(&offer);
                let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
                let r = ng(sock, *server, &format!("a{i}"), B::D(vec![
                    ("command".into(), s("answer")),
                    ("call-id".into(), s(&cid)),
                    ("from-tag".into(), s(&ft)),
                    ("to-tag".into(), s(&tt)),
                    ("sdp".into(), s(&mono_opus(&answer.to_sdp_string()))),
                    ("transport-protocol".into(), s("RTP/AVP")),
                    ("ICE".into(), s("remove")),
                    ("rtcp-mux".into(), B::L(vec![s("demux")])),
                ]));
                // rtpengine passes the plain side's SSRC through without announcing it in SDP.
                if let Some(m) = mid {
                    rtc.direct_api().expect_stream_rx(str0m::rtp::Ssrc::from(plain_ssrc(i)), None, m, None);
                }
                let plain_answer = bdec_str(&r, "sdp").unwrap_or_else(|| panic!("rtpengine answer: {}", String::from_utf8_lossy(&r)));
                CallSetup { mid, bridge_public: candidate_of(&offer), bridge_internal: target_of(&plain_answer), opus_pt: opus_pt_of(&offer) }
            }
        }
    }

    /// gatewayd's own forwarding-time percentiles since the last query, as JSON (reading
    /// restarts them); rtpengine has no such figure.
    pub fn bridge_latency(&mut self) -> Option<String> {
        let Control::Gatewayd { tcp, lines } = self else { return None };
        writeln!(tcp, "LATENCY").ok()?;
        let line = reply(lines, "LAT ");
        let v: Vec<&str> = line.split_whitespace().collect();
        Some(format!("{{\"packets\":{},\"p50\":{},\"p99\":{},\"max\":{}}}", v.first()?, v.get(1)?, v.get(2)?, v.get(3)?))
    }
}

/// rtpengine's codec spec: encoding/clock rate/channels/bitrate.
const OPUS_FOR_RTPENGINE: &str = "opus/48000/2/24000";

/// The payload type of the offer's Opus rtpmap.
fn opus_pt_of(sdp: &str) -> Option<u8> {
    sdp.lines().find_map(|l| {
        let (pt, enc) = l.strip_prefix("a=rtpmap:")?.split_once(' ')?;
        enc.to_ascii_lowercase().starts_with("opus/48000").then(|| pt.parse().ok())?
    })
}

/// Says in the answer's Opus fmtp what RFC 7587 makes the default anyway (mono both ways):
/// rtpengine 10.5 otherwise encodes toward the browser in stereo, twice gatewayd's work.
fn mono_opus(sdp: &str) -> String {
    let Some(pt) = opus_pt_of(sdp) else { return sdp.to_owned() };
    let fmtp = format!("a=fmtp:{pt} ");
    sdp.split_inclusive('\n')
        .map(|l| match l.strip_prefix(&fmtp) {
            Some(rest) if !rest.contains("stereo") => format!("{fmtp}stereo=0;sprop-stereo=0;{rest}"),
            _ => l.to_owned(),
        })
        .collect()
}

/// The SSRC the plain side of call `i` sends with.
pub fn plain_ssrc(i: usize) -> u32 {
    0x1000 + i as u32
}

fn reply(lines: &mut BufReader<TcpStream>, prefix: &str) -> String {
    let mut line = String::new();
    lines.read_line(&mut line).unwrap();
    line.strip_prefix(prefix).unwrap_or_else(|| panic!("bridge: {line}")).trim().to_owned()
}

// --- bencode for rtpengine's ng protocol --------------------------------------------------
enum B {
    S(String),
    L(Vec<B>),
    D(Vec<(String, B)>),
}

fn benc(b: &B, out: &mut Vec<u8>) {
    match b {
        B::S(s) => out.extend_from_slice(format!("{}:{}", s.len(), s).as_bytes()),
        B::L(l) => {
            out.push(b'l');
            l.iter().for_each(|x| benc(x, out));
            out.push(b'e');
        }
        B::D(d) => {
            out.push(b'd');
            let mut d: Vec<&(String, B)> = d.iter().collect();
            d.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in d {
                benc(&B::S(k.clone()), out);
                benc(v, out);
            }
            out.push(b'e');
        }
    }
}

/// Finds the string value of `key` in a bencoded reply (flat search is enough for sdp/result).
fn bdec_str(buf: &[u8], key: &str) -> Option<String> {
    let pat = format!("{}:{}", key.len(), key);
    let at = buf.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let colon = buf[at..].iter().position(|&c| c == b':')? + at;
    let n: usize = std::str::from_utf8(&buf[at..colon]).ok()?.parse().ok()?;
    Some(String::from_utf8_lossy(buf.get(colon + 1..colon + 1 + n)?).into_owned())
}

fn ng(sock: &UdpSocket, server: SocketAddr, cookie: &str, msg: B) -> Vec<u8> {
    let mut out = format!("{cookie} ").into_bytes();
    benc(&msg, &mut out);
    sock.send_to(&out, server).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("rtpengine replies");
    buf.truncate(n);
    buf
}

fn s(x: &str) -> B {
    B::S(x.to_owned())
}

fn plain_offer(port: u16) -> String {
    format!("v=0\r\no=srv 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
}

fn target_of(sdp: &str) -> SocketAddr {
    let ip = sdp.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).expect("c= line").trim();
    let port = sdp.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|l| l.split(' ').next()).expect("m= line");
    format!("{ip}:{port}").parse().unwrap()
}

/// The bridge's first host candidate (where its ICE checks and media come from).
fn candidate_of(sdp: &str) -> SocketAddr {
    let c = sdp.lines().find_map(|l| l.strip_prefix("a=candidate:")).expect("a candidate");
    let f: Vec<&str> = c.split_whitespace().collect();
    format!("{}:{}", f[4], f[5]).parse().unwrap()
}

fn mid_of(sdp: &str) -> Option<Mid> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).map(Mid::from)
}

/// rtpengine's WebRTC offer has no a=mid and no BUNDLE group, which str0m requires.
fn with_mid(sdp: &str) -> String {
    if sdp.contains("a=mid:") {
        return sdp.to_owned();
    }
    let mut out = String::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=audio") {
            out.push_str("a=group:BUNDLE 0\r\n");
        }
        out.push_str(line);
        if line.starts_with("m=audio") {
            out.push_str("a=mid:0\r\n");
        }
    }
    out
}
