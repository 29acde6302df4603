//! Click-to-dial tokens: a CRM signs "this agent may call this number until then" with the
//! profile's shared secret, and the gateway checks the signature before placing the call.
//!
//! Token format (header `upstream.outbound.token_header`): `EXPIRES.SIGNATURE` where EXPIRES
//! is a Unix time in seconds and SIGNATURE is hex HMAC-SHA256(secret, "DN:DESTINATION:EXPIRES").

use hmac::{KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token expires too far ahead")]
    TooLong,
    #[error("token signature does not match")]
    BadSignature,
}

/// The signature a CRM computes (also used by tests and tools).
pub fn sign(secret: &[u8], dn: &str, destination: &str, expires: u64) -> String {
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{dn}:{destination}:{expires}").as_bytes());
    format!("{expires}.{}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks `token` for a call from `dn` to `destination` at `now_secs`.
pub fn verify(secret: &[u8], token: Option<&str>, dn: &str, destination: &str, now_secs: u64, max_age_secs: u64) -> Result<(), TokenError> {
    let token = token.ok_or(TokenError::Missing)?.trim();
    let (expires, _) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let expires: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
    if expires < now_secs {
        return Err(TokenError::Expired);
    }
    if expires - now_secs > max_age_secs {
        return Err(TokenError::TooLong);
    }
    let expected = sign(secret, dn, destination, expires);
    if expected.as_bytes().ct_eq(token.as_bytes()).into() {
        Ok(())
    } else {
        Err(TokenError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_agent_destination_and_time() {
        let t = sign(b"s3cret", "5001", "5551234", 1_000_100);
        assert_eq!(verify(b"s3cret", Some(&t), "5001", "5551234", 1_000_000, 300), Ok(()));
        assert_eq!(verify(b"s3cret", Some(&t), "5002", "5551234", 1_000_000, 300), Err(TokenError::BadSignature));
        assert_eq!(verify(b"s3cret", Some(&t), "5001", "5559999", 1_000_000, 300), Err(TokenError::BadSignature));
        assert_eq!(verify(b"other", Some(&t), "5001", "5551234", 1_000_000, 300), Err(TokenError::BadSignature));
        assert_eq!(verify(b"s3cret", Some(&t), "5001", "5551234", 1_000_101, 300), Err(TokenError::Expired));
        assert_eq!(verify(b"s3cret", Some(&t), "5001", "5551234", 1_000_000, 50), Err(TokenError::TooLong));
        assert_eq!(verify(b"s3cret", None, "5001", "5551234", 1_000_000, 300), Err(TokenError::Missing));
        assert_eq!(verify(b"s3cret", Some("junk"), "5001", "5551234", 1_000_000, 300), Err(TokenError::Malformed));
    }
}
