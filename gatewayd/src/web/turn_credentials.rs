//! `GET /turn-credentials`: ephemeral TURN credentials for a logged-in agent, so no TURN secret
//! is ever written into the page. The agent proves its SIP password with HTTP Digest (RFC 7616,
//! `qop=auth`, one challenge per algorithm the registrar offers) against the same realm and HA1s
//! as the registrar; the answer is `{"username","password","ttl","uris"}` minted with the TURN
//! REST scheme (`crate::turn::credentials`).
//!
//! Nonces are stateless: issue time and random bytes under an HMAC with a key made at start, so
//! any nonce can be checked without storing it; one past its lifetime gets `stale=true`. Only
//! nonces that granted credentials are remembered (with their highest nonce count, bounded), so
//! a replayed Authorization header mints nothing. Wrong passwords and unknown users get the same
//! 401 and are reported to the guard as digest failures; passwords are never logged, the DN is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::listen::ConnInfo;
use super::pages::Reported;
use super::Shared;
use crate::profile::{FailureKind, LoadedProfile};
use crate::sip::digest::{quote, request_digest, Algorithm, AuthParams, DigestError, StoredCredentials};
use crate::turn::credentials::{mint, shared_secret, uris, Minted};

/// Where the softphone asks for credentials.
pub const PATH: &str = "/turn-credentials";

/// Longest username quoted in a guard report (it comes from the client).
const MAX_REPORTED_USER: usize = 64;
/// Nonces that granted credentials and are still fresh, remembered at once.
const MAX_TRACKED_NONCES: usize = 4096;

/// What one profile gives this endpoint. Absent when the profile has no `[turn]` or no secret.
pub(crate) struct TurnCredentials {
    realm: String,
    /// Offered in this order, one WWW-Authenticate each (the registrar's `sip.auth.algorithms`).
    algorithms: Vec<Algorithm>,
    nonce_lifetime_ms: u64,
    /// Agents' stored HA1s by DN, exactly as the registrar checks them.
    agents: HashMap<String, StoredCredentials>,
    /// Verified against when the DN is unknown, so both cases cost the same.
    dummy: StoredCredentials,
    secret: Vec<u8>,
    ttl_secs: u64,
    uris: Vec<String>,
}

impl std::fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("realm", &self.realm)
            .field("agents", &self.agents.len())
            .field("ttl_secs", &self.ttl_secs)
            .field("uris", &self.uris)
            .finish_non_exhaustive()
    }
}

impl TurnCredentials {
    pub(crate) fn from_profile(loaded: &LoadedProfile) -> Option<Self> {
        let turn = loaded.profile.turn.as_ref()?;
        let secret = match shared_secret(loaded) {
            Ok(Some(secret)) => secret,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "web: cannot read the TURN shared secret; /turn-credentials answers 404");
                return None;
            }
        };
        // The registrar's own view of the agents: same realm, HA1s and algorithms.
        let edge = crate::call::agents::EdgeConfig::from_profile(loaded);
        Some(Self::new(edge.realm, edge.algorithms, edge.nonce_lifetime_ms, edge.credentials, secret, turn.credential_lifetime.as_secs(), uris(&loaded.profile)))
    }

    fn new(realm: String, algorithms: Vec<Algorithm>, nonce_lifetime_ms: u64, agents: HashMap<String, StoredCredentials>, secret: Vec<u8>, ttl_secs: u64, uris: Vec<String>) -> Self {
        let mut unguessable = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut unguessable);
        let dummy = StoredCredentials::from_password("\u{0}", &realm, &hex::encode(unguessable));
        TurnCredentials { realm, algorithms, nonce_lifetime_ms, agents, dummy, secret, ttl_secs, uris }
    }

    /// The WWW-Authenticate values, one per algorithm, sharing one nonce.
    fn challenges(&self, nonce: &str, stale: bool) -> Vec<String> {
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|a| format!("Digest realm={}, nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}", quote(&self.realm), a.token()))
            .collect()
    }

    /// Checks the Authorization values of a request with `method` and request-target `uri`.
    fn check(&self, key: &NonceKey, seen: &mut Seen, values: &[&str], method: &str, uri: &str, now_ms: u64) -> Outcome {
        let mut malformed = false;
        let mut ours = None;
        for value in values {
            match AuthParams::parse(value) {
                Ok(p) if p.get("realm") == Some(self.realm.as_str()) => {
                    ours = Some(p);
                    break;
                }
                Ok(_) | Err(DigestError::NotDigest) => {}
                Err(_) => malformed = true,
            }
        }
        let Some(p) = ours else {
            return if malformed { Outcome::bad("unreadable credentials", "") } else { Outcome::Challenge { stale: false, failure: None } };
        };
        let user = p.get("username").unwrap_or("");
        let reported: String = user.chars().filter(|c| !c.is_control()).take(MAX_REPORTED_USER).collect();
        let algorithm = match Algorithm::from_param(p.get("algorithm")) {
            Ok(a) if self.algorithms.contains(&a) => a,
            _ => return Outcome::bad("algorithm not offered", &reported),
        };
        let fields = (p.get("nonce"), p.get("uri"), p.get("response"), p.get("qop"), p.get("nc"), p.get("cnonce"));
        let (Some(nonce), Some(digest_uri), Some(response), Some(qop), Some(nc_text), Some(cnonce)) = fields else {
            return Outcome::bad("incomplete credentials", &reported);
        };
        let Some(nc) = parse_nc(nc_text).filter(|_| !user.is_empty() && qop.eq_ignore_ascii_case("auth")) else {
            return Outcome::bad("incomplete credentials", &reported);
        };
        if digest_uri != uri {
            return Outcome::bad("digest uri does not name the request", &reported);
        }
        let stored = self.agents.get(user);
        let ha1 = |c: &StoredCredentials| match algorithm {
            Algorithm::Md5 => c.ha1_md5.to_ascii_lowercase(),
            Algorithm::Sha256 => c.ha1_sha256.to_ascii_lowercase(),
        };
        // No stored hash for this algorithm: the DN cannot use it (an empty HA1 is no secret).
        let known = stored.is_some_and(|c| ha1(c).len() == algorithm.hex_len());
        let ha1_hex = match stored {
            Some(c) if known => ha1(c),
            _ => ha1(&self.dummy),
        };
        let expected = request_digest(algorithm, &ha1_hex, nonce, Some((nc_text, cnonce)), method, digest_uri);
        let matches = bool::from(expected.as_bytes().ct_eq(response.to_ascii_lowercase().as_bytes()));
        if !(matches && known) {
            let why = if stored.is_some() { "wrong password" } else { "unknown user" };
            return Outcome::Challenge { stale: false, failure: Some(format!("HTTP digest: {why} for user {reported:?}")) };
        }
        let NonceCheck::Fresh { issued_ms } = key.check(nonce, now_ms, self.nonce_lifetime_ms) else {
            // Right password, old or foreign nonce: a new one will do.
            return Outcome::Challenge { stale: true, failure: None };
        };
        match seen.record(nonce, issued_ms, nc, now_ms, self.nonce_lifetime_ms) {
            Count::Accepted => Outcome::Granted { dn: user.to_owned() },
            Count::Forgotten => Outcome::Challenge { stale: true, failure: None },
            Count::Replayed => Outcome::Challenge { stale: true, failure: Some(format!("HTTP digest: replayed request for user {reported:?}")) },
        }
    }

    fn mint(&self, dn: &str, now_unix: u64) -> Minted {
        mint(&self.secret, dn, now_unix, self.ttl_secs, self.uris.clone())
    }
}

/// What to answer a request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Granted { dn: String },
    /// 401 with fresh challenges; `failure` when the attempt counts against the source.
    Challenge { stale: bool, failure: Option<String> },
    /// 400: the credentials cannot be evaluated (counted against the source).
    BadRequest { failure: String },
}

impl Outcome {
    fn bad(why: &str, user: &str) -> Self {
        Outcome::BadRequest { failure: format!("HTTP digest: {why} for user {user:?}") }
    }
}

/// nc is eight hex digits (RFC 7616 section 3.4); lenient on the width, not on the value.
fn parse_nc(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 8 {
        return None;
    }
    u32::from_str_radix(text, 16).ok().filter(|nc| *nc > 0)
}

// ---------- nonces ----------

const RANDOM_LEN: usize = 8;
const TAG_LEN: usize = 16;
const BODY_LEN: usize = 8 + RANDOM_LEN;

/// `base64url(issued_ms || random || HMAC-SHA256(key, issued_ms || random)[..16])`.
struct NonceKey {
    mac: Hmac<Sha256>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NonceCheck {
    Fresh { issued_ms: u64 },
    /// Ours, but past its lifetime (or from the future after a clock step).
    Expired,
    /// Not made with this key (forged, mangled, or from before a restart).
    Foreign,
}

impl NonceKey {
    fn new(key: &[u8]) -> Self {
        NonceKey { mac: Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length") }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(b"gatewayd turn-credentials nonce v1");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        full[..TAG_LEN].try_into().expect("16 bytes")
    }

    fn issue(&self, now_ms: u64, random: [u8; RANDOM_LEN]) -> String {
        let mut raw = Vec::with_capacity(BODY_LEN + TAG_LEN);
        raw.extend_from_slice(&now_ms.to_be_bytes());
        raw.extend_from_slice(&random);
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn check(&self, nonce: &str, now_ms: u64, lifetime_ms: u64) -> NonceCheck {
        if nonce.len() > 64 {
            return NonceCheck::Foreign;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else { return NonceCheck::Foreign };
        if raw.len() != BODY_LEN + TAG_LEN {
            return NonceCheck::Foreign;
        }
        let (body, tag) = raw.split_at(BODY_LEN);
        if !bool::from(self.tag(body).ct_eq(tag)) {
            return NonceCheck::Foreign;
        }
        let issued_ms = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        if issued_ms > now_ms.saturating_add(5_000) || now_ms.saturating_sub(issued_ms) > lifetime_ms {
            return NonceCheck::Expired;
        }
        NonceCheck::Fresh { issued_ms }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Count {
    Accepted,
    /// Not above a count already used with this nonce.
    Replayed,
    /// Issued before the oldest nonce we had to forget: it may have been used, get a new one.
    Forgotten,
}

/// Highest nonce count per nonce that granted credentials, bounded; expired nonces drop out
/// (they are refused by age). When full of fresh ones the oldest goes and the horizon moves
/// to its issue time.
struct Seen {
    capacity: usize,
    counts: HashMap<String, (u64, u32)>,
    horizon_ms: Option<u64>,
}

impl Seen {
    fn new(capacity: usize) -> Self {
        Seen { capacity: capacity.max(1), counts: HashMap::new(), horizon_ms: None }
    }

    fn record(&mut self, nonce: &str, issued_ms: u64, nc: u32, now_ms: u64, lifetime_ms: u64) -> Count {
        if let Some((_, highest)) = self.counts.get_mut(nonce) {
            if nc <= *highest {
                return Count::Replayed;
            }
            *highest = nc;
            return Count::Accepted;
        }
        if self.horizon_ms.is_some_and(|h| issued_ms <= h) {
            return Count::Forgotten;
        }
        if self.counts.len() >= self.capacity {
            self.counts.retain(|_, (issued, _)| now_ms.saturating_sub(*issued) <= lifetime_ms);
        }
        while self.counts.len() >= self.capacity {
            let oldest = self.counts.iter().min_by_key(|(_, (issued, _))| *issued).map(|(n, (issued, _))| (n.clone(), *issued));
            let Some((oldest, issued)) = oldest else { break };
            self.counts.remove(&oldest);
            self.horizon_ms = Some(self.horizon_ms.map_or(issued, |h| h.max(issued)));
        }
        if self.horizon_ms.is_some_and(|h| issued_ms <= h) {
            return Count::Forgotten;
        }
        self.counts.insert(nonce.to_owned(), (issued_ms, nc));
        Count::Accepted
    }
}

/// The nonce key (random, made once per process) and the nonces seen.
struct Process {
    key: NonceKey,
    seen: Mutex<Seen>,
}

fn process() -> &'static Process {
    static PROCESS: OnceLock<Process> = OnceLock::new();
    PROCESS.get_or_init(|| {
        let mut key = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
        Process { key: NonceKey::new(&key), seen: Mutex::new(Seen::new(MAX_TRACKED_NONCES)) }
    })
}

// ---------- the handler ----------

pub(crate) async fn handler(State(shared): State<Arc<Shared>>, Extension(conn): Extension<ConnInfo>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let settings = shared.settings();
    let Some(turn) = settings.turn_credentials.as_ref() else {
        return (StatusCode::NOT_FOUND, "Not found\n").into_response();
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let now_ms = now.as_millis() as u64;
    let values: Option<Vec<&str>> = headers.get_all(header::AUTHORIZATION).iter().map(|v| v.to_str().ok()).collect();
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let p = process();
    let outcome = match values {
        None => Outcome::bad("unreadable credentials", ""),
        Some(values) => {
            let mut seen = p.seen.lock().unwrap_or_else(|e| e.into_inner());
            turn.check(&p.key, &mut seen, &values, method.as_str(), target, now_ms)
        }
    };
    let ip = conn.peer.ip();
    let mut response = match outcome {
        Outcome::Granted { dn } => {
            let minted = turn.mint(&dn, now.as_secs());
            tracing::info!(dn = %dn, peer = %ip, ttl = minted.ttl, "web: TURN credentials issued");
            let body = serde_json::to_vec(&minted).expect("credentials serialize");
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        }
        Outcome::Challenge { stale, failure } => {
            if let Some(failure) = failure {
                shared.fail(ip, FailureKind::DigestFailure, failure);
            }
            let mut random = [0u8; RANDOM_LEN];
            rand::Rng::fill_bytes(&mut rand::rng(), &mut random);
            let nonce = p.key.issue(now_ms, random);
            let mut r = (StatusCode::UNAUTHORIZED, "Authentication required\n").into_response();
            for value in turn.challenges(&nonce, stale) {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    r.headers_mut().append(header::WWW_AUTHENTICATE, v);
                }
            }
            r
        }
        Outcome::BadRequest { failure } => {
            shared.fail(ip, FailureKind::DigestFailure, failure);
            (StatusCode::BAD_REQUEST, "Bad credentials\n").into_response()
        }
    };
    // A challenge is the normal first step, and failures were reported above.
    response.extensions_mut().insert(Reported);
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::{authorization_value, Challenge, ClientSecret};

    const REALM: &str = "gatewayd-lab";
    const T0: u64 = 1_700_000_000_000;
    const LIFETIME: u64 = 300_000;

    fn endpoint(algorithms: Vec<Algorithm>) -> TurnCredentials {
        let mut agents = HashMap::new();
        agents.insert("5001".to_owned(), StoredCredentials::from_password("5001", REALM, "pass5001"));
        // Only a SHA-256 hash stored for this one.
        let sha_only = StoredCredentials::from_password("5002", REALM, "pass5002");
        agents.insert("5002".to_owned(), StoredCredentials { ha1_md5: String::new(), ha1_sha256: sha_only.ha1_sha256 });
        let uris = vec!["turn:127.0.0.1:3478?transport=udp".to_owned()];
        TurnCredentials::new(REALM.into(), algorithms, LIFETIME, agents, b"lab-turn-secret".to_vec(), 600, uris)
    }

    fn both() -> TurnCredentials {
        endpoint(vec![Algorithm::Sha256, Algorithm::Md5])
    }

    /// The Authorization a client computes for the challenge of `algorithm` with nonce `nonce`.
    fn answer(t: &TurnCredentials, algorithm: Algorithm, nonce: &str, user: &str, password: &str, nc: u32) -> String {
        let value = t.challenges(nonce, false).into_iter().find(|v| v.contains(&format!("algorithm={},", algorithm.token()))).unwrap();
        let challenge = Challenge::parse(&value, false).unwrap();
        authorization_value(&challenge, user, &ClientSecret::Password(password.into()), "GET", PATH, nc, "client-nonce").unwrap()
    }

    fn check(t: &TurnCredentials, key: &NonceKey, seen: &mut Seen, auth: &str, now_ms: u64) -> Outcome {
        t.check(key, seen, &[auth], "GET", PATH, now_ms)
    }

    #[test]
    fn challenges_offer_each_algorithm_with_qop_auth_and_one_nonce() {
        let t = both();
        let values = t.challenges("N", false);
        assert_eq!(values.len(), 2);
        let parsed: Vec<Challenge> = values.iter().map(|v| Challenge::parse(v, false).unwrap()).collect();
        assert_eq!(parsed.iter().map(|c| c.algorithm).collect::<Vec<_>>(), [Algorithm::Sha256, Algorithm::Md5]);
        assert!(parsed.iter().all(|c| c.qop_auth && c.realm == REALM && c.nonce == "N" && !c.stale));
        assert!(t.challenges("N", true).iter().all(|v| Challenge::parse(v, false).unwrap().stale));
    }

    #[test]
    fn no_or_foreign_credentials_get_a_plain_challenge() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        let plain = Outcome::Challenge { stale: false, failure: None };
        assert_eq!(t.check(&key, &mut seen, &[], "GET", PATH, T0), plain);
        assert_eq!(check(&t, &key, &mut seen, "Basic NTAwMTpwYXNzNTAwMQ==", T0), plain);
        assert_eq!(check(&t, &key, &mut seen, r#"Digest realm="elsewhere", username="5001""#, T0), plain);
    }

    #[test]
    fn the_right_password_is_granted_with_either_algorithm() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        for (i, algorithm) in [Algorithm::Sha256, Algorithm::Md5].into_iter().enumerate() {
            let nonce = key.issue(T0, [i as u8; 8]);
            let auth = answer(&t, algorithm, &nonce, "5001", "pass5001", 1);
            assert_eq!(check(&t, &key, &mut seen, &auth, T0 + 10), Outcome::Granted { dn: "5001".into() }, "{algorithm:?}");
        }
    }

    #[test]
    fn wrong_passwords_and_unknown_users_are_challenged_again_and_counted() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        let nonce = key.issue(T0, [0; 8]);
        let wrong = answer(&t, Algorithm::Sha256, &nonce, "5001", "guess", 1);
        let Outcome::Challenge { stale: false, failure: Some(why) } = check(&t, &key, &mut seen, &wrong, T0) else { panic!() };
        assert!(why.contains("wrong password") && why.contains("5001") && !why.contains("guess"), "{why}");
        let unknown = answer(&t, Algorithm::Md5, &nonce, "9999", "pass9999", 1);
        let Outcome::Challenge { stale: false, failure: Some(why) } = check(&t, &key, &mut seen, &unknown, T0) else { panic!() };
        assert!(why.contains("unknown user"), "{why}");
    }

    #[test]
    fn an_algorithm_without_a_stored_hash_never_verifies() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        let nonce = key.issue(T0, [0; 8]);
        // Whoever knows the stored MD5 HA1 is empty computes the digest from "".
        let forged = authorization_value(
            &Challenge::parse(&t.challenges(&nonce, false)[1], false).unwrap(),
            "5002",
            &ClientSecret::Ha1 { md5: Some(String::new()), sha256: None },
            "GET",
            PATH,
            1,
            "c",
        )
        .unwrap();
        assert!(matches!(check(&t, &key, &mut seen, &forged, T0), Outcome::Challenge { failure: Some(_), .. }));
        let real = answer(&t, Algorithm::Sha256, &nonce, "5002", "pass5002", 1);
        assert_eq!(check(&t, &key, &mut seen, &real, T0), Outcome::Granted { dn: "5002".into() });
    }

    #[test]
    fn old_or_foreign_nonces_with_the_right_password_are_stale() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        let stale = Outcome::Challenge { stale: true, failure: None };
        let nonce = key.issue(T0, [0; 8]);
        let auth = answer(&t, Algorithm::Sha256, &nonce, "5001", "pass5001", 1);
        assert_eq!(check(&t, &key, &mut seen, &auth, T0 + LIFETIME + 1), stale);
        let other = NonceKey::new(b"before a restart").issue(T0, [0; 8]);
        let auth = answer(&t, Algorithm::Sha256, &other, "5001", "pass5001", 1);
        assert_eq!(check(&t, &key, &mut seen, &auth, T0), stale);
    }

    #[test]
    fn a_replayed_request_mints_nothing_but_a_higher_count_does() {
        let (t, key, mut seen) = (both(), NonceKey::new(b"k"), Seen::new(8));
        let nonce = key.issue(T0, [0; 8]);
        let first = answer(&t, Algorithm::Sha256, &nonce, "5001", "pass5001", 1);
        assert_eq!(check(&t, &key, &mut seen, &first, T0), Outcome::Granted { dn: "5001".into() });
        assert!(matches!(check(&t, &key, &mut seen, &first, T0 + 1), Outcome::Challenge { stale: true, failure: Some(_) }));
        let second = answer(&t, Algorithm::Sha256, &nonce, "5001", "pass5001", 2);
        assert_eq!(check(&t, &key, &mut seen, &second, T0 + 2), Outcome::Granted { dn: "5001".into() });
    }

    #[test]
    fn unusable_credentials_are_bad_requests() {
        let (t, key, mut seen) = (endpoint(vec![Algorithm::Sha256]), NonceKey::new(b"k"), Seen::new(8));
        let nonce = key.issue(T0, [0; 8]);
        let md5 = authorization_value(
            &Challenge::parse(&format!(r#"Digest realm="{REALM}", nonce="{nonce}", algorithm=MD5, qop="auth""#), false).unwrap(),
            "5001",
            &ClientSecret::Password("pass5001".into()),
            "GET",
            PATH,
            1,
            "c",
        )
        .unwrap();
        let good = answer(&t, Algorithm::Sha256, &nonce, "5001", "pass5001", 1);
        let cases = [
            md5,
            good.replace(&format!("uri=\"{PATH}\""), "uri=\"/elsewhere\""),
            good.replace("nc=00000001", "nc=0"),
            good.replace("qop=auth", "qop=auth-int"),
            good.replace(", cnonce=\"client-nonce\"", ""),
            format!(r#"Digest realm="{REALM}", username="5001", nonce="unterminated"#),
        ];
        for auth in cases {
            assert!(matches!(check(&t, &key, &mut seen, &auth, T0), Outcome::BadRequest { .. }), "{auth}");
        }
        assert!(seen.counts.is_empty());
        assert!(matches!(t.check(&key, &mut seen, &[&good], "POST", PATH, T0), Outcome::Challenge { failure: Some(_), .. }), "the method is signed");
        assert_eq!(check(&t, &key, &mut seen, &good, T0), Outcome::Granted { dn: "5001".into() });
    }

    #[test]
    fn nonces_carry_their_age_under_the_key() {
        let key = NonceKey::new(b"k");
        let nonce = key.issue(T0, [7; 8]);
        assert_eq!(key.check(&nonce, T0 + LIFETIME, LIFETIME), NonceCheck::Fresh { issued_ms: T0 });
        assert_eq!(key.check(&nonce, T0 + LIFETIME + 1, LIFETIME), NonceCheck::Expired);
        assert_eq!(key.check(&nonce, T0 - 10_000, LIFETIME), NonceCheck::Expired);
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[7] ^= 1;
        assert_eq!(key.check(&URL_SAFE_NO_PAD.encode(raw), T0, LIFETIME), NonceCheck::Foreign);
        for junk in ["", "!!", &"A".repeat(100)] {
            assert_eq!(key.check(junk, T0, LIFETIME), NonceCheck::Foreign);
        }
    }

    #[test]
    fn seen_nonces_are_bounded_and_forgotten_ones_are_not_trusted() {
        let mut seen = Seen::new(2);
        assert_eq!(seen.record("a", 10, 1, 10, LIFETIME), Count::Accepted);
        assert_eq!(seen.record("b", 20, 1, 20, LIFETIME), Count::Accepted);
        assert_eq!(seen.record("c", 30, 1, 30, LIFETIME), Count::Accepted);
        assert_eq!(seen.counts.len(), 2);
        assert_eq!(seen.record("a", 10, 1, 40, LIFETIME), Count::Forgotten);
        assert_eq!(seen.record("c", 30, 1, 40, LIFETIME), Count::Replayed);
        // Expired entries make room without moving the horizon.
        assert_eq!(seen.record("d", 10 + LIFETIME * 3, 1, 10 + LIFETIME * 3, LIFETIME), Count::Accepted);
        assert_eq!(seen.counts.len(), 1);
        assert_eq!(seen.horizon_ms, Some(10));
    }

    #[test]
    fn minted_credentials_follow_the_rest_scheme() {
        let m = both().mint("5001", 1_000);
        assert_eq!(m.username, "1600:5001");
        assert_eq!(m.password, crate::turn::credentials::rest_password(b"lab-turn-secret", "1600:5001"));
        assert_eq!((m.ttl, m.uris.len()), (600, 1));
    }

    #[test]
    fn the_lab_profile_offers_its_turn_listeners_under_the_registrar_realm() {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.toml"));
        let mut loaded = crate::profile::load_str(path, &std::fs::read_to_string(path).unwrap(), Vec::new()).unwrap();
        let t = TurnCredentials::from_profile(&loaded).expect("lab has a shared secret");
        assert_eq!(t.realm, "gatewayd-lab");
        assert_eq!(t.secret, b"lab-turn-secret");
        assert_eq!(t.uris, ["turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp", "turns:localhost:5349?transport=tcp"]);
        assert_eq!(t.agents["5001"], StoredCredentials::from_password("5001", "gatewayd-lab", "pass5001"));
        loaded.profile.turn.as_mut().unwrap().shared_secret = None;
        assert!(TurnCredentials::from_profile(&loaded).is_none());
        loaded.profile.turn = None;
        assert!(TurnCredentials::from_profile(&loaded).is_none());
    }
}
