//! Digest `Authorization` header values against the digest server, for a REGISTER to
//! `sip:lab.invalid`.
//!
//! Input: the first byte sets the server up (bit 0: MD5 only, bit 1: proxy, bit 2: an opaque;
//! bits 4-7: how old the nonces it hands out are, in minutes); the rest is one header value per
//! line. In a value, `{nonce}` becomes a nonce the server issued and `{response}` the correct
//! response for the value's own parameters with agent 5001's password (pass5001); without
//! `{response}` the fuzzer has to guess it.
//!
//! Users: 5001 has both hashes, 5002 only an MD5 one, 5003 a malformed one. Invariants: a
//! request is authenticated only with the right response for a user and algorithm that has a
//! usable stored hash, never twice with the same nonce-count, never by guessing; the answer to
//! anything else is a well-formed response whose status is the verdict's.

use md5::Md5;
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

use super::Input;
use crate::sip::digest::{Algorithm, AuthParams, DigestConfig, DigestServer, StoredCredentials, Verdict};

const REALM: &str = "gatewayd-lab";
const URI: &str = "sip:lab.invalid";
const NOW_MS: u64 = 1_800_000_000_000;

fn hex_hash(algorithm: Algorithm, text: &str) -> String {
    match algorithm {
        Algorithm::Md5 => hex::encode(Md5::digest(text.as_bytes())),
        Algorithm::Sha256 => hex::encode(Sha256::digest(text.as_bytes())),
    }
}

fn stored(user: &str) -> Option<StoredCredentials> {
    match user {
        "5001" => Some(StoredCredentials::from_password("5001", REALM, "pass5001")),
        "5002" => Some(StoredCredentials { ha1_md5: hex_hash(Algorithm::Md5, &format!("5002:{REALM}:pass5002")), ha1_sha256: String::new() }),
        "5003" => Some(StoredCredentials { ha1_md5: "zz".into(), ha1_sha256: "not hex".into() }),
        _ => None,
    }
}

/// RFC 7616 3.4.1 for qop=auth, written out here rather than taken from the server.
fn expected_response(params: &AuthParams, method: &str) -> Option<(String, Algorithm)> {
    let algorithm = match params.get("algorithm") {
        None => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("MD5") => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("SHA-256") => Algorithm::Sha256,
        Some(_) => return None,
    };
    let user = params.get("username")?;
    let password = format!("pass{user}");
    let ha1 = hex_hash(algorithm, &format!("{user}:{REALM}:{password}"));
    let ha2 = hex_hash(algorithm, &format!("{method}:{}", params.get("uri")?));
    let (nonce, nc, cnonce) = (params.get("nonce")?, params.get("nc")?, params.get("cnonce")?);
    Some((hex_hash(algorithm, &format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")), algorithm))
}

pub fn digest(data: &[u8]) {
    let mut input = Input::new(data);
    let setup = input.byte();
    let text = String::from_utf8_lossy(input.rest()).into_owned();
    let mut config = DigestConfig::new(REALM, b"fuzz digest secret".to_vec());
    if setup & 1 == 1 {
        config.algorithms = vec![Algorithm::Md5];
    }
    config.proxy = setup & 2 == 2;
    if setup & 4 == 4 {
        config.opaque = Some("fuzz-opaque".into());
    }
    let proxy = config.proxy;
    let offered = config.algorithms.clone();
    let mut server = DigestServer::new(config);
    let mut rng = StdRng::seed_from_u64(1);
    let age_ms = u64::from(setup >> 4) * 60_000;
    let uri = rsip::Uri::try_from(URI).expect("uri");
    let request = rsip::Request {
        method: rsip::Method::Register,
        uri: uri.clone(),
        version: rsip::Version::V2,
        headers: crate::sip::message::parse(b"REGISTER sip:lab.invalid SIP/2.0\r\nVia: SIP/2.0/WSS a.invalid;branch=z9hG4bKfuzz\r\nFrom: <sip:5001@lab.invalid>;tag=f\r\nTo: <sip:5001@lab.invalid>\r\nCall-ID: fuzz\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
            .map(|m| match m {
                rsip::SipMessage::Request(r) => r.headers,
                rsip::SipMessage::Response(r) => r.headers,
            })
            .expect("the template parses"),
        body: Vec::new(),
    };
    for line in text.split('\n').filter(|l| !l.is_empty()).take(8) {
        let mut value = line.trim_end_matches('\r').to_owned();
        if value.contains("{nonce}") {
            let nonce = server.new_nonce(NOW_MS - age_ms, &mut rng);
            value = value.replace("{nonce}", &nonce);
        }
        let signed = value.contains("{response}");
        if signed {
            let params = AuthParams::parse(&value.replace("{response}", "x"));
            let response = params.ok().and_then(|p| expected_response(&p, "REGISTER")).map(|r| r.0).unwrap_or_default();
            value = value.replace("{response}", &response);
        }
        let values: Vec<&str> = value.split('\u{1}').collect();
        let verdict = server.verify("REGISTER", &uri, &values, NOW_MS, stored);
        if let Verdict::Authenticated { user } = &verdict {
            assert!(signed, "authenticated by a guessed response: {value:?}");
            let params = values.iter().filter_map(|v| AuthParams::parse(v).ok()).find(|p| p.get("realm") == Some(REALM)).expect("credentials for our realm");
            let (expected, algorithm) = expected_response(&params, "REGISTER").expect("complete credentials");
            assert_eq!(params.get("response").map(str::to_ascii_lowercase), Some(expected), "authenticated with a wrong response");
            assert!(offered.contains(&algorithm), "authenticated with {algorithm:?}, not offered");
            assert_eq!(params.get("username"), Some(user.as_str()));
            assert!(user == "5001" || (user == "5002" && algorithm == Algorithm::Md5), "{user} authenticated with {algorithm:?} without a usable hash");
            let again = server.verify("REGISTER", &uri, &values, NOW_MS, stored);
            assert!(!matches!(again, Verdict::Authenticated { .. }), "the same nonce-count authenticated twice");
        }
        if let Some(failure) = verdict.failure() {
            assert!(failure.user.chars().count() <= 64 && !failure.user.chars().any(char::is_control), "reported user {:?}", failure.user);
        }
        let Some(code) = verdict.status_code(proxy) else { continue };
        let response = server.respond(&verdict, &request, NOW_MS, &mut rng, "tag").expect("a response for a refusal");
        assert_eq!(u16::from(response.status_code.clone()), code);
        let text = response.to_string();
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        for line in head.split("\r\n").skip(1) {
            assert!(!line.contains(['\r', '\n']) && line.contains(':'), "header line {line:?}");
        }
    }
}
