//! Digest authentication (RFC 3261, 7616, 8760).

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

/// HA1 = H(user:realm:password), lowercase hex.
pub fn ha1(algorithm: Algorithm, user: &str, realm: &str, password: &str) -> String {
    let input = format!("{user}:{realm}:{password}");
    match algorithm {
        Algorithm::Md5 => hex::encode(Md5::digest(input.as_bytes())),
        Algorithm::Sha256 => hex::encode(Sha256::digest(input.as_bytes())),
    }
}
