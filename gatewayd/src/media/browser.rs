//! The browser leg: ICE-lite, DTLS-SRTP and rtcp-mux audio through str0m in RTP mode, so
//! packets pass through without depacketizing. Sans-IO: datagrams and time in, datagrams and
//! events out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::config::DtlsCert;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Direction as RtcDirection, Frequency, MediaKind, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RawPacket, RtpWrite, SeqNo};
use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc};

use super::config::AudioCodec;
use super::error::MediaError;
use super::rtcp_wire;
use super::sdp_plain::{Direction, Payload};

/// A datagram for the driver to send from the public socket whose advertised address is `source`.
#[derive(Debug)]
pub struct PublicTransmit {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

/// What the browser leg reports up to the call.
#[derive(Debug)]
pub enum BrowserOutput {
    Rtp { pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: std::sync::Arc<[u8]>, arrival: Instant },
    Connected,
    Disconnected,
    Failed(String),
}

/// Fixed inputs of a browser leg.
pub struct BrowserSetup {
    pub candidates: Vec<SocketAddr>,
    pub cert: DtlsCert,
    pub ice: IceCreds,
    pub telephone_event: bool,
    /// Copy the decrypted RTCP both ways for the tap. str0m can only hand it out with every
    /// RTP packet copied too, so it is set only while capture is on when the leg starts.
    pub capture_rtcp: bool,
}

/// One RTCP compound packet of the browser leg, decrypted, for the tap.
#[derive(Debug)]
pub struct BrowserRtcp {
    pub sent: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub data: Vec<u8>,
}

pub struct BrowserLeg {
    setup: BrowserSetup,
    rtc: Option<Rtc>,
    mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    pub out: VecDeque<PublicTransmit>,
    pub events: VecDeque<BrowserOutput>,
    deadline: Option<Instant>,
    pub rtt: Option<Duration>,
    pub remote_loss: Option<f32>,
    ufrag: String,
    dead: bool,
    /// RTCP seen both ways (only with `capture_rtcp`), for the driver to take.
    pub rtcp: VecDeque<BrowserRtcp>,
    /// The browser's address and ours of the last datagram in: where its RTCP came from, and
    /// where ours goes (ICE-lite answers on the pair the browser checks).
    last_pair: Option<(SocketAddr, SocketAddr)>,
}

/// RFC 4733 payload type we offer the browser; an offering browser's own number is used instead.
const TELEPHONE_EVENT_PT: u8 = 101;
const TELEPHONE_EVENT_48K_PT: u8 = 110;

impl BrowserLeg {
    pub fn new(setup: BrowserSetup) -> BrowserLeg {
        let ufrag = setup.ice.ufrag.clone();
        BrowserLeg {
            setup,
            rtc: None,
            mid: None,
            pending: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            deadline: None,
            rtt: None,
            remote_loss: None,
            ufrag,
            dead: false,
            rtcp: VecDeque::new(),
            last_pair: None,
        }
    }

    /// The local ICE ufrag, which identifies this leg's STUN checks on a shared port.
    pub fn ufrag(&self) -> &str {
        &self.ufrag
    }

    pub fn negotiated(&self) -> bool {
        self.mid.is_some() && self.pending.is_none()
    }

    /// The codecs are fixed per Rtc, so it is built at the first negotiation when the internal
    /// side's choice may already be known.
    fn rtc(&mut self, now: Instant, codecs: &[AudioCodec]) -> &mut Rtc {
        if self.rtc.is_none() {
            let mut cfg = Rtc::builder()
                .set_crypto_provider(super::dtls::provider())
                .set_ice_lite(true)
                .set_rtp_mode(true)
                .set_dtls_cert(self.setup.cert.clone())
                .set_local_ice_credentials(self.setup.ice.clone())
                .set_fingerprint_verification(true)
                .set_stats_interval(Some(Duration::from_secs(1)))
                .enable_raw_packets(self.setup.capture_rtcp)
                .clear_codecs()
                .clear_extension_map();
            let cc = cfg.codec_config();
            // Added in preference order: our offers list them so, and our answers pick so.
            for c in codecs {
                match c {
                    AudioCodec::Pcmu => cc.enable_pcmu(true, false),
                    // opus/48000/2, minptime=10;useinbandfec=1 and no usedtx: DTX stays off, so
                    // Chrome keeps sending through silence (as it does for G.711 without CN).
                    AudioCodec::Opus => cc.enable_opus(true, false),
                    AudioCodec::Pcma => cc.enable_pcma(true, false),
                }
            }
            // No comfort noise: with CN negotiated Chrome turns on VAD/DTX for G.711 and stops
            // sending while it hears no speech, and CN is not relayed to the SIP server, which
            // then gets no RTP at all (media timeouts there, and a steady tone never arrives).
            cc.enable_comfort_noise(false);
            if self.setup.telephone_event {
                cc.add_config(Pt::from(TELEPHONE_EVENT_PT), None, Codec::Tele, Frequency::EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
                // Beside Opus the events run on its 48 kHz clock (RFC 4733 §2.3.1).
                if codecs.contains(&AudioCodec::Opus) {
                    cc.add_config(Pt::from(TELEPHONE_EVENT_48K_PT), None, Codec::Tele, Frequency::FORTY_EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
                }
            }
            let mut rtc = cfg.build(now);
            for c in &self.setup.candidates {
                if let Ok(cand) = Candidate::host(*c, "udp") {
                    rtc.add_local_candidate(cand);
                }
            }
            self.rtc = Some(rtc);
        }
        self.rtc.as_mut().expect("built above")
    }

    pub fn create_offer(&mut self, now: Instant, codecs: &[AudioCodec], dir: Direction) -> Result<String, MediaError> {
        if self.pending.is_some() {
            return Err(MediaError::State("an offer to the browser is already pending".into()));
        }
        let mid = self.mid;
        let rtc = self.rtc(now, codecs);
        let mut change = rtc.sdp_api();
        let mid = match mid {
            Some(m) => {
                change.set_direction(m, to_rtc(dir));
                m
            }
            None => change.add_media(MediaKind::Audio, to_rtc(dir), None, None, None),
        };
        // A re-offer with nothing changed still has to be a valid offer.
        let (offer, pending) = match change.apply() {
            Some(x) => x,
            None => {
                let mut c = rtc.sdp_api();
                c.set_direction(mid, to_rtc(dir));
                let _ = c.ice_restart(true);
                c.apply().ok_or_else(|| MediaError::State("nothing to offer".into()))?
            }
        };
        self.mid = Some(mid);
        self.pending = Some(pending);
        let text = offer.to_sdp_string();
        self.note_local_sdp(&text);
        self.drain(now);
        Ok(text)
    }

    pub fn accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), MediaError> {
        let pending = self.pending.take().ok_or_else(|| MediaError::State("no offer pending toward the browser".into()))?;
        let answer = SdpAnswer::from_sdp_string(&normalize_rtpmap(sdp)).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let rtc = self.rtc.as_mut().ok_or_else(|| MediaError::State("no browser session".into()))?;
        rtc.sdp_api().accept_answer(pending, answer).map_err(|e| MediaError::Sdp(e.to_string()))?;
        self.drain(now);
        Ok(())
    }

    pub fn answer(&mut self, now: Instant, sdp: &str, codecs: &[AudioCodec]) -> Result<String, MediaError> {
        let sdp = &normalize_rtpmap(sdp);
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| MediaError::Sdp(e.to_string()))?;
        if !sdp.contains("a=fingerprint:") {
            return Err(MediaError::Sdp("browser offer carries no DTLS fingerprint".into()));
        }
        // An offer crossing ours wins: we drop our pending offer (we are the one to yield).
        self.pending = None;
        let rtc = self.rtc(now, codecs);
        let answer = rtc.sdp_api().accept_offer(offer).map_err(|e| MediaError::Sdp(e.to_string()))?;
        let text = answer.to_sdp_string();
        self.drain(now);
        if self.mid.is_none() {
            // The first audio section of the offer is the one we bridge.
            let rtc = self.rtc.as_ref().expect("built above");
            self.mid = mids_of(sdp).into_iter().map(|m| Mid::from(m.as_str())).find(|m| rtc.media(*m).is_some_and(|x| x.kind() == MediaKind::Audio));
        }
        if self.mid.is_none() {
            return Err(MediaError::Sdp("browser offer has no usable audio stream".into()));
        }
        if self.primary_audio().is_none() {
            return Err(MediaError::Sdp("no common audio codec with the browser".into()));
        }
        self.note_local_sdp(&text);
        Ok(text)
    }

    fn note_local_sdp(&mut self, text: &str) {
        if let Some(u) = text.lines().find_map(|l| l.trim_end().strip_prefix("a=ice-ufrag:")) {
            self.ufrag = u.to_owned();
        }
    }

    /// Whether the negotiated direction lets us send to, and receive from, the browser.
    pub fn direction(&self) -> Direction {
        match (&self.rtc, self.mid) {
            (Some(rtc), Some(mid)) => rtc.media(mid).map(|m| from_rtc(m.direction())).unwrap_or(Direction::Inactive),
            _ => Direction::Inactive,
        }
    }

    /// What the payload type we received from the browser carries.
    pub fn payload_of(&self, pt: u8) -> Option<Payload> {
        let rtc = self.rtc.as_ref()?;
        let p = rtc.codec_config().find(|p| p.pt() == Pt::from(pt))?;
        payload_of_codec(p.spec().codec, p.spec().clock_rate.get())
    }

    /// The audio codec we send the browser: the first of ours, in our preference order, that
    /// the browser negotiated.
    pub fn primary_audio(&self) -> Option<AudioCodec> {
        let rtc = self.rtc.as_ref()?;
        let remote = rtc.media(self.mid?)?.remote_pts();
        rtc.codec_config().params().iter().filter(|p| remote.contains(&p.pt())).find_map(|p| match payload_of_codec(p.spec().codec, p.spec().clock_rate.get()) {
            Some(Payload::Audio(c)) => Some(c),
            _ => None,
        })
    }

    /// The payload type to send `payload` with, if the browser negotiated it.
    pub fn tx_pt_of(&self, payload: Payload) -> Option<u8> {
        let rtc = self.rtc.as_ref()?;
        let media = rtc.media(self.mid?)?;
        let remote = media.remote_pts();
        rtc.codec_config()
            .params()
            .iter()
            .filter(|p| remote.contains(&p.pt()))
            .find(|p| payload_of_codec(p.spec().codec, p.spec().clock_rate.get()) == Some(payload))
            .map(|p| *p.pt())
    }

    pub fn handle_datagram(&mut self, now: Instant, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        if self.dead {
            return;
        }
        let Some(rtc) = self.rtc.as_mut() else { return };
        let Ok(contents) = data.try_into() else { return };
        let input = Input::Receive(now, Receive { proto: Protocol::Udp, source, destination, contents });
        // Only STUN for our ufrag, or traffic from a checked candidate pair, gets in: a stranger
        // spraying the port must not reach DTLS or SRTP (and must not fail the leg).
        if !rtc.accepts(&input) {
            return;
        }
        self.last_pair = Some((source, destination));
        if let Err(e) = rtc.handle_input(input) {
            self.fail(format!("{e}"));
            return;
        }
        self.drain(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if self.dead {
            return;
        }
        if let Some(rtc) = self.rtc.as_mut() {
            if let Err(e) = rtc.handle_input(Input::Timeout(now)) {
                self.fail(format!("{e}"));
                return;
            }
            self.drain(now);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Sends one RTP packet with numbers already rewritten for this stream.
    pub fn send_rtp(&mut self, now: Instant, pt: u8, seq: u64, ts: u32, marker: bool, payload: std::sync::Arc<[u8]>) {
        if self.dead {
            return;
        }
        let (Some(rtc), Some(mid)) = (self.rtc.as_mut(), self.mid) else { return };
        if !rtc.is_connected() {
            return;
        }
        let mut api = rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, None) else { return };
        tx.write_rtp(RtpWrite::new(Pt::from(pt), SeqNo::from(seq), ts, now, payload).marker(marker));
        self.drain(now);
        // str0m queues the packet and releases it on its next timeout, which is due now: run
        // it here so the packet leaves with this wakeup instead of after the timer pass.
        if self.deadline.is_some_and(|d| d <= now) {
            self.handle_timeout(now);
        }
    }

    pub fn close(&mut self, now: Instant) {
        if let Some(rtc) = self.rtc.as_mut() {
            let _ = rtc.close();
            self.drain(now);
        }
        self.dead = true;
    }

    fn fail(&mut self, reason: String) {
        self.dead = true;
        self.deadline = None;
        if let Some(rtc) = self.rtc.as_mut() {
            rtc.disconnect();
        }
        self.events.push_back(BrowserOutput::Failed(reason));
    }

    /// str0m's contract: after each mutation, drain output until it hands back a timeout.
    fn drain(&mut self, _now: Instant) {
        let Some(rtc) = self.rtc.as_mut() else { return };
        // What one drain yields each way is one compound packet (one datagram in, one report
        // out on a timeout).
        let (mut rx, mut tx) = (Vec::new(), Vec::new());
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.deadline = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => self.out.push_back(PublicTransmit { source: t.source, destination: t.destination, data: t.contents.into() }),
                Ok(Output::Event(e)) => match e {
                    Event::MediaAdded(m) => self.mid = Some(m.mid),
                    Event::Connected => self.events.push_back(BrowserOutput::Connected),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => self.events.push_back(BrowserOutput::Disconnected),
                    Event::RtpPacket(p) => self.events.push_back(BrowserOutput::Rtp {
                        pt: *p.header.payload_type,
                        seq: p.header.sequence_number,
                        ts: p.header.timestamp,
                        ssrc: *p.header.ssrc,
                        marker: p.header.marker,
                        payload: p.payload,
                        arrival: p.timestamp,
                    }),
                    Event::MediaEgressStats(s) => {
                        if s.rtt.is_some() {
                            self.rtt = s.rtt;
                        }
                        if s.loss.is_some() {
                            self.remote_loss = s.loss;
                        }
                    }
                    Event::RawPacket(p) => match *p {
                        RawPacket::RtcpRx(r) => {
                            rtcp_wire::append(&mut rx, &r);
                        }
                        RawPacket::RtcpTx(r) => {
                            rtcp_wire::append(&mut tx, &r);
                        }
                        RawPacket::RtpRx(..) | RawPacket::RtpTx(..) => {}
                    },
                    _ => {}
                },
                Err(e) => {
                    self.dead = true;
                    self.deadline = None;
                    self.events.push_back(BrowserOutput::Failed(e.to_string()));
                    break;
                }
            }
        }
        if let Some((remote, local)) = self.last_pair {
            if !rx.is_empty() {
                self.rtcp.push_back(BrowserRtcp { sent: false, src: remote, dst: local, data: rx });
            }
            if !tx.is_empty() {
                self.rtcp.push_back(BrowserRtcp { sent: true, src: local, dst: remote, data: tx });
            }
        }
    }
}

/// "PCMU/8000/1" and "PCMU/8000" are the same format (mono is the default), but str0m only
/// matches the short form; some WebRTC stacks write the long one.
fn normalize_rtpmap(sdp: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        match body.strip_prefix("a=rtpmap:").and_then(|r| r.strip_suffix("/8000/1")) {
            Some(head) => {
                out.push_str("a=rtpmap:");
                out.push_str(head);
                out.push_str("/8000");
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

fn mids_of(sdp: &str) -> Vec<String> {
    sdp.lines().filter_map(|l| l.trim_end().strip_prefix("a=mid:")).map(str::to_owned).collect()
}

fn payload_of_codec(c: Codec, clock_rate: u32) -> Option<Payload> {
    match c {
        Codec::PCMU => Some(Payload::Audio(AudioCodec::Pcmu)),
        Codec::PCMA => Some(Payload::Audio(AudioCodec::Pcma)),
        Codec::Opus => Some(Payload::Audio(AudioCodec::Opus)),
        Codec::Tele if clock_rate == 48_000 => Some(Payload::TelephoneEvent48k),
        Codec::Tele if clock_rate == 8000 => Some(Payload::TelephoneEvent),
        Codec::CN => Some(Payload::ComfortNoise),
        _ => None,
    }
}

fn to_rtc(d: Direction) -> RtcDirection {
    match d {
        Direction::SendRecv => RtcDirection::SendRecv,
        Direction::SendOnly => RtcDirection::SendOnly,
        Direction::RecvOnly => RtcDirection::RecvOnly,
        Direction::Inactive => RtcDirection::Inactive,
    }
}

fn from_rtc(d: RtcDirection) -> Direction {
    match d {
        RtcDirection::SendRecv => Direction::SendRecv,
        RtcDirection::SendOnly => Direction::SendOnly,
        RtcDirection::RecvOnly => Direction::RecvOnly,
        RtcDirection::Inactive => Direction::Inactive,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mono_channel_suffix_is_dropped_for_8k_formats_only() {
        let sdp = "a=rtpmap:0 PCMU/8000/1\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n";
        assert_eq!(normalize_rtpmap(sdp), "a=rtpmap:0 PCMU/8000\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:8 PCMA/8000\r\n");
    }
}
