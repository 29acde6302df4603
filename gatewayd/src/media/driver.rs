//! One media worker thread (a shard): owns its calls' sockets, its poll and its timers, and
//! drives the call cores with datagrams, time and randomness. Call control reaches it through
//! a bounded command queue and a waker; other workers hand it shared-port datagrams of its
//! calls through a bounded handoff queue (see `routes`). Nothing on the packet path is shared
//! with another worker; ports and the call limit (`shards`) are touched at setup and teardown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};
use str0m::IceCreds;
use tokio::sync::mpsc;

use super::api::CallMedia;
use super::browser::BrowserSetup;
use super::call::{CallCore, MediaEvent, Seeds, Side};
pub use super::commands::{Command, Created, Op, OpResult};
use super::cert::Identity;
use super::config::MediaConfig;
use super::error::MediaError;
use super::internal::InternalSetup;
use super::routes::{Handoff, Owner, RouteUpdate, Routes, HANDOFF_MAX};
use super::shards::{Link, Shared};
use super::stats::{CallStats, Histogram};
use super::tap::{RtcpSeen, RtcpTap};
use super::timers::Timers;
use super::sockets::{bind_udp, send_public};
use crate::turn::datagrams::Datagrams;

pub const WAKER: Token = Token(0);
const EVENT_QUEUE: usize = 32;
/// Datagrams one receive takes from a socket. A call's socket rarely holds more than one (50
/// packets/s), so the gain there is the drain: fewer than a batch means the socket is empty,
/// with no failing read to find out; a shared port takes many per system call.
const RECV_BATCH: usize = 8;

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
    ufrag: String,
}

pub struct Worker {
    index: usize,
    cfg: MediaConfig,
    identity: Identity,
    poll: Poll,
    commands: Receiver<Command>,
    handoffs: Receiver<Handoff>,
    /// Every worker's link, this one's included (index `index`).
    peers: Arc<[Arc<Link>]>,
    pool: Arc<Shared>,
    calls: HashMap<u64, CallEntry>,
    tokens: HashMap<Token, (u64, SockKind)>,
    next_token: usize,
    /// This worker's SO_REUSEPORT sockets on the shared public port, one per public address.
    shared: Vec<(Token, UdpSocket)>,
    routes: Routes,
    /// Workers handed a datagram during this wakeup, to be woken once at its end.
    handed: Vec<bool>,
    timers: Timers,
    forwarding: Histogram,
    tap: Arc<RtcpTap>,
}

/// What a worker starts with.
pub struct WorkerSetup {
    pub index: usize,
    pub cfg: MediaConfig,
    pub identity: Identity,
    pub poll: Poll,
    pub commands: Receiver<Command>,
    pub handoffs: Receiver<Handoff>,
    pub peers: Arc<[Arc<Link>]>,
    pub pool: Arc<Shared>,
    pub tap: Arc<RtcpTap>,
}

impl Worker {
    pub fn new(s: WorkerSetup) -> Result<Worker, MediaError> {
        let mut w = Worker {
            index: s.index,
            handed: vec![false; s.peers.len()],
            cfg: s.cfg,
            identity: s.identity,
            poll: s.poll,
            commands: s.commands,
            handoffs: s.handoffs,
            peers: s.peers,
            pool: s.pool,
            calls: HashMap::new(),
            tokens: HashMap::new(),
            next_token: 1,
            shared: Vec::new(),
            routes: Routes::default(),
            timers: Timers::default(),
            forwarding: Histogram::default(),
            tap: s.tap,
        };
        if let Some(port) = w.cfg.single_public_port {
            for i in 0..w.cfg.public.len() {
                let mut s = bind_udp(SocketAddr::new(w.cfg.public[i].bind, port), w.cfg.dscp, true)?;
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
        let mut batch = Datagrams::<RECV_BATCH>::new(HANDOFF_MAX);
        loop {
            let now = Instant::now();
            let wait = self.timers.next().map(|t| t.saturating_duration_since(now)).unwrap_or(Duration::from_millis(100));
            if let Err(e) = self.poll.poll(&mut events, Some(wait.min(Duration::from_millis(100)))) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "media poll failed");
                    return;
                }
            }
            // Commands first: a route or call set up in this wakeup is known to the datagrams
            // that follow it.
            if !self.handle_commands() {
                return;
            }
            self.take_handoffs();
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                if let Some(&(id, kind)) = self.tokens.get(&ev.token()) {
                    self.read_socket(id, kind, &mut batch);
                }
            }
            self.wake_handed();
            self.run_timers();
        }
    }

    /// Handles queued commands, then the changes held while the queue was full; false once the
    /// engine is shutting down.
    fn handle_commands(&mut self) -> bool {
        if !self.commands_pending() {
            return false;
        }
        // After the queue: a call's changes held while it was full are newer than its queued
        // ones.
        for cmd in self.peers[self.index].take_held() {
            self.command(cmd);
        }
        true
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
            Command::Create { id, echo_offer, reply } => {
                if reply.is_closed() {
                    // The asker gave up (its timeout) before the call was set up: none is.
                    self.pool.release(self.index);
                    return;
                }
                let r = self.create(id, echo_offer.is_none()).and_then(|events| {
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
                    Ok(Created { media: CallMedia::new(id, self.index, self.peers[self.index].clone(), events), answer })
                });
                if r.is_err() {
                    self.pool.release(self.index);
                }
                if let Err(Ok(late)) = reply.send(r) {
                    // The asker gave up while the call was set up: nobody would ever close it.
                    late.media.forget();
                    self.close(id);
                }
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
                let _ = reply.send(self.calls.len());
            }
            Command::TakeLatency { reply } => {
                let _ = reply.send(std::mem::take(&mut self.forwarding));
            }
            Command::Route(update) => self.routes.apply(&update),
            Command::Shutdown => {}
        }
    }

    fn create(&mut self, id: u64, with_internal: bool) -> Result<mpsc::Receiver<MediaEvent>, MediaError> {
        let dscp = self.cfg.dscp;
        // Browser-facing sockets: one per public address on a port from the pool.
        let (public_port, public_socks) = match self.cfg.single_public_port {
            Some(p) => (p, Vec::new()),
            None => {
                let binds: Vec<_> = self.cfg.public.iter().map(|a| a.bind).collect();
                let mut socks = Vec::new();
                let port = self
                    .pool
                    .pools()
                    .public
                    .take_where(|p| {
                        let r: std::io::Result<Vec<UdpSocket>> = binds.iter().map(|ip| bind_udp(SocketAddr::new(*ip, p), dscp, false)).collect();
                        r.map(|s| socks = s).is_ok()
                    })
                    .ok_or(MediaError::PortsExhausted)?;
                (port, socks)
            }
        };
        let internal = if with_internal {
            let ip = self.cfg.internal_bind;
            let mut pair = None;
            let mut pools = self.pool.pools();
            let got = pools.internal.take_where(|p| match (bind_udp(SocketAddr::new(ip, p), dscp, false), bind_udp(SocketAddr::new(ip, p + 1), dscp, false)) {
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
                        pools.public.release(public_port);
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
        if !self.shared.is_empty() {
            self.broadcast(RouteUpdate::Ufrag { owner: Owner { shard: self.index, call: id }, ufrag: ufrag.clone() });
        }
        let public_port = self.cfg.single_public_port.is_none().then_some(public_port);
        self.calls.insert(id, CallEntry { core, public, public_port, internal, events: tx, ufrag });
        Ok(rx)
    }

    /// Applies a routing change here and queues it to every other worker.
    fn broadcast(&mut self, update: RouteUpdate) {
        for (i, peer) in self.peers.iter().enumerate() {
            // A full queue holds the route instead (see `held`): a worker that missed one
            // would drop the call's shared-port datagrams reaching it for good.
            if i != self.index && peer.send(Command::Route(update.clone())).is_err() {
                tracing::debug!(worker = i, "media worker stopped: route update not sent");
            }
        }
        self.routes.apply(&update);
    }

    fn close(&mut self, id: u64) -> Option<CallStats> {
        let mut entry = self.calls.remove(&id)?;
        self.pool.release(self.index);
        self.timers.set(id, None);
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
        let internal = entry.internal.take();
        {
            let mut pools = self.pool.pools();
            if let Some(p) = entry.public_port {
                pools.public.release(p);
            }
            if let Some((port, _, _)) = &internal {
                pools.internal.release(*port);
            }
        }
        if let Some((_, (t1, mut a), (t2, mut b))) = internal {
            let _ = self.poll.registry().deregister(&mut a);
            let _ = self.poll.registry().deregister(&mut b);
            self.tokens.remove(&t1);
            self.tokens.remove(&t2);
        }
        if !self.shared.is_empty() {
            self.broadcast(RouteUpdate::Remove { call: id });
        }
        Some(stats)
    }

    /// Reads what a socket holds, in batches, and feeds each datagram to its call.
    fn read_socket(&mut self, id: u64, kind: SockKind, batch: &mut Datagrams<RECV_BATCH>) {
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
            let n = match batch.try_recv(sock.as_fd(), HANDOFF_MAX) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => return,
                // ICMP errors from earlier sends surface here; the socket stays usable.
                Err(_) => continue,
            };
            for k in 0..n {
                let (data, source) = batch.get(k);
                match kind {
                    SockKind::SharedPublic(i) => self.shared_datagram(i, source, data),
                    _ => self.datagram(id, kind, source, data),
                }
            }
            // Fewer than a batch: the socket is empty, and edge-triggered readiness reports
            // the next arrival.
            if n < RECV_BATCH {
                return;
            }
        }
    }

    /// A datagram on the shared port: handled here when the call is this worker's, else
    /// handed to its owner.
    fn shared_datagram(&mut self, public: usize, source: SocketAddr, data: &[u8]) {
        let Some(owner) = self.routes.route(source, data) else { return };
        if owner.shard == self.index {
            self.datagram(owner.call, SockKind::SharedPublic(public), source, data);
            return;
        }
        let mut h = Handoff { call: owner.call, public, source, len: data.len(), data: [0; HANDOFF_MAX] };
        h.data[..data.len()].copy_from_slice(data);
        // A full queue drops the datagram, as a full socket buffer would.
        if self.peers[owner.shard].handoff.try_send(h).is_ok() {
            self.handed[owner.shard] = true;
        }
    }

    fn wake_handed(&mut self) {
        for (i, handed) in self.handed.iter_mut().enumerate() {
            if std::mem::take(handed) {
                let _ = self.peers[i].waker.wake();
            }
        }
    }

    /// Shared-port datagrams other workers read for this worker's calls.
    fn take_handoffs(&mut self) {
        while let Ok(h) = self.handoffs.try_recv() {
            self.datagram(h.call, SockKind::SharedPublic(h.public), h.source, &h.data[..h.len]);
        }
    }

    fn datagram(&mut self, id: u64, kind: SockKind, source: SocketAddr, data: &[u8]) {
        let now = Instant::now();
        let wall = SystemTime::now();
        let Some(e) = self.calls.get_mut(&id) else { return };
        match kind {
            SockKind::SharedPublic(i) => {
                let dest = SocketAddr::new(self.cfg.public[i].advertise, self.cfg.single_public_port.unwrap_or(0));
                e.core.handle_public(now, wall, source, dest, data);
            }
            SockKind::Public(i) => {
                let dest = SocketAddr::new(self.cfg.public[i].advertise, e.public_port.unwrap_or(0));
                e.core.handle_public(now, wall, source, dest, data);
            }
            SockKind::InternalRtp | SockKind::InternalRtcp => {
                let on_rtcp_port = matches!(kind, SockKind::InternalRtcp);
                if self.tap.is_on() && (on_rtcp_port || super::rtp::is_rtcp(data)) {
                    if let Some(local) = internal_local(&self.cfg, e, on_rtcp_port) {
                        self.tap.push(RtcpSeen { call: id, side: Side::Internal, sent: false, src: source, dst: local, at: wall, data: data.to_vec() });
                    }
                }
                e.core.handle_internal(now, wall, source, data, on_rtcp_port);
            }
        }
        let (to_browser, to_internal) = self.flush(id);
        let forwarded = match kind {
            SockKind::InternalRtp => to_browser > 0,
            SockKind::Public(_) | SockKind::SharedPublic(_) => to_internal > 0,
            SockKind::InternalRtcp => false,
        };
        if forwarded {
            self.forwarding.record(now.elapsed());
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        let wall = SystemTime::now();
        // Bounded: a core that keeps asking for "now" is served again on the next turn of the
        // loop instead of spinning here.
        let mut budget = self.timers.len();
        while budget > 0 {
            budget -= 1;
            let Some(id) = self.timers.pop_due(now) else { break };
            let Some(e) = self.calls.get_mut(&id) else { continue };
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
        while let Some(ev) = e.core.events.pop_front() {
            // A full queue means nobody reads events; dropping them must not stall media.
            let _ = e.events.try_send(ev);
        }
        self.timers.set(id, Some(e.core.next_timeout()));
        // Re-offers on a shared port may bring a new ufrag (ICE restart).
        if !self.shared.is_empty() && e.core.browser.ufrag() != e.ufrag {
            e.ufrag = e.core.browser.ufrag().to_owned();
            let ufrag = e.ufrag.clone();
            self.broadcast(RouteUpdate::Ufrag { owner: Owner { shard: self.index, call: id }, ufrag });
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

pub fn waker(poll: &Poll) -> std::io::Result<Waker> {
    Waker::new(poll.registry(), WAKER)
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
