//! The worker thread: owns every media socket, the port pools and the timers, and drives the
//! call cores with datagrams, time and randomness. One thread for all calls; call control
//! reaches it through a bounded command queue and a waker.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use socket2::{Domain, Protocol, Socket, Type};
use str0m::IceCreds;
use tokio::sync::{mpsc, oneshot};

use super::browser::BrowserSetup;
use super::call::{CallCore, MediaEvent, Seeds, Side};
use super::cert::Identity;
use super::config::MediaConfig;
use super::error::MediaError;
use super::internal::InternalSetup;
use super::ports::PortPool;
use super::sdp_plain::Direction;
use super::stats::{CallStats, ForwardingLatency, Histogram};
use super::tap::{RtcpSeen, RtcpTap};

pub const WAKER: Token = Token(0);
const EVENT_QUEUE: usize = 32;

pub enum Op {
    BrowserCreateOffer,
    BrowserAcceptAnswer(String),
    BrowserAnswer(String),
    InternalCreateOffer,
    InternalAcceptAnswer(String),
    InternalAnswer(String),
    SetDirection(Side, Direction),
    Stats,
}

pub enum OpResult {
    Sdp(String),
    Done,
    Stats(CallStats),
}

pub struct Created {
    pub id: u64,
    pub answer: Option<String>,
    pub events: mpsc::Receiver<MediaEvent>,
}

/// Pool and call counts, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStatus {
    pub calls: usize,
    pub public_ports_free: usize,
    pub public_ports_total: usize,
    pub internal_pairs_free: usize,
    pub internal_pairs_total: usize,
}

pub enum Command {
    Create { echo_offer: Option<String>, reply: oneshot::Sender<Result<Created, MediaError>> },
    Op { id: u64, op: Op, reply: oneshot::Sender<Result<OpResult, MediaError>> },
    Close { id: u64, reply: Option<oneshot::Sender<CallStats>> },
    Status { reply: oneshot::Sender<EngineStatus> },
    TakeLatency { reply: oneshot::Sender<ForwardingLatency> },
    Shutdown,
}

#[derive(Clone, Copy)]
enum SockKind {
    Public(usize),
    SharedPublic(usize),
    InternalRtp,
    InternalRtcp,
}

/// The internal leg's even port and its RTP and RTCP sockets.
type InternalSockets = (u16, (Token, UdpSocket), (Token, UdpSocket));

struct CallEntry {
    core: CallCore,
    public: Vec<(Token, UdpSocket)>,
    public_port: Option<u16>,
    internal: Option<InternalSockets>,
    events: mpsc::Sender<MediaEvent>,
    deadline: Option<Instant>,
    ufrag: String,
    shared_sources: Vec<SocketAddr>,
}

pub struct Worker {
    cfg: MediaConfig,
    identity: Identity,
    poll: Poll,
    commands: Receiver<Command>,
    calls: HashMap<u64, CallEntry>,
    tokens: HashMap<Token, (u64, SockKind)>,
    next_token: usize,
    next_id: u64,
    shared: Vec<(Token, UdpSocket)>,
    by_source: HashMap<SocketAddr, u64>,
    by_ufrag: HashMap<String, u64>,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    public_pool: PortPool,
    internal_pool: PortPool,
    forwarding: Histogram,
    tap: Arc<RtcpTap>,
}

/// Binds a non-blocking UDP socket with the configured DSCP.
fn bind_udp(addr: SocketAddr, dscp: Option<u8>) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Some(d) = dscp {
        if addr.is_ipv4() {
            s.set_tos_v4(u32::from(d) << 2)?;
        } else {
            s.set_tclass_v6(u32::from(d) << 2)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let std: StdUdp = s.into();
    Ok(UdpSocket::from_std(std))
}

impl Worker {
    pub fn new(cfg: MediaConfig, identity: Identity, poll: Poll, commands: Receiver<Command>, tap: Arc<RtcpTap>) -> Result<Worker, MediaError> {
        let mut w = Worker {
            public_pool: PortPool::singles(cfg.public_ports.clone()),
            internal_pool: PortPool::pairs(cfg.internal_ports.clone()),
            cfg,
            identity,
            poll,
            commands,
            calls: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            next_id: 1,
            shared: Vec::new(),
            by_source: HashMap::new(),
            by_ufrag: HashMap::new(),
            heap: BinaryHeap::new(),
            forwarding: Histogram::default(),
            tap,
        };
        if let Some(port) = w.cfg.single_public_port {
            w.public_pool = PortPool::empty();
            for i in 0..w.cfg.public.len() {
                let mut s = bind_udp(SocketAddr::new(w.cfg.public[i].bind, port), w.cfg.dscp)?;
                let t = w.token();
                w.poll.registry().register(&mut s, t, Interest::READABLE)?;
                w.tokens.insert(t, (0, SockKind::SharedPublic(i)));
                w.shared.push((t, s));
            }
        }
        Ok(w)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; 2048];
        loop {
            let now = Instant::now();
            let wait = self.heap.peek().map(|Reverse((t, _))| t.saturating_duration_since(now)).unwrap_or(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(wait.min(Duration::from_millis(100)))) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed");
                    return;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if let Some(&(id, kind)) = self.tokens.get(&ev.token()) {
                    self.read_socket(id, kind, &mut buf);
                }
            }
            if !self.commands_pending() {
                return;
            }
            self.run_timers();
        }
    }

    /// Handles queued commands; false once the engine is shutting down.
    fn commands_pending(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Shutdown) | Err(TryRecvError::Disconnected) => {
                    let ids: Vec<u64> = self.calls.keys().copied().collect();
                    for id in ids {
                        self.close(id);
                    }
                    return false;
                }
                Ok(cmd) => self.command(cmd),
                Err(TryRecvError::Empty) => return true,
            }
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        let wall = SystemTime::now();
        match cmd {
            Command::Create { echo_offer, reply } => {
                let r = self.create(echo_offer.is_none()).and_then(|(id, events)| {
                    let answer = match echo_offer {
                        Some(offer) => {
                            let entry = self.calls.get_mut(&id).expect("just created");
                            match entry.core.browser_answer(now, wall, &offer) {
                                Ok(a) => Some(a),
                                Err(e) => {
                                    self.close(id);
                                    return Err(e);
                                }
                            }
                        }
                        None => None,
                    };
                    self.flush(id);
                    Ok(Created { id, answer, events })
                });
                let _ = reply.send(r);
            }
            Command::Op { id, op, reply } => {
                let Some(entry) = self.calls.get_mut(&id) else {
                    let _ = reply.send(Err(MediaError::State("call media already closed".into())));
                    return;
                };
                let c = &mut entry.core;
                let r = match op {
                    Op::BrowserCreateOffer => c.browser_create_offer(now, wall).map(OpResult::Sdp),
                    Op::BrowserAcceptAnswer(s) => c.browser_accept_answer(now, wall, &s).map(|_| OpResult::Done),
                    Op::BrowserAnswer(s) => c.browser_answer(now, wall, &s).map(OpResult::Sdp),
                    Op::InternalCreateOffer => c.internal_create_offer().map(OpResult::Sdp),
                    Op::InternalAcceptAnswer(s) => c.internal_accept_answer(now, &s).map(|_| OpResult::Done),
                    Op::InternalAnswer(s) => c.internal_answer(now, &s).map(OpResult::Sdp),
                    Op::SetDirection(side, d) => {
                        c.set_direction(side, d);
                        Ok(OpResult::Done)
                    }
                    Op::Stats => Ok(OpResult::Stats(c.stats(now))),
                };
                self.flush(id);
                let _ = reply.send(r);
            }
            Command::Close { id, reply } => {
                let stats = self.close(id);
                if let (Some(r), Some(s)) = (reply, stats) {
                    let _ = r.send(s);
                }
            }
            Command::Status { reply } => {
                let _ = reply.send(EngineStatus {
                    calls: self.calls.len(),
                    public_ports_free: self.public_pool.available(),
                    public_ports_total: self.public_pool.total(),
                    internal_pairs_free: self.internal_pool.available(),
                    internal_pairs_total: self.internal_pool.total(),
                });
            }
            Command::TakeLatency { reply } => {
                let _ = reply.send(self.forwarding.take());
            }
            Command::Shutdown => {}
        }
    }

    fn create(&mut self, with_internal: bool) -> Result<(u64, mpsc::Receiver<MediaEvent>), MediaError> {
        if self.calls.len() >= self.cfg.max_calls {
            return Err(MediaError::TooManyCalls);
        }
        let id = self.next_id;
        self.next_id += 1;
        let dscp = self.cfg.dscp;
        // Browser-facing sockets: one per public address on a port from the pool.
        let (public_port, public_socks) = match self.cfg.single_public_port {
            Some(p) => (p, Vec::new()),
            None => {
                let binds: Vec<_> = self.cfg.public.iter().map(|a| a.bind).collect();
                let mut socks = Vec::new();
                let port = self
                    .public_pool
                    .take_where(|p| {
                        let r: std::io::Result<Vec<UdpSocket>> = binds.iter().map(|ip| bind_udp(SocketAddr::new(*ip, p), dscp)).collect();
                        r.map(|s| socks = s).is_ok()
                    })
                    .ok_or(MediaError::PortsExhausted)?;
                (port, socks)
            }
        };
        let internal = if with_internal {
            let ip = self.cfg.internal_bind;
            let mut pair = None;
            let got = self.internal_pool.take_where(|p| match (bind_udp(SocketAddr::new(ip, p), dscp), bind_udp(SocketAddr::new(ip, p + 1), dscp)) {
                (Ok(a), Ok(b)) => {
                    pair = Some((a, b));
                    true
                }
                _ => false,
            });
            match (got, pair) {
                (Some(port), Some(p)) => Some((port, p)),
                _ => {
                    if self.cfg.single_public_port.is_none() {
                        self.public_pool.release(public_port);
                    }
                    return Err(MediaError::PortsExhausted);
                }
            }
        } else {
            None
        };
        let ice = IceCreds::new();
        let ufrag = ice.ufrag.clone();
        let candidates = self.cfg.public.iter().map(|a| SocketAddr::new(a.advertise, public_port)).collect();
        let browser = BrowserSetup { candidates, cert: self.identity.dtls_cert(), ice, telephone_event: self.cfg.telephone_event, capture_rtcp: self.tap.is_on() };
        let internal_setup = internal.as_ref().map(|(port, _)| InternalSetup {
            local: SocketAddr::new(self.cfg.internal_bind, *port),
            telephone_event: self.cfg.telephone_event,
            ssrc: rand::random(),
            origin_id: u64::from(rand::random::<u32>()),
        });
        let seeds = Seeds { browser_seq: rand::random(), browser_ts: rand::random(), internal_seq: rand::random(), internal_ts: rand::random() };
        let now = Instant::now();
        let core = CallCore::new(now, browser, internal_setup, self.cfg.codecs.clone(), self.cfg.browser_codecs(), self.cfg.no_media_timeout, seeds);
        let mut public = Vec::new();
        for (i, mut s) in public_socks.into_iter().enumerate() {
            let t = self.token();
            self.poll.registry().register(&mut s, t, Interest::READABLE)?;
            self.tokens.insert(t, (id, SockKind::Public(i)));
            public.push((t, s));
        }
        let internal = match internal {
            Some((port, (mut rtp, mut rtcp))) => {
                let (t1, t2) = (self.token(), self.token());
                self.poll.registry().register(&mut rtp, t1, Interest::READABLE)?;
                self.poll.registry().register(&mut rtcp, t2, Interest::READABLE)?;
                self.tokens.insert(t1, (id, SockKind::InternalRtp));
                self.tokens.insert(t2, (id, SockKind::InternalRtcp));
                Some((port, (t1, rtp), (t2, rtcp)))
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        self.by_ufrag.insert(ufrag.clone(), id);
        let public_port = self.cfg.single_public_port.is_none().then_some(public_port);
        self.calls.insert(id, CallEntry { core, public, public_port, internal, events: tx, deadline: None, ufrag, shared_sources: Vec::new() });
        Ok((id, rx))
    }

    fn close(&mut self, id: u64) -> Option<CallStats> {
        let mut entry = self.calls.remove(&id)?;
        let now = Instant::now();
        entry.core.close(now);
        // Let DTLS close_notify out before the sockets go.
        while let Some(t) = entry.core.browser.out.pop_front() {
            send_public(&self.cfg, &entry.public, &self.shared, t.source, t.destination, &t.data);
        }
        let stats = entry.core.stats(now);
        for (t, mut s) in entry.public.drain(..) {
            let _ = self.poll.registry().deregister(&mut s);
            self.tokens.remove(&t);
        }
        if let Some(p) = entry.public_port {
            self.public_pool.release(p);
        }
        if let Some((port, (t1, mut a), (t2, mut b))) = entry.internal.take() {
            let _ = self.poll.registry().deregister(&mut a);
            let _ = self.poll.registry().deregister(&mut b);
            self.tokens.remove(&t1);
            self.tokens.remove(&t2);
            self.internal_pool.release(port);
        }
        self.by_ufrag.remove(&entry.ufrag);
        for a in &entry.shared_sources {
            if self.by_source.get(a) == Some(&id) {
                self.by_source.remove(a);
            }
        }
        Some(stats)
    }

    fn read_socket(&mut self, id: u64, kind: SockKind, buf: &mut [u8]) {
        loop {
            let sock = match kind {
                SockKind::SharedPublic(i) => &self.shared[i].1,
                _ => {
                    let Some(e) = self.calls.get(&id) else { return };
                    match kind {
                        SockKind::Public(i) => &e.public[i].1,
                        SockKind::InternalRtp => &e.internal.as_ref().expect("internal socket").1 .1,
                        SockKind::InternalRtcp => &e.internal.as_ref().expect("internal socket").2 .1,
                        SockKind::SharedPublic(_) => unreachable!(),
                    }
                }
            };
            let (n, source) = match sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // ICMP errors from earlier sends surface here; the socket stays usable.
                Err(_) => continue,
            };
            let data = &buf[..n];
            let now = Instant::now();
            let wall = SystemTime::now();
            let target = match kind {
                SockKind::SharedPublic(i) => {
                    let Some(call) = self.demux_shared(source, data) else { continue };
                    let dest = SocketAddr::new(self.cfg.public[i].advertise, self.cfg.single_public_port.unwrap_or(0));
                    if let Some(e) = self.calls.get_mut(&call) {
                        e.core.handle_public(now, wall, source, dest, data);
                    }
                    call
                }
                SockKind::Public(i) => {
                    let e = self.calls.get_mut(&id).expect("checked above");
                    let dest = SocketAddr::new(self.cfg.public[i].advertise, e.public_port.unwrap_or(0));
                    e.core.handle_public(now, wall, source, dest, data);
                    id
                }
                SockKind::InternalRtp | SockKind::InternalRtcp => {
                    let e = self.calls.get_mut(&id).expect("checked above");
                    let on_rtcp_port = matches!(kind, SockKind::InternalRtcp);
                    if self.tap.is_on() && (on_rtcp_port || super::rtp::is_rtcp(data)) {
                        if let Some(local) = internal_local(&self.cfg, e, on_rtcp_port) {
                            self.tap.push(RtcpSeen { call: id, side: Side::Internal, sent: false, src: source, dst: local, at: wall, data: data.to_vec() });
                        }
                    }
                    e.core.handle_internal(now, wall, source, data, on_rtcp_port);
                    id
                }
            };
            let (to_browser, to_internal) = self.flush(target);
            let forwarded = match kind {
                SockKind::InternalRtp => to_browser > 0,
                SockKind::Public(_) | SockKind::SharedPublic(_) => to_internal > 0,
                SockKind::InternalRtcp => false,
            };
            if forwarded {
                self.forwarding.record(now.elapsed());
            }
        }
    }

    /// Shared port: known source address first, else the STUN USERNAME's first part, which is
    /// our own ufrag.
    fn demux_shared(&self, source: SocketAddr, data: &[u8]) -> Option<u64> {
        if let Some(id) = self.by_source.get(&source) {
            return Some(*id);
        }
        stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u).copied())
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        // Bounded: a core that keeps asking for "now" is served again on the next turn of the
        // loop instead of spinning here.
        let mut budget = self.heap.len();
        while let Some(Reverse((t, id))) = self.heap.peek().copied() {
            if t > now || budget == 0 {
                break;
            }
            budget -= 1;
            self.heap.pop();
            let Some(e) = self.calls.get_mut(&id) else { continue };
            if e.deadline != Some(t) {
                continue; // superseded
            }
            e.deadline = None;
            e.core.handle_timeout(now, wall);
            self.flush(id);
        }
    }

    /// Sends what the call produced, reports its events and re-arms its timer. Returns how many
    /// datagrams went to the browser and how many RTP packets to the server.
    fn flush(&mut self, id: u64) -> (usize, usize) {
        let Some(e) = self.calls.get_mut(&id) else { return (0, 0) };
        let (mut to_browser, mut to_internal) = (0, 0);
        // The tap's copies, when it is on: read the clock only for them.
        let tap = self.tap.is_on();
        while let Some(r) = e.core.browser.rtcp.pop_front() {
            if tap {
                self.tap.push(RtcpSeen { call: id, side: Side::Browser, sent: r.sent, src: r.src, dst: r.dst, at: SystemTime::now(), data: r.data });
            }
        }
        while let Some(t) = e.core.browser.out.pop_front() {
            to_browser += 1;
            send_public(&self.cfg, &e.public, &self.shared, t.source, t.destination, &t.data);
            if !self.shared.is_empty() && self.by_source.insert(t.destination, id) != Some(id) {
                e.shared_sources.push(t.destination);
            }
        }
        if let (Some(i), Some((port, rtp, rtcp))) = (e.core.internal.as_mut(), e.internal.as_ref()) {
            while let Some(t) = i.out.pop_front() {
                to_internal += usize::from(!t.rtcp);
                let s = if t.rtcp { &rtcp.1 } else { &rtp.1 };
                let _ = s.send_to(&t.data, t.destination);
                if tap && (t.rtcp || super::rtp::is_rtcp(&t.data)) {
                    let local = SocketAddr::new(self.cfg.internal_bind, port + u16::from(t.rtcp));
                    self.tap.push(RtcpSeen { call: id, side: Side::Internal, sent: true, src: local, dst: t.destination, at: SystemTime::now(), data: t.data });
                }
            }
        }
        // Re-offers on a shared port may bring a new ufrag (ICE restart).
        if !self.shared.is_empty() && e.core.browser.ufrag() != e.ufrag {
            self.by_ufrag.remove(&e.ufrag);
            e.ufrag = e.core.browser.ufrag().to_owned();
            self.by_ufrag.insert(e.ufrag.clone(), id);
        }
        while let Some(ev) = e.core.events.pop_front() {
            // A full queue means nobody reads events; dropping them must not stall media.
            let _ = e.events.try_send(ev);
        }
        let d = e.core.next_timeout();
        if e.deadline != Some(d) {
            e.deadline = Some(d);
            self.heap.push(Reverse((d, id)));
        }
        (to_browser, to_internal)
    }
}

/// The internal leg's own address a datagram arrived at: the pair's even port, or the odd
/// one for RTCP on its own port.
fn internal_local(cfg: &MediaConfig, e: &CallEntry, rtcp_port: bool) -> Option<SocketAddr> {
    let (port, _, _) = e.internal.as_ref()?;
    Some(SocketAddr::new(cfg.internal_bind, port + u16::from(rtcp_port)))
}

fn send_public(cfg: &MediaConfig, own: &[(Token, UdpSocket)], shared: &[(Token, UdpSocket)], source: SocketAddr, dest: SocketAddr, data: &[u8]) {
    let i = cfg.public.iter().position(|a| a.advertise == source.ip()).unwrap_or(0);
    let sock = if shared.is_empty() { own.get(i) } else { shared.get(i) };
    if let Some((_, s)) = sock {
        let _ = s.send_to(data, dest);
    }
}

/// The local ufrag from a STUN binding request's USERNAME ("local:remote").
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut i = 20;
    while i + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[i], data[i + 1]]);
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if kind == 0x0006 {
            let user = std::str::from_utf8(data.get(i + 4..i + 4 + len)?).ok()?;
            return user.split(':').next();
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

pub fn waker(poll: &Poll) -> std::io::Result<Waker> {
    Waker::new(poll.registry(), WAKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_carry_the_configured_dscp() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), Some(46)).unwrap();
        assert_eq!(socket2::SockRef::from(&s).tos_v4().unwrap(), 46 << 2);
        let plain = bind_udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert_eq!(socket2::SockRef::from(&plain).tos_v4().unwrap(), 0);
    }

    #[test]
    fn stun_username_gives_local_ufrag() {
        let mut m = vec![0x00, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, 0x07]);
        m.extend_from_slice(b"abc:xyz\0");
        assert_eq!(stun_local_ufrag(&m), Some("abc"));
        assert_eq!(stun_local_ufrag(&m[..20]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
    }
}
