//! Building the messages the TURN server sends: responses with MESSAGE-INTEGRITY (from a key)
//! and FINGERPRINT, and Data indications and ChannelData toward clients.

use std::net::SocketAddr;

use turn_types::attribute::{Data, XorPeerAddress};
use turn_types::message::DATA;
use turn_types::stun::attribute::{AttributeWrite, ErrorCode, Software};
use turn_types::stun::message::{Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId};

use super::auth;
use super::credentials::Key;

const SOFTWARE: &str = "gatewayd";
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// A response being built.
pub struct Reply {
    w: MessageWriteVec,
}

impl Reply {
    pub fn success(method: Method, txid: TransactionId) -> Self {
        Self::new(MessageClass::Success, method, txid)
    }

    pub fn error(method: Method, txid: TransactionId, code: u16, reason: &str) -> Self {
        let mut r = Self::new(MessageClass::Error, method, txid);
        if let Ok(e) = ErrorCode::builder(code).reason(reason).build() {
            r.add(&e);
        }
        r
    }

    fn new(class: MessageClass, method: Method, txid: TransactionId) -> Self {
        let w = Message::builder(MessageType::from_class_method(class, method), txid, MessageWriteVec::with_capacity(128));
        let mut r = Self { w };
        if let Ok(s) = Software::new(SOFTWARE) {
            r.add(&s);
        }
        r
    }

    /// Adds an attribute; one that does not fit is left out (the builders only add small ones).
    pub fn add(&mut self, attr: &dyn AttributeWrite) -> &mut Self {
        let _ = self.w.add_attribute(attr);
        self
    }

    /// The finished message, signed with `key` when given, with a FINGERPRINT.
    pub fn finish(self, key: Option<&Key>) -> Vec<u8> {
        let mut data = self.w.finish();
        if let Some(key) = key {
            let hmac = auth::integrity(key, &data);
            push_attr(&mut data, 0x0008, &hmac);
        }
        let crc = fingerprint_of(&data);
        push_attr(&mut data, 0x8028, &crc.to_be_bytes());
        data
    }
}

fn push_attr(data: &mut Vec<u8>, kind: u16, value: &[u8]) {
    data.extend_from_slice(&kind.to_be_bytes());
    data.extend_from_slice(&(value.len() as u16).to_be_bytes());
    data.extend_from_slice(value);
    let length = (data.len() - 20) as u16;
    data[2..4].copy_from_slice(&length.to_be_bytes());
}

/// CRC-32 of the message with the header length already counting the FINGERPRINT attribute.
fn fingerprint_of(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    let length = (data.len() - 20 + 8) as u16;
    h.update(&data[..2]);
    h.update(&length.to_be_bytes());
    h.update(&data[4..]);
    h.finalize() ^ FINGERPRINT_XOR
}

/// A Data indication carrying `payload` from `peer`, written into `out`.
/// Indications need no unique transaction ID; the caller's counter is enough.
pub fn data_indication(out: &mut Vec<u8>, txid: u128, peer: SocketAddr, payload: &[u8]) {
    let txid = TransactionId::from(txid);
    let mut w = Message::builder(MessageType::from_class_method(MessageClass::Indication, DATA), txid, MessageWriteVec::with_capacity(payload.len() + 48));
    let _ = w.add_attribute(&XorPeerAddress::new(peer, txid));
    let _ = w.add_attribute(&Data::new(payload));
    out.clear();
    out.extend_from_slice(&w.finish());
}

/// ChannelData framing (RFC 8656 12.4); over TCP the message is padded to a multiple of four.
pub fn channel_data(out: &mut Vec<u8>, channel: u16, payload: &[u8], padded: bool) {
    out.clear();
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    if padded {
        out.resize(out.len().div_ceil(4) * 4, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn_types::stun::attribute::{AttributeStaticType, Fingerprint, MessageIntegrity};
    use turn_types::stun::message::{LongTermCredentials, MessageIntegrityCredentials, BINDING};

    #[test]
    fn responses_are_signed_and_fingerprinted_as_the_codec_expects() {
        let key = super::super::credentials::long_term_key("u", "r", "p");
        let txid = TransactionId::generate();
        let bytes = Reply::success(BINDING, txid).finish(Some(&key));
        let msg = Message::from_bytes(&bytes).expect("parses");
        assert!(msg.has_attribute(MessageIntegrity::TYPE));
        assert!(msg.has_attribute(Fingerprint::TYPE));
        let creds: MessageIntegrityCredentials = LongTermCredentials::new("u".into(), "p".into()).to_key("r".into()).into();
        msg.validate_integrity(&creds).expect("the codec accepts our integrity");
        assert!(auth::verify(&key, &bytes));
        let other = super::super::credentials::long_term_key("u", "r", "q");
        assert!(!auth::verify(&other, &bytes));
    }

    #[test]
    fn channel_data_is_padded_only_for_streams() {
        let mut out = Vec::new();
        channel_data(&mut out, 0x4001, b"abcde", false);
        assert_eq!(out, [0x40, 0x01, 0, 5, b'a', b'b', b'c', b'd', b'e']);
        channel_data(&mut out, 0x4001, b"abcde", true);
        assert_eq!(out.len(), 12);
    }
}
