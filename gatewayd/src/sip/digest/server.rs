//! Server side of Digest: challenges and verification against stored HA1 values.
//!
//! Unknown users and wrong passwords get the same answer after the same work: the digest is
//! computed against a dummy HA1 when the user does not exist, and compared in constant time.
//! The reason is still told apart in `AuthFailure` for the ban engine, never on the wire.

use super::nonce::{CountCheck, NonceCheck, NonceCounts, NonceKey};
use super::{request_digest, Algorithm, AuthParams};
use crate::sip::message::response_to;
use rand::Rng;
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};
use std::borrow::Borrow;
use subtle::ConstantTimeEq;

/// Longest username reported in an `AuthFailure` (the value comes from the attacker).
const MAX_REPORTED_USER: usize = 64;

/// Settings of the Digest server.
#[derive(Debug, Clone)]
pub struct DigestConfig {
    pub realm: String,
    /// Key for nonce authentication; keep it across restarts to keep nonces valid.
    pub secret: Vec<u8>,
    /// How long a nonce stays usable before a `stale=true` challenge.
    pub nonce_lifetime_ms: u64,
    /// Nonces whose nonce-count is remembered at once (bounds memory).
    pub max_tracked_nonces: usize,
    pub opaque: Option<String>,
    /// Algorithms offered, one challenge each, in this order of preference. Clients that
    /// read only the first challenge and know only MD5 (JsSIP 3.x, SIP.js 0.21: both abort on
    /// any other algorithm) need MD5 first, or alone.
    pub algorithms: Vec<Algorithm>,
    /// Challenge with 407/Proxy-Authenticate instead of 401/WWW-Authenticate.
    pub proxy: bool,
}

impl DigestConfig {
    /// Defaults: nonces live 5 minutes, 10 000 tracked, SHA-256 offered before MD5, no opaque.
    pub fn new(realm: impl Into<String>, secret: impl Into<Vec<u8>>) -> Self {
        DigestConfig {
            realm: realm.into(),
            secret: secret.into(),
            nonce_lifetime_ms: 300_000,
            max_tracked_nonces: 10_000,
            opaque: None,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
            proxy: false,
        }
    }
}

/// A user's stored secrets: HA1 = H(user:realm:password) in hex, one per algorithm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredentials {
    pub ha1_md5: String,
    pub ha1_sha256: String,
}

impl StoredCredentials {
    pub fn from_password(user: &str, realm: &str, password: &str) -> Self {
        StoredCredentials {
            ha1_md5: super::ha1(Algorithm::Md5, user, realm, password),
            ha1_sha256: super::ha1(Algorithm::Sha256, user, realm, password),
        }
    }

    fn for_algorithm(&self, algorithm: Algorithm) -> &str {
        match algorithm {
            Algorithm::Md5 => &self.ha1_md5,
            Algorithm::Sha256 => &self.ha1_sha256,
        }
    }
}

/// Why an authentication attempt failed, for the ban engine and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    UnknownUser,
    WrongPassword,
    /// A nonce-count not above one already used: a replayed request.
    Replay,
    MalformedCredentials,
    UnsupportedAlgorithm,
    /// The digest `uri` does not name the Request-URI.
    UriMismatch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailure {
    /// The username as claimed (sanitised, truncated); empty when none was given.
    pub user: String,
    pub reason: FailureReason,
}

/// The outcome of checking a request's credentials, and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Authenticated {
        user: String,
    },
    /// Answer 401/407 with fresh challenges.
    Challenge {
        stale: bool,
        failure: Option<AuthFailure>,
    },
    /// Answer 403: the credentials are wrong (or the user does not exist).
    Forbidden {
        failure: AuthFailure,
    },
    /// Answer 400: the credentials cannot be evaluated.
    BadRequest {
        reason: String,
        failure: AuthFailure,
    },
}

impl Verdict {
    /// The status code to answer with; `None` when the request may proceed.
    pub fn status_code(&self, proxy: bool) -> Option<u16> {
        match self {
            Verdict::Authenticated { .. } => None,
            Verdict::Challenge { .. } => Some(if proxy { 407 } else { 401 }),
            Verdict::Forbidden { .. } => Some(403),
            Verdict::BadRequest { .. } => Some(400),
        }
    }

    /// The failure to report to the ban engine, if this attempt counts as one.
    pub fn failure(&self) -> Option<&AuthFailure> {
        match self {
            Verdict::Authenticated { .. } => None,
            Verdict::Challenge { failure, .. } => failure.as_ref(),
            Verdict::Forbidden { failure } | Verdict::BadRequest { failure, .. } => Some(failure),
        }
    }
}

/// Issues challenges and verifies credentials. Holds the bounded nonce-count map, nothing else.
pub struct DigestServer {
    config: DigestConfig,
    key: NonceKey,
    counts: NonceCounts,
    dummy: StoredCredentials,
}

impl DigestServer {
    pub fn new(config: DigestConfig) -> Self {
        let key = NonceKey::new(&config.secret);
        // A per-secret dummy nobody can know the password of; only its cost matters.
        let dummy_password = hex::encode(key_digest(&config.secret));
        let dummy = StoredCredentials::from_password("\u{0}", &config.realm, &dummy_password);
        let counts = NonceCounts::new(config.max_tracked_nonces);
        DigestServer {
            config,
            key,
            counts,
            dummy,
        }
    }

    pub fn config(&self) -> &DigestConfig {
        &self.config
    }

    /// Takes new settings (profile reload) without forgetting which nonce-counts were used:
    /// a new `DigestServer` would accept one replay of each still-fresh request. The count map
    /// keeps its entries when it shrinks (it evicts down to the new size on the next insert).
    pub fn set_config(&mut self, config: DigestConfig) {
        let counts = std::mem::replace(&mut self.counts, NonceCounts::new(1));
        *self = DigestServer::new(config);
        self.counts = counts;
        self.counts.set_capacity(self.config.max_tracked_nonces);
    }

    /// Forgets the nonce-counts of nonces past their lifetime (they are refused by age anyway).
    /// Called on a slow tick, so that the memory a burst of logins took is given back when the
    /// gateway goes quiet, not only at the next authenticated request.
    pub fn purge_expired(&mut self, now_ms: u64) {
        self.counts.purge_expired(now_ms, self.config.nonce_lifetime_ms);
    }

    /// Nonces currently tracked for replay detection.
    pub fn tracked_nonces(&self) -> usize {
        self.counts.len()
    }

    /// A fresh nonce for `now_ms` (wall-clock milliseconds since the Unix epoch).
    pub fn new_nonce(&self, now_ms: u64, rng: &mut impl Rng) -> String {
        let mut random = [0u8; 8];
        rng.fill_bytes(&mut random);
        self.key.issue(now_ms, random)
    }

    /// The challenge header values, one per configured algorithm, sharing one nonce.
    pub fn challenge_values(&self, now_ms: u64, rng: &mut impl Rng, stale: bool) -> Vec<String> {
        let nonce = self.new_nonce(now_ms, rng);
        self.config
            .algorithms
            .iter()
            .map(|algorithm| {
                let mut value = format!(
                    "Digest realm={}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"",
                    super::quote(&self.config.realm),
                    algorithm.token()
                );
                if let Some(opaque) = &self.config.opaque {
                    value.push_str(&format!(", opaque={}", super::quote(opaque)));
                }
                if stale {
                    value.push_str(", stale=true");
                }
                value
            })
            .collect()
    }

    fn challenge_headers(&self, now_ms: u64, rng: &mut impl Rng, stale: bool) -> Vec<Header> {
        self.challenge_values(now_ms, rng, stale)
            .into_iter()
            .map(|v| match self.config.proxy {
                true => Header::ProxyAuthenticate(rsip::headers::ProxyAuthenticate::new(v)),
                false => Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(v)),
            })
            .collect()
    }

    /// The response a verdict calls for (`None` for `Authenticated`).
    pub fn respond(
        &self,
        verdict: &Verdict,
        request: &Request,
        now_ms: u64,
        rng: &mut impl Rng,
        to_tag: &str,
    ) -> Option<Response> {
        let code = verdict.status_code(self.config.proxy)?;
        let reason = match verdict {
            Verdict::BadRequest { reason, .. } => Some(format!("Bad Request ({reason})")),
            _ => None,
        };
        let mut response = response_to(request, code, reason.as_deref(), Some(to_tag));
        if let Verdict::Challenge { stale, .. } = verdict {
            let challenges = self.challenge_headers(now_ms, rng, *stale);
            let mut headers: Vec<Header> = response.headers.into_iter().collect();
            // Keep Content-Length last for readability; order is not significant.
            let at = headers.len() - 1;
            headers.splice(at..at, challenges);
            response.headers = headers.into();
        }
        Some(response)
    }

    /// Checks the credentials in `request` (Authorization, or Proxy-Authorization when the
    /// server is configured as a proxy). `lookup` returns the stored secrets of a user, owned
    /// or borrowed (a borrow spares copying two hashes per request).
    pub fn verify_request<C: Borrow<StoredCredentials>>(
        &mut self,
        request: &Request,
        now_ms: u64,
        lookup: impl FnOnce(&str) -> Option<C>,
    ) -> Verdict {
        let values: Vec<&str> = request
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Authorization(v) if !self.config.proxy => Some(v.value()),
                Header::ProxyAuthorization(v) if self.config.proxy => Some(v.value()),
                _ => None,
            })
            .collect();
        let method = request.method.to_string();
        self.verify(&method, &request.uri, &values, now_ms, lookup)
    }

    /// Checks credential header values for a request with `method` and `request_uri`.
    pub fn verify<C: Borrow<StoredCredentials>>(
        &mut self,
        method: &str,
        request_uri: &rsip::Uri,
        credential_values: &[&str],
        now_ms: u64,
        lookup: impl FnOnce(&str) -> Option<C>,
    ) -> Verdict {
        let mut malformed = false;
        let mut ours = None;
        for value in credential_values {
            match AuthParams::parse(value) {
                Ok(params) if params.get("realm") == Some(self.config.realm.as_str()) => {
                    ours = Some(params);
                    break;
                }
                Ok(_) => {}
                Err(_) => malformed = true,
            }
        }
        let Some(params) = ours else {
            if malformed {
                return bad_request(
                    "unreadable credentials",
                    "",
                    FailureReason::MalformedCredentials,
                );
            }
            return Verdict::Challenge {
                stale: false,
                failure: None,
            };
        };
        let user = params.get("username").unwrap_or("");
        let reported = report_user(user);
        let Ok(algorithm) = Algorithm::from_param(params.get("algorithm")) else {
            return bad_request(
                "unsupported algorithm",
                &reported,
                FailureReason::UnsupportedAlgorithm,
            );
        };
        if !self.config.algorithms.contains(&algorithm) {
            return bad_request(
                "algorithm not offered",
                &reported,
                FailureReason::UnsupportedAlgorithm,
            );
        }
        let fields = (
            params.get("nonce"),
            params.get("uri"),
            params.get("response"),
            params.get("qop"),
            params.get("nc"),
            params.get("cnonce"),
        );
        let (Some(nonce), Some(uri), Some(response), Some(qop), Some(nc_text), Some(cnonce)) =
            fields
        else {
            return bad_request(
                "incomplete credentials",
                &reported,
                FailureReason::MalformedCredentials,
            );
        };
        if user.is_empty() || !qop.eq_ignore_ascii_case("auth") {
            return bad_request(
                "incomplete credentials",
                &reported,
                FailureReason::MalformedCredentials,
            );
        }
        let Some(nc) = parse_nc(nc_text) else {
            return bad_request(
                "bad nonce count",
                &reported,
                FailureReason::MalformedCredentials,
            );
        };
        if !same_uri(uri, request_uri) {
            return bad_request("digest uri mismatch", &reported, FailureReason::UriMismatch);
        }
        let nonce_state = self.key.check(nonce, now_ms, self.config.nonce_lifetime_ms);

        let stored = lookup(user);
        let known = stored.is_some();
        let credentials = stored.as_ref().map_or(&self.dummy, Borrow::borrow);
        // An agent with no HA1 for this algorithm (the profile gave only the other one) must
        // not be matched against an empty or malformed value anyone can compute.
        let stored_ha1 = credentials.for_algorithm(algorithm);
        let usable = stored_ha1.len() == algorithm.hex_len() && stored_ha1.bytes().all(|b| b.is_ascii_hexdigit());
        let ha1_hex = if usable { stored_ha1 } else { self.dummy.for_algorithm(algorithm) }.to_ascii_lowercase();
        let known = known && usable;
        let expected = request_digest(
            algorithm,
            &ha1_hex,
            nonce,
            Some((nc_text, cnonce)),
            method,
            uri,
        );
        let presented = response.to_ascii_lowercase();
        let matches = bool::from(expected.as_bytes().ct_eq(presented.as_bytes()));
        if !(matches && known) {
            let reason = if known {
                FailureReason::WrongPassword
            } else {
                FailureReason::UnknownUser
            };
            return Verdict::Forbidden {
                failure: AuthFailure {
                    user: reported,
                    reason,
                },
            };
        }
        if self
            .config
            .opaque
            .as_deref()
            .is_some_and(|o| params.get("opaque") != Some(o))
        {
            return Verdict::Challenge {
                stale: false,
                failure: None,
            };
        }
        let NonceCheck::Fresh { issued_ms } = nonce_state else {
            // Right password, unusable nonce: a new one will do (RFC 7616 section 3.3 stale).
            return Verdict::Challenge {
                stale: true,
                failure: None,
            };
        };
        self.counts
            .purge_expired(now_ms, self.config.nonce_lifetime_ms);
        match self.counts.record(nonce, issued_ms, nc) {
            CountCheck::Accepted => Verdict::Authenticated {
                user: user.to_owned(),
            },
            CountCheck::Forgotten => Verdict::Challenge {
                stale: true,
                failure: None,
            },
            CountCheck::Replayed => Verdict::Challenge {
                stale: true,
                failure: Some(AuthFailure {
                    user: reported,
                    reason: FailureReason::Replay,
                }),
            },
        }
    }
}

fn key_digest(secret: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::new()
        .chain_update(b"gatewayd dummy user")
        .chain_update(secret)
        .finalize()
        .to_vec()
}

fn bad_request(reason: &str, user: &str, failure: FailureReason) -> Verdict {
    Verdict::BadRequest {
        reason: reason.to_owned(),
        failure: AuthFailure {
            user: user.to_owned(),
            reason: failure,
        },
    }
}

fn report_user(user: &str) -> String {
    user.chars()
        .filter(|c| !c.is_control())
        .take(MAX_REPORTED_USER)
        .collect()
}

/// nc is eight hex digits (RFC 7616 section 3.4); be lenient on the width, not on the value.
fn parse_nc(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok().filter(|nc| *nc > 0)
}

/// The digest `uri` must name the Request-URI; compare parsed when it parses, else as text.
fn same_uri(digest_uri: &str, request_uri: &rsip::Uri) -> bool {
    match rsip::Uri::try_from(digest_uri) {
        Ok(parsed) => &parsed == request_uri,
        Err(_) => digest_uri == request_uri.to_string(),
    }
}

#[cfg(test)]
mod tests;
