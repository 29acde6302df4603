//! Real peers for media bridge tests: a WebRTC endpoint (webrtc-rs `rtc`, full ICE, DTLS
//! client or server as negotiated) standing in for the browser, and a plain UDP RTP endpoint
//! standing in for the SIP server. Both run on loopback with bounded waits.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc::{channel, sync_channel, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{MediaEngine, MIME_TYPE_PCMA, MIME_TYPE_PCMU, MIME_TYPE_TELEPHONE_EVENT};
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::{RTCMessage, TaggedRTCMessage};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::header::Header;
use rtc::rtp::packet::Packet;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

/// An RTP packet as a peer received it.
#[derive(Debug, Clone)]
pub struct Got {
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub marker: bool,
    pub payload: Vec<u8>,
}

pub const BROWSER_EVENT_PT: u8 = 126;

pub struct PeerState {
    pub pc: RTCPeerConnection,
    sender: RTCRtpSenderId,
    sock: UdpSocket,
    local: SocketAddr,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    /// Payload type sent every 20 ms while set.
    pub streaming: Option<u8>,
    pub connected: bool,
    pub failed: bool,
}

type Job = Box<dyn FnOnce(&mut PeerState) + Send>;

/// A WebRTC peer acting as the browser.
pub struct BrowserPeer {
    jobs: Sender<Job>,
    pub rx: Receiver<Got>,
    thread: Option<JoinHandle<()>>,
}

fn codec(mime: &str, pt: u8, fmtp: &str) -> RTCRtpCodecParameters {
    RTCRtpCodecParameters {
        rtp_codec: RTCRtpCodec { mime_type: mime.to_owned(), clock_rate: 8000, channels: 1, sdp_fmtp_line: fmtp.to_owned(), rtcp_feedback: vec![] },
        payload_type: pt,
    }
}

impl BrowserPeer {
    pub fn spawn(profile: SrtpProtectionProfile) -> BrowserPeer {
        Self::spawn_at(profile, "127.0.0.1:0".parse().unwrap())
    }

    /// A peer whose one host candidate is `bind` (spawned on a thread that entered a network
    /// namespace, its socket is in that namespace).
    pub fn spawn_at(profile: SrtpProtectionProfile, bind: std::net::SocketAddr) -> BrowserPeer {
        let (jobs, job_rx) = channel::<Job>();
        let (got_tx, rx) = channel();
        let thread = std::thread::spawn(move || {
            let sock = UdpSocket::bind(bind).unwrap();
            sock.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
            let local = sock.local_addr().unwrap();
            let se = SettingEngineBuilder::new().with_srtp_protection_profiles(vec![profile]).build();
            let mut me = MediaEngine::default();
            let pcmu = codec(MIME_TYPE_PCMU, 0, "");
            me.register_codec(pcmu.clone(), RtpCodecKind::Audio).unwrap();
            me.register_codec(codec(MIME_TYPE_PCMA, 8, ""), RtpCodecKind::Audio).unwrap();
            me.register_codec(codec(MIME_TYPE_TELEPHONE_EVENT, BROWSER_EVENT_PT, "0-16"), RtpCodecKind::Audio).unwrap();
            let mut pc = RTCPeerConnectionBuilder::new().with_setting_engine(se).with_media_engine(me).build(Instant::now()).unwrap();
            let ssrc = 0x5eed_0001;
            let track = MediaStreamTrack::new("mic".into(), "audio".into(), "audio".into(), RtpCodecKind::Audio,
                vec![RTCRtpEncodingParameters { rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() }, codec: pcmu.rtp_codec.clone(), ..Default::default() }]);
            let sender = pc.add_track(track).unwrap();
            // Offer every registered audio format, as a browser does.
            let all = vec![pcmu.clone(), codec(MIME_TYPE_PCMA, 8, ""), codec(MIME_TYPE_TELEPHONE_EVENT, BROWSER_EVENT_PT, "0-16")];
            let ids: Vec<_> = pc.get_transceivers().collect();
            for id in ids {
                pc.rtp_transceiver(id).unwrap().set_codec_preferences(all.clone()).unwrap();
            }
            let cand = CandidateHostConfig { base_config: CandidateConfig { network: "udp".into(), address: local.ip().to_string(), port: local.port(), component: 1, ..Default::default() }, ..Default::default() }
                .new_candidate_host()
                .unwrap();
            pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().unwrap()).unwrap();
            let mut st = PeerState { pc, sender, sock, local, ssrc, seq: 1000, ts: 5000, streaming: None, connected: false, failed: false };
            run(&mut st, job_rx, got_tx);
        });
        BrowserPeer { jobs, rx, thread: Some(thread) }
    }

    /// Runs `f` on the peer's thread and returns its result.
    pub fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut PeerState) -> R + Send + 'static) -> R {
        let (tx, rx) = sync_channel(1);
        self.jobs.send(Box::new(move |s| { let _ = tx.send(f(s)); })).unwrap();
        rx.recv_timeout(Duration::from_secs(10)).expect("peer thread answers")
    }

    pub fn create_offer(&self) -> String {
        self.with(|s| {
            let o = s.pc.create_offer(None).unwrap();
            s.pc.set_local_description(Instant::now(), o.clone()).unwrap();
            o.sdp
        })
    }

    pub fn accept_answer(&self, sdp: &str) {
        let sdp = sdp.to_owned();
        self.with(move |s| s.pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(sdp).unwrap()).unwrap());
    }

    pub fn answer(&self, offer: &str) -> String {
        let offer = offer.to_owned();
        self.with(move |s| {
            s.pc.set_remote_description(Instant::now(), RTCSessionDescription::offer(offer).unwrap()).unwrap();
            let a = s.pc.create_answer(None).unwrap();
            s.pc.set_local_description(Instant::now(), a.clone()).unwrap();
            a.sdp
        })
    }

    /// Re-offer with another direction on our audio transceiver (hold: SendOnly).
    pub fn reoffer(&self, dir: RTCRtpTransceiverDirection) -> String {
        self.with(move |s| {
            let ids: Vec<_> = s.pc.get_transceivers().collect();
            for id in ids {
                if let Some(mut t) = s.pc.rtp_transceiver(id) {
                    t.set_direction(dir);
                }
            }
            let o = s.pc.create_offer(None).unwrap();
            s.pc.set_local_description(Instant::now(), o.clone()).unwrap();
            o.sdp
        })
    }

    /// Re-offer with fresh ICE credentials.
    pub fn ice_restart_offer(&self) -> String {
        self.with(|s| {
            s.pc.restart_ice();
            let o = s.pc.create_offer(None).unwrap();
            s.pc.set_local_description(Instant::now(), o.clone()).unwrap();
            o.sdp
        })
    }

    pub fn stream(&self, pt: Option<u8>) {
        self.with(move |s| s.streaming = pt);
    }

    pub fn send(&self, pt: u8, marker: bool, ts: Option<u32>, payload: Vec<u8>) {
        self.with(move |s| {
            let ts = ts.unwrap_or(s.ts);
            send_rtp(s, pt, marker, ts, payload)
        });
    }

    pub fn wait_connected(&self, within: Duration) -> bool {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.with(|s| s.connected) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for BrowserPeer {
    fn drop(&mut self) {
        let (tx, _rx) = channel();
        self.jobs = tx; // closing the queue ends the thread
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn send_rtp(s: &mut PeerState, pt: u8, marker: bool, ts: u32, payload: Vec<u8>) {
    s.seq = s.seq.wrapping_add(1);
    let header = Header { version: 2, marker, payload_type: pt, sequence_number: s.seq, timestamp: ts, ssrc: s.ssrc, ..Default::default() };
    if let Some(mut snd) = s.pc.rtp_sender(s.sender) {
        let _ = snd.write_rtp(Instant::now(), Packet { header, payload: Bytes::from(payload) });
    }
}

fn run(s: &mut PeerState, jobs: Receiver<Job>, got: Sender<Got>) {
    let mut buf = vec![0u8; 2048];
    let mut next_tick = Instant::now();
    // Bounded: a test peer never outlives two minutes.
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        loop {
            match jobs.recv_timeout(Duration::ZERO) {
                Ok(job) => job(s),
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if let Ok((n, peer)) = s.sock.recv_from(&mut buf) {
            let msg = TaggedBytesMut {
                now: Instant::now(),
                transport: TransportContext { local_addr: s.local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP },
                message: BytesMut::from(&buf[..n]),
            };
            let _ = s.pc.handle_read(msg);
        }
        let now = Instant::now();
        if s.pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = s.pc.handle_timeout(now);
        }
        if now >= next_tick {
            next_tick += Duration::from_millis(20);
            if let (Some(pt), true) = (s.streaming, s.connected) {
                s.ts = s.ts.wrapping_add(160);
                let ts = s.ts;
                send_rtp(s, pt, false, ts, vec![0x55; 160]);
            }
        }
        while let Some(TaggedRTCMessage { message, .. }) = s.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, p) = message {
                let _ = got.send(Got { pt: p.header.payload_type, seq: p.header.sequence_number, ts: p.header.timestamp, ssrc: p.header.ssrc, marker: p.header.marker, payload: p.payload.to_vec() });
            }
        }
        while let Some(m) = s.pc.poll_write() {
            let _ = s.sock.send_to(&m.message, m.transport.peer_addr);
        }
        while let Some(e) = s.pc.poll_event() {
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(st) = e {
                match st {
                    RTCPeerConnectionState::Connected => s.connected = true,
                    RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => s.failed = true,
                    _ => {}
                }
            }
        }
    }
}

/// The SIP server's RTP endpoint: plain UDP, sends and records what arrives.
pub struct PlainPeer {
    pub sock: UdpSocket,
    pub ssrc: u32,
    pub seq: u16,
    pub ts: u32,
    pub target: Option<SocketAddr>,
}

pub const SERVER_EVENT_PT: u8 = 96;

impl PlainPeer {
    pub fn bind() -> PlainPeer {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        PlainPeer { sock, ssrc: 0xabc0_0001, seq: 40_000, ts: 90_000, target: None }
    }

    pub fn port(&self) -> u16 {
        self.sock.local_addr().unwrap().port()
    }

    /// The server's description: PCMA and PCMU (in `codecs` order), telephone-event at 96.
    pub fn sdp(&self, codecs: &str, dir: &str) -> String {
        let pts: Vec<&str> = codecs.split(' ').map(|c| if c == "PCMA" { "8" } else { "0" }).collect();
        let maps: String = codecs.split(' ').zip(&pts).map(|(c, p)| format!("a=rtpmap:{p} {c}/8000\r\n")).collect();
        format!(
            "v=0\r\no=srv 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {} {SERVER_EVENT_PT}\r\n{maps}a=rtpmap:{SERVER_EVENT_PT} telephone-event/8000\r\na=fmtp:{SERVER_EVENT_PT} 0-16\r\na={dir}\r\n",
            self.port(),
            pts.join(" ")
        )
    }

    /// Where the gateway wants RTP, from its SDP.
    pub fn target_from(&mut self, gateway_sdp: &str) {
        let ip = gateway_sdp.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).unwrap().trim();
        let port = gateway_sdp.lines().find_map(|l| l.strip_prefix("m=audio ")).unwrap().split(' ').next().unwrap();
        self.target = Some(format!("{ip}:{port}").parse().unwrap());
    }

    pub fn send(&mut self, pt: u8, marker: bool, payload: &[u8]) {
        self.seq = self.seq.wrapping_add(1);
        if pt != SERVER_EVENT_PT {
            self.ts = self.ts.wrapping_add(160);
        }
        let mut b = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.ts.to_be_bytes());
        b.extend_from_slice(&self.ssrc.to_be_bytes());
        b.extend_from_slice(payload);
        self.sock.send_to(&b, self.target.unwrap()).unwrap();
    }

    /// Sends back every datagram exactly as it arrived (same SSRC, numbers and payload) to
    /// where it came from, as a SIP server in RTP echo mode does, until `stop` is dropped or
    /// `within` passes. Returns how many datagrams went back and the RTP SSRCs seen.
    pub fn echo(&self, within: Duration) -> (Sender<()>, JoinHandle<(u64, std::collections::HashSet<u32>)>) {
        let sock = self.sock.try_clone().unwrap();
        let (stop, stopped) = channel::<()>();
        let t = std::thread::spawn(move || {
            let end = Instant::now() + within;
            let mut buf = [0u8; 2048];
            let mut n_back = 0;
            let mut ssrcs = std::collections::HashSet::new();
            while Instant::now() < end && matches!(stopped.try_recv(), Err(std::sync::mpsc::TryRecvError::Empty)) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    if n >= 12 && !(200..=207).contains(&buf[1]) {
                        ssrcs.insert(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]));
                    }
                    if sock.send_to(&buf[..n], from).is_ok() {
                        n_back += 1;
                    }
                }
            }
            (n_back, ssrcs)
        });
        (stop, t)
    }

    /// Receives RTP until `until` says stop or the deadline passes.
    pub fn collect(&self, within: Duration, mut until: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
        let end = Instant::now() + within;
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while Instant::now() < end && !until(&got) {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                let b = &buf[..n];
                if n >= 12 && !(200..=207).contains(&b[1]) {
                    got.push(Got {
                        pt: b[1] & 0x7f,
                        marker: b[1] & 0x80 != 0,
                        seq: u16::from_be_bytes([b[2], b[3]]),
                        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                        payload: b[12..].to_vec(),
                    });
                }
            }
        }
        got
    }
}

/// Collects what the browser peer received until `until` holds or the deadline passes.
pub fn collect_browser(peer: &BrowserPeer, within: Duration, mut until: impl FnMut(&[Got]) -> bool) -> Vec<Got> {
    let end = Instant::now() + within;
    let mut got = Vec::new();
    while Instant::now() < end && !until(&got) {
        if let Ok(g) = peer.rx.recv_timeout(Duration::from_millis(20)) {
            got.push(g);
        }
    }
    got
}

/// Sequence numbers step by exactly one.
pub fn contiguous(got: &[Got]) -> bool {
    got.windows(2).all(|w| w[1].seq == w[0].seq.wrapping_add(1))
}
