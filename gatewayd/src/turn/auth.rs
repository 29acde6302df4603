//! TURN long-term credential authentication (RFC 8489 9.2): which key a username has (static
//! users, or REST-scheme usernames checked against the shared secret and the clock), stateless
//! nonces bound to the client's address, and MESSAGE-INTEGRITY computed and checked with a key
//! (the STUN codec only takes plaintext passwords, and static users are stored as key_md5).

use std::collections::HashMap;
use std::net::IpAddr;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::credentials::{self, Key};
use crate::profile::Turn;

/// How long a nonce is good for; then the client gets 438 and retries with a fresh one.
pub const NONCE_LIFETIME_SECS: u64 = 3600;

/// Why a username has no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    Unknown,
    Expired,
}

/// Everything needed to find a user's key.
#[derive(Clone)]
pub struct Credentials {
    realm: String,
    secret: Option<Vec<u8>>,
    users: HashMap<String, Key>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("realm", &self.realm).field("users", &self.users.len()).finish_non_exhaustive()
    }
}

impl Credentials {
    /// `secret` is the shared secret already read (inline or from `shared_secret_file`).
    pub fn new(turn: &Turn, secret: Option<Vec<u8>>) -> Self {
        let users = turn
            .users
            .iter()
            .filter_map(|u| {
                let key = match (&u.key_md5, &u.password) {
                    (Some(hex), _) => credentials::parse_key_md5(hex)?,
                    (None, Some(pw)) => credentials::long_term_key(&u.username, &turn.realm, pw),
                    (None, None) => return None,
                };
                Some((u.username.clone(), key))
            })
            .collect();
        Self { realm: turn.realm.clone(), secret, users }
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    /// The key for `username` at unix time `now_unix`. Static users win over the REST scheme.
    pub fn key(&self, username: &str, now_unix: u64) -> Result<Key, KeyError> {
        if let Some(k) = self.users.get(username) {
            return Ok(*k);
        }
        let (Some(secret), Some(expiry)) = (&self.secret, credentials::rest_expiry(username)) else {
            return Err(KeyError::Unknown);
        };
        if expiry < now_unix {
            return Err(KeyError::Expired);
        }
        let password = credentials::rest_password(secret, username);
        Ok(credentials::long_term_key(username, &self.realm, &password))
    }
}

/// Issues and checks nonces without keeping state per client: expiry and a MAC over the expiry
/// and the client's address.
#[derive(Clone)]
pub struct Nonces {
    mac: Hmac<Sha256>,
}

impl Nonces {
    pub fn new(secret: &[u8; 32]) -> Self {
        Self { mac: Hmac::new_from_slice(secret).expect("HMAC takes any key length") }
    }

    pub fn issue(&self, client: IpAddr, now_unix: u64) -> String {
        let expiry = now_unix + NONCE_LIFETIME_SECS;
        format!("{expiry:x}-{}", hex::encode(self.tag(client, expiry)))
    }

    /// `Ok` for a nonce this server issued to `client` that has not expired; `Err(true)` when it
    /// is ours but stale (the client should retry), `Err(false)` when it is not ours at all.
    pub fn check(&self, client: IpAddr, nonce: &str, now_unix: u64) -> Result<(), bool> {
        let Some((expiry, tag)) = nonce.split_once('-') else { return Err(false) };
        let Ok(expiry) = u64::from_str_radix(expiry, 16) else { return Err(false) };
        let Ok(tag) = hex::decode(tag) else { return Err(false) };
        if !bool::from(self.tag(client, expiry).ct_eq(&tag)) {
            return Err(false);
        }
        if expiry < now_unix {
            return Err(true);
        }
        Ok(())
    }

    fn tag(&self, client: IpAddr, expiry: u64) -> [u8; 12] {
        let mut mac = self.mac.clone();
        mac.update(&expiry.to_be_bytes());
        match client {
            IpAddr::V4(a) => mac.update(&a.octets()),
            IpAddr::V6(a) => mac.update(&a.octets()),
        }
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; 12];
        out.copy_from_slice(&full[..12]);
        out
    }
}

const MESSAGE_INTEGRITY: u16 = 0x0008;
const HEADER: usize = 20;
const INTEGRITY_ATTR: usize = 24;

/// The HMAC-SHA1 MESSAGE-INTEGRITY value of `head` (the message up to where the attribute goes),
/// with the header length counting the attribute as RFC 8489 14.5 says.
pub fn integrity(key: &Key, head: &[u8]) -> [u8; 20] {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
    let length = (head.len() - HEADER + INTEGRITY_ATTR) as u16;
    mac.update(&head[..2]);
    mac.update(&length.to_be_bytes());
    mac.update(&head[4..]);
    mac.finalize().into_bytes().into()
}

/// Checks the MESSAGE-INTEGRITY of a parsed message's bytes against `key`. False when absent.
pub fn verify(key: &Key, data: &[u8]) -> bool {
    let Some(offset) = integrity_offset(data) else { return false };
    let expected = integrity(key, &data[..offset]);
    bool::from(expected.ct_eq(&data[offset + 4..offset + INTEGRITY_ATTR]))
}

/// Where the MESSAGE-INTEGRITY attribute starts, walking the attributes of a well-formed message.
fn integrity_offset(data: &[u8]) -> Option<usize> {
    let mut at = HEADER;
    while at + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[at], data[at + 1]]);
        let len = usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
        if kind == MESSAGE_INTEGRITY {
            return (len == 20 && at + INTEGRITY_ATTR <= data.len()).then_some(at);
        }
        at += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{PortRange, TurnUser};

    fn turn(users: Vec<TurnUser>) -> Turn {
        Turn {
            listen_udp: vec![],
            listen_tcp: vec![],
            listen_tls: vec![],
            realm: "r".into(),
            shared_secret_file: None,
            shared_secret: None,
            credential_lifetime: crate::profile::Duration::secs(60),
            users,
            relay_ports: PortRange::new(1, 2),
            allowed_peers: vec![],
            denied_peers: vec![],
            limits: Default::default(),
        }
    }

    #[test]
    fn rest_usernames_need_the_secret_and_a_future_expiry() {
        let c = Credentials::new(&turn(vec![]), Some(b"s".to_vec()));
        let pw = credentials::rest_password(b"s", "2000:5001");
        assert_eq!(c.key("2000:5001", 1000), Ok(credentials::long_term_key("2000:5001", "r", &pw)));
        assert_eq!(c.key("2000:5001", 2001), Err(KeyError::Expired));
        assert_eq!(c.key("alice", 1000), Err(KeyError::Unknown));
        let none = Credentials::new(&turn(vec![]), None);
        assert_eq!(none.key("2000:5001", 1000), Err(KeyError::Unknown));
    }

    #[test]
    fn static_users_by_key_or_lab_password() {
        let key = credentials::long_term_key("bob", "r", "pw");
        let users = vec![
            TurnUser { username: "alice".into(), key_md5: Some(hex::encode(key)), password: None },
            TurnUser { username: "bob".into(), key_md5: None, password: Some("pw".into()) },
        ];
        let c = Credentials::new(&turn(users), None);
        assert_eq!(c.key("alice", 0), Ok(key));
        assert_eq!(c.key("bob", 0), Ok(key));
    }

    #[test]
    fn nonces_are_bound_to_the_client_and_expire() {
        let n = Nonces::new(&[7; 32]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let nonce = n.issue(a, 100);
        assert_eq!(n.check(a, &nonce, 100), Ok(()));
        assert_eq!(n.check("192.0.2.2".parse().unwrap(), &nonce, 100), Err(false));
        assert_eq!(n.check(a, &nonce, 100 + NONCE_LIFETIME_SECS + 1), Err(true));
        assert_eq!(n.check(a, "garbage", 100), Err(false));
        assert_eq!(Nonces::new(&[8; 32]).check(a, &nonce, 100), Err(false));
    }
}
