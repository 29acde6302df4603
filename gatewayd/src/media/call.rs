//! One call's media as a sans-IO state machine: the browser leg, the internal leg (absent for
//! the echo endpoint) and the forwarding between them with payload-type mapping, direction
//! gating for hold and continuous numbering toward each receiver. When the browser speaks Opus
//! and the server G.711, audio and RFC 4733 events go through the call's transcoders; when both
//! share a codec, payloads pass untouched.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::browser::{BrowserLeg, BrowserOutput, BrowserSetup};
use super::config::AudioCodec;
use super::error::MediaError;
use super::internal::{InternalLeg, InternalSetup};
use super::rtp::Rewriter;
use super::sdp_plain::{Direction, Payload};
use super::stats::{mos_with, CallStats, LegStats, ReceiveStats, OPUS};
use super::transcode::{Frame, G711ToOpus, OpusToG711};

/// The two legs of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Browser,
    Internal,
}

/// What call control hears about a call's media.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    /// ICE and DTLS are up toward the browser; SRTP flows.
    BrowserConnected,
    /// The browser stopped answering ICE consent checks.
    BrowserDisconnected,
    /// DTLS failed (fingerprint mismatch, handshake error); the browser leg is dead.
    BrowserFailed(String),
    /// Nothing arrived on this leg for the configured no-media timeout.
    NoMedia(Side),
}

/// Randomness a call needs, drawn by the driver.
pub struct Seeds {
    pub browser_seq: u16,
    pub browser_ts: u32,
    pub internal_seq: u16,
    pub internal_ts: u32,
}

pub struct CallCore {
    pub browser: BrowserLeg,
    pub internal: Option<InternalLeg>,
    /// Toward the SIP server (G.711).
    codecs: Vec<AudioCodec>,
    /// Toward the browser, in preference order (may hold Opus).
    agent_codecs: Vec<AudioCodec>,
    /// Browser Opus to the server's G.711, and back; made when first needed.
    uplink: Option<OpusToG711>,
    downlink: Option<G711ToOpus>,
    frames: Vec<Frame>,
    /// The RTP clock and codec of what the browser sends.
    browser_clock: u32,
    browser_codec: Option<AudioCodec>,
    to_browser: Rewriter,
    to_internal: Rewriter,
    browser_rx: ReceiveStats,
    browser_sent: (u64, u64),
    desired_browser: Direction,
    pub events: VecDeque<MediaEvent>,
    started: Instant,
    no_media_timeout: Duration,
    /// Per side: when media was last seen (or expected from), and whether silence was reported.
    watch: [(Option<Instant>, bool); 2],
    next_check: Instant,
}

const CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl CallCore {
    #[allow(clippy::too_many_arguments)]
    pub fn new(now: Instant, browser: BrowserSetup, internal: Option<InternalSetup>, codecs: Vec<AudioCodec>, agent_codecs: Vec<AudioCodec>, no_media_timeout: Duration, seeds: Seeds) -> CallCore {
        CallCore {
            browser: BrowserLeg::new(browser),
            internal: internal.map(|s| InternalLeg::new(s, now)),
            codecs: codecs.into_iter().filter(|c| c.is_g711()).collect(),
            agent_codecs,
            uplink: None,
            downlink: None,
            frames: Vec::new(),
            browser_clock: 8000,
            browser_codec: None,
            to_browser: Rewriter::new(8000, seeds.browser_seq, seeds.browser_ts),
            to_internal: Rewriter::new(8000, seeds.internal_seq, seeds.internal_ts),
            browser_rx: ReceiveStats::default(),
            browser_sent: (0, 0),
            desired_browser: Direction::SendRecv,
            events: VecDeque::new(),
            started: now,
            no_media_timeout,
            watch: [(None, false); 2],
            next_check: now + CHECK_INTERVAL,
        }
    }

    /// Codecs the browser may use: Opus (transcoded) and, once the server chose, its G.711
    /// codec for passthrough; before that the configured set.
    fn browser_codecs(&self) -> Vec<AudioCodec> {
        match self.internal.as_ref().and_then(|i| i.codec()) {
            Some(c) => self.agent_codecs.iter().copied().filter(|&a| a == c || a == AudioCodec::Opus).collect(),
            None => self.agent_codecs.clone(),
        }
    }

    /// Codecs the server may use: any of ours when Opus toward the browser can be transcoded,
    /// else those the browser has (or may get), so audio passes through.
    fn internal_codecs(&self) -> Vec<AudioCodec> {
        let opus = if self.browser.negotiated() { self.browser.tx_pt_of(Payload::Audio(AudioCodec::Opus)).is_some() } else { self.agent_codecs.contains(&AudioCodec::Opus) };
        if opus {
            return self.codecs.clone();
        }
        let shared: Vec<AudioCodec> = if self.browser.negotiated() {
            self.codecs.iter().copied().filter(|&c| self.browser.tx_pt_of(Payload::Audio(c)).is_some()).collect()
        } else {
            self.codecs.iter().copied().filter(|c| self.agent_codecs.contains(c)).collect()
        };
        if shared.is_empty() { self.codecs.clone() } else { shared }
    }

    /// Whether audio toward the browser is Opus made by the bridge: the browser prefers Opus,
    /// or lacks the server's G.711 codec (for the echo: whether the browser sends Opus).
    fn opus_to_browser(&self) -> bool {
        if self.browser.tx_pt_of(Payload::Audio(AudioCodec::Opus)).is_none() {
            return false;
        }
        match self.internal.as_ref().and_then(|i| i.codec()) {
            Some(law) => self.browser.primary_audio() == Some(AudioCodec::Opus) || self.browser.tx_pt_of(Payload::Audio(law)).is_none(),
            None if self.internal.is_some() => true,
            None => self.browser_codec == Some(AudioCodec::Opus),
        }
    }

    pub fn browser_create_offer(&mut self, now: Instant, wall: SystemTime) -> Result<String, MediaError> {
        let codecs = self.browser_codecs();
        let r = self.browser.create_offer(now, &codecs, self.desired_browser);
        self.pump(now, wall);
        r
    }

    pub fn browser_accept_answer(&mut self, now: Instant, wall: SystemTime, sdp: &str) -> Result<(), MediaError> {
        let r = self.browser.accept_answer(now, sdp);
        self.arm(Side::Browser, now);
        self.pump(now, wall);
        r
    }

    pub fn browser_answer(&mut self, now: Instant, wall: SystemTime, offer: &str) -> Result<String, MediaError> {
        let codecs = self.browser_codecs();
        let r = self.browser.answer(now, offer, &codecs);
        self.arm(Side::Browser, now);
        self.pump(now, wall);
        r
    }

    fn internal_leg(&mut self) -> Result<&mut InternalLeg, MediaError> {
        self.internal.as_mut().ok_or_else(|| MediaError::State("the echo endpoint has no internal leg".into()))
    }

    pub fn internal_create_offer(&mut self) -> Result<String, MediaError> {
        let codecs = self.internal_codecs();
        Ok(self.internal_leg()?.create_offer(&codecs))
    }

    pub fn internal_accept_answer(&mut self, now: Instant, sdp: &str) -> Result<(), MediaError> {
        self.internal_leg()?.accept_answer(sdp)?;
        self.arm(Side::Internal, now);
        Ok(())
    }

    pub fn internal_answer(&mut self, now: Instant, offer: &str) -> Result<String, MediaError> {
        let codecs = self.internal_codecs();
        let a = self.internal_leg()?.answer(offer, &codecs)?;
        self.arm(Side::Internal, now);
        Ok(a)
    }

    /// What the gateway does toward `side`: without send, nothing is forwarded to it; without
    /// receive, what it sends is dropped. Applies at once; SDP produced later carries it.
    pub fn set_direction(&mut self, side: Side, dir: Direction) {
        match side {
            Side::Browser => self.desired_browser = dir,
            Side::Internal => {
                if let Some(i) = self.internal.as_mut() {
                    i.set_desired(dir);
                }
            }
        }
    }

    fn arm(&mut self, side: Side, now: Instant) {
        let w = &mut self.watch[side as usize];
        if w.0.is_none() {
            *w = (Some(now), false);
        }
    }

    fn seen(&mut self, side: Side, now: Instant) {
        self.watch[side as usize] = (Some(now), false);
    }

    pub fn handle_public(&mut self, now: Instant, wall: SystemTime, source: SocketAddr, destination: SocketAddr, data: &[u8]) {
        self.browser.handle_datagram(now, source, destination, data);
        self.pump(now, wall);
    }

    pub fn handle_internal(&mut self, now: Instant, wall: SystemTime, source: SocketAddr, data: &[u8], rtcp_port: bool) {
        let units = self.arrival_units(now);
        let Some(internal) = self.internal.as_mut() else { return };
        if rtcp_port {
            internal.handle_rtcp(now, wall, source, data, true);
            return;
        }
        let Some(pkt) = internal.handle_rtp(now, units, wall, source, data) else { return };
        let (kind, v) = (pkt.payload_kind, pkt.view);
        let receives = internal.direction().receives();
        self.seen(Side::Internal, now);
        if !receives {
            return;
        }
        let to_browser_ok = self.browser.direction().sends() && self.desired_browser.sends();
        if to_browser_ok && self.opus_to_browser() {
            let mut frames = std::mem::take(&mut self.frames);
            if let Some(down) = downlink(&mut self.downlink) {
                match kind {
                    Payload::Audio(law) if law.is_g711() => down.audio(law, v.seq, v.ts, v.marker, v.payload, &mut frames),
                    Payload::TelephoneEvent => down.event(v.seq, v.ts, v.marker, v.payload, &mut frames),
                    _ => {}
                }
            }
            self.frames_to_browser(now, v.ssrc, &mut frames);
            self.frames = frames;
            self.pump(now, wall);
            return;
        }
        let pt = self.browser.tx_pt_of(kind);
        match (to_browser_ok, pt) {
            (true, Some(pt)) => {
                if let Some(rw) = self.to_browser.rewrite(now, v.ssrc, v.seq, v.ts, v.marker) {
                    self.browser_sent.0 += 1;
                    self.browser_sent.1 += (v.payload.len() + 12) as u64;
                    let payload: std::sync::Arc<[u8]> = v.payload.into();
                    self.browser.send_rtp(now, pt, rw.seq, rw.ts, v.marker || rw.marker, payload);
                }
            }
            (false, _) => self.to_browser.pause(),
            // A format the browser did not negotiate (comfort noise, say) is dropped.
            (true, None) => {}
        }
        self.pump(now, wall);
    }

    fn arrival_units(&self, now: Instant) -> u64 {
        self.arrival_units_at(now, 8000)
    }

    fn arrival_units_at(&self, now: Instant, clock_rate: u32) -> u64 {
        now.saturating_duration_since(self.started).as_micros() as u64 * u64::from(clock_rate) / 1_000_000
    }

    /// Sends transcoded frames (Opus, 48 kHz events) to the browser through its rewriter.
    fn frames_to_browser(&mut self, now: Instant, ssrc: u32, frames: &mut Vec<Frame>) {
        let audio_pt = self.browser.tx_pt_of(Payload::Audio(AudioCodec::Opus));
        let event_pt = self.browser.tx_pt_of(Payload::TelephoneEvent48k);
        self.to_browser.set_clock_rate(48_000);
        for f in frames.drain(..) {
            // Without 48 kHz events negotiated there is no right clock for them: dropped.
            let Some(pt) = (if f.event { event_pt } else { audio_pt }) else { continue };
            if let Some(rw) = self.to_browser.rewrite(now, ssrc, f.seq, f.ts, f.marker) {
                self.browser_sent.0 += 1;
                self.browser_sent.1 += (f.payload.len() + 12) as u64;
                self.browser.send_rtp(now, pt, rw.seq, rw.ts, f.marker || rw.marker, f.payload.into());
            }
        }
    }

    /// Handles what the browser leg produced: media to forward and state changes to report.
    fn pump(&mut self, now: Instant, wall: SystemTime) {
        let _ = wall;
        while let Some(out) = self.browser.events.pop_front() {
            match out {
                BrowserOutput::Connected => self.events.push_back(MediaEvent::BrowserConnected),
                BrowserOutput::Disconnected => self.events.push_back(MediaEvent::BrowserDisconnected),
                BrowserOutput::Failed(r) => self.events.push_back(MediaEvent::BrowserFailed(r)),
                BrowserOutput::Rtp { pt, seq, ts, ssrc, marker, payload, arrival } => {
                    match self.browser.payload_of(pt) {
                        Some(Payload::Audio(c)) => {
                            self.browser_codec = Some(c);
                            self.browser_clock = c.clock_rate();
                        }
                        Some(Payload::TelephoneEvent48k) => self.browser_clock = 48_000,
                        _ => {}
                    }
                    let units = self.arrival_units_at(arrival, self.browser_clock);
                    self.browser_rx.on_packet(arrival, seq, ts, units, payload.len() + 12);
                    self.seen(Side::Browser, now);
                    self.forward_from_browser(now, pt, seq, ts, ssrc, marker, payload);
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_from_browser(&mut self, now: Instant, pt: u8, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: std::sync::Arc<[u8]>) {
        if !(self.browser.direction().receives() && self.desired_browser.receives()) {
            return;
        }
        let Some(kind) = self.browser.payload_of(pt) else { return };
        let opus_up = matches!(kind, Payload::Audio(AudioCodec::Opus) | Payload::TelephoneEvent48k);
        if opus_up {
            self.transcode_from_browser(now, kind, seq, ts, ssrc, marker, &payload);
            return;
        }
        match self.internal.as_mut() {
            None => {
                // Echo: straight back to the browser with our own numbering.
                let Some(out_pt) = self.browser.tx_pt_of(kind) else { return };
                if !self.browser.direction().sends() {
                    self.to_browser.pause();
                    return;
                }
                if let Some(rw) = self.to_browser.rewrite(now, ssrc, seq, ts, marker) {
                    self.browser_sent.0 += 1;
                    self.browser_sent.1 += (payload.len() + 12) as u64;
                    self.browser.send_rtp(now, out_pt, rw.seq, rw.ts, marker || rw.marker, payload);
                }
            }
            Some(internal) => {
                if !internal.direction().sends() {
                    self.to_internal.pause();
                    return;
                }
                let Some(out_pt) = internal.tx_pt_of(kind) else { return };
                if let Some(rw) = self.to_internal.rewrite(now, ssrc, seq, ts, marker) {
                    internal.send_rtp(now, out_pt, rw.seq as u16, rw.ts, marker || rw.marker, &payload);
                }
            }
        }
    }

    /// Browser Opus and its 48 kHz events: decoded to the server's G.711, or for the echo back
    /// through G.711 into Opus, so the agent hears what the server would.
    #[allow(clippy::too_many_arguments)]
    fn transcode_from_browser(&mut self, now: Instant, kind: Payload, seq: u16, ts: u32, ssrc: u32, marker: bool, payload: &[u8]) {
        let law = match self.internal.as_ref() {
            Some(i) if !i.direction().sends() => {
                self.to_internal.pause();
                return;
            }
            Some(i) => match i.codec() {
                Some(law) => law,
                None => return,
            },
            None => self.codecs.first().copied().unwrap_or(AudioCodec::Pcmu),
        };
        if self.uplink.as_ref().is_none_or(|u| u.law() != law) {
            self.uplink = OpusToG711::new(law).map_err(|e| tracing::warn!(error = %e, "opus decoder")).ok();
        }
        let Some(up) = self.uplink.as_mut() else { return };
        let mut frames = std::mem::take(&mut self.frames);
        match kind {
            Payload::Audio(_) => up.audio(seq, ts, marker, payload, &mut frames),
            _ => up.event(seq, ts, marker, payload, &mut frames),
        }
        match self.internal.as_mut() {
            Some(internal) => {
                let (audio_pt, event_pt) = (internal.tx_pt_of(Payload::Audio(law)), internal.tx_pt_of(Payload::TelephoneEvent));
                for f in frames.drain(..) {
                    let Some(pt) = (if f.event { event_pt } else { audio_pt }) else { continue };
                    if let Some(rw) = self.to_internal.rewrite(now, ssrc, f.seq, f.ts, f.marker) {
                        internal.send_rtp(now, pt, rw.seq as u16, rw.ts, f.marker || rw.marker, &f.payload);
                    }
                }
            }
            None if !self.browser.direction().sends() => {
                frames.clear();
                self.to_browser.pause();
            }
            None => {
                let mut back = Vec::new();
                if let Some(down) = downlink(&mut self.downlink) {
                    for f in frames.drain(..) {
                        if f.event {
                            down.event(f.seq, f.ts, f.marker, &f.payload, &mut back);
                        } else {
                            down.audio(law, f.seq, f.ts, f.marker, &f.payload, &mut back);
                        }
                    }
                }
                frames.clear();
                self.frames_to_browser(now, ssrc, &mut back);
            }
        }
        self.frames = frames;
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if self.browser.deadline().is_some_and(|d| d <= now) {
            self.browser.handle_timeout(now);
        }
        if let Some(i) = self.internal.as_mut() {
            i.handle_timeout(now, wall);
        }
        if now >= self.next_check {
            self.next_check = now + CHECK_INTERVAL;
            self.check_silence(now);
            // In-band FEC sized for the loss the browser reports on what we send it.
            if let (Some(d), Some(loss)) = (self.downlink.as_mut(), self.browser.remote_loss) {
                d.set_expected_loss(loss);
            }
        }
        self.pump(now, wall);
    }

    fn check_silence(&mut self, now: Instant) {
        let expecting = [
            self.browser.negotiated() && self.browser.direction().receives(),
            self.internal.as_ref().is_some_and(|i| i.negotiated() && i.direction().receives()),
        ];
        for (k, side) in [(0, Side::Browser), (1, Side::Internal)] {
            let (since, reported) = &mut self.watch[k];
            match since {
                Some(t) if expecting[k] && !*reported && now.saturating_duration_since(*t) >= self.no_media_timeout => {
                    *reported = true;
                    self.events.push_back(MediaEvent::NoMedia(side));
                }
                // Not expecting media (hold): restart the clock so resume gets a full timeout.
                Some(t) if !expecting[k] => *t = now,
                _ => {}
            }
        }
    }

    pub fn next_timeout(&self) -> Instant {
        let mut t = self.next_check;
        if let Some(d) = self.browser.deadline() {
            t = t.min(d);
        }
        if let Some(i) = &self.internal {
            t = t.min(i.deadline());
        }
        t
    }

    pub fn stats(&self, now: Instant) -> CallStats {
        let mut browser = LegStats { rtt_ms: self.browser.rtt.map(|d| d.as_secs_f32() * 1000.0), ..Default::default() };
        self.browser_rx.fill(&mut browser, self.browser_clock);
        browser.packets_sent = self.browser_sent.0;
        browser.bytes_sent = self.browser_sent.1;
        browser.codec = self.browser_codec.map(AudioCodec::name);
        if self.browser_codec == Some(AudioCodec::Opus) {
            // What the server hears: the loss left after the bridge's FEC, Opus's impairments.
            let recovered = self.uplink.as_ref().map_or(0, |u| u.counts.recovered);
            let expected = self.browser_rx.expected();
            let residual = if expected == 0 { 0.0 } else { browser.packets_lost.saturating_sub(recovered) as f32 / expected as f32 };
            browser.fec_recovered = recovered;
            browser.mos = mos_with(OPUS, residual, browser.jitter_ms, browser.rtt_ms.unwrap_or(0.0));
        }
        let mut internal = LegStats::default();
        if let Some(i) = &self.internal {
            internal.rtt_ms = i.rtt.map(|d| d.as_secs_f32() * 1000.0);
            i.rx.fill(&mut internal, 8000);
            internal.codec = i.codec().map(AudioCodec::name);
            internal.packets_sent = i.sent_packets;
            internal.bytes_sent = i.sent_bytes;
        }
        CallStats { browser, internal, duration: now.saturating_duration_since(self.started) }
    }

    pub fn close(&mut self, now: Instant) {
        self.browser.close(now);
    }
}

/// The call's G.711-to-Opus encoder, made when first needed (None if libopus refuses).
fn downlink(slot: &mut Option<G711ToOpus>) -> Option<&mut G711ToOpus> {
    if slot.is_none() {
        *slot = G711ToOpus::new().map_err(|e| tracing::warn!(error = %e, "opus encoder")).ok();
    }
    slot.as_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use str0m::config::DtlsCert;
    use str0m::IceCreds;

    fn core(agent: &[AudioCodec]) -> CallCore {
        let generated = rcgen::generate_simple_self_signed(vec!["gatewayd".to_owned()]).unwrap();
        let cert = DtlsCert { certificate: generated.cert.der().to_vec(), private_key: generated.signing_key.serialize_der() };
        let browser = BrowserSetup { candidates: vec!["198.51.100.1:40000".parse().unwrap()], cert, ice: IceCreds::new(), telephone_event: true, capture_rtcp: false };
        let internal = InternalSetup { local: "192.0.2.1:41000".parse().unwrap(), telephone_event: true, ssrc: 7, origin_id: 1 };
        let seeds = Seeds { browser_seq: 1, browser_ts: 2, internal_seq: 3, internal_ts: 4 };
        let g711 = vec![AudioCodec::Pcmu, AudioCodec::Pcma];
        CallCore::new(Instant::now(), browser, Some(internal), g711, agent.to_vec(), Duration::from_secs(30), seeds)
    }

    const SERVER_PCMA: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.80\r\ns=-\r\nc=IN IP4 192.0.2.80\r\nt=0 0\r\nm=audio 20000 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\n";

    fn rtpmaps(sdp: &str) -> Vec<String> {
        sdp.lines().filter_map(|l| l.strip_prefix("a=rtpmap:")).map(|l| l.split_once(' ').unwrap().1.to_owned()).collect()
    }

    #[test]
    fn inbound_offers_the_browser_opus_first_and_the_servers_g711_for_passthrough() {
        let mut c = core(&[AudioCodec::Opus, AudioCodec::Pcmu, AudioCodec::Pcma]);
        let answer = c.internal_answer(Instant::now(), SERVER_PCMA).unwrap();
        assert!(answer.contains("RTP/AVP 8 96"), "the server leg stays G.711: {answer}");
        let offer = c.browser_create_offer(Instant::now(), SystemTime::now()).unwrap();
        let maps = rtpmaps(&offer);
        assert_eq!(maps.first().map(String::as_str), Some("opus/48000/2"), "{offer}");
        assert!(maps.contains(&"PCMA/8000".to_owned()) && !maps.contains(&"PCMU/8000".to_owned()), "only the server's G.711 besides Opus: {maps:?}");
        assert!(maps.contains(&"telephone-event/48000".to_owned()) && maps.contains(&"telephone-event/8000".to_owned()), "{maps:?}");
        assert!(offer.contains("useinbandfec=1") && !offer.contains("usedtx=1"), "{offer}");
    }

    #[test]
    fn without_opus_the_browser_gets_the_servers_codec_only() {
        let mut c = core(&[AudioCodec::Pcmu, AudioCodec::Pcma]);
        c.internal_answer(Instant::now(), SERVER_PCMA).unwrap();
        let offer = c.browser_create_offer(Instant::now(), SystemTime::now()).unwrap();
        assert_eq!(rtpmaps(&offer), vec!["PCMA/8000", "telephone-event/8000"], "{offer}");
    }

    #[test]
    fn the_server_is_offered_g711_only_whatever_the_browser_side_lists() {
        let mut c = core(&[AudioCodec::Opus]);
        let offer = c.internal_create_offer().unwrap();
        assert!(offer.contains("m=audio 41000 RTP/AVP 0 8 101\r\n"), "{offer}");
        // Only G.711 toward the browser, and the server may use either: each passes through.
        let mut c = core(&[AudioCodec::Pcma]);
        assert!(c.internal_create_offer().unwrap().contains("RTP/AVP 8 101\r\n"));
    }
}
