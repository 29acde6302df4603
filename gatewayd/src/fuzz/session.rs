//! Frames on agents' WebSockets into the agent edge and call control, interleaved with
//! datagrams from the SIP server and the passing of time: what `call::driver` does with them,
//! without sockets.
//!
//! Input: parts separated by NUL; the first byte of a part says what it is:
//! `a` a frame from agent connection 1 (a literal `Digest auto` in it becomes valid credentials
//! of agent 5001 for that request, against the last challenge), `b` a frame from connection 2,
//! which never gets credentials, `u` a datagram from the SIP server, `t` time passes (the next
//! two bytes, in 10 ms), `c` connection 1 closes and opens again. Any other byte starts a frame
//! from connection 1 (the byte included).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use rsip::SipMessage;

use super::{lab, parts};
use crate::call::agents::{AgentEdge, EdgeConfig, EdgeOutput};
use crate::call::control::{CallControl, CallOutput};
use crate::call::media_port::{run_in_place, CallRef, MediaControl, MediaFailure};
use crate::call::upstream::Upstreams;
use crate::call::config::CallConfig;
use crate::sip::digest::{request_digest, Algorithm, AuthParams, DigestConfig, DigestServer};
use crate::sip::message;
use crate::sip::registrar::{ConnId, RegistrarEvent};
use crate::sip::transaction::{Destination, Transport};

const SECRET: &[u8] = b"fuzz digest secret, 32 bytes....";
const WALL_MS: u64 = 1_800_000_000_000;
const AGENT: ConnId = ConnId(1);
const STRANGER: ConnId = ConnId(2);
const AGENT_ADDR: &str = "198.51.100.10:50000";
const STRANGER_ADDR: &str = "203.0.113.20:40000";
/// The lab profile's SIP server.
const SERVER: &str = "127.0.0.1:5080";

/// Media that answers every offer with a fixed description and never fails unless the offer is
/// empty: call control's SDP handling is fuzzed in `sdp`.
#[derive(Default)]
struct CannedMedia {
    open: HashSet<u64>,
}

fn canned(name: &str) -> String {
    format!("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns={name}\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n")
}

fn sdp_in(text: &str) -> Result<(), MediaFailure> {
    if text.trim().is_empty() {
        Err(MediaFailure::new(488, "empty SDP"))
    } else {
        Ok(())
    }
}

impl MediaControl for CannedMedia {
    fn echo(&mut self, call: CallRef, offer: &str) -> Result<String, MediaFailure> {
        sdp_in(offer)?;
        self.open.insert(call.0);
        Ok(canned("echo"))
    }
    fn open(&mut self, call: CallRef) -> Result<(), MediaFailure> {
        self.open.insert(call.0);
        Ok(())
    }
    fn browser_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        Ok(canned("browser-offer"))
    }
    fn browser_answer(&mut self, _: CallRef, offer: &str) -> Result<String, MediaFailure> {
        sdp_in(offer)?;
        Ok(canned("browser-answer"))
    }
    fn browser_accept(&mut self, _: CallRef, answer: &str) -> Result<(), MediaFailure> {
        sdp_in(answer)
    }
    fn internal_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        Ok(canned("internal-offer"))
    }
    fn internal_answer(&mut self, _: CallRef, offer: &str) -> Result<String, MediaFailure> {
        sdp_in(offer)?;
        Ok(canned("internal-answer"))
    }
    fn internal_accept(&mut self, _: CallRef, answer: &str) -> Result<(), MediaFailure> {
        sdp_in(answer)
    }
    fn close(&mut self, call: CallRef) -> Option<serde_json::Value> {
        self.open.remove(&call.0);
        None
    }
}

/// Call control on the lab profile with canned media.
pub(crate) struct Calls {
    cc: CallControl,
    media: CannedMedia,
    rng: StdRng,
    t0: Instant,
    elapsed: Duration,
    /// Connections call control sent something to.
    pub sent_to: HashSet<ConnId>,
}

impl Calls {
    pub(crate) fn new() -> Self {
        let loaded = lab();
        let cc = CallControl::new(CallConfig::from_profile(loaded), Upstreams::from_profile(&loaded.profile.upstream));
        Calls { cc, media: CannedMedia::default(), rng: StdRng::seed_from_u64(7), t0: Instant::now(), elapsed: Duration::ZERO, sent_to: HashSet::new() }
    }

    fn now(&self) -> Instant {
        self.t0 + self.elapsed
    }

    fn wall_ms(&self) -> u64 {
        WALL_MS + self.elapsed.as_millis() as u64
    }

    pub(crate) fn from_upstream(&mut self, message: SipMessage) {
        let (now, wall) = (self.now(), self.wall_ms());
        self.cc.from_upstream(message, SERVER.parse().expect("address"), Transport::Udp, now, wall, &mut self.rng);
        self.flush();
    }

    fn from_agent(&mut self, conn: ConnId, user: Option<String>, message: SipMessage) {
        let (now, wall) = (self.now(), self.wall_ms());
        self.cc.from_agent(conn, user, message, now, wall, &mut self.rng);
        self.flush();
    }

    fn advance(&mut self, by: Duration) {
        self.elapsed += by;
        let (now, wall) = (self.now(), self.wall_ms());
        if self.cc.poll_timeout().is_some_and(|t| t <= now) {
            self.cc.handle_timeout(now, wall, &mut self.rng);
        }
        self.flush();
    }

    fn flush(&mut self) {
        while let Some(out) = self.cc.poll_output() {
            match out {
                CallOutput::Send { target, message } => {
                    let text = message.to_string();
                    assert!(!text.is_empty());
                    if let Destination::Conn(conn) = target.destination {
                        self.sent_to.insert(conn);
                    }
                }
                CallOutput::Media(command) => {
                    // Media answers at once here; the waits are the unit tests' business.
                    let reply = run_in_place(&mut self.media, &command);
                    let (now, wall) = (self.now(), self.wall_ms());
                    self.cc.media_reply(reply, now, wall, &mut self.rng);
                }
                CallOutput::Ended(record) => {
                    let _ = serde_json::to_string(&record.summary);
                }
            }
        }
        assert!(self.media.open.len() <= self.cc.active_calls(), "media left open for calls that ended");
    }
}

struct Session {
    edge: AgentEdge,
    calls: Calls,
    nonces: DigestServer,
    /// The last nonce a challenge on connection 1 carried.
    nonce: Option<String>,
    nc: u32,
    /// Whether connection 1 was ever given valid credentials.
    credentials_given: bool,
}

pub fn ws_session(data: &[u8]) {
    let loaded = lab();
    let config = EdgeConfig::from_profile(loaded);
    let realm = config.realm.clone();
    let mut s = Session {
        edge: AgentEdge::new(config, SECRET.to_vec()),
        calls: Calls::new(),
        nonces: DigestServer::new(DigestConfig::new(realm, SECRET)),
        nonce: None,
        nc: 0,
        credentials_given: false,
    };
    s.edge.connection_opened(AGENT, AGENT_ADDR.parse().expect("address"));
    s.edge.connection_opened(STRANGER, STRANGER_ADDR.parse().expect("address"));
    for part in parts(data, 0) {
        let (op, rest) = part.split_first().expect("parts are not empty");
        match op {
            b'a' => s.frame(AGENT, rest),
            b'b' => s.frame(STRANGER, rest),
            b'u' => {
                if let Ok(m) = message::parse(rest) {
                    s.calls.from_upstream(m);
                }
            }
            b't' => {
                let ticks = u16::from_be_bytes([rest.first().copied().unwrap_or(0), rest.get(1).copied().unwrap_or(0)]);
                s.calls.advance(Duration::from_millis(u64::from(ticks) * 10));
                let out = s.edge.handle_timeout(s.calls.now());
                s.apply(out);
            }
            b'c' => {
                let out = s.edge.connection_closed(AGENT);
                s.apply(out);
                let (now, wall) = (s.calls.now(), s.calls.wall_ms());
                s.calls.cc.agent_gone(AGENT, now, wall, &mut s.calls.rng);
                s.calls.flush();
                s.edge.connection_opened(AGENT, AGENT_ADDR.parse().expect("address"));
            }
            _ => s.frame(AGENT, part),
        }
    }
    assert!(s.edge.registrar().bindings_of("5001").iter().all(|b| b.conn == AGENT), "a binding on a connection that never authenticated");
}

impl Session {
    fn frame(&mut self, conn: ConnId, frame: &[u8]) {
        let frame = if conn == AGENT { self.with_credentials(frame) } else { frame.to_vec() };
        let (now, wall) = (self.calls.now(), self.calls.wall_ms());
        let out = self.edge.handle_frame(conn, &frame, now, wall, &mut self.calls.rng);
        self.apply(out);
    }

    /// Replaces `Digest auto` with agent 5001's credentials for this request.
    fn with_credentials(&mut self, frame: &[u8]) -> Vec<u8> {
        let Ok(text) = std::str::from_utf8(frame) else { return frame.to_vec() };
        if !text.contains("Digest auto") {
            return frame.to_vec();
        }
        let mut request_line = text.lines().next().unwrap_or_default().split(' ');
        let (method, uri) = (request_line.next().unwrap_or_default(), request_line.next().unwrap_or_default());
        let realm = self.nonces.config().realm.clone();
        let nonce = match &self.nonce {
            Some(n) => n.clone(),
            None => self.nonces.new_nonce(self.calls.wall_ms(), &mut self.calls.rng),
        };
        self.nc += 1;
        let nc = format!("{:08x}", self.nc);
        let ha1 = crate::sip::digest::ha1(Algorithm::Md5, "5001", &realm, "pass5001");
        let response = request_digest(Algorithm::Md5, &ha1, &nonce, Some((&nc, "fuzzcnonce")), method, uri);
        self.credentials_given = true;
        let credentials = format!(
            "Digest username=\"5001\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc={nc}, cnonce=\"fuzzcnonce\""
        );
        text.replace("Digest auto", &credentials).into_bytes()
    }

    fn apply(&mut self, out: Vec<EdgeOutput>) {
        for o in out {
            match o {
                EdgeOutput::Send { conn, text } => {
                    if conn == AGENT {
                        if let Some(nonce) = challenge_nonce(&text) {
                            self.nonce = Some(nonce);
                        }
                    }
                }
                EdgeOutput::Close { .. } | EdgeOutput::Failure { .. } => {}
                EdgeOutput::Registration(event) => {
                    let dn = match &event {
                        RegistrarEvent::Registered { dn, conn, .. } => {
                            assert_eq!(*conn, AGENT, "registered without credentials");
                            assert!(self.credentials_given, "registered without credentials");
                            dn.clone()
                        }
                        RegistrarEvent::Unregistered { dn, .. } | RegistrarEvent::Replaced { dn, .. } => dn.clone(),
                    };
                    let binding = self.edge.registrar().bindings_of(&dn).last().map(|b| (b.conn, b.contacts.first().cloned().unwrap_or_default()));
                    let registered = binding.is_some();
                    self.calls.cc.set_binding(&dn, binding);
                    if matches!(event, RegistrarEvent::Registered { .. }) || !registered {
                        let now = self.calls.now();
                        self.calls.cc.mirror_registration(&dn, registered, now, &mut self.calls.rng);
                        self.calls.flush();
                    }
                }
                EdgeOutput::Request { conn, user, request } => {
                    if let Some(user) = &user {
                        assert!(conn == AGENT && self.credentials_given && user == "5001", "{user:?} proved on {conn:?} without credentials");
                    }
                    self.calls.from_agent(conn, user, request.into());
                }
                EdgeOutput::Response { conn, response } => self.calls.from_agent(conn, None, response.into()),
            }
        }
    }
}

/// The nonce of the first challenge in a response sent to the agent.
fn challenge_nonce(text: &str) -> Option<String> {
    let line = text.lines().find(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("www-authenticate:") || l.starts_with("proxy-authenticate:")
    })?;
    let value = line.split_once(':')?.1;
    AuthParams::parse(value).ok()?.get("nonce").map(str::to_owned)
}
