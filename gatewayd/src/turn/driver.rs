//! The TURN server's I/O: UDP listeners and one UDP socket per allocation on the relay range
//! (served by the data-plane thread in `plane`), TCP and TLS listeners (streams in `stream`),
//! a one-second expiry tick, and reloads. Every packet goes through the core under one short
//! lock; sends never wait (nonblocking, `try_send`): a full socket buffer or queue drops a media
//! packet instead of stalling the others.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustls::server::ServerConfig;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use super::allocation::{Client, Transport};
use super::plane::{Plane, PlaneToken};
use super::server::{Config, Event, Now, Opened, Output, Server};
use crate::guard::Report;
use crate::profile::{LoadedProfile, PortRange};

/// Largest datagram or stream frame: a STUN message or ChannelData with a 64 KiB payload.
pub(super) const MAX_MESSAGE: usize = 65_535 + 20;

/// Largest datagram relayed from a peer (media fits an Ethernet MTU; larger ones are dropped).
pub(super) const PEER_DATAGRAM: usize = 4096;

/// How a reply or relayed packet reaches a client.
#[derive(Clone)]
pub(super) enum Sink {
    /// The listener's socket, a plain nonblocking one for sending (see [`Relay`]).
    Udp(Arc<std::net::UdpSocket>),
    Stream(mpsc::Sender<Bytes>),
    /// A TCP/TLS client the data plane serves (which it watches for writability when the
    /// socket is full).
    Conn(Arc<super::conn::Conn>, std::sync::Weak<Plane>),
}

impl Sink {
    /// Sends without waiting: false when there was no room (the packet is dropped).
    pub(super) fn send(&self, to: SocketAddr, data: &[u8]) -> bool {
        match self {
            Sink::Udp(sock) => sock.send_to(data, to).is_ok(),
            Sink::Stream(tx) => tx.try_send(Bytes::copy_from_slice(data)).is_ok(),
            Sink::Conn(conn, plane) => {
                let (sent, waiting) = conn.send(data);
                if waiting {
                    if let Some(plane) = plane.upgrade() {
                        plane.watch_writable(conn, true);
                    }
                }
                sent
            }
        }
    }
}

/// A relayed socket (nonblocking): the data plane receives from it, whoever relays toward a
/// peer sends on it directly.
pub(super) struct Relay {
    pub(super) sock: std::net::UdpSocket,
}

pub(super) type Core = Server<Arc<Relay>, Sink>;

/// What every task of the TURN server shares.
pub(super) struct Inner {
    core: Mutex<Core>,
    plane: Arc<Plane>,
    relays: Mutex<HashMap<SocketAddr, PlaneToken>>,
    relay_ports: Mutex<PortRange>,
    failures: mpsc::Sender<Report>,
    /// The web side's certificate, with ALPN left open (Chromium sends none for `turns:`).
    pub(super) tls: watch::Receiver<Arc<ServerConfig>>,
    /// Open TCP/TLS connections per source address.
    pub(super) streams: Mutex<HashMap<IpAddr, usize>>,
    /// TLS addresses served by the HTTPS listeners, which hand TURN connections over.
    shared_tls: Mutex<Vec<SocketAddr>>,
    pub(super) metrics: super::metrics::Counters,
}

pub(super) fn now() -> Now {
    let unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Now { at: Instant::now(), unix }
}

impl Inner {
    pub(super) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A failure for the guard, dropped rather than waited for when its queue is full.
    pub(super) fn report(&self, r: Report) {
        let _ = self.failures.try_send(r);
    }

    pub(super) fn plane(&self) -> &Arc<Plane> {
        &self.plane
    }

    pub(super) fn per_source_limit(&self) -> usize {
        self.core().config.limits.per_source
    }

    /// Runs one client message through the core and carries out what it says.
    pub(super) fn from_client(self: &Arc<Self>, client: Client, sink: &Sink, data: &[u8]) {
        let now = now();
        let mut core = self.core();
        match core.handle_client(now, client, sink, data) {
            Output::Nothing => {}
            Output::Reply(bytes) => {
                if !sink.send(client.addr, bytes) {
                    self.metrics.unsent();
                }
            }
            Output::ToPeer { relay, peer, data } => {
                let _ = relay.sock.send_to(data, peer);
            }
            Output::OpenRelay { ip, even_port, reserve } => {
                let range = *self.relay_ports.lock().unwrap_or_else(|e| e.into_inner());
                let bound = bind_relay(ip, range, even_port || reserve, reserve);
                let sockets: Vec<(SocketAddr, Arc<Relay>)> = match &bound {
                    Ok(o) => std::iter::once(o.relay.clone()).chain(o.reserved.clone()).collect(),
                    Err(_) => Vec::new(),
                };
                if let Output::Reply(bytes) = core.relay_opened(now, bound) {
                    if !sink.send(client.addr, bytes) {
                        self.metrics.unsent();
                    }
                }
                let mut relays = self.relays.lock().unwrap_or_else(|e| e.into_inner());
                for (addr, sock) in sockets {
                    match self.plane.add_relay(addr, sock) {
                        Ok(token) => {
                            relays.insert(addr, token);
                        }
                        // The allocation stands but hears nothing from peers; it says so.
                        Err(e) => tracing::error!(error = %e, %addr, "turn: cannot watch a relayed socket"),
                    }
                }
            }
        }
        self.drain(core);
    }

    /// Acts on the core's events, after releasing its lock.
    pub(super) fn drain(&self, mut core: MutexGuard<'_, Core>) {
        let mut events = Vec::new();
        while let Some(e) = core.poll_event() {
            events.push(e);
        }
        drop(core);
        for e in events {
            match e {
                Event::CloseRelay(addr) => {
                    if let Some(token) = self.relays.lock().unwrap_or_else(|e| e.into_inner()).remove(&addr) {
                        self.plane.remove(token);
                    }
                }
                Event::Report(r) => self.report(r),
                Event::Ended { username, client, relay, lifetime, traffic, reason } => {
                    self.metrics.ended(reason);
                    tracing::info!(
                        user = %username,
                        client = %client.addr,
                        transport = client.transport.as_str(),
                        %relay,
                        duration_s = lifetime.as_secs(),
                        bytes_to_peer = traffic.bytes_to_peer,
                        bytes_from_peer = traffic.bytes_from_peer,
                        packets_dropped = traffic.dropped,
                        reason = reason.as_str(),
                        "turn: allocation ended"
                    );
                }
            }
        }
    }
}

/// Binds a UDP socket on `ip` at a random free port of `range` (an even one when asked; with
/// `reserve`, the odd port after it too).
fn bind_relay(ip: IpAddr, range: PortRange, even: bool, reserve: bool) -> std::io::Result<Opened<Arc<Relay>>> {
    let span = u32::from(range.last - range.first) + 1;
    let start: u32 = rand::random::<u32>() % span;
    let bind = |port: u16| -> std::io::Result<(SocketAddr, Arc<Relay>)> {
        let sock = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        sock.set_nonblocking(true)?;
        let addr = sock.local_addr()?;
        Ok((addr, Arc::new(Relay { sock })))
    };
    for i in 0..span.min(128) {
        let port = range.first + ((start + i * 7919) % span) as u16;
        if even && port % 2 == 1 || reserve && port == range.last {
            continue;
        }
        let relay = match bind(port) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
            Err(e) => return Err(e),
        };
        let reserved = if reserve {
            match bind(port + 1) {
                Ok(r) => Some(r),
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        return Ok(Opened { relay, reserved, token: rand::random() });
    }
    Err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "no free port in turn.relay_ports"))
}

async fn tick(inner: Arc<Inner>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let mut core = inner.core();
        core.expire(now());
        inner.drain(core);
        for (token, conn) in inner.plane.idle_conns(Instant::now()) {
            super::plane::close_conn(&inner, &inner.plane, token, &conn);
        }
    }
}

/// How a running listener is stopped.
enum Running {
    /// A UDP listener, served by the data plane.
    Plane(PlaneToken),
    /// A TCP or TLS listener's accept task.
    Task(AbortHandle),
}

impl Running {
    fn stop(self, inner: &Inner) {
        match self {
            Running::Plane(token) => {
                inner.plane.remove(token);
            }
            Running::Task(task) => task.abort(),
        }
    }
}

/// The running listeners, by kind and requested address.
#[derive(Default)]
struct Listeners {
    running: Vec<(Transport, SocketAddr, Running)>,
}

impl Listeners {
    /// Makes the listeners match the profile: keeps those that stay, binds new ones, stops the
    /// rest. A listener that cannot be bound is reported and left out.
    async fn rebind(&mut self, inner: &Arc<Inner>, wanted: &[(Transport, SocketAddr)]) -> Result<(), String> {
        let mut next = Vec::new();
        let mut problems = Vec::new();
        for &(transport, addr) in wanted {
            if let Some(pos) = self.running.iter().position(|(t, a, _)| *t == transport && *a == addr) {
                next.push(self.running.swap_remove(pos));
                continue;
            }
            match spawn_listener(inner, transport, addr).await {
                Ok(task) => next.push((transport, addr, task)),
                Err(e) => problems.push(format!("turn.listen_{} {addr}: {e}", transport.as_str())),
            }
        }
        for (_, _, running) in self.running.drain(..) {
            running.stop(inner);
        }
        self.running = next;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

async fn spawn_listener(inner: &Arc<Inner>, transport: Transport, addr: SocketAddr) -> std::io::Result<Running> {
    match transport {
        Transport::Udp => {
            let sock = std::net::UdpSocket::bind(addr)?;
            sock.set_nonblocking(true)?;
            roomy_buffers(&sock);
            let local = sock.local_addr()?;
            let token = inner.plane.add_listener(local, sock)?;
            tracing::info!(listener = "turn.listen_udp", %local, "turn: listening");
            Ok(Running::Plane(token))
        }
        Transport::Tcp | Transport::Tls => {
            let listener = crate::web::bind_public(addr)?;
            let local = listener.local_addr()?;
            tracing::info!(listener = if transport == Transport::Tcp { "turn.listen_tcp" } else { "turn.listen_tls" }, %local, "turn: listening");
            Ok(Running::Task(tokio::spawn(super::stream::accept(inner.clone(), listener, local, transport)).abort_handle()))
        }
    }
}

/// Socket buffers for a UDP listener that every client's media goes through: the default
/// (about 200 packets) overflows when the data plane is kept off its CPU for a few milliseconds
/// at 25 000 packets/s. The system cap (`net.core.rmem_max`) applies unless the daemon has
/// CAP_NET_ADMIN, as the appliance's does; either way a smaller buffer only costs headroom.
fn roomy_buffers(sock: &std::net::UdpSocket) {
    use rustix::net::sockopt;
    const BYTES: usize = 4 << 20;
    if sockopt::set_socket_recv_buffer_size_force(sock, BYTES).is_err() {
        let _ = sockopt::set_socket_recv_buffer_size(sock, BYTES);
    }
    if sockopt::set_socket_send_buffer_size_force(sock, BYTES).is_err() {
        let _ = sockopt::set_socket_send_buffer_size(sock, BYTES);
    }
}

/// The listeners a profile asks for. A TLS address that is also an HTTPS one is served by the
/// web listener, which hands TURN connections over.
fn wanted_listeners(p: &LoadedProfile) -> Vec<(Transport, SocketAddr)> {
    let Some(turn) = &p.profile.turn else { return Vec::new() };
    let mut out: Vec<(Transport, SocketAddr)> = Vec::new();
    out.extend(turn.listen_udp.iter().map(|a| (Transport::Udp, *a)));
    out.extend(turn.listen_tcp.iter().map(|a| (Transport::Tcp, *a)));
    out.extend(turn.listen_tls.iter().filter(|a| !p.profile.web.https.contains(a)).map(|a| (Transport::Tls, *a)));
    out
}

/// The TLS addresses TURN shares with the HTTPS listener.
pub fn shared_tls(p: &LoadedProfile) -> Vec<SocketAddr> {
    p.profile.turn.as_ref().map_or_else(Vec::new, |t| t.listen_tls.iter().filter(|a| p.profile.web.https.contains(a)).copied().collect())
}

fn config_of(p: &LoadedProfile) -> Result<Option<Config>, String> {
    if p.profile.turn.is_none() {
        return Ok(None);
    }
    let secret = super::credentials::shared_secret(p).map_err(|e| format!("turn.shared_secret_file: {e}"))?;
    Ok(Config::from_profile(&p.profile, secret))
}

/// The running TURN server.
#[derive(Clone)]
pub struct TurnHandle {
    pub(super) inner: Arc<Inner>,
}

impl std::fmt::Debug for TurnHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnHandle").field("allocations", &self.allocations()).finish()
    }
}

impl TurnHandle {
    /// Allocations in place now.
    pub fn allocations(&self) -> usize {
        self.inner.core().active()
    }

    /// The figures `/metrics` shows.
    pub fn metrics(&self) -> super::metrics::Snapshot {
        self.inner.metrics.read(&self.inner.core())
    }
}

/// The web side's TLS configuration (one certificate store for every TLS listener) with ALPN
/// left open: Chromium offers none for `turns:`, others may offer `stun.turn`.
fn follow_certificate(mut web: watch::Receiver<Arc<crate::web::Settings>>) -> watch::Receiver<Arc<ServerConfig>> {
    let open = |s: &crate::web::Settings| {
        let mut c = (*s.tls).clone();
        c.alpn_protocols.clear();
        Arc::new(c)
    };
    let (tx, rx) = watch::channel(open(&web.borrow_and_update()));
    tokio::spawn(async move {
        while web.changed().await.is_ok() {
            let next = open(&web.borrow_and_update());
            if tx.send(next).is_err() {
                break;
            }
        }
    });
    rx
}

impl crate::web::TurnHandoff for TurnHandle {
    fn wants(&self, local: SocketAddr) -> bool {
        self.inner.shared_tls.lock().unwrap_or_else(|e| e.into_inner()).contains(&local)
    }

    fn is_turn(&self, first: u8) -> bool {
        super::stream::starts_turn(first)
    }

    fn take(&self, tls: crate::web::TlsConnection, already: Bytes, peer: SocketAddr, local: SocketAddr) {
        tokio::spawn(super::stream::serve(self.inner.clone(), tls, already, peer, local, Transport::Tls));
    }
}

/// Starts the TURN server when the profile has `[turn]` (`None` otherwise) and follows the
/// profile: a later `[turn]` is picked up by a restart only, not a reload.
pub async fn start(
    mut profile: watch::Receiver<Arc<LoadedProfile>>,
    web: watch::Receiver<Arc<crate::web::Settings>>,
    failures: mpsc::Sender<Report>,
) -> anyhow::Result<Option<TurnHandle>> {
    let loaded = profile.borrow_and_update().clone();
    let tls = follow_certificate(web);
    let Some(config) = config_of(&loaded).map_err(anyhow::Error::msg)? else { return Ok(None) };
    let relay_ports = loaded.profile.turn.as_ref().map(|t| t.relay_ports).expect("config implies [turn]");
    let mut nonce_key = [0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce_key);
    let plane = Plane::new()?;
    let inner = Arc::new(Inner {
        core: Mutex::new(Server::new(config, &nonce_key)),
        plane: plane.clone(),
        relays: Mutex::new(HashMap::new()),
        relay_ports: Mutex::new(relay_ports),
        failures,
        tls,
        streams: Mutex::new(HashMap::new()),
        shared_tls: Mutex::new(shared_tls(&loaded)),
        metrics: super::metrics::Counters::default(),
    });
    super::plane::spawn(plane, Arc::downgrade(&inner))?;
    let mut listeners = Listeners::default();
    listeners.rebind(&inner, &wanted_listeners(&loaded)).await.map_err(anyhow::Error::msg)?;
    tokio::spawn(tick(inner.clone()));
    let follower = inner.clone();
    tokio::spawn(async move {
        while profile.changed().await.is_ok() {
            let loaded = profile.borrow_and_update().clone();
            match config_of(&loaded) {
                Ok(Some(config)) => {
                    follower.core().reconfigure(config);
                    if let Some(t) = &loaded.profile.turn {
                        *follower.relay_ports.lock().unwrap_or_else(|e| e.into_inner()) = t.relay_ports;
                    }
                }
                Ok(None) => tracing::warn!("turn: [turn] was removed; its listeners stop, open allocations run out"),
                Err(e) => {
                    tracing::error!(error = %e, "turn: the new profile's TURN settings cannot be used; keeping the previous ones");
                    continue;
                }
            }
            *follower.shared_tls.lock().unwrap_or_else(|e| e.into_inner()) = shared_tls(&loaded);
            if let Err(e) = listeners.rebind(&follower, &wanted_listeners(&loaded)).await {
                tracing::error!(error = %e, "turn: cannot listen as the new profile says");
            }
        }
    });
    Ok(Some(TurnHandle { inner }))
}
