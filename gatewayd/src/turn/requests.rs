//! How the TURN core answers each client message: Binding, Allocate, Refresh,
//! CreatePermission, ChannelBind (long-term credentials, RFC 8489 9.2), Send indications and
//! ChannelData. Errors map to the STUN codes of RFC 8656.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use turn_types::attribute::{ChannelNumber, Data, EvenPort, Lifetime, RequestedAddressFamily, RequestedTransport, ReservationToken, XorPeerAddress, XorRelayedAddress};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, REFRESH, SEND};
use turn_types::stun::attribute::{Attribute, AttributeStaticType, AttributeType, MessageIntegrity, Nonce, Realm, UnknownAttributes, Username, XorMappedAddress};
use turn_types::stun::message::{Message, MessageClass, Method, TransactionId, BINDING};
use turn_types::stun::AddressFamily;

use super::allocation::{Allocation, Client};
use super::auth::{self, KeyError};
use super::credentials::Key;
use super::reply::Reply;
use super::server::{admit, AllocRefusal, Direction, EndReason, Now, Output, PendingAllocate, Server};
use crate::profile::FailureKind;

/// The lifetime granted when the client asks for less or nothing (RFC 8656 7.2).
const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// UDP, the only relayed transport (RFC 8656 14.7).
const UDP: u8 = 17;

/// Attributes whose meaning this server knows; any other comprehension-required one gets 420.
const KNOWN: [u16; 20] = [
    0x0006, 0x0008, 0x000C, 0x000D, 0x0012, 0x0013, 0x0014, 0x0015, 0x0017, 0x0018, 0x0019, 0x001A, 0x001C, 0x001D,
    0x001E, 0x0020, 0x0022, 0x0024, 0x0025, 0x0001,
];

/// The success response to an Allocate, also sent again for its retransmissions.
pub(super) fn allocate_success(a: &Allocation, client: SocketAddr, now: Now, token: Option<u64>) -> Vec<u8> {
    let txid = TransactionId::from(a.txid);
    let mut r = Reply::success(ALLOCATE, txid);
    r.add(&XorRelayedAddress::new(a.advertised, txid));
    r.add(&Lifetime::new(remaining(a, now)));
    r.add(&XorMappedAddress::new(client, txid));
    if let Some(token) = token {
        r.add(&ReservationToken::new(token));
    }
    r.finish(Some(&a.key))
}

fn remaining(a: &Allocation, now: Now) -> u32 {
    u32::try_from(a.expires.saturating_duration_since(now.at).as_secs()).unwrap_or(u32::MAX)
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::IPV4
    } else {
        AddressFamily::IPV6
    }
}

/// Where an attribute's value sits in `data`.
fn value_of<'d>(msg: &Message<'_>, data: &'d [u8], kind: AttributeType) -> Option<&'d [u8]> {
    let (offset, raw) = msg.raw_attribute_and_offset(kind)?;
    let len = usize::from(raw.header.length());
    data.get(offset + 4..offset + 4 + len)
}

impl<R, C: Clone> Server<R, C> {
    /// One message from a client: a STUN message or ChannelData.
    pub fn handle_client<'a>(&'a mut self, now: Now, client: Client, sink: &C, data: &'a [u8]) -> Output<'a, R> {
        match data.first() {
            Some(0x40..=0x7f) => return self.channel_data(now, client, data),
            Some(b) if b & 0xc0 == 0 => {}
            _ => return Output::Nothing,
        }
        let Ok(msg) = Message::from_bytes(data) else { return Output::Nothing };
        let txid = msg.transaction_id();
        let method = msg.method();
        match msg.class() {
            MessageClass::Request => {}
            MessageClass::Indication if method == SEND => return self.send_indication(now, client, &msg, data),
            _ => return Output::Nothing,
        }
        if let Some(unknown) = unknown_attributes(&msg) {
            let mut r = Reply::error(method, txid, 420, "Unknown Attribute");
            r.add(&UnknownAttributes::new(&unknown));
            return self.reply(r, None);
        }
        if method == BINDING {
            let mut r = Reply::success(BINDING, txid);
            r.add(&XorMappedAddress::new(client.addr, txid));
            return self.reply(r, None);
        }
        if ![ALLOCATE, REFRESH, CREATE_PERMISSION, CHANNEL_BIND].contains(&method) {
            return self.reply(Reply::error(method, txid, 400, "Bad Request"), None);
        }
        let Ok((username, key)) = self.authenticate(now, client, method, &msg, data) else {
            return Output::Reply(&self.scratch);
        };
        if method == ALLOCATE {
            return self.allocate(now, client, sink, &msg, username, key);
        }
        let Some(&id) = self.by_client.get(&client) else {
            return self.reply(Reply::error(method, txid, 437, "Allocation Mismatch"), Some(&key));
        };
        if self.slots[&id].alloc.username != username {
            return self.reply(Reply::error(method, txid, 441, "Wrong Credentials"), Some(&key));
        }
        match method {
            REFRESH => self.refresh(now, id, &msg, &key),
            CREATE_PERMISSION => self.create_permission(now, id, &msg, &key),
            _ => self.channel_bind(now, id, &msg, &key),
        }
    }

    fn reply(&mut self, r: Reply, key: Option<&Key>) -> Output<'_, R> {
        self.scratch = r.finish(key);
        Output::Reply(&self.scratch)
    }

    /// Writes a 401 or 438 with the realm and a fresh nonce into the scratch buffer.
    fn challenge(&mut self, now: Now, client: Client, method: Method, txid: TransactionId, code: u16, reason: &str) {
        let nonce = self.nonces.issue(client.addr.ip(), now.unix);
        let mut r = Reply::error(method, txid, code, reason);
        if let Ok(realm) = Realm::new(self.config.credentials.realm()) {
            r.add(&realm);
        }
        if let Ok(nonce) = Nonce::new(&nonce) {
            r.add(&nonce);
        }
        self.scratch = r.finish(None);
    }

    /// The username and key of a request signed with valid long-term credentials; otherwise the
    /// challenge or error to send is left in the scratch buffer.
    fn authenticate(&mut self, now: Now, client: Client, method: Method, msg: &Message<'_>, data: &[u8]) -> Result<(String, Key), ()> {
        let txid = msg.transaction_id();
        if !msg.has_attribute(MessageIntegrity::TYPE) {
            // The usual first round trip of every client: not a failure.
            self.challenge(now, client, method, txid, 401, "Unauthorized");
            return Err(());
        }
        let (Ok(user), Ok(realm), Ok(nonce)) = (msg.attribute::<Username>(), msg.attribute::<Realm>(), msg.attribute::<Nonce>()) else {
            self.scratch = Reply::error(method, txid, 400, "Bad Request").finish(None);
            return Err(());
        };
        if realm.realm() != self.config.credentials.realm() {
            self.challenge(now, client, method, txid, 401, "Unauthorized");
            return Err(());
        }
        if self.nonces.check(client.addr.ip(), nonce.nonce(), now.unix).is_err() {
            self.challenge(now, client, method, txid, 438, "Stale Nonce");
            return Err(());
        }
        let username = user.username().to_owned();
        let key = match self.config.credentials.key(&username, now.unix) {
            Ok(k) => k,
            Err(e) => {
                let detail = match e {
                    KeyError::Unknown => "unknown TURN username",
                    KeyError::Expired => "expired TURN credentials",
                };
                self.auth_failed(client, method, detail);
                self.challenge(now, client, method, txid, 401, "Unauthorized");
                return Err(());
            }
        };
        if !auth::verify(&key, data) {
            self.auth_failed(client, method, "wrong TURN password");
            self.challenge(now, client, method, txid, 401, "Unauthorized");
            return Err(());
        }
        Ok((username, key))
    }

    fn auth_failed(&mut self, client: Client, method: Method, detail: &str) {
        self.stats.auth_failures += 1;
        if method == ALLOCATE {
            self.stats.refused[AllocRefusal::Auth as usize] += 1;
        }
        self.report(client.addr.ip(), FailureKind::TurnAuth, format!("{detail} over {}", client.transport.as_str()));
    }

    pub(super) fn refuse_allocate(&mut self, why: AllocRefusal, txid: TransactionId, code: u16, reason: &str, key: &Key) -> Output<'_, R> {
        self.stats.refused[why as usize] += 1;
        self.reply(Reply::error(ALLOCATE, txid, code, reason), Some(key))
    }

    fn allocate(&mut self, now: Now, client: Client, sink: &C, msg: &Message<'_>, username: String, key: Key) -> Output<'_, R> {
        let txid = msg.transaction_id();
        if let Some(&id) = self.by_client.get(&client) {
            let a = &self.slots[&id].alloc;
            if a.txid == u128::from(txid) {
                self.scratch = allocate_success(a, client.addr, now, None);
                return Output::Reply(&self.scratch);
            }
            return self.refuse_allocate(AllocRefusal::BadRequest, txid, 437, "Allocation Mismatch", &key);
        }
        match msg.attribute::<RequestedTransport>() {
            Ok(t) if t.protocol() == UDP => {}
            Ok(_) => return self.refuse_allocate(AllocRefusal::Transport, txid, 442, "Unsupported Transport Protocol", &key),
            Err(_) => return self.refuse_allocate(AllocRefusal::BadRequest, txid, 400, "Bad Request", &key),
        }
        let token = msg.attribute::<ReservationToken>().ok().map(|t| t.token());
        if token.is_some() && (msg.has_attribute(EvenPort::TYPE) || msg.has_attribute(RequestedAddressFamily::TYPE)) {
            return self.refuse_allocate(AllocRefusal::BadRequest, txid, 400, "Bad Request", &key);
        }
        let wanted = msg.attribute::<RequestedAddressFamily>().map_or(AddressFamily::IPV4, |f| f.family());
        let Some(&(ip, advertised_ip)) = self.config.relay_ips.iter().find(|(ip, _)| family(*ip) == wanted) else {
            return self.refuse_allocate(AllocRefusal::Family, txid, 440, "Address Family not Supported", &key);
        };
        let limits = &self.config.limits;
        if self.slots.len() >= limits.max_allocations {
            return self.refuse_allocate(AllocRefusal::Capacity, txid, 508, "Insufficient Capacity", &key);
        }
        // Quota abuse goes to the guard like auth failures: a leaked credential or a flood from
        // one source ends in a ban, not in an allocation table full of it.
        let held = self.per_user.get(&username).copied().unwrap_or(0);
        if held >= limits.per_user {
            self.report(client.addr.ip(), FailureKind::RateLimited, format!("TURN allocation quota: {held} allocations for one user"));
            return self.refuse_allocate(AllocRefusal::UserQuota, txid, 486, "Allocation Quota Reached", &key);
        }
        let held = self.per_source.get(&client.addr.ip()).copied().unwrap_or(0);
        if held >= limits.per_source {
            self.report(client.addr.ip(), FailureKind::RateLimited, format!("TURN allocation quota: {held} allocations from this source"));
            return self.refuse_allocate(AllocRefusal::SourceQuota, txid, 486, "Allocation Quota Reached", &key);
        }
        let lifetime = self.granted_lifetime(msg.attribute::<Lifetime>().ok().map(|l| l.seconds()));
        let even = msg.attribute::<EvenPort>().ok();
        let pending = PendingAllocate { client, sink: sink.clone(), username, key, txid: txid.into(), lifetime, advertised_ip };
        if let Some(token) = token {
            if self.take_reservation(now, token, pending) {
                return Output::Reply(&self.scratch);
            }
            return self.refuse_allocate(AllocRefusal::BadRequest, txid, 508, "Insufficient Capacity", &key);
        }
        self.pending = Some(pending);
        let reserve = even.as_ref().is_some_and(|e| e.requested()) && self.reservations.len() < self.config.limits.max_allocations;
        Output::OpenRelay { ip, even_port: even.is_some(), reserve }
    }

    fn granted_lifetime(&self, requested: Option<u32>) -> Duration {
        let asked = requested.map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(u64::from(s)));
        asked.max(DEFAULT_LIFETIME).min(self.config.limits.max_lifetime)
    }

    fn refresh(&mut self, now: Now, id: u64, msg: &Message<'_>, key: &Key) -> Output<'_, R> {
        let txid = msg.transaction_id();
        let relay_family = family(self.slots[&id].alloc.relay.ip());
        if msg.attribute::<RequestedAddressFamily>().is_ok_and(|f| f.family() != relay_family) {
            return self.reply(Reply::error(REFRESH, txid, 443, "Peer Address Family Mismatch"), Some(key));
        }
        let requested = msg.attribute::<Lifetime>().ok().map(|l| l.seconds());
        let mut r = Reply::success(REFRESH, txid);
        if requested == Some(0) {
            self.remove(id, now, EndReason::Released);
            r.add(&Lifetime::new(0));
            return self.reply(r, Some(key));
        }
        let lifetime = self.granted_lifetime(requested);
        let a = &mut self.slots.get_mut(&id).expect("checked by the caller").alloc;
        a.expires = now.at + lifetime;
        r.add(&Lifetime::new(u32::try_from(lifetime.as_secs()).unwrap_or(u32::MAX)));
        self.reply(r, Some(key))
    }

    fn create_permission(&mut self, now: Now, id: u64, msg: &Message<'_>, key: &Key) -> Output<'_, R> {
        let txid = msg.transaction_id();
        let relay_family = family(self.slots[&id].alloc.relay.ip());
        let mut peers = Vec::new();
        while let Ok(p) = msg.nth_attribute::<XorPeerAddress>(peers.len()) {
            peers.push(p.addr(txid).ip());
            if peers.len() > self.config.limits.permissions {
                break;
            }
        }
        if peers.is_empty() {
            return self.reply(Reply::error(CREATE_PERMISSION, txid, 400, "Bad Request"), Some(key));
        }
        if peers.iter().any(|ip| family(*ip) != relay_family) {
            return self.reply(Reply::error(CREATE_PERMISSION, txid, 443, "Peer Address Family Mismatch"), Some(key));
        }
        for ip in &peers {
            if let Err(why) = self.config.policy.check_ip(*ip) {
                self.refuse_peer(why);
                tracing::debug!(peer = %ip, reason = why.as_str(), "turn: permission refused");
                return self.reply(Reply::error(CREATE_PERMISSION, txid, 403, "Forbidden"), Some(key));
            }
        }
        let max = self.config.limits.permissions;
        let a = &mut self.slots.get_mut(&id).expect("checked by the caller").alloc;
        if !peers.iter().all(|ip| a.permit(*ip, now.at, max)) {
            return self.reply(Reply::error(CREATE_PERMISSION, txid, 508, "Insufficient Capacity"), Some(key));
        }
        self.reply(Reply::success(CREATE_PERMISSION, txid), Some(key))
    }

    fn channel_bind(&mut self, now: Now, id: u64, msg: &Message<'_>, key: &Key) -> Output<'_, R> {
        let txid = msg.transaction_id();
        let (Ok(number), Ok(peer)) = (msg.attribute::<ChannelNumber>(), msg.attribute::<XorPeerAddress>()) else {
            tracing::debug!("turn: ChannelBind without a usable CHANNEL-NUMBER or XOR-PEER-ADDRESS");
            return self.reply(Reply::error(CHANNEL_BIND, txid, 400, "Bad Request"), Some(key));
        };
        let (number, peer) = (number.channel(), peer.addr(txid));
        // RFC 8656 narrowed channels to 0x4000-0x4FFF; RFC 5766 clients (coturn's among them) use up to 0x7FFF.
        if !(0x4000..=0x7fff).contains(&number) {
            tracing::debug!(number, "turn: ChannelBind with a channel number out of range");
            return self.reply(Reply::error(CHANNEL_BIND, txid, 400, "Bad Request"), Some(key));
        }
        if family(peer.ip()) != family(self.slots[&id].alloc.relay.ip()) {
            return self.reply(Reply::error(CHANNEL_BIND, txid, 443, "Peer Address Family Mismatch"), Some(key));
        }
        if let Err(why) = self.config.policy.check_peer(peer) {
            self.refuse_peer(why);
            tracing::debug!(%peer, reason = why.as_str(), "turn: channel refused");
            return self.reply(Reply::error(CHANNEL_BIND, txid, 403, "Forbidden"), Some(key));
        }
        let permissions = self.config.limits.permissions;
        let a = &mut self.slots.get_mut(&id).expect("checked by the caller").alloc;
        if let Err(why) = a.bind(number, peer, now.at, permissions) {
            tracing::debug!(number, %peer, why, "turn: ChannelBind refused");
            return self.reply(Reply::error(CHANNEL_BIND, txid, 400, "Bad Request"), Some(key));
        }
        if !a.permit(peer.ip(), now.at, permissions) {
            return self.reply(Reply::error(CHANNEL_BIND, txid, 508, "Insufficient Capacity"), Some(key));
        }
        self.reply(Reply::success(CHANNEL_BIND, txid), Some(key))
    }

    fn send_indication<'a>(&'a mut self, now: Now, client: Client, msg: &Message<'_>, data: &'a [u8]) -> Output<'a, R> {
        let Some(&id) = self.by_client.get(&client) else { return Output::Nothing };
        let Ok(peer) = msg.attribute::<XorPeerAddress>() else { return Output::Nothing };
        let peer = peer.addr(msg.transaction_id());
        let Some(payload) = value_of(msg, data, Data::TYPE) else { return Output::Nothing };
        if let Err(why) = self.config.policy.check_peer(peer) {
            self.refuse_peer(why);
            return Output::Nothing;
        }
        self.relay_to_peer(now, id, peer, payload)
    }

    fn channel_data<'a>(&'a mut self, now: Now, client: Client, data: &'a [u8]) -> Output<'a, R> {
        let Some(&id) = self.by_client.get(&client) else { return Output::Nothing };
        if data.len() < 4 {
            return Output::Nothing;
        }
        let number = u16::from_be_bytes([data[0], data[1]]);
        let len = usize::from(u16::from_be_bytes([data[2], data[3]]));
        let Some(payload) = data.get(4..4 + len) else { return Output::Nothing };
        let Some(peer) = self.slots[&id].alloc.channel_by_number(number, now.at).map(|c| c.peer) else { return Output::Nothing };
        self.relay_to_peer(now, id, peer, payload)
    }

    fn relay_to_peer<'a>(&'a mut self, now: Now, id: u64, peer: SocketAddr, payload: &'a [u8]) -> Output<'a, R> {
        let slot = self.slots.get_mut(&id).expect("looked up by the caller");
        if !admit(&mut slot.alloc, &mut self.stats, peer.ip(), payload.len(), Direction::ToPeer, now) {
            return Output::Nothing;
        }
        Output::ToPeer { relay: &slot.relay_handle, peer, data: payload }
    }
}

/// Comprehension-required attributes this server does not know, if any.
fn unknown_attributes(msg: &Message<'_>) -> Option<Vec<AttributeType>> {
    let unknown: Vec<AttributeType> = msg
        .iter_attributes()
        .map(|(_, a)| a.get_type())
        .filter(|t| t.comprehension_required() && !KNOWN.contains(&t.value()))
        .collect();
    (!unknown.is_empty()).then_some(unknown)
}
