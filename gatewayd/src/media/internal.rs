//! The internal leg: plain RTP/AVP toward the SIP server with symmetric RTP (we send to where
//! the server's packets come from), RTCP on port+1 or multiplexed, and our own sender reports
//! for round-trip time. Sans-IO: datagrams and time in, datagrams out.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use super::config::AudioCodec;
use super::error::MediaError;
use super::rtcp;
use super::rtp;
use super::sdp_plain::{build, Direction, Format, Origin, Payload, PlainSdp};
use super::stats::ReceiveStats;

#[derive(Debug)]
pub struct InternalTransmit {
    pub rtcp: bool,
    pub destination: SocketAddr,
    pub data: Vec<u8>,
}

pub struct InternalSetup {
    /// Local RTP address (internal bind address and the even port of the pair).
    pub local: SocketAddr,
    pub telephone_event: bool,
    pub ssrc: u32,
    pub origin_id: u64,
}

/// An RTP packet received from the server, payload type already resolved.
pub struct InternalRtp<'a> {
    pub payload_kind: Payload,
    pub view: rtp::RtpView<'a>,
}

const TELEPHONE_EVENT_PT: u8 = 101;
const REPORT_INTERVAL: Duration = Duration::from_secs(5);

pub struct InternalLeg {
    setup: InternalSetup,
    origin_version: u64,
    remote: Option<PlainSdp>,
    /// The formats of our last description, with our payload type numbers.
    local_formats: Vec<Format>,
    offer_pending: bool,
    desired: Direction,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    pub out: VecDeque<InternalTransmit>,
    pub rx: ReceiveStats,
    remote_ssrc: Option<u32>,
    pub sent_packets: u64,
    pub sent_bytes: u64,
    last_sent: Option<(Instant, u32)>,
    peer_sr: Option<(u32, Instant)>,
    pub rtt: Option<Duration>,
    next_report: Instant,
    buf: Vec<u8>,
}

impl InternalLeg {
    pub fn new(setup: InternalSetup, now: Instant) -> InternalLeg {
        InternalLeg {
            setup,
            origin_version: 0,
            remote: None,
            local_formats: Vec::new(),
            offer_pending: false,
            desired: Direction::SendRecv,
            latched_rtp: None,
            latched_rtcp: None,
            out: VecDeque::new(),
            rx: ReceiveStats::default(),
            remote_ssrc: None,
            sent_packets: 0,
            sent_bytes: 0,
            last_sent: None,
            peer_sr: None,
            rtt: None,
            next_report: now + REPORT_INTERVAL,
            buf: Vec::with_capacity(200),
        }
    }

    fn origin(&mut self) -> Origin {
        self.origin_version += 1;
        Origin { id: self.setup.origin_id, version: self.origin_version }
    }

    pub fn set_desired(&mut self, d: Direction) {
        self.desired = d;
    }

    /// Offer our codecs (restricted to `codecs`) and telephone-event, in `codecs` order.
    pub fn create_offer(&mut self, codecs: &[AudioCodec]) -> String {
        let mut formats: Vec<Format> = codecs.iter().map(|&c| Format { pt: c.static_pt(), payload: Payload::Audio(c) }).collect();
        if self.setup.telephone_event {
            formats.push(Format { pt: TELEPHONE_EVENT_PT, payload: Payload::TelephoneEvent });
        }
        self.local_formats = formats;
        self.offer_pending = true;
        let rtcp_mux = self.remote.as_ref().is_some_and(|r| r.rtcp_mux);
        let origin = self.origin();
        build(origin, self.setup.local.ip(), self.setup.local.port(), &self.local_formats, self.desired, rtcp_mux)
    }

    pub fn accept_answer(&mut self, sdp: &str) -> Result<(), MediaError> {
        if !self.offer_pending {
            return Err(MediaError::State("no offer pending toward the SIP server".into()));
        }
        let answer = PlainSdp::parse(sdp)?;
        if answer.rejected() {
            return Err(MediaError::Sdp("audio stream rejected".into()));
        }
        let ours: Vec<AudioCodec> = self.local_formats.iter().filter_map(|f| match f.payload { Payload::Audio(c) => Some(c), _ => None }).collect();
        if answer.first_audio(&ours).is_none() {
            return Err(MediaError::Sdp("answer has none of the offered codecs".into()));
        }
        self.offer_pending = false;
        self.set_remote(answer);
        Ok(())
    }

    /// Answer the server's offer with the first of its codecs we allow.
    pub fn answer(&mut self, sdp: &str, allowed: &[AudioCodec]) -> Result<String, MediaError> {
        let offer = PlainSdp::parse(sdp)?;
        let audio = offer.first_audio(allowed).ok_or_else(|| MediaError::Sdp("no common audio codec".into()))?;
        let mut formats = vec![audio];
        if self.setup.telephone_event {
            formats.extend(offer.find(Payload::TelephoneEvent));
        }
        formats.extend(offer.find(Payload::ComfortNoise));
        let direction = offer.direction.invert().intersect(self.desired);
        let rtcp_mux = offer.rtcp_mux;
        self.local_formats = formats;
        self.offer_pending = false;
        self.set_remote(offer);
        let origin = self.origin();
        Ok(build(origin, self.setup.local.ip(), self.setup.local.port(), &self.local_formats, direction, rtcp_mux))
    }

    fn set_remote(&mut self, sdp: PlainSdp) {
        let moved = self.remote.as_ref().is_none_or(|r| r.rtp != sdp.rtp);
        if moved {
            // A new address in the description overrides what we latched onto before.
            self.latched_rtp = None;
            self.latched_rtcp = None;
        }
        self.remote = Some(sdp);
    }

    pub fn negotiated(&self) -> bool {
        self.remote.is_some() && !self.offer_pending
    }

    /// The audio codec both ends use (the first audio format of the peer that we also listed).
    pub fn codec(&self) -> Option<AudioCodec> {
        let remote = self.remote.as_ref()?;
        let ours: Vec<AudioCodec> = self.local_formats.iter().filter_map(|f| match f.payload { Payload::Audio(c) => Some(c), _ => None }).collect();
        match remote.first_audio(&ours)?.payload {
            Payload::Audio(c) => Some(c),
            _ => None,
        }
    }

    /// Direction from our side: whether we may send to and receive from the server.
    pub fn direction(&self) -> Direction {
        match &self.remote {
            Some(r) if !r.rejected() && !self.offer_pending => self.desired.intersect(r.direction.invert()),
            _ => Direction::Inactive,
        }
    }

    /// The server receives with the numbers of its own description.
    pub fn tx_pt_of(&self, payload: Payload) -> Option<u8> {
        let remote = self.remote.as_ref()?;
        if !self.local_formats.iter().any(|f| f.payload == payload) {
            return None;
        }
        remote.find(payload).map(|f| f.pt)
    }

    /// Incoming numbers: the server's own or, if it sends with ours, ours.
    pub fn payload_of(&self, pt: u8) -> Option<Payload> {
        let remote = self.remote.as_ref()?;
        remote.formats.iter().chain(self.local_formats.iter()).find(|f| f.pt == pt).map(|f| f.payload)
    }

    fn rtp_destination(&self) -> Option<SocketAddr> {
        self.latched_rtp.or_else(|| self.remote.as_ref().filter(|r| !r.rejected() && !r.rtp.ip().is_unspecified()).map(|r| r.rtp))
    }

    fn rtcp_destination(&self) -> Option<(bool, SocketAddr)> {
        let r = self.remote.as_ref()?;
        if r.rtcp_mux {
            return self.rtp_destination().map(|a| (false, a));
        }
        self.latched_rtcp.or_else(|| (!r.rtcp.ip().is_unspecified()).then_some(r.rtcp)).map(|a| (true, a))
    }

    /// A datagram on the RTP port. Returns the packet when it is RTP we can forward.
    pub fn handle_rtp<'a>(&mut self, now: Instant, arrival_units: u64, wall: SystemTime, source: SocketAddr, data: &'a [u8]) -> Option<InternalRtp<'a>> {
        if rtp::is_rtcp(data) {
            self.handle_rtcp(now, wall, source, data, false);
            return None;
        }
        let view = rtp::parse(data)?;
        let payload_kind = self.payload_of(view.pt)?;
        // Symmetric RTP: answer to where the server actually sends from.
        self.latched_rtp = Some(source);
        if self.remote_ssrc != Some(view.ssrc) {
            self.remote_ssrc = Some(view.ssrc);
            self.rx.new_source();
        }
        self.rx.on_packet(now, view.seq, view.ts, arrival_units, data.len());
        Some(InternalRtp { payload_kind, view })
    }

    pub fn handle_rtcp(&mut self, now: Instant, wall: SystemTime, source: SocketAddr, data: &[u8], separate_port: bool) {
        if separate_port {
            self.latched_rtcp = Some(source);
        }
        let r = rtcp::parse(data, self.setup.ssrc);
        if let Some(mid) = r.peer_sr {
            self.peer_sr = Some((mid, now));
        }
        if let Some((lsr, dlsr)) = r.about_us {
            if let Some(rtt) = rtcp::rtt(rtcp::ntp_mid(rtcp::ntp(wall)), lsr, dlsr) {
                self.rtt = Some(rtt);
            }
        }
    }

    pub fn send_rtp(&mut self, now: Instant, pt: u8, seq: u16, ts: u32, marker: bool, payload: &[u8]) {
        let Some(dest) = self.rtp_destination() else { return };
        rtp::build(&mut self.buf, marker, pt, seq, ts, self.setup.ssrc, payload);
        self.sent_packets += 1;
        self.sent_bytes += self.buf.len() as u64;
        self.last_sent = Some((now, ts));
        self.out.push_back(InternalTransmit { rtcp: false, destination: dest, data: self.buf.clone() });
    }

    pub fn deadline(&self) -> Instant {
        self.next_report
    }

    pub fn handle_timeout(&mut self, now: Instant, wall: SystemTime) {
        if now < self.next_report {
            return;
        }
        self.next_report = now + REPORT_INTERVAL;
        let Some((rtcp_port, dest)) = self.rtcp_destination() else { return };
        if self.sent_packets == 0 && self.rx.packets == 0 {
            return;
        }
        let ntp = rtcp::ntp(wall);
        let rtp_ts = match self.last_sent {
            Some((t, ts)) => ts.wrapping_add((now.saturating_duration_since(t).as_micros() as u64 * 8 / 1000) as u32),
            None => 0,
        };
        let block = self.remote_ssrc.map(|ssrc| {
            let (lsr, dlsr) = match self.peer_sr {
                Some((mid, at)) => (mid, (now.saturating_duration_since(at).as_micros() as u64 * 65536 / 1_000_000) as u32),
                None => (0, 0),
            };
            rtcp::ReportBlock {
                ssrc,
                fraction_lost: self.rx.take_fraction_lost(),
                cumulative_lost: self.rx.lost() as u32,
                ext_max_seq: self.rx.extended_max_seq(),
                jitter: self.rx.jitter_units(),
                lsr,
                dlsr,
            }
        });
        let info = rtcp::SenderInfo { ssrc: self.setup.ssrc, ntp, rtp_ts, packets: self.sent_packets as u32, octets: self.sent_bytes as u32 };
        let mut buf = Vec::with_capacity(52);
        rtcp::build_sr(&mut buf, &info, block.as_ref());
        self.out.push_back(InternalTransmit { rtcp: rtcp_port, destination: dest, data: buf });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg() -> InternalLeg {
        let setup = InternalSetup {
            local: "10.0.0.1:30000".parse().unwrap(),
            telephone_event: true,
            ssrc: 77,
            origin_id: 1,
        };
        InternalLeg::new(setup, Instant::now())
    }

    const SERVER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8 96\r\na=rtpmap:96 telephone-event/8000\r\n";

    #[test]
    fn answers_with_first_allowed_codec_and_maps_event_pt() {
        let mut l = leg();
        let a = l.answer(SERVER, &[AudioCodec::Pcmu, AudioCodec::Pcma]).unwrap();
        assert!(a.contains("m=audio 30000 RTP/AVP 8 96\r\n"), "{a}");
        assert_eq!(l.codec(), Some(AudioCodec::Pcma));
        assert_eq!(l.tx_pt_of(Payload::TelephoneEvent), Some(96));
        assert_eq!(l.direction(), Direction::SendRecv);
        assert!(matches!(l.answer(SERVER, &[AudioCodec::Pcmu]), Err(MediaError::Sdp(_))));
    }

    #[test]
    fn latches_onto_the_actual_source() {
        let mut l = leg();
        l.answer(SERVER, &[AudioCodec::Pcma]).unwrap();
        let now = Instant::now();
        l.send_rtp(now, 8, 1, 0, false, &[0; 160]);
        assert_eq!(l.out.pop_front().unwrap().destination, "10.0.0.9:4000".parse().unwrap());
        let mut pkt = Vec::new();
        rtp::build(&mut pkt, false, 8, 5, 0, 1234, &[1; 160]);
        let from: SocketAddr = "10.0.0.9:4010".parse().unwrap();
        assert!(l.handle_rtp(now, 0, SystemTime::now(), from, &pkt).is_some());
        l.send_rtp(now, 8, 2, 160, false, &[0; 160]);
        assert_eq!(l.out.pop_front().unwrap().destination, from);
    }

    #[test]
    fn hold_offer_makes_us_receive_only() {
        let mut l = leg();
        l.answer(SERVER, &[AudioCodec::Pcma]).unwrap();
        let held = SERVER.replace("a=rtpmap", "a=sendonly\r\na=rtpmap");
        let a = l.answer(&held, &[AudioCodec::Pcma]).unwrap();
        assert!(a.contains("a=recvonly"));
        assert_eq!(l.direction(), Direction::RecvOnly);
    }
}
