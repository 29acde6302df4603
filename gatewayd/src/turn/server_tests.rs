//! The TURN core driven like a client would, with messages built and checked by the STUN codec
//! (its own MESSAGE-INTEGRITY, independent of ours).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use turn_types::attribute::{ChannelNumber, Data, Lifetime, RequestedTransport, XorPeerAddress, XorRelayedAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::stun::attribute::{ErrorCode, Nonce, Realm, Username, XorMappedAddress};
use turn_types::stun::message::{
    IntegrityAlgorithm, LongTermCredentials, Message, MessageClass, MessageIntegrityCredentials, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId, BINDING,
};

use super::allocation::{Client, Transport};
use super::credentials;
use super::server::{Config, EndReason, Event, Now, Output, Server};
use crate::profile::FailureKind;

const SECRET: &str = "lab-turn-secret";
const REALM: &str = "gatewayd-lab";
const RELAY: &str = "127.0.0.1:43010";

fn config(extra_turn: &str) -> Config {
    let text = include_str!("../../../profiles/lab.toml").replace("relay_ports = \"43000-43999\"", &format!("relay_ports = \"43000-43999\"\n{extra_turn}"));
    let loaded = crate::profile::load_str(Path::new("lab.toml"), &text, []).expect("lab profile loads");
    Config::from_profile(&loaded.profile, Some(SECRET.into())).expect("lab has [turn]")
}

struct Harness {
    server: Server<&'static str, u8>,
    t0: Instant,
    unix: u64,
    elapsed: Duration,
}

fn client(port: u16) -> Client {
    Client { transport: Transport::Udp, listener: "127.0.0.1:3478".parse().unwrap(), addr: SocketAddr::from(([127, 0, 0, 1], port)) }
}

struct Agent {
    client: Client,
    username: String,
    password: String,
    nonce: Option<String>,
}

impl Agent {
    fn rest(port: u16, now_unix: u64) -> Self {
        let m = credentials::mint(SECRET.as_bytes(), "5001", now_unix, 600, vec![]);
        Agent { client: client(port), username: m.username, password: m.password, nonce: None }
    }

    fn creds(&self) -> MessageIntegrityCredentials {
        LongTermCredentials::new(self.username.clone(), self.password.clone()).to_key(REALM.into()).into()
    }

    fn request(&self, method: Method, add: impl FnOnce(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
        let mut m = Message::builder_request(method, MessageWriteVec::new());
        let txid = m.transaction_id();
        add(&mut m, txid);
        if let Some(nonce) = &self.nonce {
            m.add_attribute(&Username::new(&self.username).unwrap()).unwrap();
            m.add_attribute(&Realm::new(REALM).unwrap()).unwrap();
            m.add_attribute(&Nonce::new(nonce).unwrap()).unwrap();
            m.add_message_integrity(&self.creds(), IntegrityAlgorithm::Sha1).unwrap();
        }
        m.add_fingerprint().unwrap();
        m.finish()
    }
}

impl Harness {
    fn new(config: Config) -> Self {
        Harness { server: Server::new(config, &[7; 32]), t0: Instant::now(), unix: 1_800_000_000, elapsed: Duration::ZERO }
    }

    fn now(&self) -> Now {
        Now { at: self.t0 + self.elapsed, unix: self.unix + self.elapsed.as_secs() }
    }

    fn send(&mut self, agent: &Agent, data: &[u8]) -> Sent {
        let now = self.now();
        match self.server.handle_client(now, agent.client, &1, data) {
            Output::Nothing => Sent::Nothing,
            Output::Reply(b) => Sent::Reply(b.to_vec()),
            Output::ToPeer { relay, peer, data } => Sent::ToPeer(relay, peer, data.to_vec()),
            Output::OpenRelay { ip, .. } => {
                assert_eq!(ip, IpAddr::from([127, 0, 0, 1]));
                let opened = super::server::Opened { relay: (RELAY.parse().unwrap(), "relay"), reserved: None, token: 0 };
                match self.server.relay_opened(now, Ok(opened)) {
                    Output::Reply(b) => Sent::Reply(b.to_vec()),
                    _ => panic!("relay_opened answers"),
                }
            }
        }
    }

    /// Sends a request, answers the first challenge, and returns the final response.
    fn call(&mut self, agent: &mut Agent, method: Method, add: impl Fn(&mut MessageWriteVec, TransactionId)) -> Vec<u8> {
        for _ in 0..2 {
            let Sent::Reply(bytes) = self.send(agent, &agent.request(method, &add)) else { panic!("a request gets a response") };
            let msg = Message::from_bytes(&bytes).unwrap();
            if msg.class() == MessageClass::Error && [401, 438].contains(&code(&msg)) && agent.nonce.is_none() {
                agent.nonce = Some(msg.attribute::<Nonce>().unwrap().nonce().to_owned());
                continue;
            }
            return bytes;
        }
        panic!("still challenged")
    }

    fn allocate(&mut self, agent: &mut Agent) -> Vec<u8> {
        self.call(agent, ALLOCATE, |m, _| m.add_attribute(&RequestedTransport::new(17)).unwrap())
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}

#[derive(Debug)]
enum Sent {
    Nothing,
    Reply(Vec<u8>),
    ToPeer(&'static str, SocketAddr, Vec<u8>),
}

fn code(msg: &Message<'_>) -> u16 {
    msg.attribute::<ErrorCode>().map_or(0, |e| e.code())
}

fn peer_attr(peer: &'static str) -> impl Fn(&mut MessageWriteVec, TransactionId) {
    move |m, txid| m.add_attribute(&XorPeerAddress::new(peer.parse().unwrap(), txid)).unwrap()
}

#[test]
fn binding_reports_the_mapped_address_without_credentials() {
    let mut h = Harness::new(config(""));
    let agent = Agent::rest(50000, h.unix);
    let Sent::Reply(bytes) = h.send(&agent, &agent.request(BINDING, |_, _| {})) else { panic!() };
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.class(), MessageClass::Success);
    assert_eq!(msg.attribute::<XorMappedAddress>().unwrap().addr(msg.transaction_id()), agent.client.addr);
}

#[test]
fn allocate_is_challenged_then_granted_with_a_signed_response() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix);
    let bytes = h.allocate(&mut agent);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(msg.class(), MessageClass::Success, "{msg}");
    msg.validate_integrity(&agent.creds()).expect("signed with the agent's key");
    assert_eq!(msg.attribute::<XorRelayedAddress>().unwrap().addr(msg.transaction_id()), RELAY.parse().unwrap());
    assert_eq!(msg.attribute::<Lifetime>().unwrap().seconds(), 600);
    assert_eq!(h.server.active(), 1);
    assert_eq!(h.server.stats().created, 1);
    assert!(h.events().is_empty(), "a challenge is not a failure");
}

#[test]
fn a_wrong_password_gets_401_and_a_guard_report() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix);
    agent.password = "guessed".into();
    let bytes = h.allocate(&mut agent);
    let msg = Message::from_bytes(&bytes).unwrap();
    assert_eq!(code(&msg), 401);
    assert_eq!(h.server.active(), 0);
    let events = h.events();
    assert!(matches!(&events[..], [Event::Report(r)] if r.kind == FailureKind::TurnAuth && r.ip == IpAddr::from([127, 0, 0, 1])), "{events:?}");
}

#[test]
fn expired_rest_credentials_are_refused() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix - 3600);
    let msg_bytes = h.allocate(&mut agent);
    assert_eq!(code(&Message::from_bytes(&msg_bytes).unwrap()), 401);
}

#[test]
fn the_stock_lab_profile_refuses_a_loopback_peer_outside_the_media_ports() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix);
    h.allocate(&mut agent);
    let bytes = h.call(&mut agent, CHANNEL_BIND, |m, txid| {
        m.add_attribute(&ChannelNumber::new(0x4000)).unwrap();
        m.add_attribute(&XorPeerAddress::new("127.0.0.1:3480".parse().unwrap(), txid)).unwrap();
    });
    assert_eq!(code(&Message::from_bytes(&bytes).unwrap()), 403);
    // The gateway's own media ports stay reachable.
    let bytes = h.call(&mut agent, CREATE_PERMISSION, peer_attr("127.0.0.1:40002"));
    assert_eq!(Message::from_bytes(&bytes).unwrap().class(), MessageClass::Success);
}

#[test]
fn relays_both_ways_over_a_channel_and_by_indications() {
    let mut h = Harness::new(config("allowed_peers = [\"127.0.0.1/32\"]"));
    let mut agent = Agent::rest(50000, h.unix);
    h.allocate(&mut agent);
    let peer: SocketAddr = "127.0.0.1:3480".parse().unwrap();
    let relay: SocketAddr = RELAY.parse().unwrap();
    // Nothing passes before a permission.
    assert!(h.server.peer_data(h.now(), relay, peer, b"early").is_none());
    let bytes = h.call(&mut agent, CHANNEL_BIND, |m, txid| {
        m.add_attribute(&ChannelNumber::new(0x4001)).unwrap();
        m.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    });
    assert_eq!(Message::from_bytes(&bytes).unwrap().class(), MessageClass::Success);
    let mut frame = vec![0x40, 0x01, 0, 3];
    frame.extend_from_slice(b"abc");
    match h.send(&agent, &frame) {
        Sent::ToPeer(r, p, d) => assert_eq!((r, p, &d[..]), ("relay", peer, &b"abc"[..])),
        other => panic!("{other:?}"),
    }
    let now = h.now();
    let (sink, to, framed) = h.server.peer_data(now, relay, peer, b"back").expect("permitted");
    assert_eq!((*sink, to), (1, agent.client.addr));
    assert_eq!(framed, [0x40, 0x01, 0, 4, b'b', b'a', b'c', b'k']);
    // A peer without a channel arrives as a Data indication; a stranger not at all.
    let other: SocketAddr = "127.0.0.1:3481".parse().unwrap();
    assert!(h.server.peer_data(now, relay, "127.0.0.2:3480".parse().unwrap(), b"x").is_none());
    let (_, _, framed) = h.server.peer_data(now, relay, other, b"data").expect("same IP is permitted");
    let msg = Message::from_bytes(framed).unwrap();
    assert_eq!(msg.method(), turn_types::message::DATA);
    assert_eq!(msg.attribute::<Data>().unwrap().data(), b"data");
    // Send indication toward the peer.
    let mut m = Message::builder(MessageType::from_class_method(MessageClass::Indication, SEND), TransactionId::generate(), MessageWriteVec::new());
    let txid = m.transaction_id();
    m.add_attribute(&XorPeerAddress::new(other, txid)).unwrap();
    m.add_attribute(&Data::new(b"sent")).unwrap();
    match h.send(&agent, &m.finish()) {
        Sent::ToPeer(_, p, d) => assert_eq!((p, &d[..]), (other, &b"sent"[..])),
        other => panic!("{other:?}"),
    }
    let s = h.server.stats();
    assert_eq!((s.relayed.packets_to_peer, s.relayed.packets_from_peer, s.unpermitted), (2, 2, 2));
}

#[test]
fn quotas_per_user_are_enforced() {
    let mut h = Harness::new(config("limits = { per_user = 2 }"));
    for port in 0..3u16 {
        let mut agent = Agent::rest(50000 + port, h.unix);
        let bytes = h.allocate(&mut agent);
        let msg = Message::from_bytes(&bytes).unwrap();
        if port < 2 {
            assert_eq!(msg.class(), MessageClass::Success);
            // Each test relay has the same address; a real driver binds a new one each time.
            let id = h.server.by_relay.remove(&RELAY.parse().unwrap()).unwrap();
            h.server.by_relay.insert(SocketAddr::from(([127, 0, 0, 1], 43100 + port)), id);
        } else {
            assert_eq!(code(&msg), 486);
        }
    }
    let events = h.events();
    assert!(matches!(&events[..], [Event::Report(r)] if r.kind == FailureKind::RateLimited), "quota abuse reaches the guard: {events:?}");
}

#[test]
fn retransmitted_allocates_get_the_same_answer_and_others_437() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix);
    h.allocate(&mut agent);
    // A second client that already holds a nonce sends one signed Allocate twice.
    let mut other = Agent::rest(50001, h.unix);
    other.nonce = agent.nonce.clone();
    let signed = other.request(ALLOCATE, |m, _| m.add_attribute(&RequestedTransport::new(17)).unwrap());
    let relayed = |bytes: &[u8]| {
        let msg = Message::from_bytes(bytes).unwrap();
        assert_eq!(msg.class(), MessageClass::Success, "{msg}");
        msg.attribute::<XorRelayedAddress>().unwrap().addr(msg.transaction_id())
    };
    let Sent::Reply(first) = h.send(&other, &signed) else { panic!() };
    let Sent::Reply(again) = h.send(&other, &signed) else { panic!() };
    assert_eq!(relayed(&first), relayed(&again), "the retransmission is answered alike");
    assert_eq!(h.server.stats().created, 2, "and allocates nothing more");
    let req = agent.request(ALLOCATE, |m, _| m.add_attribute(&RequestedTransport::new(17)).unwrap());
    let Sent::Reply(first) = h.send(&agent, &req) else { panic!() };
    assert_eq!(code(&Message::from_bytes(&first).unwrap()), 437, "a new Allocate on a 5-tuple that has one");
}

#[test]
fn refresh_to_zero_releases_and_lifetimes_expire() {
    let mut h = Harness::new(config(""));
    let mut agent = Agent::rest(50000, h.unix);
    h.allocate(&mut agent);
    let bytes = h.call(&mut agent, REFRESH, |m, _| m.add_attribute(&Lifetime::new(0)).unwrap());
    assert_eq!(Message::from_bytes(&bytes).unwrap().class(), MessageClass::Success);
    assert_eq!(h.server.active(), 0);
    let events = h.events();
    assert!(matches!(&events[..], [Event::CloseRelay(_), Event::Ended { reason: EndReason::Released, .. }]), "{events:?}");

    let mut agent = Agent::rest(50001, h.unix);
    h.allocate(&mut agent);
    h.elapsed = Duration::from_secs(599);
    h.server.expire(h.now());
    assert_eq!(h.server.active(), 1);
    h.elapsed = Duration::from_secs(601);
    h.server.expire(h.now());
    assert_eq!(h.server.active(), 0);
    assert!(h.events().iter().any(|e| matches!(e, Event::Ended { reason: EndReason::Expired, username, .. } if username.ends_with(":5001"))));
}

#[test]
fn a_reload_that_narrows_the_peers_drops_their_permissions() {
    let mut h = Harness::new(config("allowed_peers = [\"127.0.0.1/32\"]"));
    let mut agent = Agent::rest(50000, h.unix);
    h.allocate(&mut agent);
    h.call(&mut agent, CREATE_PERMISSION, peer_attr("127.0.0.1:3480"));
    let relay: SocketAddr = RELAY.parse().unwrap();
    let peer: SocketAddr = "127.0.0.1:3480".parse().unwrap();
    assert!(h.server.peer_data(h.now(), relay, peer, b"x").is_some());
    h.server.reconfigure(config(""));
    assert_eq!(h.server.active(), 1, "the allocation stays");
    // 127.0.0.1 is the lab's own address: the IP permission stays, the port rule applies on send.
    let mut m = Message::builder(MessageType::from_class_method(MessageClass::Indication, SEND), TransactionId::generate(), MessageWriteVec::new());
    let txid = m.transaction_id();
    m.add_attribute(&XorPeerAddress::new(peer, txid)).unwrap();
    m.add_attribute(&Data::new(b"sent")).unwrap();
    assert!(matches!(h.send(&agent, &m.finish()), Sent::Nothing));
}
