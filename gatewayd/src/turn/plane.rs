//! TURN's UDP data plane: one thread owns the readiness of every UDP listener and relayed
//! socket (level-triggered epoll; one `recvmmsg` per ready socket takes what it holds, so one
//! datagram waiting costs one receive, not a receive and a failing one), runs each datagram
//! through the core and sends what it says at once. TCP and
//! TLS clients join it once accepted and handshaken (`conn`): their frames are read, and what is
//! relayed to them written, in the same wake-ups.
//!
//! Under load it coalesces wake-ups as a network card coalesces interrupts: once at least
//! [`MIN_GATHER`] packets would arrive within [`COALESCE_MAX`], the thread lets that long (or
//! less, aiming at [`BATCH_TARGET`] packets) pass between polls, so one wake-up serves several
//! packets instead of one each. The delay it adds (at most [`COALESCE_MAX`], a twentieth of one
//! 20 ms media frame) is what a jitter buffer absorbs without notice; a slower trickle is
//! served at once, since a sleep would cost as much as the wake-ups it saves.
//!
//! It must not block on anything but its poll: sends are nonblocking and drop when a socket
//! buffer is full, stream clients get frames through their bounded queues.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::event::epoll;

use super::allocation::{Client, Transport};
use super::conn::{Conn, Received, IDLE_TIMEOUT};
use super::datagrams::Datagrams;
use super::driver::{now, Inner, Relay, Sink, MAX_MESSAGE, PEER_DATAGRAM};

/// The longest the thread lets packets gather before serving them.
pub const COALESCE_MAX: Duration = Duration::from_millis(1);
/// Packets one wake-up should serve once the rate allows it.
const BATCH_TARGET: f64 = 8.0;
/// Packets a wait must be expected to gather to be worth its own wake-up.
const MIN_GATHER: f64 = 2.0;
/// Below this much waiting, sleeping costs more than it saves.
const COALESCE_MIN: Duration = Duration::from_micros(50);
/// Datagrams read from one ready socket before the next one gets its turn.
const PER_SOCKET: usize = 16;
type Batch = Datagrams<PER_SOCKET>;
/// How often the thread checks that the server still exists when nothing arrives.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A socket the plane serves.
#[derive(Clone)]
enum Entry {
    Listener { local: SocketAddr, sink: Sink, sock: Arc<UdpSocket> },
    Relay { addr: SocketAddr, relay: Arc<Relay> },
    Conn { conn: Arc<Conn>, fd: RawFd },
}

impl Entry {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Entry::Listener { sock, .. } => sock.as_fd(),
            Entry::Relay { relay, .. } => relay.sock.as_fd(),
            // SAFETY: the entry holds the connection, so its socket is open while borrowed.
            Entry::Conn { fd, .. } => unsafe { BorrowedFd::borrow_raw(*fd) },
        }
    }
}

/// The token of the plane's own wake-up (connections handed over to read at once).
const KICK: u64 = 0;

/// The plane's registry, shared with whoever opens and closes sockets (any thread).
pub(super) struct Plane {
    epoll: OwnedFd,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
    /// Connections to read before any readiness says so (rustls may already hold their first
    /// bytes), with the eventfd that wakes the thread for them.
    kicks: Mutex<Vec<u64>>,
    kick: OwnedFd,
}

/// Names a registered socket, to remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PlaneToken(u64);

impl Plane {
    pub(super) fn new() -> std::io::Result<Arc<Plane>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let kick = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK)?;
        epoll::add(&epoll, &kick, epoll::EventData::new_u64(KICK), epoll::EventFlags::IN)?;
        Ok(Arc::new(Plane { epoll, entries: Mutex::new(HashMap::new()), next: AtomicU64::new(1), kicks: Mutex::new(Vec::new()), kick }))
    }

    /// Serves a TCP/TLS client from now on, starting with what it may already have sent.
    pub(super) fn add_conn(&self, conn: Arc<Conn>) -> std::io::Result<()> {
        let fd = conn.raw_fd();
        let token = self.add(Entry::Conn { conn, fd })?;
        self.kicks.lock().unwrap_or_else(|e| e.into_inner()).push(token.0);
        rustix::io::write(&self.kick, &1u64.to_ne_bytes())?;
        Ok(())
    }

    /// Watches a connection for writability too (while bytes wait), or no longer.
    pub(super) fn watch_writable(&self, conn: &Conn, on: bool) {
        let Some(token) = conn.token() else { return };
        let flags = if on { epoll::EventFlags::IN | epoll::EventFlags::OUT } else { epoll::EventFlags::IN };
        // SAFETY: the caller holds the connection, so its socket is open.
        let fd = unsafe { BorrowedFd::borrow_raw(conn.raw_fd()) };
        let _ = epoll::modify(&self.epoll, fd, epoll::EventData::new_u64(token), flags);
    }

    /// Connections that said nothing for [`IDLE_TIMEOUT`].
    pub(super) fn idle_conns(&self, now: Instant) -> Vec<(PlaneToken, Arc<Conn>)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter_map(|(t, e)| match e {
                Entry::Conn { conn, .. } if now.saturating_duration_since(conn.idle_since()) > IDLE_TIMEOUT => Some((PlaneToken(*t), conn.clone())),
                _ => None,
            })
            .collect()
    }

    fn add(&self, entry: Entry) -> std::io::Result<PlaneToken> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        if let Entry::Conn { conn, .. } = &entry {
            conn.set_token(token);
        }
        // In the map before epoll can report it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).insert(token, entry.clone());
        if let Err(e) = epoll::add(&self.epoll, entry.fd(), epoll::EventData::new_u64(token), epoll::EventFlags::IN) {
            self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&token);
            return Err(e.into());
        }
        Ok(PlaneToken(token))
    }

    /// Serves a UDP listener's datagrams from clients.
    pub(super) fn add_listener(&self, local: SocketAddr, sock: UdpSocket) -> std::io::Result<PlaneToken> {
        let sock = Arc::new(sock);
        self.add(Entry::Listener { local, sink: Sink::Udp(sock.clone()), sock })
    }

    /// Serves a relayed address's datagrams from peers.
    pub(super) fn add_relay(&self, addr: SocketAddr, relay: Arc<Relay>) -> std::io::Result<PlaneToken> {
        self.add(Entry::Relay { addr, relay })
    }

    /// Stops serving a socket; it closes once nothing else holds it. False when it was not
    /// served (any more).
    pub(super) fn remove(&self, token: PlaneToken) -> bool {
        let Some(entry) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&token.0) else { return false };
        let _ = epoll::delete(&self.epoll, entry.fd());
        true
    }
}

/// Starts the plane's thread; it ends once the server it serves is gone.
pub(super) fn spawn(plane: Arc<Plane>, inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new().name("turn-udp".into()).spawn(move || run(&plane, &inner)).map(|_| ())
}

fn run(plane: &Plane, inner: &Weak<Inner>) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut ready: Vec<(u64, epoll::EventFlags, Entry)> = Vec::with_capacity(256);
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut batch = Batch::new(MAX_MESSAGE);
    let mut pace = Pace::default();
    let idle = rustix::time::Timespec { tv_sec: IDLE_POLL.as_secs() as i64, tv_nsec: 0 };
    loop {
        events.clear();
        match epoll::wait(&plane.epoll, rustix::buffer::spare_capacity(&mut events), Some(&idle)) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "turn: the UDP data plane cannot poll; UDP relaying stops");
                return;
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        ready.clear();
        let kicked = if events.iter().any(|e| e.data.u64() == KICK) {
            let mut count = [0u8; 8];
            let _ = rustix::io::read(&plane.kick, &mut count);
            std::mem::take(&mut *plane.kicks.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            Vec::new()
        };
        {
            let entries = plane.entries.lock().unwrap_or_else(|e| e.into_inner());
            let wanted = events.iter().filter(|e| e.data.u64() != KICK).map(|e| (e.data.u64(), e.flags)).chain(kicked.iter().map(|t| (*t, epoll::EventFlags::IN)));
            ready.extend(wanted.filter_map(|(t, flags)| entries.get(&t).map(|e| (t, flags, e.clone()))));
        }
        let mut packets = 0;
        for (token, flags, entry) in &ready {
            packets += match entry {
                Entry::Conn { conn, .. } => serve_conn(&inner, plane, PlaneToken(*token), *flags, conn, &mut buf),
                _ => serve(&inner, entry, &mut batch),
            };
        }
        drop(inner);
        if let Some(wait) = pace.after(Instant::now(), packets) {
            std::thread::sleep(wait);
        }
    }
}

/// A ready TCP/TLS client: writes what waited, reads and acts on what it sent, and ends it
/// when it closed or broke the framing.
fn serve_conn(inner: &Arc<Inner>, plane: &Plane, token: PlaneToken, flags: epoll::EventFlags, conn: &Arc<Conn>, buf: &mut [u8]) -> usize {
    if flags.contains(epoll::EventFlags::OUT) && !conn.flush() {
        plane.watch_writable(conn, false);
    }
    if !flags.intersects(epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP) {
        return 0;
    }
    let mut served = 0;
    match conn.read(buf) {
        Received::Frames(bytes, ends) => {
            let sink = Sink::Conn(conn.clone(), Arc::downgrade(inner.plane()));
            let mut at = 0;
            for end in ends {
                inner.from_client(conn.client, &sink, &bytes[at..end]);
                at = end;
                served += 1;
            }
            if conn.is_closed() {
                close_conn(inner, plane, token, conn);
            }
        }
        Received::Closed => close_conn(inner, plane, token, conn),
    }
    served
}

/// Ends a stream client: its allocation goes with it.
pub(super) fn close_conn(inner: &Arc<Inner>, plane: &Plane, token: PlaneToken, conn: &Conn) {
    conn.shut();
    if plane.remove(token) {
        let mut core = inner.core();
        core.client_gone(now(), conn.client);
        inner.drain(core);
    }
}

/// Takes up to [`PER_SOCKET`] datagrams from one ready socket in one receive and acts on each.
fn serve(inner: &Arc<Inner>, entry: &Entry, batch: &mut Batch) -> usize {
    match entry {
        Entry::Listener { local, sink, sock } => {
            let got = batch.recv(sock.as_fd(), MAX_MESSAGE);
            for i in 0..got {
                let (data, from) = batch.get(i);
                let client = Client { transport: Transport::Udp, listener: *local, addr: from };
                inner.from_client(client, sink, data);
            }
            got
        }
        Entry::Relay { addr, relay } => {
            // One byte more than any relayed datagram may be: a full read means too large.
            let got = batch.recv(relay.sock.as_fd(), PEER_DATAGRAM + 1);
            if got == 0 {
                return 0;
            }
            let core = &mut *inner.core();
            for i in 0..got {
                let (data, peer) = batch.get(i);
                if data.len() > PEER_DATAGRAM {
                    continue;
                }
                if let Some((sink, to, framed)) = core.peer_data(now(), *addr, peer, data) {
                    if !sink.send(to, framed) {
                        inner.metrics.unsent();
                    }
                }
            }
            got
        }
        Entry::Conn { .. } => unreachable!("connections are served by serve_conn"),
    }
}

/// Decides how long to let packets gather after a wake-up, from the recent packet rate.
#[derive(Debug, Default)]
struct Pace {
    since: Option<Instant>,
    packets: usize,
    /// Packets per second over the last measured span.
    rate: f64,
}

impl Pace {
    /// The rate is measured over spans of this length.
    const SPAN: Duration = Duration::from_millis(100);

    fn after(&mut self, now: Instant, packets: usize) -> Option<Duration> {
        let since = *self.since.get_or_insert(now);
        self.packets += packets;
        let span = now.saturating_duration_since(since);
        if span >= Self::SPAN {
            self.rate = self.packets as f64 / span.as_secs_f64();
            self.since = Some(now);
            self.packets = 0;
        }
        if packets == 0 || self.rate <= 0.0 {
            return None;
        }
        let wait = Duration::from_secs_f64(BATCH_TARGET / self.rate).min(COALESCE_MAX);
        (wait >= COALESCE_MIN && self.rate * wait.as_secs_f64() >= MIN_GATHER).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_at(pace: &mut Pace, start: Instant, pps: u64, for_ms: u64) -> Option<Duration> {
        let mut last = None;
        let step = Duration::from_micros(1_000_000 / pps);
        let mut t = start;
        while t < start + Duration::from_millis(for_ms) {
            last = pace.after(t, 1);
            t += step;
        }
        last
    }

    #[test]
    fn a_trickle_never_waits() {
        let mut pace = Pace::default();
        assert_eq!(run_at(&mut pace, Instant::now(), 500, 300), None, "500 packets/s: each is served at once");
        let mut pace = Pace::default();
        assert_eq!(run_at(&mut pace, Instant::now(), 1_500, 300), None, "1.5 packets per millisecond: not worth a sleep");
    }

    #[test]
    fn a_stream_of_packets_is_served_in_batches_within_the_cap() {
        let start = Instant::now();
        let mut pace = Pace::default();
        let wait = run_at(&mut pace, start, 50_000, 300).expect("50k packets/s gathers");
        assert!(wait <= COALESCE_MAX && wait >= COALESCE_MIN, "{wait:?}");
        // 8 packets at 50k/s: 160 us.
        assert!((150..=170).contains(&wait.as_micros()), "{wait:?}");
        let mut pace = Pace::default();
        assert_eq!(run_at(&mut pace, start, 5_000, 300), Some(COALESCE_MAX), "5k packets/s: capped");
    }

    #[test]
    fn nothing_waits_after_an_empty_wake_up() {
        let start = Instant::now();
        let mut pace = Pace::default();
        run_at(&mut pace, start, 50_000, 300);
        assert_eq!(pace.after(start + Duration::from_millis(301), 0), None);
    }
}
