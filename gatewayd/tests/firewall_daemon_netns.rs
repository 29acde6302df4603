//! The real daemon in the gateway namespace with `firewall.manage = true`: on start its table
//! is in place and only the profile's openings answer; failed TLS handshakes from one internet
//! source get that source dropped on every port while its neighbour keeps working; on reload
//! the ruleset follows the profile and the ban stays; after a restart the ban is still there.
//!
//! A second test does what a password-guessing agent would: wrong digest credentials over WSS
//! from the internet namespace, until the source is dropped at the kernel on every port.
//!
//! Needs root and `ip netns`; skips with a message otherwise. Uses the lab in
//! `tests/netns/lab.rs`.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::Gateway;
use lab::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

async fn connects(ns: &str, src: &str, dst: &str, port: u16) -> bool {
    let src: std::net::IpAddr = src.parse().unwrap();
    let socket = in_netns(ns, || {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        s
    });
    matches!(tokio::time::timeout(PROBE_TIMEOUT, socket.connect(SocketAddr::new(dst.parse().unwrap(), port))).await, Ok(Ok(_)))
}

/// Opens a connection to the HTTPS port and sends something that is not TLS.
async fn failed_handshake(ns: &str, src: &str) {
    let src: std::net::IpAddr = src.parse().unwrap();
    let socket = in_netns(ns, || {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        s
    });
    let mut s = socket.connect(SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)).await.expect("connects before the ban");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
}

fn profile(extra: &str) -> String {
    let mut text = profile_text("gatewayd")
        .replace(r#"rules = [{ name = "auth", events = ["digest-failure"], max_retry = 3, find_time = "1m", ban_time = "2s" }]"#, r#"rules = [{ name = "auth", events = ["tls-handshake"], max_retry = 3, find_time = "1m", ban_time = "5m" }]"#);
    text.push_str(extra);
    text
}

fn table(ns: &str) -> String {
    run(&["ip", "netns", "exec", ns, "nft", "list", "table", "inet", "gatewayd"]).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_applies_the_ruleset_bans_on_failures_and_keeps_bans_across_reload_and_restart() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("d").expect("namespaces");
    let dir = std::env::temp_dir().join(format!("gatewayd-daemon-netns-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("profile.toml");
    let state = dir.join("state");
    std::fs::write(&path, profile("")).unwrap();

    let mut daemon = Gateway::start_in_netns(&lab.gw, &path, &state);
    daemon.wait_for_log("gatewayd ready", Duration::from_secs(30));
    assert!(table(&lab.gw).contains("policy drop;"), "the daemon put its table in place");
    assert!(connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await, "https answers from the internet");
    assert!(!connects(&lab.inet, ATTACKER, INTERNAL_GW, 9090).await, "admin is not reachable from the internet");
    assert!(!connects(&lab.inet, ATTACKER, INTERNAL_GW, 5060).await, "SIP is not reachable from the internet");
    assert!(connects(&lab.internal, OTHER_INTERNAL, INTERNAL_GW, 9090).await, "admin answers the management source");
    assert!(!connects(&lab.internal, UPSTREAM, INTERNAL_GW, 9090).await, "admin refuses other internal sources");

    // Three failed TLS handshakes trip the rule: the source is dropped within a second.
    for _ in 0..3 {
        failed_handshake(&lab.inet, ATTACKER).await;
    }
    let end = Instant::now() + Duration::from_secs(1);
    while connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await {
        assert!(Instant::now() < end, "not banned within a second of the third failure");
    }
    daemon.wait_for_log("source banned", Duration::from_secs(5));
    assert!(connects(&lab.inet, NEIGHBOUR, PUBLIC_GW, 443).await, "the neighbour keeps working");

    // Reload: the ruleset follows the profile, the ban stays.
    std::fs::write(&path, profile("\n[[firewall.allow]]\nside = \"public\"\nprotocol = \"tcp\"\nports = \"7443\"\n")).unwrap();
    daemon.signal("HUP");
    daemon.wait_for_log("profile reloaded", Duration::from_secs(10));
    let end = Instant::now() + Duration::from_secs(5);
    while !table(&lab.gw).contains("7443") {
        assert!(Instant::now() < end, "reload did not reach the ruleset:\n{}", table(&lab.gw));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await, "the ban survives a reload");
    assert!(connects(&lab.inet, NEIGHBOUR, PUBLIC_GW, 443).await);

    // Restart (after the table is gone, as after a reboot): the ban comes back from the state
    // directory into the fresh table.
    daemon.stop();
    run(&["ip", "netns", "exec", &lab.gw, "nft", "delete", "table", "inet", "gatewayd"]).unwrap();
    let mut daemon = Gateway::start_in_netns(&lab.gw, &path, &state);
    daemon.wait_for_log("gatewayd ready", Duration::from_secs(30));
    assert!(!connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await, "the ban survives a restart");
    assert!(connects(&lab.inet, NEIGHBOUR, PUBLIC_GW, 443).await);
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A WSS connection to the gateway from `src` in the internet namespace, trusting the
/// gateway's generated certificate (issued for "localhost").
async fn wss_from(ns: &str, src: &str, state: &Path) -> Wss {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let src: std::net::IpAddr = src.parse().unwrap();
    let socket = in_netns(ns, || {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        s
    });
    let tcp = socket.connect(SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)).await.expect("connects before the ban");
    let pem = std::fs::read(state.join("web.crt")).expect("generated certificate");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = tokio_rustls::TlsConnector::from(common::tls_trusting(&pem)).connect(name, tcp).await.expect("TLS");
    let mut request = format!("wss://{PUBLIC_GW}/ws").into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("https://{PUBLIC_GW}").parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    tokio_tungstenite::client_async(request, tls).await.expect("WebSocket upgrade").0
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The next SIP response on the socket, or None when it closes or stays silent for 5 s.
async fn next_response(ws: &mut Wss) -> Option<rsip::Response> {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(rsip::SipMessage::Response(r)) = gatewayd::sip::message::parse(t.as_bytes()) {
                    return Some(r);
                }
            }
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

fn register(cseq: u32) -> rsip::Request {
    let text = format!(
        "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS guess.invalid;branch=z9hG4bKguess{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:5001@gw.test>\r\nFrom: <sip:5001@gw.test>;tag=g\r\nCall-ID: guess\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:g@guess.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
    );
    match gatewayd::sip::message::parse(text.as_bytes()).unwrap() {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_digest_passwords_over_wss_get_the_source_dropped_within_a_second_and_the_ban_expires() {
    use futures::SinkExt;
    use gatewayd::sip::digest::{authorize_request, ClientSecret};
    use tokio_tungstenite::tungstenite::Message;
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("w").expect("namespaces");
    let dir = std::env::temp_dir().join(format!("gatewayd-wss-ban-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("profile.toml");
    let state = dir.join("state");
    // The lab's rule: 3 digest failures within a minute ban for 2 s.
    std::fs::write(&path, profile_text("gatewayd") + "\n[[agents]]\ndn = \"5001\"\npassword = \"right\"\n").unwrap();
    let mut daemon = Gateway::start_in_netns(&lab.gw, &path, &state);
    daemon.wait_for_log("gatewayd ready", Duration::from_secs(30));

    let mut ws = wss_from(&lab.inet, ATTACKER, &state).await;
    let mut failures = 0;
    let mut cseq = 1;
    while failures < 3 {
        ws.send(Message::text(register(cseq).to_string())).await.unwrap();
        let challenge = next_response(&mut ws).await.expect("a challenge");
        assert_eq!(challenge.status_code.code(), 401);
        cseq += 1;
        let mut guess = register(cseq);
        authorize_request(&mut guess, &challenge, "5001", &ClientSecret::Password(format!("guess{failures}")), 1, "c").unwrap();
        ws.send(Message::text(guess.to_string())).await.unwrap();
        cseq += 1;
        failures += 1;
        if failures < 3 {
            let refused = next_response(&mut ws).await.expect("an answer to the guess");
            assert_ne!(refused.status_code.code(), 200);
        }
    }
    let third = Instant::now();
    // The kernel drops the source on every port within a second of the third failure.
    while connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await {
        assert!(third.elapsed() < Duration::from_secs(1), "not dropped within a second of the third failure");
    }
    assert!(!connects(&lab.inet, ATTACKER, PUBLIC_GW, 80).await, "every port, not just 443");
    daemon.wait_for_log("source banned", Duration::from_secs(5));
    assert!(connects(&lab.inet, NEIGHBOUR, PUBLIC_GW, 443).await, "another address in the same network keeps working");

    // After the ban time (2 s) the source works again.
    let end = Instant::now() + Duration::from_secs(15);
    while !connects(&lab.inet, ATTACKER, PUBLIC_GW, 443).await {
        assert!(Instant::now() < end, "the ban did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
