//! Each agent's calls: in signalling mode only an SDP answer; in media mode a real browser-like
//! leg per call (str0m: full ICE, DTLS active, SRTP, rtcp-mux), sending PCMU at 50 packets/s
//! once connected, until BYE or a bounded lifetime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::SdpOffer;
use str0m::media::{Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

use crate::Stats;

/// No call in the benchmark lasts longer; a leg never outlives it even without a BYE.
const MAX_LEG: Duration = Duration::from_secs(120);
const PACKET: Duration = Duration::from_millis(20);

pub struct Calls {
    media: bool,
    stats: Arc<Stats>,
    /// Media mode: the way to stop each call's leg, by Call-ID.
    legs: HashMap<String, oneshot::Sender<()>>,
    /// The last answer per call, for a re-INVITE that changes nothing.
    answers: HashMap<String, String>,
}

impl Calls {
    pub fn new(media: bool, stats: Arc<Stats>) -> Calls {
        Calls { media, stats, legs: HashMap::new(), answers: HashMap::new() }
    }

    pub fn answer(&mut self, call_id: &str, offer: &str, fingerprint: &str) -> Result<String, String> {
        if !self.media || !offer.contains("UDP/TLS/RTP/SAVPF") {
            return Ok(crate::sip::signalling_answer(offer, fingerprint));
        }
        if let Some(previous) = self.answers.get(call_id) {
            return Ok(previous.clone());
        }
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let mut builder = Rtc::builder().set_rtp_mode(true).clear_codecs().clear_extension_map();
        builder.codec_config().enable_pcmu(true, false);
        let mut rtc = builder.build(Instant::now());
        rtc.add_local_candidate(Candidate::host(local, "udp").map_err(|e| e.to_string())?);
        let offer = SdpOffer::from_sdp_string(&with_mid(offer)).map_err(|e| e.to_string())?;
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?.to_sdp_string();
        let mid = answer.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).map(Mid::from);
        let (stop, stopped) = oneshot::channel();
        let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
        tokio::spawn(run_leg(rtc, socket, local, mid, self.stats.clone(), stopped));
        self.legs.insert(call_id.to_owned(), stop);
        self.answers.insert(call_id.to_owned(), answer.clone());
        Ok(answer)
    }

    pub fn end(&mut self, call_id: &str) {
        self.answers.remove(call_id);
        if let Some(stop) = self.legs.remove(call_id) {
            let _ = stop.send(());
        }
    }
}

/// rtpengine's WebRTC offer has neither a=mid nor a BUNDLE group, which str0m requires.
fn with_mid(sdp: &str) -> String {
    if sdp.contains("a=mid:") {
        return sdp.to_owned();
    }
    let mut out = String::with_capacity(sdp.len() + 32);
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

async fn run_leg(mut rtc: Rtc, socket: UdpSocket, local: SocketAddr, mid: Option<Mid>, stats: Arc<Stats>, mut stop: oneshot::Receiver<()>) {
    let end = Instant::now() + MAX_LEG;
    let mut buf = vec![0u8; 2048];
    let mut connected = false;
    let mut next_send = Instant::now();
    let mut seq: u64 = 0;
    let payload: Arc<[u8]> = Arc::from(vec![0xffu8; 160]);
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(Event::Connected)) => {
                    connected = true;
                    next_send = Instant::now();
                    stats.dtls_connected.fetch_add(1, Relaxed);
                }
                Ok(Output::Event(Event::RtpPacket(_))) => {
                    stats.rtp_received.fetch_add(1, Relaxed);
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    eprintln!("media leg: {e}");
                    stats.media_failed.fetch_add(1, Relaxed);
                    return;
                }
            }
        };
        let wake = if connected { timeout.min(next_send) } else { timeout }.min(end);
        tokio::select! {
            _ = &mut stop => return,
            received = socket.recv_from(&mut buf) => {
                let Ok((n, source)) = received else { continue };
                let Ok(contents) = buf[..n].try_into() else { continue };
                let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source, destination: local, contents });
                if rtc.handle_input(input).is_err() {
                    stats.media_failed.fetch_add(1, Relaxed);
                    return;
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                let now = Instant::now();
                if now >= end {
                    return;
                }
                if connected && now >= next_send {
                    next_send += PACKET;
                    seq += 1;
                    if let Some(m) = mid {
                        let mut api = rtc.direct_api();
                        if let Some(tx) = api.stream_tx_by_mid(m, None) {
                            tx.write_rtp(RtpWrite::new(Pt::from(0), SeqNo::from(seq), (seq * 160) as u32, now, payload.clone()));
                            stats.rtp_sent.fetch_add(1, Relaxed);
                        }
                    }
                }
                if rtc.handle_input(Input::Timeout(now)).is_err() {
                    stats.media_failed.fetch_add(1, Relaxed);
                    return;
                }
            }
        }
    }
}
