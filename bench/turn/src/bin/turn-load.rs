//! TURN load client. Creates N allocations (UDP, TCP with `--tcp`, or TLS with `--tls`) with
//! TURN REST credentials (401 -> realm/nonce -> signed Allocate), a permission and a channel
//! each toward a peer socket of its own on 127.0.0.1, then for S seconds sends ChannelData at 50 packets/s
//! per allocation (172-byte payloads: G.711 at 20 ms) to the peer, which echoes every packet
//! back through the relay address (the server delivers it as ChannelData). Allocations are
//! refreshed as their lifetimes, permissions and channels need; at the end each is deleted
//! (Refresh, lifetime 0). Optionally `--churn K` more allocate/delete cycles follow.
//!
//! It measures: setup rate and per-allocation setup time; packets and loss each way; latency
//! client -> peer, peer -> client and their sum (the round trip through the relay, without
//! the time the echo waited in this client); the server's CPU (/proc/PID/stat utime+stime)
//! per allocation-second and its VmRSS per allocation; and its own CPU and send lateness, so a
//! client that cannot keep up is visible. One JSON object on stdout.
//!
//!   turn-load NAME SERVER_ADDR SERVER_PID ALLOCATIONS SECONDS [--tcp | --tls] [--window 64]
//!             [--secret lab-turn-secret] [--lifetime 600] [--pps 50] [--payload 172]
//!             [--warmup 2] [--churn 0] [--client-ip 127.0.0.2] [--client-ports-from 10000]
//!             [--relay-ports 43000-43999]
//!
//! Exit status 3 when no allocation could be made (the server does not answer or refuses).

#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use serde_json::{json, Value};
use turn_bench::net::{self, wall_ns, Batch, Epoll};
use turn_bench::report::{self, percentile_ms, round};
use turn_bench::stun::{self, Builder, Message};

const PEER_TOKEN: u64 = u64::MAX;
const PAYLOAD_MAGIC: [u8; 4] = *b"TRNB";
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// STUN over UDP: first retransmission after 500 ms, doubling, 7 sends (RFC 8489 Rc).
const RTO_NS: u64 = 500 * MS;
const MAX_SENDS: u32 = 7;
/// Requests over TCP are not retransmitted; this long without an answer fails them.
const TCP_TIMEOUT_NS: u64 = 39_500 * MS;

struct Cfg {
    name: String,
    server: SocketAddrV4,
    pid: String,
    n: usize,
    secs: u64,
    /// A stream (TCP, or TLS over TCP) rather than UDP.
    tcp: bool,
    tls: bool,
    window: usize,
    secret: String,
    lifetime: u32,
    pps: u64,
    payload: usize,
    warmup_s: f64,
    churn: usize,
    peer: SocketAddrV4,
    /// Where the client sockets live: not the relay's address, so their ephemeral ports never
    /// take ports from the server's relay range.
    client_ip: Ipv4Addr,
    /// First source port of the client's connections (on `client_ip`).
    client_ports_from: u16,
    /// The server's relay range, kept clear of the peer's port.
    relay_ports: (u16, u16),
}

fn parse_args() -> Cfg {
    let a: Vec<String> = std::env::args().collect();
    let usage = "usage: turn-load NAME SERVER_ADDR SERVER_PID ALLOCATIONS SECONDS [--tcp | --tls] [--window N] [--secret S] [--lifetime S] [--pps N] [--payload BYTES] [--warmup S] [--churn CYCLES]";
    let pos: Vec<&String> = {
        let mut v = Vec::new();
        let mut k = 1;
        while k < a.len() {
            if a[k] == "--tcp" || a[k] == "--tls" {
                k += 1;
            } else if a[k].starts_with("--") {
                k += 2;
            } else {
                v.push(&a[k]);
                k += 1;
            }
        }
        v
    };
    if pos.len() != 5 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let flag = |name: &str| a.iter().position(|x| x == name).and_then(|k| a.get(k + 1)).cloned();
    let num = |name: &str, default: u64| flag(name).map(|v| v.parse::<u64>().unwrap_or_else(|_| panic!("{name}: a number"))).unwrap_or(default);
    let cfg = Cfg {
        name: pos[0].clone(),
        server: pos[1].parse().expect("SERVER_ADDR: an IPv4 address:port"),
        pid: pos[2].clone(),
        n: pos[3].parse().expect("ALLOCATIONS: a number"),
        secs: pos[4].parse().expect("SECONDS: a number"),
        tcp: a.iter().any(|x| x == "--tcp" || x == "--tls"),
        tls: a.iter().any(|x| x == "--tls"),
        window: num("--window", 64) as usize,
        secret: flag("--secret").unwrap_or_else(|| "lab-turn-secret".into()),
        lifetime: num("--lifetime", 600) as u32,
        pps: num("--pps", 50),
        payload: num("--payload", 172) as usize,
        warmup_s: flag("--warmup").map(|v| v.parse().expect("--warmup: seconds")).unwrap_or(2.0),
        churn: num("--churn", 0) as usize,
        peer: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
        client_ip: flag("--client-ip").map(|v| v.parse().expect("--client-ip: IPv4")).unwrap_or(Ipv4Addr::new(127, 0, 0, 2)),
        client_ports_from: num("--client-ports-from", 10000) as u16,
        relay_ports: flag("--relay-ports")
            .map(|v| {
                let (a, b) = v.split_once('-').expect("--relay-ports: FIRST-LAST");
                (a.parse().unwrap(), b.parse().unwrap())
            })
            .unwrap_or((43000, 43999)),
    };
    assert!(cfg.n >= 1 && cfg.n <= 20_000 && cfg.secs <= 3600 && cfg.pps >= 1 && cfg.pps <= 1000, "bounded load");
    assert!(cfg.payload >= 36 && cfg.payload <= 1200, "payload 36..1200 bytes");
    assert!(cfg.window >= 1);
    cfg
}

enum Conn {
    Udp(UdpSocket),
    /// A stream; with `tls`, the bytes on it are TLS records (rustls buffers what the socket
    /// does not take, so `wbuf` stays empty).
    Tcp { s: TcpStream, rbuf: Vec<u8>, wbuf: Vec<u8>, tls: Option<Box<rustls::ClientConnection>> },
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Udp(s) => s.as_raw_fd(),
            Conn::Tcp { s, .. } => s.as_raw_fd(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    Idle,
    Setup,
    Ready,
    Failed,
    Closed,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Op {
    Alloc,
    AllocAuth,
    Perm,
    Chan,
    Refresh,
    Delete,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Alloc | Op::AllocAuth => "allocate",
            Op::Perm => "create-permission",
            Op::Chan => "channel-bind",
            Op::Refresh => "refresh",
            Op::Delete => "delete",
        }
    }
}

const TODO_DELETE: u8 = 1;
const TODO_REFRESH: u8 = 2;
const TODO_PERM: u8 = 4;
const TODO_CHAN: u8 = 8;

struct Tx {
    op: Op,
    id: [u8; 12],
    first_ns: u64,
    sent_ns: u64,
    sends: u32,
    auth_retries: u32,
}

struct Alloc {
    conn: Option<Conn>,
    user: String,
    key: [u8; 16],
    realm: Vec<u8>,
    nonce: Vec<u8>,
    relay: Option<SocketAddrV4>,
    channel: u16,
    tx: Option<Tx>,
    todo: u8,
    st: St,
    churn: bool,
    t_start: u64,
    t_alloc: u64,
    t_ready: u64,
    refresh_at: u64,
    perm_at: u64,
    chan_at: u64,
    seq: u32,
}

impl Alloc {
    fn new(i: usize) -> Self {
        Alloc {
            conn: None,
            user: String::new(),
            key: [0; 16],
            realm: Vec::new(),
            nonce: Vec::new(),
            relay: None,
            channel: 0x4000 + (i % 0x3fff) as u16,
            tx: None,
            todo: 0,
            st: St::Idle,
            churn: false,
            t_start: 0,
            t_alloc: 0,
            t_ready: 0,
            refresh_at: u64::MAX,
            perm_at: u64::MAX,
            chan_at: u64::MAX,
            seq: 0,
        }
    }
}

/// Counters of one direction inside the measuring window.
#[derive(Default)]
struct Dir {
    sent: u64,
    received: u64,
    lat: Vec<u32>,
}

impl Dir {
    fn loss(&self) -> f64 {
        if self.sent == 0 { 0.0 } else { 1.0 - self.received as f64 / self.sent as f64 }
    }
}

#[derive(Default)]
struct Window {
    start: u64,
    end: u64,
    c2p: Dir,
    p2c: Dir,
    /// Client send -> peer kernel receive + peer send -> client kernel receive.
    rtt: Vec<u32>,
    /// How long echoes waited in this client between the peer's receive and its send.
    peer_dwell: Vec<u32>,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        self.start != 0 && t >= self.start && t < self.end
    }
}

#[derive(Default)]
struct Counters {
    started: usize,
    in_setup: usize,
    established: usize,
    failed: usize,
    deleting: usize,
    deleted: usize,
    retransmits: u64,
    refreshes: u64,
    permission_refreshes: u64,
    channel_refreshes: u64,
    stale_nonce: u64,
    errors: BTreeMap<String, u64>,
    data_indications: u64,
    stray: u64,
    wrong_source: u64,
    send_errors: u64,
    received_total: u64,
    churn_started: usize,
    churn_done: usize,
    churn_failed: usize,
}

struct Client {
    cfg: Cfg,
    allocs: Vec<Alloc>,
    epoll: Epoll,
    w: Window,
    c: Counters,
    txseq: u64,
    scratch: Vec<u8>,
    expiry: u64,
    realm_hint: Vec<u8>,
    next_port: u32,
    tls_config: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The TLS version and cipher suite the server chose (from the first handshake done).
    suite: Option<String>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    *map.entry(key).or_insert(0) += 1;
}

impl Client {
    fn conn_send(&mut self, i: usize, bytes_from_scratch: bool, bytes: &[u8]) {
        let b: &[u8] = if bytes_from_scratch { &self.scratch } else { bytes };
        let Some(conn) = self.allocs[i].conn.as_mut() else { return };
        match conn {
            Conn::Udp(s) => {
                // SAFETY: a connected socket and a live buffer.
                let r = unsafe { libc::send(s.as_raw_fd(), b.as_ptr().cast(), b.len(), libc::MSG_DONTWAIT) };
                if r < 0 {
                    self.c.send_errors += 1;
                }
            }
            Conn::Tcp { s, tls: Some(tls), .. } => {
                if turn_bench::tls::write(tls, s, b).is_err() {
                    self.c.send_errors += 1;
                }
            }
            Conn::Tcp { s, wbuf, .. } => {
                if !wbuf.is_empty() {
                    wbuf.extend_from_slice(b);
                    return;
                }
                match s.write(b) {
                    Ok(n) if n == b.len() => {}
                    Ok(n) => wbuf.extend_from_slice(&b[n..]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => wbuf.extend_from_slice(b),
                    Err(_) => self.c.send_errors += 1,
                }
            }
        }
    }

    fn flush_tcp(&mut self) {
        for a in &mut self.allocs {
            if let Some(Conn::Tcp { s, tls: Some(tls), .. }) = a.conn.as_mut() {
                let _ = turn_bench::tls::flush(tls, s);
            } else if let Some(Conn::Tcp { s, wbuf, .. }) = a.conn.as_mut() {
                if !wbuf.is_empty() {
                    if let Ok(n) = s.write(wbuf) {
                        wbuf.drain(..n);
                    }
                }
            }
        }
    }

    /// Opens the allocation's connection and sends its first (unauthenticated) Allocate.
    fn start(&mut self, i: usize, name: String, churn: bool) {
        let now = wall_ns();
        let conn = if self.cfg.tcp {
            // Streams keep ephemeral ports: TIME_WAIT already stops a 4-tuple's reuse.
            match tcp_connect(SocketAddrV4::new(self.cfg.client_ip, 0), self.cfg.server) {
                Ok(s) => {
                    s.set_nodelay(true).unwrap();
                    s.set_nonblocking(true).unwrap();
                    let tls = self.tls_config.as_ref().map(|c| Box::new(turn_bench::tls::connect(c)));
                    Conn::Tcp { s, rbuf: Vec::with_capacity(4096), wbuf: Vec::new(), tls }
                }
                Err(e) => {
                    bump(&mut self.c.errors, format!("connect: {}", e.kind()));
                    self.allocs[i].st = St::Failed;
                    if churn { self.c.churn_failed += 1 } else { self.c.failed += 1 }
                    return;
                }
            }
        } else {
            let conn = loop {
                match net::client_udp(self.next_client_addr(), self.cfg.server) {
                    Ok(s) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => continue,
                    Err(e) => panic!("client socket: {e}"),
                }
            };
            Conn::Udp(conn)
        };
        self.epoll.add(conn.fd(), i as u64);
        let (user, key) = stun::rest_credentials(&self.cfg.secret, self.expiry, &name, "");
        let a = &mut self.allocs[i];
        *a = Alloc::new(i);
        a.conn = Some(conn);
        a.user = user;
        a.key = key; // replaced once the realm is known
        a.st = St::Setup;
        a.churn = churn;
        a.t_start = now;
        if churn {
            self.c.churn_started += 1;
        } else {
            self.c.started += 1;
        }
        self.c.in_setup += 1;
        self.send_op(i, Op::Alloc, None);
    }

    /// Each connection of the run gets a source port of its own, counted up from
    /// `--client-ports-from`: an allocate/delete cycle never reuses a 5-tuple a server may still
    /// remember (ephemeral ports would, at random).
    fn next_client_addr(&mut self) -> SocketAddrV4 {
        let port = self.cfg.client_ports_from as u32 + self.next_port;
        self.next_port += 1;
        if port > 65535 {
            return SocketAddrV4::new(self.cfg.client_ip, 0); // ran out: ephemeral from here on
        }
        SocketAddrV4::new(self.cfg.client_ip, port as u16)
    }

    fn new_txid(&mut self, i: usize) -> [u8; 12] {
        self.txseq += 1;
        let mut id = [0u8; 12];
        id[..4].copy_from_slice(&(i as u32).to_be_bytes());
        id[4..].copy_from_slice(&self.txseq.to_be_bytes());
        id
    }

    /// Sends `op` (a new transaction unless `retransmit` names the one being repeated).
    fn send_op(&mut self, i: usize, op: Op, retransmit: Option<[u8; 12]>) {
        let now = wall_ns();
        let id = retransmit.unwrap_or_else(|| self.new_txid(i));
        let peer = self.cfg.peer;
        let lifetime = self.cfg.lifetime;
        let a = &mut self.allocs[i];
        let mut out = std::mem::take(&mut self.scratch);
        {
            let mut b = match op {
                Op::Alloc | Op::AllocAuth => {
                    let mut b = Builder::new(&mut out, stun::ALLOCATE, stun::CLASS_REQUEST, &id);
                    b.requested_transport_udp().lifetime(lifetime);
                    b
                }
                Op::Perm => {
                    let mut b = Builder::new(&mut out, stun::CREATE_PERMISSION, stun::CLASS_REQUEST, &id);
                    b.xor_peer_address(peer);
                    b
                }
                Op::Chan => {
                    let mut b = Builder::new(&mut out, stun::CHANNEL_BIND, stun::CLASS_REQUEST, &id);
                    b.channel_number(a.channel).xor_peer_address(peer);
                    b
                }
                Op::Refresh => {
                    let mut b = Builder::new(&mut out, stun::REFRESH, stun::CLASS_REQUEST, &id);
                    b.lifetime(lifetime);
                    b
                }
                Op::Delete => {
                    let mut b = Builder::new(&mut out, stun::REFRESH, stun::CLASS_REQUEST, &id);
                    b.lifetime(0);
                    b
                }
            };
            if op != Op::Alloc {
                b.sign(&a.user, &a.realm, &a.nonce, &a.key);
            }
        }
        match (&mut a.tx, retransmit) {
            (Some(tx), Some(_)) => {
                tx.sends += 1;
                tx.sent_ns = now;
            }
            (tx, _) => {
                let auth_retries = tx.as_ref().filter(|t| t.op == op || (t.op == Op::Alloc && op == Op::AllocAuth)).map(|t| t.auth_retries).unwrap_or(0);
                *tx = Some(Tx { op, id, first_ns: now, sent_ns: now, sends: 1, auth_retries });
            }
        }
        self.scratch = out;
        self.conn_send(i, true, &[]);
    }

    fn close(&mut self, i: usize) {
        self.allocs[i].conn = None; // closing the socket takes it out of the epoll set
        self.allocs[i].tx = None;
        self.allocs[i].todo = 0;
    }

    fn fail(&mut self, i: usize, why: String) {
        bump(&mut self.c.errors, why);
        let a = &mut self.allocs[i];
        let was = a.st;
        let churn = a.churn;
        a.st = St::Failed;
        self.close(i);
        match was {
            St::Setup => {
                self.c.in_setup -= 1;
                if churn { self.c.churn_failed += 1 } else { self.c.failed += 1 }
            }
            St::Ready if self.allocs[i].relay.is_some() => {}
            _ => {}
        }
    }

    /// Starts the next queued transaction, if none is outstanding.
    fn next(&mut self, i: usize) {
        let a = &mut self.allocs[i];
        if a.tx.is_some() || a.conn.is_none() {
            return;
        }
        let op = if a.todo & TODO_DELETE != 0 {
            a.todo = 0;
            Op::Delete
        } else if a.todo & TODO_REFRESH != 0 {
            a.todo &= !TODO_REFRESH;
            Op::Refresh
        } else if a.todo & TODO_PERM != 0 {
            a.todo &= !TODO_PERM;
            Op::Perm
        } else if a.todo & TODO_CHAN != 0 {
            a.todo &= !TODO_CHAN;
            Op::Chan
        } else {
            return;
        };
        self.send_op(i, op, None);
    }

    fn on_stun(&mut self, i: usize, m: &Message<'_>) {
        let now = wall_ns();
        let Some(tx) = self.allocs[i].tx.as_ref() else { return };
        if tx.id != m.txid {
            return; // an answer to a retransmission already answered
        }
        let op = tx.op;
        let auth_retries = tx.auth_retries;
        if m.class == stun::CLASS_SUCCESS {
            self.allocs[i].tx = None;
            let a = &mut self.allocs[i];
            match op {
                Op::Alloc | Op::AllocAuth => {
                    a.relay = m.relayed;
                    let life = u64::from(m.lifetime.unwrap_or(600));
                    a.refresh_at = now + if life > 120 { (life - 60) * SEC } else { life * SEC / 2 };
                    a.t_alloc = now;
                    if a.relay.is_none() {
                        return self.fail(i, "allocate: no XOR-RELAYED-ADDRESS".into());
                    }
                    a.todo |= if a.churn { TODO_DELETE } else { TODO_PERM | TODO_CHAN };
                }
                Op::Perm => {
                    a.perm_at = now + 240 * SEC;
                    if a.st == St::Ready {
                        self.c.permission_refreshes += 1;
                    }
                }
                Op::Chan => {
                    a.chan_at = now + 540 * SEC;
                    if a.st == St::Setup {
                        a.st = St::Ready;
                        a.t_ready = now;
                        self.c.in_setup -= 1;
                        self.c.established += 1;
                    } else {
                        self.c.channel_refreshes += 1;
                    }
                }
                Op::Refresh => {
                    let life = u64::from(m.lifetime.unwrap_or(u32::from(self.cfg.lifetime > 0) * self.cfg.lifetime));
                    a.refresh_at = now + if life > 120 { (life - 60) * SEC } else { life.max(2) * SEC / 2 };
                    self.c.refreshes += 1;
                }
                Op::Delete => {
                    let churn = a.churn;
                    let was_setup = a.st == St::Setup;
                    a.st = St::Closed;
                    self.close(i);
                    if churn {
                        self.c.in_setup -= usize::from(was_setup);
                        self.c.churn_done += 1;
                    } else {
                        self.c.deleting -= 1;
                        self.c.deleted += 1;
                    }
                    return;
                }
            }
            return self.next(i);
        }
        if m.class != stun::CLASS_ERROR {
            return;
        }
        let code = m.error.unwrap_or(0);
        let a = &mut self.allocs[i];
        match code {
            401 if m.nonce.is_some() && (op == Op::Alloc || auth_retries < 2) => {
                if let Some(r) = m.realm {
                    if a.realm != r {
                        a.realm = r.to_vec();
                        // The long-term key covers the realm the server names.
                        let name = a.user.split_once(':').map(|(_, n)| n.to_string()).unwrap_or_default();
                        let realm = String::from_utf8_lossy(r).into_owned();
                        let (user, key) = stun::rest_credentials(&self.cfg.secret, self.expiry, &name, &realm);
                        a.user = user;
                        a.key = key;
                        if self.realm_hint.is_empty() {
                            self.realm_hint = r.to_vec();
                        }
                    }
                }
                a.nonce = m.nonce.unwrap_or_default().to_vec();
                if let Some(t) = a.tx.as_mut() {
                    t.auth_retries += u32::from(op != Op::Alloc);
                }
                let next = if op == Op::Alloc { Op::AllocAuth } else { op };
                self.send_op(i, next, None);
            }
            438 if m.nonce.is_some() && auth_retries < 3 => {
                a.nonce = m.nonce.unwrap_or_default().to_vec();
                self.c.stale_nonce += 1;
                if let Some(t) = a.tx.as_mut() {
                    t.auth_retries += 1;
                }
                self.send_op(i, op, None);
            }
            437 if op == Op::Delete => {
                // Already gone: counts as deleted.
                self.on_stun(i, &Message { class: stun::CLASS_SUCCESS, txid: m.txid, ..Default::default() });
            }
            _ => {
                let why = format!("{}: {code}", op.name());
                if self.allocs[i].st == St::Setup {
                    self.fail(i, why);
                } else if op == Op::Delete {
                    bump(&mut self.c.errors, why);
                    self.on_stun(i, &Message { class: stun::CLASS_SUCCESS, txid: m.txid, ..Default::default() });
                } else {
                    bump(&mut self.c.errors, why);
                    self.allocs[i].tx = None;
                    self.next(i);
                }
            }
        }
    }

    /// Retransmissions (UDP) and transaction timeouts.
    fn timeouts(&mut self, now: u64) {
        for i in 0..self.allocs.len() {
            let Some(tx) = self.allocs[i].tx.as_ref() else { continue };
            let (op, id, sends) = (tx.op, tx.id, tx.sends);
            if self.cfg.tcp {
                if now.saturating_sub(tx.first_ns) > TCP_TIMEOUT_NS {
                    self.timed_out(i, op);
                }
                continue;
            }
            let due = tx.sent_ns + (RTO_NS << (sends - 1).min(6));
            if now < due {
                continue;
            }
            if sends >= MAX_SENDS {
                self.timed_out(i, op);
            } else {
                self.c.retransmits += 1;
                self.send_op(i, op, Some(id));
            }
        }
    }

    fn timed_out(&mut self, i: usize, op: Op) {
        let why = format!("{}: no answer", op.name());
        if op == Op::Delete {
            bump(&mut self.c.errors, why);
            let id = self.allocs[i].tx.as_ref().map(|t| t.id).unwrap_or_default();
            self.on_stun(i, &Message { class: stun::CLASS_SUCCESS, txid: id, ..Default::default() });
        } else if self.allocs[i].st == St::Setup {
            self.fail(i, why);
        } else {
            bump(&mut self.c.errors, why);
            self.allocs[i].tx = None;
            self.next(i);
        }
    }

    /// Lifetimes, permissions and channels that need refreshing.
    fn refresh_due(&mut self, now: u64) {
        for i in 0..self.allocs.len() {
            let a = &mut self.allocs[i];
            if a.st != St::Ready || a.todo & TODO_DELETE != 0 {
                continue;
            }
            if now >= a.refresh_at {
                a.todo |= TODO_REFRESH;
                a.refresh_at = u64::MAX;
            }
            if now >= a.perm_at {
                a.todo |= TODO_PERM;
                a.perm_at = u64::MAX;
            }
            if now >= a.chan_at {
                a.todo |= TODO_CHAN;
                a.chan_at = u64::MAX;
            }
            if a.todo != 0 {
                self.next(i);
            }
        }
    }

    /// One echoed payload back at the client.
    fn on_payload(&mut self, i: usize, p: &[u8], kernel_ns: u64) {
        if p.len() < 36 || p[..4] != PAYLOAD_MAGIC || u32::from_be_bytes([p[4], p[5], p[6], p[7]]) as usize != i {
            self.c.stray += 1;
            return;
        }
        self.c.received_total += 1;
        let rd = |k: usize| u64::from_be_bytes(p[k..k + 8].try_into().unwrap());
        let (sent, peer_rx, peer_tx) = (rd(12), rd(20), rd(28));
        if !self.w.contains(sent) {
            return;
        }
        self.w.p2c.received += 1;
        let back = kernel_ns.saturating_sub(peer_tx);
        self.w.p2c.lat.push(back.min(u64::from(u32::MAX)) as u32);
        self.w.rtt.push((peer_rx.saturating_sub(sent) + back).min(u64::from(u32::MAX)) as u32);
        self.w.peer_dwell.push(peer_tx.saturating_sub(peer_rx).min(u64::from(u32::MAX)) as u32);
    }

    /// Whatever the connection of allocation `i` has for us.
    fn on_readable(&mut self, i: usize, buf: &mut [u8]) {
        let Some(conn) = self.allocs[i].conn.as_mut() else { return };
        match conn {
            Conn::Udp(s) => {
                let fd = s.as_raw_fd();
                let Some((len, ns)) = net::recv_ts(fd, buf) else { return };
                self.on_frame(i, &buf[..len], ns);
            }
            Conn::Tcp { s, rbuf, tls, .. } => {
                let mut closed = false;
                if let Some(tls) = tls {
                    match turn_bench::tls::read(tls, s, rbuf, buf) {
                        Ok(open) => closed = !open,
                        Err(_) => closed = true,
                    }
                    if self.suite.is_none() {
                        self.suite = turn_bench::tls::negotiated(tls);
                    }
                } else {
                match s.read(buf) {
                    Ok(0) => closed = true,
                    Ok(n) => rbuf.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(_) => closed = true,
                }
                }
                // Stream reads carry no kernel timestamp: the time they surface here.
                let ns = wall_ns();
                let mut data = std::mem::take(rbuf);
                let mut at = 0;
                while let Some(len) = stun::stream_frame_len(&data[at..]) {
                    self.on_frame(i, &data[at..at + len], ns);
                    at += len;
                }
                data.drain(..at);
                if let Some(Conn::Tcp { rbuf, .. }) = self.allocs[i].conn.as_mut() {
                    *rbuf = data;
                }
                if closed && self.allocs[i].conn.is_some() {
                    self.fail(i, "tcp: closed by the server".into());
                }
            }
        }
    }

    fn on_frame(&mut self, i: usize, b: &[u8], ns: u64) {
        if b.is_empty() {
            return;
        }
        if b[0] & 0xC0 == 0x40 {
            match stun::parse_channel_data(b) {
                Some((ch, p)) if ch == self.allocs[i].channel => self.on_payload(i, p, ns),
                _ => self.c.stray += 1,
            }
            return;
        }
        let Some(m) = stun::parse(b) else {
            self.c.stray += 1;
            return;
        };
        if m.class == stun::CLASS_INDICATION && m.method == stun::DATA {
            self.c.data_indications += 1;
            if let Some(d) = m.data {
                self.on_payload(i, d, ns);
            }
            return;
        }
        self.on_stun(i, &m);
    }

    /// Sends allocation `i`'s next media packet.
    fn send_media(&mut self, i: usize) {
        let a = &mut self.allocs[i];
        if a.st != St::Ready || a.conn.is_none() {
            return;
        }
        a.seq = a.seq.wrapping_add(1);
        let plen = self.cfg.payload;
        let s = &mut self.scratch;
        s.clear();
        s.extend_from_slice(&stun::channel_header(a.channel, plen));
        s.extend_from_slice(&PAYLOAD_MAGIC);
        s.extend_from_slice(&(i as u32).to_be_bytes());
        s.extend_from_slice(&a.seq.to_be_bytes());
        s.resize(4 + plen, 0xff); // PCMU silence after the header fields
        s[24..4 + 36].fill(0);
        while self.cfg.tcp && s.len() % 4 != 0 {
            s.push(0);
        }
        let now = wall_ns();
        s[16..24].copy_from_slice(&now.to_be_bytes());
        if self.w.contains(now) {
            self.w.c2p.sent += 1;
        }
        self.conn_send(i, true, &[]);
    }

    /// The peer: every datagram from a relay address goes back where it came from.
    fn peer_readable(&mut self, peer: &mut Batch) {
        let Client { allocs, w, c, .. } = self;
        let mut stamp = |now: u64, b: &mut [u8]| {
            if b.len() >= 36 {
                b[28..36].copy_from_slice(&now.to_be_bytes());
            }
        };
        for _ in 0..8 {
            let n = peer.echo(
                |src, ns, b| {
                    if b.len() < 36 || b[..4] != PAYLOAD_MAGIC {
                        c.stray += 1;
                        return false;
                    }
                    let i = u32::from_be_bytes([b[4], b[5], b[6], b[7]]) as usize;
                    if allocs.get(i).and_then(|a| a.relay) != Some(src) {
                        c.wrong_source += 1;
                    }
                    let sent = u64::from_be_bytes(b[12..20].try_into().unwrap());
                    if w.contains(sent) {
                        w.c2p.received += 1;
                        w.c2p.lat.push(ns.saturating_sub(sent).min(u64::from(u32::MAX)) as u32);
                        w.p2c.sent += 1;
                    }
                    b[20..28].copy_from_slice(&ns.to_be_bytes());
                    true
                },
                &mut stamp,
            );
            if n < net::BATCH {
                break;
            }
        }
    }

    /// One round of I/O: waits up to `timeout_ms`, serves every ready socket.
    fn pump(&mut self, peer: &mut Batch, buf: &mut [u8], tokens: &mut Vec<u64>, timeout_ns: u64) {
        tokens.clear();
        self.epoll.wait(timeout_ns, |t| tokens.push(t));
        for &t in tokens.iter() {
            if t == PEER_TOKEN {
                self.peer_readable(peer);
            } else {
                self.on_readable(t as usize, buf);
            }
        }
        if self.cfg.tcp {
            self.flush_tcp();
        }
    }
}

fn tcp_connect(local: SocketAddrV4, server: SocketAddrV4) -> std::io::Result<TcpStream> {
    // SAFETY: plain socket calls on a descriptor we own until TcpStream takes it.
    unsafe {
        use std::os::fd::FromRawFd;
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let sa = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        let l = sa(local);
        if libc::bind(fd, (&l as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let r = sa(server);
        if libc::connect(fd, (&r as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// A STUN Binding request, retransmitted for up to 5 s: Err when nothing answers.
fn probe(server: SocketAddrV4, tcp: bool, tls: Option<&std::sync::Arc<rustls::ClientConfig>>) -> Result<(), String> {
    let mut req = Vec::new();
    Builder::new(&mut req, 0x001, stun::CLASS_REQUEST, b"probe-turn-1");
    let mut buf = [0u8; 1500];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    if let Some(config) = tls {
        let s = TcpStream::connect_timeout(&server.into(), std::time::Duration::from_secs(5)).map_err(|e| format!("refuses TCP ({e})"))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        let mut s = rustls::StreamOwned::new(turn_bench::tls::connect(config), s);
        s.write_all(&req).map_err(|e| format!("fails the TLS handshake or drops the connection ({e})"))?;
        let n = s.read(&mut buf).map_err(|_| "does not answer a STUN Binding over TLS".to_string())?;
        return stun::parse(&buf[..n]).map(|_| ()).ok_or_else(|| "answers something other than STUN over TLS".into());
    }
    if tcp {
        let mut s = TcpStream::connect_timeout(&server.into(), std::time::Duration::from_secs(5)).map_err(|e| format!("refuses TCP ({e})"))?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        s.write_all(&req).map_err(|e| format!("drops the TCP connection ({e})"))?;
        let n = s.read(&mut buf).map_err(|_| "does not answer a STUN Binding over TCP".to_string())?;
        return stun::parse(&buf[..n]).map(|_| ()).ok_or_else(|| "answers something other than STUN over TCP".into());
    }
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    s.connect(server).map_err(|e| e.to_string())?;
    let mut wait = std::time::Duration::from_millis(250);
    while std::time::Instant::now() < deadline {
        let _ = s.send(&req);
        s.set_read_timeout(Some(wait)).unwrap();
        if let Ok(n) = s.recv(&mut buf) {
            if stun::parse(&buf[..n]).is_some_and(|m| m.txid == *b"probe-turn-1") {
                return Ok(());
            }
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
    }
    Err("does not answer a STUN Binding over UDP".into())
}

fn ms_pcts(v: &mut [u32]) -> Value {
    json!({ "p50": percentile_ms(v, 0.5), "p99": percentile_ms(v, 0.99), "max": percentile_ms(v, 1.0) })
}

fn main() {
    let mut cfg = parse_args();
    // The peer on 127.0.0.1 (the address the profile allows), on a port outside the relay range.
    let mut peer = loop {
        let b = Batch::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("peer socket");
        let std::net::SocketAddr::V4(a) = b.sock.local_addr().unwrap() else { unreachable!() };
        if a.port() < cfg.relay_ports.0 || a.port() > cfg.relay_ports.1 {
            cfg.peer = a;
            break b;
        }
    };
    let pid = cfg.pid.clone();
    let own = std::process::id().to_string();
    let epoll = Epoll::new();
    epoll.add(peer.sock.as_raw_fd(), PEER_TOKEN);
    let expiry = wall_ns() / SEC + 86_400;
    let n = cfg.n;
    let mut cl = Client {
        allocs: (0..n + if cfg.churn > 0 { cfg.window } else { 0 }).map(Alloc::new).collect(),
        cfg,
        epoll,
        w: Window::default(),
        c: Counters::default(),
        txseq: 0,
        scratch: Vec::with_capacity(2048),
        expiry,
        realm_hint: Vec::new(),
        next_port: 0,
        tls_config: None,
        suite: None,
    };
    if cl.cfg.tls {
        cl.tls_config = Some(turn_bench::tls::config());
    }
    let mut buf = vec![0u8; 65536];
    let mut tokens = Vec::with_capacity(512);
    let load_before = report::load_average();
    let snmp0 = report::rcvbuf_errors();
    let alive = |pid: &str| std::path::Path::new(&format!("/proc/{pid}/stat")).exists();
    let (_, rss_idle) = report::proc_stat(&pid);
    let server_threads = report::threads(&pid);

    // --- does it answer at all? ---------------------------------------------------------
    if let Err(why) = probe(cl.cfg.server, cl.cfg.tcp, cl.tls_config.as_ref()) {
        let why = format!("{} {why} on {}", cl.cfg.name, cl.cfg.server);
        eprintln!("turn-load: {why}");
        println!("{}", json!({ "server": cl.cfg.name, "error": why }));
        std::process::exit(3);
    }
    // What the server spends doing nothing (timers, health checks), for comparison.
    let (idle0, _) = report::schedstat(&pid);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let idle_cpu_ms_per_s = (report::schedstat(&pid).0 - idle0) as f64 / 1e6 / 2.0;

    // --- allocations ---------------------------------------------------------------------
    eprintln!("{}: {n} allocations over {} to {}, peer {}", cl.cfg.name, if cl.cfg.tls { "TLS" } else if cl.cfg.tcp { "TCP" } else { "UDP" }, cl.cfg.server, cl.cfg.peer);
    let (sched0, _) = report::schedstat(&pid);
    let (cpu_setup0, _) = report::proc_stat(&pid);
    let t_setup0 = wall_ns();
    let mut last_progress = (t_setup0, 0usize);
    let mut last_timer = t_setup0;
    let mut next_i = 0;
    loop {
        while next_i < n && cl.c.in_setup < cl.cfg.window {
            cl.start(next_i, format!("bench{next_i}"), false);
            next_i += 1;
        }
        if next_i == n && cl.c.in_setup == 0 {
            break;
        }
        cl.pump(&mut peer, &mut buf, &mut tokens, 5 * MS);
        let now = wall_ns();
        if now.saturating_sub(last_timer) > 20 * MS {
            cl.timeouts(now);
            last_timer = now;
        }
        let done = cl.c.established + cl.c.failed;
        if done != last_progress.1 {
            last_progress = (now, done);
        } else if now.saturating_sub(last_progress.0) > 60 * SEC {
            eprintln!("{}: no allocation progress for 60 s; giving up", cl.cfg.name);
            break;
        }
    }
    let t_setup1 = cl.allocs.iter().filter(|a| a.st == St::Ready).map(|a| a.t_ready).max().unwrap_or(wall_ns());
    let (sched1, _) = report::schedstat(&pid);
    let (cpu_setup1, rss_allocated) = report::proc_stat(&pid);
    let established = cl.c.established;
    let mut setup_ms: Vec<u32> = cl.allocs[..n].iter().filter(|a| a.st == St::Ready).map(|a| (a.t_ready - a.t_start).min(u64::from(u32::MAX)) as u32).collect();
    let mut alloc_ms: Vec<u32> = cl.allocs[..n].iter().filter(|a| a.st == St::Ready).map(|a| (a.t_alloc - a.t_start).min(u64::from(u32::MAX)) as u32).collect();
    let setup_s = (t_setup1.saturating_sub(t_setup0)) as f64 / 1e9;
    eprintln!(
        "{}: {established} of {n} allocations ready in {setup_s:.2} s ({} failed{})",
        cl.cfg.name,
        cl.c.failed,
        if cl.c.errors.is_empty() { String::new() } else { format!(": {:?}", cl.c.errors) }
    );
    if established == 0 {
        let why = if cl.c.errors.keys().all(|k| k.ends_with("no answer")) {
            format!("{} does not answer TURN on {}", cl.cfg.name, cl.cfg.server)
        } else {
            format!("{} refused every allocation: {:?}", cl.cfg.name, cl.c.errors)
        };
        eprintln!("turn-load: {why}");
        println!("{}", json!({ "server": cl.cfg.name, "error": why, "errors": cl.c.errors }));
        std::process::exit(3);
    }
    let setup_retransmits = cl.c.retransmits;

    // --- traffic -------------------------------------------------------------------------
    let ready: Vec<usize> = (0..n).filter(|&i| cl.allocs[i].st == St::Ready).collect();
    let m = ready.len() as u64;
    let period = SEC / cl.cfg.pps;
    let origin = wall_ns() + 5 * MS;
    let w0 = origin + (cl.cfg.warmup_s * 1e9) as u64;
    let tick = std::env::var("TURN_LOAD_TICK_US").ok().and_then(|v| v.parse::<u64>().ok()).unwrap_or(250) * 1000;
    let scheduled = |k: u64| origin + (k / m) * period + (k % m) * period / m;
    let mut k: u64 = 0;
    let mut lag: Vec<u32> = Vec::with_capacity((m * cl.cfg.pps * (cl.cfg.secs + 3)) as usize);
    let mut in_window = false;
    let (mut cpu0, mut sched_w0, mut own0, mut t0) = (0.0, (0, 0), 0.0, 0);
    let (mut cpu1, mut sched_w1, mut own1, mut t1) = (0.0, (0, 0), 0.0, 0);
    let mut rss_loaded = 0;
    // The server runs pinned to this CPU (run.sh): whatever else kept it busy competed with it.
    let server_cpu: usize = std::env::var("TURN_SERVER_CPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let (mut busy0, mut busy1) = (0.0, 0.0);
    let mut rss_peak = 0;
    let mut next_rss = w0;
    eprintln!("{}: {m} allocations x {} packets/s each way for {} s (+{} s warm-up)", cl.cfg.name, cl.cfg.pps, cl.cfg.secs, cl.cfg.warmup_s);
    loop {
        let now = wall_ns();
        if !in_window && now >= w0 && t0 == 0 {
            (cpu0, _) = report::proc_stat(&pid);
            busy0 = report::cpu_busy_s(server_cpu);
            sched_w0 = report::schedstat(&pid);
            (own0, _) = report::proc_stat(&own);
            t0 = wall_ns();
            cl.w.start = t0;
            cl.w.end = t0 + cl.cfg.secs * SEC;
            in_window = true;
        }
        if in_window && now >= cl.w.end {
            (cpu1, rss_loaded) = report::proc_stat(&pid);
            busy1 = report::cpu_busy_s(server_cpu);
            sched_w1 = report::schedstat(&pid);
            (own1, _) = report::proc_stat(&own);
            t1 = wall_ns();
            in_window = false;
        }
        if now >= next_rss && t1 == 0 {
            rss_peak = rss_peak.max(report::proc_stat(&pid).1);
            next_rss = now + SEC;
        }
        // Everything due goes now, each stamped right before its own send.
        while t1 == 0 && scheduled(k) <= now {
            let due = scheduled(k);
            cl.send_media(ready[(k % m) as usize]);
            lag.push(wall_ns().saturating_sub(due).min(u64::from(u32::MAX)) as u32);
            k += 1;
        }
        if now.saturating_sub(last_timer) > 20 * MS {
            cl.timeouts(now);
            cl.refresh_due(now);
            last_timer = now;
        }
        // A second after the window, late echoes have arrived or are lost.
        if t1 != 0 && now >= t1 + SEC {
            break;
        }
        let next = scheduled(k);
        // Sleep until the next send is due, but at least one tick: packets due within it
        // leave together (each still stamped at its own send).
        let wait = if t1 != 0 { 5 * MS } else { next.saturating_sub(now).clamp(tick, 5 * MS) };
        cl.pump(&mut peer, &mut buf, &mut tokens, wait);
    }
    let window_s = (t1 - t0) as f64 / 1e9;
    let server_cpu_s = cpu1 - cpu0;
    let server_alive = alive(&pid);

    // --- deletions -----------------------------------------------------------------------
    let t_del0 = wall_ns();
    let mut next_d = 0;
    let live: Vec<usize> = (0..n).filter(|&i| cl.allocs[i].st == St::Ready).collect();
    let del_deadline = t_del0 + 60 * SEC;
    loop {
        while next_d < live.len() && cl.c.deleting < cl.cfg.window {
            let i = live[next_d];
            next_d += 1;
            if cl.allocs[i].conn.is_none() {
                continue;
            }
            cl.allocs[i].todo |= TODO_DELETE;
            cl.c.deleting += 1;
            cl.next(i);
        }
        if next_d == live.len() && cl.c.deleting == 0 {
            break;
        }
        let now = wall_ns();
        if now > del_deadline {
            eprintln!("{}: deletions unfinished after 60 s", cl.cfg.name);
            break;
        }
        cl.pump(&mut peer, &mut buf, &mut tokens, 5 * MS);
        if now.saturating_sub(last_timer) > 20 * MS {
            cl.timeouts(now);
            last_timer = now;
        }
    }
    let delete_s = (wall_ns() - t_del0) as f64 / 1e9;
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (_, rss_deleted) = report::proc_stat(&pid);

    // --- churn: allocate/delete cycles ---------------------------------------------------
    let mut churn = Value::Null;
    if cl.cfg.churn > 0 {
        let total = cl.cfg.churn;
        let slots: Vec<usize> = (n..n + cl.cfg.window).collect();
        let (cpu_c0, _) = report::proc_stat(&pid);
        let (sched_c0, _) = report::schedstat(&pid);
        let t_c0 = wall_ns();
        let mut last = (t_c0, 0usize);
        loop {
            for &s in &slots {
                let idle = matches!(cl.allocs[s].st, St::Idle | St::Closed | St::Failed);
                if idle && cl.c.churn_started < total {
                    let k = cl.c.churn_started;
                    cl.start(s, format!("churn{k}"), true);
                }
            }
            let finished = cl.c.churn_done + cl.c.churn_failed;
            if finished >= total {
                break;
            }
            let now = wall_ns();
            if finished != last.1 {
                last = (now, finished);
            } else if now.saturating_sub(last.0) > 60 * SEC {
                eprintln!("{}: churn stalled", cl.cfg.name);
                break;
            }
            cl.pump(&mut peer, &mut buf, &mut tokens, 5 * MS);
            if now.saturating_sub(last_timer) > 20 * MS {
                cl.timeouts(now);
                last_timer = now;
            }
        }
        let churn_s = (wall_ns() - t_c0) as f64 / 1e9;
        let (cpu_c1, _) = report::proc_stat(&pid);
        let (sched_c1, _) = report::schedstat(&pid);
        std::thread::sleep(std::time::Duration::from_secs(2));
        let (_, rss_churned) = report::proc_stat(&pid);
        churn = json!({
            "cycles": total, "done": cl.c.churn_done, "failed": cl.c.churn_failed, "seconds": round(churn_s, 3),
            "cycles_per_s": round(cl.c.churn_done as f64 / churn_s, 1),
            "cpu_ms_per_cycle": round((sched_c1 - sched_c0) as f64 / 1e6 / cl.c.churn_done.max(1) as f64, 4),
            "cpu_ms_per_cycle_stat": round((cpu_c1 - cpu_c0) * 1e3 / cl.c.churn_done.max(1) as f64, 4),
            "rss_after_kib": rss_churned, "rss_over_idle_kib": rss_churned as i64 - rss_idle as i64,
        });
        eprintln!("{}: churn {churn}", cl.cfg.name);
    }

    // --- report --------------------------------------------------------------------------
    let w = &mut cl.w;
    let alloc_s = m as f64 * window_s;
    let relayed = w.c2p.received + w.p2c.received;
    let rt_loss = if w.c2p.sent == 0 { 0.0 } else { 1.0 - w.p2c.received as f64 / w.c2p.sent as f64 };
    let out = json!({
        "server": cl.cfg.name,
        "transport": if cl.cfg.tls { "tls" } else if cl.cfg.tcp { "tcp" } else { "udp" },
        "tls": cl.suite,
        "allocations": n, "seconds": cl.cfg.secs, "pps": cl.cfg.pps, "payload": cl.cfg.payload, "setup_window": cl.cfg.window,
        "server_threads": server_threads, "server_idle_cpu_ms_per_s": round(idle_cpu_ms_per_s, 3),
        "established": established, "failed": cl.c.failed, "errors": cl.c.errors,
        "setup": {
            "seconds": round(setup_s, 4),
            "allocations_per_s": round(established as f64 / setup_s.max(1e-9), 1),
            "ms": ms_pcts(&mut setup_ms),
            "allocate_ms": ms_pcts(&mut alloc_ms),
            "retransmits": setup_retransmits,
            "cpu_ms_per_allocation": round((sched1 - sched0) as f64 / 1e6 / established as f64, 4),
            "cpu_ms_per_allocation_stat": round((cpu_setup1 - cpu_setup0) * 1e3 / established as f64, 4),
        },
        "window_s": round(window_s, 3),
        "c2p": { "sent": w.c2p.sent, "received": w.c2p.received, "loss": round(w.c2p.loss(), 6), "ms": ms_pcts(&mut w.c2p.lat) },
        "p2c": { "sent": w.p2c.sent, "received": w.p2c.received, "loss": round(w.p2c.loss(), 6), "ms": ms_pcts(&mut w.p2c.lat) },
        "round_trip": { "loss": round(rt_loss, 6), "ms": ms_pcts(&mut w.rtt) },
        "peer_dwell_ms": ms_pcts(&mut w.peer_dwell),
        "server_cpu_s": round(server_cpu_s, 3),
        "cpu_ms_per_allocation_s": round(server_cpu_s * 1e3 / alloc_s, 5),
        "cpu_ms_per_allocation_s_schedstat": round((sched_w1.0 - sched_w0.0) as f64 / 1e6 / alloc_s, 5),
        "relayed_per_cpu_s": round(relayed as f64 / server_cpu_s.max(1e-9), 0),
        "other_work_on_server_cpu_ms_per_s": round(((busy1 - busy0) - server_cpu_s).max(0.0) * 1e3 / window_s, 1),
        "server_runqueue_wait_ms": round((sched_w1.1 - sched_w0.1) as f64 / 1e6, 1),
        "rss_idle_kib": rss_idle, "rss_allocated_kib": rss_allocated, "rss_loaded_kib": rss_loaded, "rss_peak_kib": rss_peak,
        "rss_per_allocation_kib": round((rss_loaded as f64 - rss_idle as f64) / m as f64, 2),
        "rss_after_delete_kib": rss_deleted,
        "deleted": cl.c.deleted, "delete_s": round(delete_s, 3),
        "churn": churn,
        "refreshes": cl.c.refreshes, "permission_refreshes": cl.c.permission_refreshes, "channel_refreshes": cl.c.channel_refreshes, "stale_nonce": cl.c.stale_nonce,
        "data_indications": cl.c.data_indications, "stray": cl.c.stray, "wrong_source": cl.c.wrong_source,
        "client": {
            "cpu_pct": round((own1 - own0) * 100.0 / window_s, 1),
            "send_lag_ms": ms_pcts(&mut lag),
            "send_errors": cl.c.send_errors + peer.send_errors,
            "retransmits": cl.c.retransmits,
        },
        "rcvbuf_errors": report::rcvbuf_errors() - snmp0,
        "server_alive": server_alive,
        "load_before": load_before, "load_after": report::load_average(),
    });
    println!("{out}");
}
