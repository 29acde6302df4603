//! The TURN server's state machine: allocations indexed by client and by relayed address,
//! quotas, and the relay paths in both directions. Requests are answered in `requests`.
//!
//! Inputs are bytes with the current time; outputs are bytes to send and where. `R` is the
//! driver's handle for a relayed socket and `C` its handle for reaching a client (a UDP
//! listener or a stream's queue): the core stores them and hands them back, never uses them.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::allocation::{Allocation, Client, Traffic};
use super::auth::{Credentials, Nonces};
use super::policy::{PeerPolicy, Refusal};
use super::reply;
use crate::guard::Report;
use crate::profile::{FailureKind, Profile};

/// Events kept for the driver; beyond this the oldest are dropped (and counted).
const EVENT_QUEUE: usize = 4096;

/// The current time, both as the monotonic clock (lifetimes) and as unix seconds (nonces and
/// REST-scheme expiries).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub unix: u64,
}

/// Quotas and lifetimes from `turn.limits`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_allocations: usize,
    pub per_user: usize,
    pub per_source: usize,
    pub max_lifetime: Duration,
    pub bytes_per_sec: u64,
    /// Peers one allocation may hold permissions for; channel bindings are bounded alike.
    pub permissions: usize,
}

/// What the core takes from one profile.
#[derive(Debug, Clone)]
pub struct Config {
    pub credentials: Credentials,
    pub policy: PeerPolicy,
    pub limits: Limits,
    /// Addresses relayed sockets are bound to, and what clients are told for each.
    pub relay_ips: Vec<(IpAddr, IpAddr)>,
}

impl Config {
    /// `None` when the profile has no `[turn]`.
    pub fn from_profile(p: &Profile, secret: Option<Vec<u8>>) -> Option<Config> {
        let turn = p.turn.as_ref()?;
        let l = &turn.limits;
        let limits = Limits {
            max_allocations: l.max_allocations as usize,
            per_user: l.per_user as usize,
            per_source: l.per_source as usize,
            max_lifetime: l.max_lifetime.into(),
            bytes_per_sec: u64::from(l.bandwidth_kbps) * 1000 / 8,
            permissions: l.permissions as usize,
        };
        let relay_ips = p.public.addresses.iter().map(|a| (*a, p.public.advertised(*a))).collect();
        Some(Config { credentials: Credentials::new(turn, secret), policy: PeerPolicy::from_profile(p), limits, relay_ips })
    }
}

/// Why an allocation was refused (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocRefusal {
    Auth,
    UserQuota,
    SourceQuota,
    Capacity,
    Transport,
    Family,
    BadRequest,
}

impl AllocRefusal {
    pub const ALL: [AllocRefusal; 7] = [Self::Auth, Self::UserQuota, Self::SourceQuota, Self::Capacity, Self::Transport, Self::Family, Self::BadRequest];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::UserQuota => "user-quota",
            Self::SourceQuota => "source-quota",
            Self::Capacity => "capacity",
            Self::Transport => "transport",
            Self::Family => "family",
            Self::BadRequest => "bad-request",
        }
    }
}

/// Counters kept by the core, read for `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub created: u64,
    pub refused: [u64; AllocRefusal::ALL.len()],
    pub auth_failures: u64,
    /// Peers refused by policy, by reason.
    pub peers_refused: HashMap<&'static str, u64>,
    pub relayed: Traffic,
    /// Peer packets dropped: no permission for the source.
    pub unpermitted: u64,
    pub events_dropped: u64,
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    Expired,
    Released,
    ConnectionClosed,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Released => "released",
            Self::ConnectionClosed => "connection-closed",
        }
    }
}

/// What the driver must act on besides replies.
#[derive(Debug, Clone)]
pub enum Event {
    /// Stop the relayed socket bound to this address.
    CloseRelay(SocketAddr),
    /// A failure for the guard.
    Report(Report),
    /// An allocation ended: for the log and the call records.
    Ended { username: String, client: Client, relay: SocketAddr, lifetime: Duration, traffic: Traffic, reason: EndReason },
}

/// What to do with a client's message.
#[derive(Debug)]
pub enum Output<'a, R> {
    Nothing,
    /// Send these bytes back to the client.
    Reply(&'a [u8]),
    /// Send `data` from the relayed socket `relay` to `peer`.
    ToPeer { relay: &'a R, peer: SocketAddr, data: &'a [u8] },
    /// Bind a relayed UDP socket on `ip` (a random port of the relay range, even when asked;
    /// with `reserve`, the next port too, for a later Allocate with the reservation token),
    /// then call [`Server::relay_opened`].
    OpenRelay { ip: IpAddr, even_port: bool, reserve: bool },
}

/// The sockets bound for a pending Allocate.
pub struct Opened<R> {
    pub relay: (SocketAddr, R),
    /// The next port, when the client asked for it to be reserved.
    pub reserved: Option<(SocketAddr, R)>,
    /// Random: names the reservation.
    pub token: u64,
}

/// A port kept for a client's next Allocate (RFC 8656 7.2, EVEN-PORT with R).
pub(super) struct Reservation<R> {
    pub relay: SocketAddr,
    pub handle: R,
    pub advertised_ip: IpAddr,
    pub expires: Instant,
}

/// How long a reserved port waits for its Allocate.
const RESERVATION_LIFETIME: Duration = Duration::from_secs(30);

pub(super) struct Slot<R, C> {
    pub alloc: Allocation,
    pub relay_handle: R,
    pub sink: C,
}

/// An Allocate that passed every check and waits for its socket.
pub(super) struct PendingAllocate<C> {
    pub client: Client,
    pub sink: C,
    pub username: String,
    pub key: super::credentials::Key,
    pub txid: u128,
    pub lifetime: Duration,
    pub advertised_ip: IpAddr,
}

pub struct Server<R, C> {
    pub(super) config: Config,
    pub(super) nonces: Nonces,
    pub(super) slots: HashMap<u64, Slot<R, C>>,
    pub(super) by_client: HashMap<Client, u64>,
    pub(super) by_relay: HashMap<SocketAddr, u64>,
    pub(super) per_user: HashMap<String, usize>,
    pub(super) per_source: HashMap<IpAddr, usize>,
    pub(super) pending: Option<PendingAllocate<C>>,
    pub(super) reservations: HashMap<u64, Reservation<R>>,
    next_id: u64,
    next_indication: u128,
    events: VecDeque<Event>,
    pub(super) stats: Stats,
    /// The last reply or relayed frame built; outputs borrow it.
    pub(super) scratch: Vec<u8>,
}

impl<R, C: Clone> Server<R, C> {
    /// `nonce_key` is random, drawn by the caller once per process.
    pub fn new(config: Config, nonce_key: &[u8; 32]) -> Self {
        Self {
            config,
            nonces: Nonces::new(nonce_key),
            slots: HashMap::new(),
            by_client: HashMap::new(),
            by_relay: HashMap::new(),
            per_user: HashMap::new(),
            per_source: HashMap::new(),
            pending: None,
            reservations: HashMap::new(),
            next_id: 1,
            next_indication: 1,
            events: VecDeque::new(),
            stats: Stats::default(),
            scratch: Vec::with_capacity(1500),
        }
    }

    pub fn active(&self) -> usize {
        self.slots.len()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub(super) fn push_event(&mut self, e: Event) {
        if self.events.len() >= EVENT_QUEUE {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(e);
    }

    pub(super) fn report(&mut self, ip: IpAddr, kind: FailureKind, detail: String) {
        self.push_event(Event::Report(Report { ip: crate::guard::canonical(ip), kind, detail }));
    }

    pub(super) fn refuse_peer(&mut self, why: Refusal) {
        *self.stats.peers_refused.entry(why.as_str()).or_insert(0) += 1;
    }

    /// The socket for a pending Allocate was bound (or could not be): the allocation is made and
    /// the reply returned.
    pub fn relay_opened(&mut self, now: Now, bound: std::io::Result<Opened<R>>) -> Output<'_, R> {
        let Some(p) = self.pending.take() else { return Output::Nothing };
        let opened = match bound {
            Ok(b) => b,
            Err(_) => return self.refuse_allocate(AllocRefusal::Capacity, p.txid.into(), 508, "Insufficient Capacity", &p.key),
        };
        let token = opened.reserved.is_some().then_some(opened.token);
        if let Some((relay, handle)) = opened.reserved {
            let r = Reservation { relay, handle, advertised_ip: p.advertised_ip, expires: now.at + RESERVATION_LIFETIME };
            self.reservations.insert(opened.token, r);
        }
        let (relay, relay_handle) = opened.relay;
        self.install(now, p, relay, relay_handle, token);
        Output::Reply(&self.scratch)
    }

    /// An Allocate naming a reservation token: the reserved socket becomes its relay.
    pub(super) fn take_reservation(&mut self, now: Now, token: u64, p: PendingAllocate<C>) -> bool {
        let Some(r) = self.reservations.remove(&token) else { return false };
        let p = PendingAllocate { advertised_ip: r.advertised_ip, ..p };
        self.install(now, p, r.relay, r.handle, None);
        true
    }

    /// Makes the allocation and leaves its success response in the scratch buffer.
    fn install(&mut self, now: Now, p: PendingAllocate<C>, relay: SocketAddr, relay_handle: R, token: Option<u64>) {
        let alloc = Allocation {
            client: p.client,
            username: p.username.clone(),
            key: p.key,
            relay,
            advertised: SocketAddr::new(p.advertised_ip, relay.port()),
            txid: p.txid,
            created: now.at,
            expires: now.at + p.lifetime,
            permissions: Vec::new(),
            channels: Vec::new(),
            budget: super::allocation::Budget::new(self.config.limits.bytes_per_sec, now.at),
            traffic: Traffic::default(),
        };
        let id = self.next_id;
        self.next_id += 1;
        *self.per_user.entry(p.username).or_insert(0) += 1;
        *self.per_source.entry(p.client.addr.ip()).or_insert(0) += 1;
        self.by_client.insert(p.client, id);
        self.by_relay.insert(relay, id);
        self.stats.created += 1;
        self.scratch = super::requests::allocate_success(&alloc, p.client.addr, now, token);
        self.slots.insert(id, Slot { alloc, relay_handle, sink: p.sink });
    }

    /// Data that arrived on relayed socket `relay` from `peer`: the client's handle, its address
    /// and the framed message, or `None` when it is dropped.
    pub fn peer_data(&mut self, now: Now, relay: SocketAddr, peer: SocketAddr, data: &[u8]) -> Option<(&C, SocketAddr, &[u8])> {
        let id = *self.by_relay.get(&relay)?;
        let slot = self.slots.get_mut(&id)?;
        let a = &mut slot.alloc;
        if !admit(a, &mut self.stats, peer.ip(), data.len(), Direction::FromPeer, now) {
            return None;
        }
        match a.channel_to(peer, now.at) {
            Some(ch) => reply::channel_data(&mut self.scratch, ch, data, a.client.transport.is_stream()),
            None => {
                let txid = self.next_indication;
                self.next_indication = self.next_indication.wrapping_add(1);
                reply::data_indication(&mut self.scratch, txid, peer, data);
            }
        }
        Some((&slot.sink, slot.alloc.client.addr, &self.scratch))
    }

    /// Ends allocations whose lifetime ran out and drops expired permissions and channels.
    pub fn expire(&mut self, now: Now) {
        let ended: Vec<u64> = self.slots.iter().filter(|(_, s)| s.alloc.expires <= now.at).map(|(id, _)| *id).collect();
        for id in ended {
            self.remove(id, now, EndReason::Expired);
        }
        for s in self.slots.values_mut() {
            s.alloc.sweep(now.at);
        }
        let stale: Vec<u64> = self.reservations.iter().filter(|(_, r)| r.expires <= now.at).map(|(t, _)| *t).collect();
        for token in stale {
            if let Some(r) = self.reservations.remove(&token) {
                self.push_event(Event::CloseRelay(r.relay));
            }
        }
    }

    /// A stream client went away: its allocation goes with it (RFC 8656 3.1).
    pub fn client_gone(&mut self, now: Now, client: Client) {
        if self.pending.as_ref().is_some_and(|p| p.client == client) {
            self.pending = None;
        }
        if let Some(id) = self.by_client.get(&client).copied() {
            self.remove(id, now, EndReason::ConnectionClosed);
        }
    }

    /// A new profile: credentials, limits and peer rules apply at once; permissions and channels
    /// to peers the new rules refuse are dropped; allocations otherwise stay.
    pub fn reconfigure(&mut self, config: Config) {
        for s in self.slots.values_mut() {
            s.alloc.permissions.retain(|(ip, _)| config.policy.check_ip(*ip).is_ok());
            s.alloc.channels.retain(|c| config.policy.check_peer(c.peer).is_ok());
            s.alloc.budget = super::allocation::Budget::new(config.limits.bytes_per_sec, s.alloc.budget.last());
        }
        self.config = config;
    }

    pub(super) fn remove(&mut self, id: u64, now: Now, reason: EndReason) {
        let Some(slot) = self.slots.remove(&id) else { return };
        let a = slot.alloc;
        self.by_client.remove(&a.client);
        self.by_relay.remove(&a.relay);
        decrement(&mut self.per_user, &a.username);
        decrement(&mut self.per_source, &a.client.addr.ip());
        self.push_event(Event::CloseRelay(a.relay));
        self.push_event(Event::Ended {
            username: a.username,
            client: a.client,
            relay: a.advertised,
            lifetime: now.at.saturating_duration_since(a.created),
            traffic: a.traffic,
            reason,
        });
    }
}

/// Which way a relayed packet goes.
#[derive(Clone, Copy)]
pub(super) enum Direction {
    ToPeer,
    FromPeer,
}

/// Whether a packet of `len` bytes between the allocation and `peer` may pass (a permission for
/// the peer, room in the bandwidth budget), counting it either way.
pub(super) fn admit(a: &mut Allocation, stats: &mut Stats, peer: IpAddr, len: usize, dir: Direction, now: Now) -> bool {
    if !a.permitted(peer, now.at) {
        stats.unpermitted += 1;
        return false;
    }
    if !a.budget.take(len, now.at) {
        a.traffic.dropped += 1;
        stats.relayed.dropped += 1;
        return false;
    }
    for t in [&mut a.traffic, &mut stats.relayed] {
        match dir {
            Direction::ToPeer => {
                t.packets_to_peer += 1;
                t.bytes_to_peer += len as u64;
            }
            Direction::FromPeer => {
                t.packets_from_peer += 1;
                t.bytes_from_peer += len as u64;
            }
        }
    }
    true
}

fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}
