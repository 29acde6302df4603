//! One call's media as a sans-IO state machine: the browser leg, the internal leg (absent for
//! the echo endpoint) and the forwarding between them with payload-type mapping, direction
//! gating for hold and continuous numbering toward each receiver.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::browser::{BrowserLeg, BrowserOutput, BrowserSetup};
use super::config::AudioCodec;
use super::error::MediaError;
use super::internal::{InternalLeg, InternalSetup};
use super::rtp::Rewriter;
use super::sdp_plain::{Direction, Payload};
use super::stats::{CallStats, LegStats, ReceiveStats};

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
    codecs: Vec<AudioCodec>,
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
    pub fn new(now: Instant, browser: BrowserSetup, internal: Option<InternalSetup>, codecs: Vec<AudioCodec>, no_media_timeout: Duration, seeds: Seeds) -> CallCore {
        CallCore {
            browser: BrowserLeg::new(browser),
            internal: internal.map(|s| InternalLeg::new(s, now)),
            codecs,
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

    /// Codecs the browser may use: the internal side's choice once made, else the configured set.
    fn browser_codecs(&self) -> Vec<AudioCodec> {
        match self.internal.as_ref().and_then(|i| i.codec()) {
            Some(c) => vec![c],
            None => self.codecs.clone(),
        }
    }

    /// Codecs the server may use: the browser's choice once made, else the configured set.
    fn internal_codecs(&self) -> Vec<AudioCodec> {
        let chosen: Vec<AudioCodec> = self.codecs.iter().copied().filter(|&c| self.browser.tx_pt_of(Payload::Audio(c)).is_some()).collect();
        if self.browser.negotiated() && !chosen.is_empty() { chosen } else { self.codecs.clone() }
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
        now.saturating_duration_since(self.started).as_micros() as u64 * 8 / 1000
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
                    let units = self.arrival_units(arrival);
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
        self.browser_rx.fill(&mut browser, 8000);
        browser.packets_sent = self.browser_sent.0;
        browser.bytes_sent = self.browser_sent.1;
        let mut internal = LegStats::default();
        if let Some(i) = &self.internal {
            internal.rtt_ms = i.rtt.map(|d| d.as_secs_f32() * 1000.0);
            i.rx.fill(&mut internal, 8000);
            internal.packets_sent = i.sent_packets;
            internal.bytes_sent = i.sent_bytes;
        }
        CallStats { browser, internal, duration: now.saturating_duration_since(self.started) }
    }

    pub fn close(&mut self, now: Instant) {
        self.browser.close(now);
    }
}
