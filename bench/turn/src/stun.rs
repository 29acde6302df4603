//! The few STUN/TURN messages a relay client needs (RFC 8489, RFC 8656), hand-encoded: requests
//! with long-term credentials, the answers' attributes the client reads, and ChannelData
//! framing. Nothing here allocates per packet once the buffers are warm.

use std::net::{Ipv4Addr, SocketAddrV4};

use base64::Engine;
use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use sha1::Sha1;

pub const MAGIC: u32 = 0x2112_A442;

pub const ALLOCATE: u16 = 0x003;
pub const REFRESH: u16 = 0x004;
pub const DATA: u16 = 0x007;
pub const CREATE_PERMISSION: u16 = 0x008;
pub const CHANNEL_BIND: u16 = 0x009;

pub const CLASS_REQUEST: u16 = 0x000;
pub const CLASS_INDICATION: u16 = 0x010;
pub const CLASS_SUCCESS: u16 = 0x100;
pub const CLASS_ERROR: u16 = 0x110;

const A_USERNAME: u16 = 0x0006;
const A_MESSAGE_INTEGRITY: u16 = 0x0008;
const A_ERROR_CODE: u16 = 0x0009;
const A_CHANNEL_NUMBER: u16 = 0x000C;
const A_LIFETIME: u16 = 0x000D;
const A_XOR_PEER_ADDRESS: u16 = 0x0012;
const A_DATA: u16 = 0x0013;
const A_REALM: u16 = 0x0014;
const A_NONCE: u16 = 0x0015;
const A_XOR_RELAYED_ADDRESS: u16 = 0x0016;
const A_REQUESTED_TRANSPORT: u16 = 0x0019;

/// TURN REST API credentials (draft-uberti-behave-turn-rest): username `<expiry>:<name>`,
/// password base64(HMAC-SHA1(secret, username)); returns the long-term key
/// MD5(username:realm:password) that signs every request.
pub fn rest_credentials(secret: &str, expiry_unix: u64, name: &str, realm: &str) -> (String, [u8; 16]) {
    let username = format!("{expiry_unix}:{name}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let key = long_term_key(&username, realm, &password);
    (username, key)
}

pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    let mut h = Md5::new();
    h.update(format!("{username}:{realm}:{password}").as_bytes());
    h.finalize().into()
}

/// Builds one request in `out`.
pub struct Builder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Builder<'a> {
    pub fn new(out: &'a mut Vec<u8>, method: u16, class: u16, txid: &[u8; 12]) -> Self {
        out.clear();
        out.extend_from_slice(&(method | class).to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(txid);
        Builder { out }
    }

    fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&kind.to_be_bytes());
        self.out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        self.out.extend_from_slice(value);
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
        self.set_len();
        self
    }

    fn set_len(&mut self) {
        let len = (self.out.len() - 20) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
    }

    pub fn requested_transport_udp(&mut self) -> &mut Self {
        self.attr(A_REQUESTED_TRANSPORT, &[17, 0, 0, 0])
    }

    pub fn lifetime(&mut self, secs: u32) -> &mut Self {
        self.attr(A_LIFETIME, &secs.to_be_bytes())
    }

    pub fn channel_number(&mut self, ch: u16) -> &mut Self {
        let mut v = [0u8; 4];
        v[..2].copy_from_slice(&ch.to_be_bytes());
        self.attr(A_CHANNEL_NUMBER, &v)
    }

    pub fn xor_peer_address(&mut self, a: SocketAddrV4) -> &mut Self {
        let v = xor_address(a);
        self.attr(A_XOR_PEER_ADDRESS, &v)
    }

    /// USERNAME, REALM, NONCE, then MESSAGE-INTEGRITY over everything before it.
    pub fn sign(&mut self, username: &str, realm: &[u8], nonce: &[u8], key: &[u8; 16]) {
        self.attr(A_USERNAME, username.as_bytes());
        self.attr(A_REALM, realm);
        self.attr(A_NONCE, nonce);
        // The length field covers MESSAGE-INTEGRITY itself while the HMAC is computed.
        let len = (self.out.len() - 20 + 24) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("any key length");
        mac.update(self.out);
        let tag = mac.finalize().into_bytes();
        self.attr(A_MESSAGE_INTEGRITY, &tag);
    }
}

fn xor_address(a: SocketAddrV4) -> [u8; 8] {
    let mut v = [0u8; 8];
    v[1] = 0x01; // IPv4
    v[2..4].copy_from_slice(&(a.port() ^ (MAGIC >> 16) as u16).to_be_bytes());
    v[4..8].copy_from_slice(&(u32::from(*a.ip()) ^ MAGIC).to_be_bytes());
    v
}

fn parse_xor_address(v: &[u8]) -> Option<SocketAddrV4> {
    if v.len() < 8 || v[1] != 0x01 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    let ip = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
    Some(SocketAddrV4::new(Ipv4Addr::from(ip), port))
}

/// What the client reads from a STUN message it received.
#[derive(Default)]
pub struct Message<'a> {
    pub method: u16,
    pub class: u16,
    pub txid: [u8; 12],
    pub error: Option<u16>,
    pub realm: Option<&'a [u8]>,
    pub nonce: Option<&'a [u8]>,
    pub relayed: Option<SocketAddrV4>,
    pub peer: Option<SocketAddrV4>,
    pub lifetime: Option<u32>,
    pub data: Option<&'a [u8]>,
}

/// Parses a STUN message (`b` holds exactly one); None when it is not one.
pub fn parse(b: &[u8]) -> Option<Message<'_>> {
    if b.len() < 20 || b[0] & 0xC0 != 0 || u32::from_be_bytes([b[4], b[5], b[6], b[7]]) != MAGIC {
        return None;
    }
    let t = u16::from_be_bytes([b[0], b[1]]);
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if b.len() < 20 + len {
        return None;
    }
    let mut m = Message { class: t & 0x110, method: t & !0x110, ..Default::default() };
    m.txid.copy_from_slice(&b[8..20]);
    let mut at = 20;
    while at + 4 <= 20 + len {
        let kind = u16::from_be_bytes([b[at], b[at + 1]]);
        let l = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
        let v = b.get(at + 4..at + 4 + l)?;
        match kind {
            A_ERROR_CODE if l >= 4 => m.error = Some(u16::from(v[2] & 7) * 100 + u16::from(v[3])),
            A_REALM => m.realm = Some(v),
            A_NONCE => m.nonce = Some(v),
            A_XOR_RELAYED_ADDRESS => m.relayed = parse_xor_address(v),
            A_XOR_PEER_ADDRESS => m.peer = parse_xor_address(v),
            A_LIFETIME if l == 4 => m.lifetime = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            A_DATA => m.data = Some(v),
            _ => {}
        }
        at += 4 + (l + 3) / 4 * 4;
    }
    Some(m)
}

/// Length of the first frame in a TCP stream buffer (STUN message or ChannelData, padded to 4
/// bytes on streams), or None while it is incomplete.
pub fn stream_frame_len(b: &[u8]) -> Option<usize> {
    if b.len() < 4 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let total = if b[0] & 0xC0 == 0x40 { 4 + (len + 3) / 4 * 4 } else { 20 + len };
    (b.len() >= total).then_some(total)
}

/// ChannelData header for `len` payload bytes.
pub fn channel_header(ch: u16, len: usize) -> [u8; 4] {
    let mut h = [0u8; 4];
    h[..2].copy_from_slice(&ch.to_be_bytes());
    h[2..].copy_from_slice(&(len as u16).to_be_bytes());
    h
}

/// (channel, payload) of a ChannelData message.
pub fn parse_channel_data(b: &[u8]) -> Option<(u16, &[u8])> {
    if b.len() < 4 || b[0] & 0xC0 != 0x40 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    Some((u16::from_be_bytes([b[0], b[1]]), b.get(4..4 + len)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_coturn_scheme() {
        // echo -n "1700000000:bench" | openssl dgst -sha1 -hmac lab-turn-secret -binary | base64
        let (user, key) = rest_credentials("lab-turn-secret", 1_700_000_000, "bench", "gatewayd-lab");
        assert_eq!(user, "1700000000:bench");
        assert_eq!(key, long_term_key(&user, "gatewayd-lab", "Fb6tIjUgJMFYrTxJTHvXk2FtypU="));
    }

    #[test]
    fn signed_request_round_trips() {
        let mut out = Vec::new();
        let key = long_term_key("u", "r", "p");
        let peer = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 40000);
        Builder::new(&mut out, CHANNEL_BIND, CLASS_REQUEST, &[7; 12]).channel_number(0x4001).xor_peer_address(peer).sign("u", b"r", b"n", &key);
        assert_eq!(out.len() % 4, 0);
        let m = parse(&out).unwrap();
        assert_eq!((m.method, m.class, m.peer), (CHANNEL_BIND, CLASS_REQUEST, Some(peer)));
        assert_eq!(m.realm, Some(&b"r"[..]));
        assert_eq!(stream_frame_len(&out), Some(out.len()));
    }
}
