//! `GET /turn-credentials` against a running gateway over real TLS: the Digest challenge (SHA-256
//! and MD5), REST-scheme credentials checked with the lab's shared secret, the URIs of the lab's
//! TURN listeners, wrong passwords and replays refused and counted by the guard, and 404 when the
//! profile has no `[turn]`.

mod common;

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use gatewayd::sip::digest::{authorization_value, Algorithm, Challenge, ClientSecret};
use hmac::{Hmac, KeyInit, Mac};

use common::{eventually, lab_profile_free_ports, Gateway, TempDir};

const DEADLINE: Duration = Duration::from_secs(20);
const PATH: &str = "/turn-credentials";

struct Lab {
    dir: TempDir,
    gw: Gateway,
    ports: HashMap<u16, u16>,
}

impl Lab {
    fn start(edit: impl FnOnce(String) -> String) -> Lab {
        let dir = TempDir::new("turn-credentials");
        let (text, ports) = lab_profile_free_ports();
        let profile = dir.path().join("profile.toml");
        std::fs::write(&profile, edit(text)).unwrap();
        let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
        gw.wait_for_log("gatewayd ready", DEADLINE);
        Lab { dir, gw, ports }
    }

    fn get(&self, path: &str, authorization: Option<&str>) -> Reply {
        let pem = std::fs::read(self.dir.path().join("state/web.crt")).expect("the lab certificate");
        https_get(&pem, self.ports[&8443], path, authorization)
    }

    fn metrics(&self) -> String {
        common::http_get(self.ports[&9090], "/metrics").expect("metrics answer")
    }
}

/// The lab profile without its `[turn]` section.
fn without_turn(text: String) -> String {
    let start = text.find("\n[turn]").expect("lab has [turn]");
    let end = text[start + 1..].find("\n[").map_or(text.len(), |i| start + 1 + i);
    format!("{}{}", &text[..start], &text[end..])
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.all(name).first().copied()
    }
    fn challenges(&self) -> Vec<Challenge> {
        self.all("www-authenticate").into_iter().map(|v| Challenge::parse(v, false).expect("a Digest challenge")).collect()
    }
}

/// One HTTP/1.1 GET over TLS, trusting exactly the certificate in `pem`.
fn https_get(pem: &[u8], port: u16, path: &str, authorization: Option<&str>) -> Reply {
    let config = common::tls_trusting(pem);
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    write!(tls, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}Connection: close\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    if let Err(e) = tls.read_to_end(&mut raw) {
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof, "reading the answer: {e}");
    }
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let mut lines = head.lines();
    let status = lines.next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    Reply { status, headers, body: body.to_owned() }
}

/// The Authorization answering the challenge of `algorithm` in `reply`.
fn answer(reply: &Reply, algorithm: Algorithm, user: &str, password: &str, nc: u32) -> String {
    let challenge = reply.challenges().into_iter().find(|c| c.algorithm == algorithm).expect("a challenge for the algorithm");
    authorization_value(&challenge, user, &ClientSecret::Password(password.into()), "GET", PATH, nc, "0a4f113b").unwrap()
}

fn now_unix() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// base64(HMAC-SHA1(secret, username)), the TURN REST API password.
fn rest_password(secret: &[u8], username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[test]
fn agents_get_rest_credentials_with_either_digest_algorithm() {
    let mut lab = Lab::start(|t| t);
    let config = lab.get("/config.json", None);
    let config: serde_json::Value = serde_json::from_str(&config.body).unwrap();
    assert_eq!(config["turn_credentials"], PATH, "{config}");

    let challenge = lab.get(PATH, None);
    assert_eq!(challenge.status, 401, "{}", challenge.body);
    assert_eq!(challenge.header("cache-control"), Some("no-store"));
    let offered = challenge.challenges();
    assert_eq!(offered.iter().map(|c| c.algorithm).collect::<Vec<_>>(), [Algorithm::Sha256, Algorithm::Md5]);
    assert!(offered.iter().all(|c| c.realm == "gatewayd-lab" && c.qop_auth && !c.stale), "{:?}", challenge.all("www-authenticate"));

    let (udp, tls) = (lab.ports[&3478], lab.ports[&5349]);
    let uris = [format!("turn:127.0.0.1:{udp}?transport=udp"), format!("turn:127.0.0.1:{udp}?transport=tcp"), format!("turns:localhost:{tls}?transport=tcp")];
    for (algorithm, dn) in [(Algorithm::Sha256, "5001"), (Algorithm::Md5, "5002")] {
        let challenge = lab.get(PATH, None);
        let before = now_unix();
        let granted = lab.get(PATH, Some(&answer(&challenge, algorithm, dn, &format!("pass{dn}"), 1)));
        assert_eq!(granted.status, 200, "{algorithm:?}: {}", granted.body);
        assert_eq!(granted.header("cache-control"), Some("no-store"));
        assert_eq!(granted.header("content-type"), Some("application/json"));
        let minted: serde_json::Value = serde_json::from_str(&granted.body).unwrap();
        let ttl = minted["ttl"].as_u64().unwrap();
        assert_eq!(ttl, 12 * 3600, "the default turn.credential_lifetime");
        let username = minted["username"].as_str().unwrap();
        let (expiry, who) = username.split_once(':').unwrap();
        let expiry: u64 = expiry.parse().unwrap();
        assert_eq!(who, dn);
        assert!((before + ttl..=now_unix() + ttl).contains(&expiry), "{username}");
        assert_eq!(minted["password"], rest_password(b"lab-turn-secret", username));
        assert_eq!(minted["uris"], serde_json::json!(uris));
        let logged = lab.gw.wait_for_log(&format!("dn={dn}"), DEADLINE);
        assert!(logged.contains("TURN credentials issued") && !logged.contains(minted["password"].as_str().unwrap()), "{logged}");
    }
    assert!(lab.gw.seen.iter().filter(|l| l.contains("TURN credentials issued")).all(|l| !l.contains("pass500")), "no password in the log");
    let metrics = lab.metrics();
    assert!(!metrics.contains("kind=\"http-4xx\"") && !metrics.contains("kind=\"digest-failure\""), "a challenge is no failure:\n{metrics}");
}

#[test]
fn wrong_passwords_unknown_users_and_replays_are_refused_and_counted() {
    let lab = Lab::start(|t| t);
    for (user, password) in [("5001", "pass5002"), ("5001", ""), ("7777", "pass7777")] {
        let challenge = lab.get(PATH, None);
        let refused = lab.get(PATH, Some(&answer(&challenge, Algorithm::Sha256, user, password, 1)));
        assert_eq!(refused.status, 401, "{user}/{password}: {}", refused.body);
        assert!(refused.challenges().iter().all(|c| !c.stale), "a fresh challenge, not a stale one");
        assert!(!refused.body.contains("password"));
    }
    eventually("three digest failures in the metrics", DEADLINE, || {
        Some(lab.metrics()).filter(|m| m.contains("gatewayd_failures_total{kind=\"digest-failure\"} 3"))
    });

    // The same Authorization twice: the second mints nothing.
    let challenge = lab.get(PATH, None);
    let auth = answer(&challenge, Algorithm::Md5, "5003", "pass5003", 1);
    assert_eq!(lab.get(PATH, Some(&auth)).status, 200);
    let replayed = lab.get(PATH, Some(&auth));
    assert_eq!(replayed.status, 401);
    assert!(replayed.challenges().iter().all(|c| c.stale), "{:?}", replayed.all("www-authenticate"));
    eventually("the replay counted", DEADLINE, || {
        Some(lab.metrics()).filter(|m| m.contains("gatewayd_failures_total{kind=\"digest-failure\"} 4"))
    });
    // The next count on the same nonce is fine (RFC 7616 nonce reuse).
    assert_eq!(lab.get(PATH, Some(&answer(&challenge, Algorithm::Md5, "5003", "pass5003", 2))).status, 200);
}

#[test]
fn without_turn_there_is_nothing_to_hand_out() {
    let lab = Lab::start(without_turn);
    assert!(!std::fs::read_to_string(lab.dir.path().join("profile.toml")).unwrap().contains("[turn]"));
    let config: serde_json::Value = serde_json::from_str(&lab.get("/config.json", None).body).unwrap();
    assert!(config["turn_credentials"].is_null(), "{config}");
    let reply = lab.get(PATH, None);
    assert_eq!(reply.status, 404, "{}", reply.body);
    assert!(reply.all("www-authenticate").is_empty());
}
