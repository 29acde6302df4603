//! TURN credentials: the TURN REST API scheme (ephemeral usernames `<expiry>:<DN>` whose password
//! is an HMAC of the username under a shared secret, as coturn's `use-auth-secret`), long-term
//! credential keys (RFC 8489 9.2.2), and the TURN URIs the profile's listeners offer.
//! Pure functions: the clock is an argument.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest, Md5};
use serde::Serialize;
use sha1::Sha1;

use crate::profile::{LoadedProfile, Profile};

/// A long-term credential key: MD5(username ":" realm ":" password).
pub type Key = [u8; 16];

/// Credentials handed to one logged-in agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Minted {
    pub username: String,
    pub password: String,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
    pub uris: Vec<String>,
}

/// The REST-scheme password for `username`: base64(HMAC-SHA1(secret, username)).
pub fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials for `dn` valid `ttl_secs` from `now_unix`.
pub fn mint(secret: &[u8], dn: &str, now_unix: u64, ttl_secs: u64, uris: Vec<String>) -> Minted {
    let username = format!("{}:{dn}", now_unix.saturating_add(ttl_secs));
    let password = rest_password(secret, &username);
    Minted { username, password, ttl: ttl_secs, uris }
}

/// The expiry (unix seconds) a REST-scheme username carries: `<expiry>` or `<expiry>:<anything>`.
pub fn rest_expiry(username: &str) -> Option<u64> {
    let head = username.split_once(':').map_or(username, |(t, _)| t);
    if head.is_empty() || head.len() > 20 || !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    head.parse().ok()
}

/// The long-term credential key for a username, realm and password.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Key {
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The shared secret for REST-scheme credentials: inline (lab mode) or read from
/// `shared_secret_file` (trailing whitespace trimmed; a relative path is next to the profile,
/// whatever the daemon's working directory). `None` when the profile names neither.
pub fn shared_secret(loaded: &LoadedProfile) -> std::io::Result<Option<Vec<u8>>> {
    let Some(turn) = &loaded.profile.turn else { return Ok(None) };
    if let Some(inline) = &turn.shared_secret {
        return Ok(Some(inline.as_bytes().to_vec()));
    }
    let Some(path) = &turn.shared_secret_file else { return Ok(None) };
    let path = loaded.resolve(path);
    let text = std::fs::read(&path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let end = text.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(0, |i| i + 1);
    Ok(Some(text[..end].to_vec()))
}

/// Parses a hex `key_md5` from the profile.
pub fn parse_key_md5(hex_key: &str) -> Option<Key> {
    let bytes = hex::decode(hex_key.trim()).ok()?;
    bytes.try_into().ok()
}

/// Every TURN URI the profile's listeners offer, with the address browsers are told.
/// `names` are the TLS names (a `turns:` URI must name a host the certificate covers).
pub fn uris(profile: &Profile) -> Vec<String> {
    let Some(turn) = &profile.turn else { return Vec::new() };
    let host = |a: &SocketAddr| -> String {
        let ip = profile.public.advertised(a.ip());
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    };
    let tls_host = |a: &SocketAddr| -> String {
        profile.tls.names.iter().find(|n| n.parse::<IpAddr>().is_err()).cloned().unwrap_or_else(|| host(a))
    };
    let mut out = Vec::new();
    for a in &turn.listen_udp {
        out.push(format!("turn:{}:{}?transport=udp", host(a), a.port()));
    }
    for a in &turn.listen_tcp {
        out.push(format!("turn:{}:{}?transport=tcp", host(a), a.port()));
    }
    for a in &turn.listen_tls {
        out.push(format!("turns:{}:{}?transport=tcp", tls_host(a), a.port()));
    }
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_password_matches_the_coturn_scheme() {
        // echo -n "1700000000:5001" | openssl dgst -sha1 -hmac "lab-turn-secret" -binary | base64
        assert_eq!(rest_password(b"lab-turn-secret", "1700000000:5001"), "0wUDdPqio5RBFchUilwzNu2nq+0=");
    }

    #[test]
    fn minted_usernames_carry_their_expiry() {
        let m = mint(b"s", "5001", 1_000, 600, vec![]);
        assert_eq!(m.username, "1600:5001");
        assert_eq!(rest_expiry(&m.username), Some(1600));
        assert_eq!(m.password, rest_password(b"s", "1600:5001"));
        assert_eq!(rest_expiry("1600"), Some(1600));
        assert_eq!(rest_expiry("alice"), None);
        assert_eq!(rest_expiry(":5001"), None);
        assert_eq!(rest_expiry("99999999999999999999999:x"), None);
    }

    #[test]
    fn long_term_key_is_md5_of_user_realm_password() {
        // echo -n user:realm:pass | md5sum
        assert_eq!(hex::encode(long_term_key("user", "realm", "pass")), "8493fbc53ba582fb4c044c456bdc40eb");
        assert_eq!(parse_key_md5("8493fbc53ba582fb4c044c456bdc40eb"), Some(long_term_key("user", "realm", "pass")));
        assert_eq!(parse_key_md5("zz"), None);
    }
}
