//! STUN/TURN into the TURN core built from the lab profile, as three clients (UDP, TCP through
//! the stream framer, and UDP from another source) and the peers of their relays.
//!
//! Input: a sequence of operations, the first byte of each picking one: raw bytes from a client,
//! a request built from the input and signed with a client's REST credentials (or wrong ones,
//! or none), ChannelData, data from a peer to a relay, time passing, a stream client going away.
//! Invariants besides not panicking: nothing is relayed to a peer the lab policy refuses (the
//! lab profile allows only its own media ports, 127.0.0.1:40000-40999), a client's data leaves
//! only from its own relay, peer data reaches only the relay's owner and only from a permitted
//! address, every reply is a STUN message, and quotas hold.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use turn_types::attribute::{ChannelNumber, Data, DontFragment, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::stun::attribute::{Nonce, Realm, Username};
use turn_types::stun::message::{IntegrityAlgorithm, LongTermCredentials, Message, MessageWrite, MessageWriteExt, MessageWriteVec, Method, BINDING};
use turn_types::AddressFamily;

use super::{lab, Input};
use crate::turn::allocation::{Client, Transport};
use crate::turn::credentials;
use crate::turn::server::{Config, Event, Now, Opened, Output, Server};
use crate::turn::stream::{frame, Frame};

const SECRET: &str = "lab-turn-secret";
const UNIX: u64 = 1_800_000_000;
const LISTENER: &str = "127.0.0.1:3478";
const OWN: Ipv4Addr = Ipv4Addr::LOCALHOST;

/// What the lab profile's peer policy lets a relay reach: its own media ports.
fn allowed(peer: SocketAddr) -> bool {
    own(peer.ip()) && (40000..=40999).contains(&peer.port())
}

fn own(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == OWN,
        IpAddr::V6(v6) => v6.to_ipv4_mapped() == Some(OWN),
    }
}

const PEERS: [&str; 14] = [
    "127.0.0.1:40002",
    "127.0.0.1:40999",
    "[::ffff:127.0.0.1]:40010",
    "127.0.0.1:3478",
    "127.0.0.1:5060",
    "127.0.0.1:9090",
    "127.0.0.2:40002",
    "[::1]:40002",
    "10.1.2.3:40002",
    "192.168.210.81:5060",
    "0.0.0.0:40002",
    "224.0.0.1:40002",
    "255.255.255.255:40002",
    "8.8.8.8:53",
];

fn peer(input: &mut Input) -> SocketAddr {
    let b = input.byte();
    if usize::from(b) < PEERS.len() * 16 {
        return PEERS[usize::from(b) % PEERS.len()].parse().expect("address");
    }
    let ip = Ipv4Addr::from(input.u32());
    SocketAddr::new(IpAddr::V4(ip), input.u16())
}

struct Agent {
    client: Client,
    username: String,
    password: String,
    nonce: Option<String>,
    /// The relayed port of its allocation, once it has one.
    relay: Option<u16>,
    stream: Vec<u8>,
}

/// What the core asked for, owned, so the core can be called again.
enum Out {
    Nothing,
    Reply(Vec<u8>),
    ToPeer { relay: u16, peer: SocketAddr },
    OpenRelay { ip: IpAddr, reserve: bool },
}

fn owned(out: Output<'_, u16>) -> Out {
    match out {
        Output::Nothing => Out::Nothing,
        Output::Reply(b) => Out::Reply(b.to_vec()),
        Output::ToPeer { relay, peer, .. } => Out::ToPeer { relay: *relay, peer },
        Output::OpenRelay { ip, reserve, .. } => Out::OpenRelay { ip, reserve },
    }
}

struct Harness {
    server: Server<u16, usize>,
    agents: Vec<Agent>,
    t0: Instant,
    elapsed: Duration,
    next_port: u16,
    /// Relayed port -> the agent it was opened for.
    relays: HashMap<u16, usize>,
    last_token: u64,
    max_allocations: usize,
}

pub fn turn(data: &[u8]) {
    let config = Config::from_profile(&lab().profile, Some(SECRET.into())).expect("the lab profile has [turn]");
    let max_allocations = config.limits.max_allocations;
    let minted = |port: u16, transport: Transport, ip: [u8; 4]| {
        let m = credentials::mint(SECRET.as_bytes(), "5001", UNIX, 600, vec![]);
        let client = Client { transport, listener: LISTENER.parse().expect("address"), addr: SocketAddr::from((ip, port)) };
        Agent { client, username: m.username, password: m.password, nonce: None, relay: None, stream: Vec::new() }
    };
    let mut h = Harness {
        server: Server::new(config, &[7; 32]),
        agents: vec![minted(50000, Transport::Udp, [127, 0, 0, 1]), minted(50001, Transport::Tcp, [127, 0, 0, 1]), minted(40000, Transport::Udp, [198, 51, 100, 7])],
        t0: Instant::now(),
        elapsed: Duration::ZERO,
        next_port: 43000,
        relays: HashMap::new(),
        last_token: 0,
        max_allocations,
    };
    let mut input = Input::new(data);
    while !input.is_empty() {
        let op = input.byte();
        let who = usize::from(input.byte()) % h.agents.len();
        match op % 8 {
            0 | 1 => {
                let len = usize::from(input.u16() % 1500);
                let bytes: Vec<u8> = (0..len).map(|_| input.byte()).collect();
                h.from_client(who, &bytes);
            }
            2 | 3 => {
                let bytes = h.request(who, &mut input);
                h.from_client(who, &bytes);
            }
            4 => {
                let number = 0x4000 | (input.u16() & 0x3fff);
                let len = usize::from(input.byte());
                let declared = if input.byte() & 1 == 0 { len as u16 } else { input.u16() };
                let mut bytes = number.to_be_bytes().to_vec();
                bytes.extend_from_slice(&declared.to_be_bytes());
                bytes.extend((0..len).map(|_| input.byte()));
                if h.agents[who].client.transport != Transport::Udp {
                    bytes.resize(bytes.len().div_ceil(4) * 4, 0);
                }
                h.from_client(who, &bytes);
            }
            5 => {
                let relay = match h.agents[who].relay {
                    Some(p) if input.byte() & 3 != 0 => p,
                    _ => 43000 + input.u16() % 8,
                };
                let from = peer(&mut input);
                let len = usize::from(input.u16() % 1500);
                let bytes: Vec<u8> = (0..len).map(|_| input.byte()).collect();
                h.from_peer(relay, from, &bytes);
            }
            6 => {
                h.elapsed += Duration::from_secs(u64::from(input.u16() % 4000));
                let now = h.now();
                h.server.expire(now);
                h.events();
            }
            _ => {
                let client = h.agents[who].client;
                let now = h.now();
                h.server.client_gone(now, client);
                h.agents[who].stream.clear();
                h.events();
            }
        }
        assert!(h.server.active() <= h.max_allocations, "{} allocations", h.server.active());
    }
}

impl Harness {
    fn now(&self) -> Now {
        Now { at: self.t0 + self.elapsed, unix: UNIX + self.elapsed.as_secs() }
    }

    /// A datagram, or bytes on the stream framed as the stream driver does.
    fn from_client(&mut self, who: usize, bytes: &[u8]) {
        if self.agents[who].client.transport == Transport::Udp {
            self.message(who, bytes);
            return;
        }
        self.agents[who].stream.extend_from_slice(bytes);
        loop {
            match frame(&self.agents[who].stream) {
                Frame::Complete(n) => {
                    let message: Vec<u8> = self.agents[who].stream.drain(..n).collect();
                    self.message(who, &message);
                }
                Frame::Incomplete => break,
                Frame::Invalid => {
                    let (now, client) = (self.now(), self.agents[who].client);
                    self.server.client_gone(now, client);
                    self.agents[who].stream.clear();
                    self.agents[who].relay = None;
                    break;
                }
            }
        }
        self.events();
    }

    fn message(&mut self, who: usize, bytes: &[u8]) {
        let now = self.now();
        let client = self.agents[who].client;
        let out = owned(self.server.handle_client(now, client, &who, bytes));
        self.handle(who, out);
        self.events();
    }

    fn handle(&mut self, who: usize, out: Out) {
        match out {
            Out::Nothing => {}
            Out::Reply(bytes) => {
                let msg = Message::from_bytes(&bytes).unwrap_or_else(|e| panic!("a reply that is not STUN: {e:?}"));
                if let Ok(nonce) = msg.attribute::<Nonce>() {
                    self.agents[who].nonce = Some(nonce.nonce().to_owned());
                }
            }
            Out::ToPeer { relay, peer } => {
                assert!(allowed(peer), "relayed to {peer}, which the lab policy refuses");
                assert_eq!(self.relays.get(&relay), Some(&who), "data from agent {who} left from relay {relay} of another");
                assert_eq!(self.agents[who].relay, Some(relay), "data left from a relay that is not the client's");
            }
            Out::OpenRelay { ip, reserve } => {
                assert_eq!(ip, IpAddr::V4(OWN), "a relay on an address that is not the public one");
                let port = self.next_port;
                self.next_port = if self.next_port >= 43990 { 43000 } else { self.next_port + 2 };
                self.last_token = self.last_token.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let opened = Opened {
                    relay: (SocketAddr::new(ip, port), port),
                    reserved: reserve.then(|| (SocketAddr::new(ip, port + 1), port + 1)),
                    token: self.last_token,
                };
                let now = self.now();
                let out = owned(self.server.relay_opened(now, Ok(opened)));
                self.relays.insert(port, who);
                if reserve {
                    self.relays.insert(port + 1, who);
                }
                self.agents[who].relay = Some(port);
                self.handle(who, out);
            }
        }
    }

    fn from_peer(&mut self, relay: u16, peer: SocketAddr, bytes: &[u8]) {
        let now = self.now();
        let relay_addr = SocketAddr::new(IpAddr::V4(OWN), relay);
        if let Some((sink, addr, framed)) = self.server.peer_data(now, relay_addr, peer, bytes) {
            assert!(own(peer.ip()), "data from {peer}, which no permission can allow, reached a client");
            assert_eq!(self.relays.get(&relay), Some(sink), "peer data for relay {relay} went to another client");
            assert_eq!(self.agents[*sink].client.addr, addr);
            assert!(framed.len() >= bytes.len() + 4, "the framed data holds the payload");
        }
        self.events();
    }

    fn events(&mut self) {
        while let Some(e) = self.server.poll_event() {
            match e {
                Event::CloseRelay(addr) => {
                    for a in self.agents.iter_mut().filter(|a| a.relay == Some(addr.port())) {
                        a.relay = None;
                    }
                }
                Event::Report(r) => assert!(!matches!(r.ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()), "reports name canonical addresses"),
                Event::Ended { .. } => {}
            }
        }
    }

    /// A request (or Send indication) built from the input, with credentials as it says.
    fn request(&mut self, who: usize, input: &mut Input) -> Vec<u8> {
        let method: Method = input.pick(&[ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND, BINDING, SEND, ALLOCATE, CREATE_PERMISSION]);
        let mut m = if method == SEND { Message::builder_indication(SEND, MessageWriteVec::new()) } else { Message::builder_request(method, MessageWriteVec::new()) };
        let txid = m.transaction_id();
        let payload: Vec<u8> = (0..usize::from(input.byte())).map(|_| input.byte()).collect();
        for _ in 0..input.byte() % 5 {
            let _ = match input.byte() % 9 {
                0 => m.add_attribute(&XorPeerAddress::new(peer(input), txid)),
                1 => m.add_attribute(&ChannelNumber::new(input.pick(&[0x4000, 0x4001, 0x7fff, 0x3fff, 0x8000]))),
                2 => m.add_attribute(&Lifetime::new(input.pick(&[0, 60, 600, 3600, u32::MAX]))),
                3 => m.add_attribute(&RequestedTransport::new(input.pick(&[17, 17, 6, 0]))),
                4 => m.add_attribute(&Data::new(&payload)),
                5 => m.add_attribute(&EvenPort::new(input.byte() & 1 == 1)),
                6 => m.add_attribute(&ReservationToken::new(if input.byte() & 1 == 0 { self.last_token } else { 1 })),
                7 => m.add_attribute(&DontFragment::new()),
                _ => m.add_attribute(&RequestedAddressFamily::new(if input.byte() & 1 == 0 { AddressFamily::IPV4 } else { AddressFamily::IPV6 })),
            };
        }
        let agent = &self.agents[who];
        let mode = input.byte() % 4;
        if mode != 0 && method != SEND {
            let password = if mode == 2 { "guessed" } else { agent.password.as_str() };
            let nonce = if mode == 3 { "stale-or-forged".to_owned() } else { agent.nonce.clone().unwrap_or_default() };
            let realm = lab().profile.turn.as_ref().map(|t| t.realm.clone()).unwrap_or_default();
            let _ = m.add_attribute(&Username::new(&agent.username).expect("username"));
            if let Ok(r) = Realm::new(&realm) {
                let _ = m.add_attribute(&r);
            }
            if let Ok(n) = Nonce::new(&nonce) {
                let _ = m.add_attribute(&n);
            }
            let creds = LongTermCredentials::new(agent.username.clone(), password.to_owned()).to_key(realm);
            let _ = m.add_message_integrity(&creds.into(), IntegrityAlgorithm::Sha1);
        }
        if input.byte() & 1 == 0 {
            let _ = m.add_fingerprint();
        }
        m.finish()
    }
}
