//! SDP offer/answer on both legs of a call's media, then packets on each leg.
//!
//! Input: parts separated by NUL; the first byte of a part says what it is: `B` an offer from
//! the browser (we answer), `b` the browser's answer to our offer, `I` an offer from the SIP
//! server (we answer), `i` the server's answer to our offer, `h` a direction for a side (hold),
//! `p` a datagram on the public socket (STUN, DTLS, SRTP), `r`/`R` RTP/RTCP from the SIP server,
//! `t` time passes (the next byte, in 100 ms). A part starting otherwise is offered by both the
//! server and the browser.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use str0m::change::SdpAnswer;
use str0m::config::DtlsCert;
use str0m::IceCreds;

use super::parts;
use crate::media::browser::BrowserSetup;
use crate::media::call::{CallCore, Seeds, Side};
use crate::media::internal::InternalSetup;
use crate::media::sdp_plain::{Direction, Payload, PlainSdp};
use crate::media::AudioCodec;

const CANDIDATE: &str = "198.51.100.1:40000";
const BROWSER: &str = "203.0.113.5:61000";
const LOCAL: &str = "192.0.2.1:41000";
const SERVER_RTP: &str = "192.0.2.80:20000";
const CODECS: [AudioCodec; 2] = [AudioCodec::Pcmu, AudioCodec::Pcma];

fn cert() -> DtlsCert {
    static CERT: OnceLock<DtlsCert> = OnceLock::new();
    CERT.get_or_init(|| {
        let generated = rcgen::generate_simple_self_signed(vec!["gatewayd".to_owned()]).expect("a certificate");
        DtlsCert { certificate: generated.cert.der().to_vec(), private_key: generated.signing_key.serialize_der() }
    })
    .clone()
}

fn core(now: Instant) -> CallCore {
    let browser = BrowserSetup { candidates: vec![CANDIDATE.parse().expect("address")], cert: cert(), ice: IceCreds::new(), telephone_event: true, capture_rtcp: false };
    let internal = InternalSetup { local: LOCAL.parse().expect("address"), telephone_event: true, ssrc: 0x1234_5678, origin_id: 42 };
    let seeds = Seeds { browser_seq: 1, browser_ts: 2, internal_seq: 3, internal_ts: 4 };
    CallCore::new(now, browser, Some(internal), CODECS.to_vec(), CODECS.to_vec(), Duration::from_secs(30), seeds)
}

pub fn sdp(data: &[u8]) {
    let t0 = Instant::now();
    let wall0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let mut elapsed = Duration::ZERO;
    let mut call = core(t0);
    let public: SocketAddr = CANDIDATE.parse().expect("address");
    let browser: SocketAddr = BROWSER.parse().expect("address");
    let server: SocketAddr = SERVER_RTP.parse().expect("address");
    for part in parts(data, 0) {
        let (now, wall) = (t0 + elapsed, wall0 + elapsed);
        let (op, rest) = part.split_first().expect("parts are not empty");
        let text = String::from_utf8_lossy(rest);
        match op {
            b'B' => browser_offer(&mut call, now, wall, &text),
            b'b' => {
                if let Ok(offer) = call.browser_create_offer(now, wall) {
                    check_ours(&offer);
                }
                let _ = call.browser_accept_answer(now, wall, &text);
            }
            b'I' => internal_offer(&mut call, now, &text),
            b'i' => {
                if let Ok(offer) = call.internal_create_offer() {
                    check_ours(&offer);
                    PlainSdp::parse(&offer).expect("our own offer parses");
                }
                let _ = call.internal_accept_answer(now, &text);
            }
            b'h' => {
                let side = if rest.first().is_some_and(|b| b & 1 == 1) { Side::Internal } else { Side::Browser };
                let dir = [Direction::SendRecv, Direction::SendOnly, Direction::RecvOnly, Direction::Inactive][usize::from(rest.get(1).copied().unwrap_or(0) % 4)];
                call.set_direction(side, dir);
            }
            b'p' => call.handle_public(now, wall, browser, public, rest),
            b'r' => call.handle_internal(now, wall, server, rest, false),
            b'R' => call.handle_internal(now, wall, server, rest, true),
            b't' => {
                elapsed += Duration::from_millis(u64::from(rest.first().copied().unwrap_or(1)) * 100);
                call.handle_timeout(t0 + elapsed, wall0 + elapsed);
            }
            _ => {
                let text = String::from_utf8_lossy(part);
                internal_offer(&mut call, now, &text);
                browser_offer(&mut call, now, wall, &text);
            }
        }
        call.browser.out.clear();
        if let Some(i) = call.internal.as_mut() {
            i.out.clear();
        }
        call.events.clear();
    }
    let now = t0 + elapsed;
    let _ = call.stats(now);
    let _ = call.next_timeout();
    call.close(now);
}

fn browser_offer(call: &mut CallCore, now: Instant, wall: SystemTime, offer: &str) {
    if let Ok(answer) = call.browser_answer(now, wall, offer) {
        check_ours(&answer);
        if let Err(e) = SdpAnswer::from_sdp_string(&answer) {
            panic!("our answer to the browser does not parse: {e}\n{answer}");
        }
    }
}

fn internal_offer(call: &mut CallCore, now: Instant, offer: &str) {
    let Ok(answer) = call.internal_answer(now, offer) else { return };
    check_ours(&answer);
    let ours = PlainSdp::parse(&answer).unwrap_or_else(|e| panic!("our answer to the server does not parse: {e}\n{answer}"));
    let theirs = PlainSdp::parse(offer).expect("an offer we answered parses");
    assert_eq!(ours.rtp, LOCAL.parse::<SocketAddr>().expect("address"), "we answer with our own address");
    let audio: Vec<AudioCodec> = ours.formats.iter().filter_map(|f| match f.payload {
        Payload::Audio(c) => Some(c),
        _ => None,
    }).collect();
    assert_eq!(audio.len(), 1, "one audio codec in our answer: {answer}");
    assert!(CODECS.contains(&audio[0]), "a codec the profile allows");
    assert!(theirs.formats.iter().any(|f| f.payload == Payload::Audio(audio[0])), "a codec the offer has");
}

/// SDP we write is lines of `x=value` ended by CRLF, with no CR or LF inside a line: nothing
/// from the peer's description can add a line of its own to ours. (Other control characters
/// can appear: str0m's answer repeats the offer's `a=msid` identifiers, as sent, to the browser
/// that sent them; see docs/security.md, "Findings".)
fn check_ours(sdp: &str) {
    assert!(sdp.starts_with("v=0\r\n") && sdp.ends_with("\r\n"), "our SDP: {sdp:?}");
    for line in sdp.trim_end_matches("\r\n").split("\r\n") {
        let b = line.as_bytes();
        assert!(b.len() >= 2 && b[0].is_ascii_lowercase() && b[1] == b'=', "SDP line {line:?}");
        assert!(!line.contains(['\r', '\n']), "SDP line {line:?}");
    }
}
