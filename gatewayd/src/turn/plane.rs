//! TURN's UDP data plane: one thread owns the readiness of every UDP listener and relayed
//! socket (level-triggered epoll, so a ready socket costs one receive, not a receive and a
//! failing one), runs each datagram through the core and sends what it says at once. Streams
//! (TCP/TLS) stay on the async runtime; their relays are registered here like any other.
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
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::event::epoll;

use super::allocation::{Client, Transport};
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
/// How often the thread checks that the server still exists when nothing arrives.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// A socket the plane serves.
#[derive(Clone)]
enum Entry {
    Listener { local: SocketAddr, sink: Sink, sock: Arc<UdpSocket> },
    Relay { addr: SocketAddr, relay: Arc<Relay> },
}

impl Entry {
    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Entry::Listener { sock, .. } => sock.as_fd(),
            Entry::Relay { relay, .. } => relay.sock.as_fd(),
        }
    }
}

/// The plane's registry, shared with whoever opens and closes sockets (any thread).
pub(super) struct Plane {
    epoll: OwnedFd,
    entries: Mutex<HashMap<u64, Entry>>,
    next: AtomicU64,
}

/// Names a registered socket, to remove it later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct PlaneToken(u64);

impl Plane {
    pub(super) fn new() -> std::io::Result<Arc<Plane>> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        Ok(Arc::new(Plane { epoll, entries: Mutex::new(HashMap::new()), next: AtomicU64::new(1) }))
    }

    fn add(&self, entry: Entry) -> std::io::Result<PlaneToken> {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
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

    /// Stops serving a socket; it closes once nothing else holds it.
    pub(super) fn remove(&self, token: PlaneToken) {
        if let Some(entry) = self.entries.lock().unwrap_or_else(|e| e.into_inner()).remove(&token.0) {
            let _ = epoll::delete(&self.epoll, entry.fd());
        }
    }
}

/// Starts the plane's thread; it ends once the server it serves is gone.
pub(super) fn spawn(plane: Arc<Plane>, inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new().name("turn-udp".into()).spawn(move || run(&plane, &inner)).map(|_| ())
}

fn run(plane: &Plane, inner: &Weak<Inner>) {
    let mut events: Vec<epoll::Event> = Vec::with_capacity(256);
    let mut ready: Vec<Entry> = Vec::with_capacity(256);
    let mut buf = vec![0u8; MAX_MESSAGE];
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
        {
            let entries = plane.entries.lock().unwrap_or_else(|e| e.into_inner());
            ready.extend(events.iter().filter_map(|e| entries.get(&e.data.u64()).cloned()));
        }
        let mut packets = 0;
        for entry in &ready {
            packets += serve(&inner, entry, &mut buf);
        }
        drop(inner);
        if let Some(wait) = pace.after(Instant::now(), packets) {
            std::thread::sleep(wait);
        }
    }
}

/// Reads up to [`PER_SOCKET`] datagrams from one ready socket and acts on each.
fn serve(inner: &Arc<Inner>, entry: &Entry, buf: &mut [u8]) -> usize {
    let mut served = 0;
    while served < PER_SOCKET {
        match entry {
            Entry::Listener { local, sink, sock } => {
                let Ok((n, from)) = sock.recv_from(buf) else { break };
                let client = Client { transport: Transport::Udp, listener: *local, addr: from };
                inner.from_client(client, sink, &buf[..n]);
            }
            Entry::Relay { addr, relay } => {
                // One byte more than any relayed datagram may be: a full read means too large.
                let Ok((n, peer)) = relay.sock.recv_from(&mut buf[..PEER_DATAGRAM + 1]) else { break };
                if n <= PEER_DATAGRAM {
                    let core = &mut *inner.core();
                    if let Some((sink, to, framed)) = core.peer_data(now(), *addr, peer, &buf[..n]) {
                        if !sink.send(to, framed) {
                            inner.metrics.unsent();
                        }
                    }
                }
            }
        }
        served += 1;
    }
    served
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
