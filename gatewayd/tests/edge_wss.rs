//! The agent edge across real sockets: a TLS WebSocket client speaking SIP (RFC 7118) to a
//! running gateway, as a browser softphone does.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use rsip::SipMessage;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::{eventually, lab_profile_free_ports, Gateway, TempDir};

const DEADLINE: Duration = Duration::from_secs(20);

struct Lab {
    dir: TempDir,
    gw: Gateway,
    https: u16,
    admin: u16,
    sip: u16,
    upstream: u16,
}

fn lab(env: &[(&str, &str)]) -> Lab {
    let _ = std::env::var("RUST_LOG");
    let dir = TempDir::new("edge");
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), env);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    Lab { https: ports[&8443], admin: ports[&9090], sip: ports[&5060], upstream: ports[&5080], gw, dir }
}

/// Trusts exactly the certificate the gateway generated in its state directory.
fn tls(lab: &Lab) -> TlsConnector {
    let pem = std::fs::read(lab.dir.path().join("state/web.crt")).expect("self-signed certificate in the state directory");
    tls_trusting(&pem)
}

/// Trusts exactly the certificate in `pem`.
fn tls_trusting(pem: &[u8]) -> TlsConnector {
    let config = common::tls_trusting(pem);
    TlsConnector::from(config)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn connect(lab: &Lab, origin: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    connect_with(lab, tls(lab), origin).await
}

async fn connect_with(lab: &Lab, connector: TlsConnector, origin: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let tcp = TcpStream::connect(("127.0.0.1", lab.https)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = connector.connect(name, tcp).await?;
    let mut request = format!("wss://127.0.0.1:{}/ws", lab.https).into_client_request().unwrap();
    request.headers_mut().insert("Origin", origin.parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let (ws, response) = tokio_tungstenite::client_async(request, stream).await?;
    assert_eq!(response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap()), Some("sip"));
    Ok(ws)
}

fn own_origin(lab: &Lab) -> String {
    format!("https://127.0.0.1:{}", lab.https)
}

async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// The next text frame, within the deadline.
async fn recv(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a message within the deadline").expect("socket open").unwrap();
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            _ => continue,
        }
    }
}

/// The next SIP response, skipping anything else.
async fn response(ws: &mut Ws) -> rsip::Response {
    loop {
        let text = recv(ws).await;
        if let Ok(SipMessage::Response(r)) = gatewayd::sip::message::parse(text.as_bytes()) {
            return r;
        }
    }
}

fn register(dn: &str, cseq: u32, expires: u32) -> rsip::Request {
    let text = format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}r{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{dn}@127.0.0.1>\r\nFrom: <sip:{dn}@127.0.0.1>;tag=t{dn}\r\nCall-ID: reg-{dn}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:x{dn}@client.invalid;transport=ws>;expires={expires}\r\nContent-Length: 0\r\n\r\n"
    );
    match gatewayd::sip::message::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

/// REGISTER, challenge, REGISTER with credentials: the final response.
async fn register_with(ws: &mut Ws, dn: &str, secret: &ClientSecret) -> rsip::Response {
    send(ws, &register(dn, 1, 600).to_string()).await;
    let challenge = response(ws).await;
    assert_eq!(challenge.status_code.code(), 401, "{challenge}");
    let mut again = register(dn, 2, 600);
    authorize_request(&mut again, &challenge, dn, secret, 1, "cn0nce").unwrap();
    send(ws, &again.to_string()).await;
    response(ws).await
}

/// What the SIP server hears when it asks about a DN (200 only while registered).
fn options_status(lab: &Lab, dn: &str, n: u32) -> u16 {
    let socket = UdpSocket::bind(("127.0.0.1", lab.upstream)).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let options = format!("OPTIONS sip:{dn}@127.0.0.1:{} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKopt{dn}{n}\r\nMax-Forwards: 70\r\nFrom: <sip:server@127.0.0.1>;tag=s\r\nTo: <sip:{dn}@127.0.0.1>\r\nCall-ID: opt-{dn}-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", lab.sip, lab.upstream);
    socket.send_to(options.as_bytes(), ("127.0.0.1", lab.sip)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        let (n, _) = socket.recv_from(&mut buf).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        if text.starts_with("SIP/2.0") && text.contains(&format!("opt-{dn}-")) {
            return text[8..11].parse().unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn registers_with_md5_and_sha256_and_the_binding_ends_with_the_socket() {
    let lab = lab(&[]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    let md5 = gatewayd::sip::digest::ha1(gatewayd::sip::digest::Algorithm::Md5, "5001", "gatewayd-lab", "pass5001");
    let ok = register_with(&mut ws, "5001", &ClientSecret::Ha1 { md5: Some(md5), sha256: None }).await;
    assert_eq!(ok.status_code.code(), 200, "MD5: {ok}");

    let sha = gatewayd::sip::digest::ha1(gatewayd::sip::digest::Algorithm::Sha256, "5002", "gatewayd-lab", "pass5002");
    let mut ws2 = connect(&lab, &own_origin(&lab)).await.unwrap();
    let ok = register_with(&mut ws2, "5002", &ClientSecret::Ha1 { md5: None, sha256: Some(sha) }).await;
    assert_eq!(ok.status_code.code(), 200, "SHA-256: {ok}");

    assert_eq!(tokio::task::block_in_place(|| options_status(&lab, "5001", 1)), 200);
    let metrics = tokio::task::block_in_place(|| common::http_get(lab.admin, "/metrics")).expect("metrics answer");
    assert!(metrics.contains("gatewayd_registrations 2"), "{metrics}");
    ws.close(None).await.unwrap();
    drop(ws);
    let mut lab = lab;
    lab.gw.wait_for_log("agent unregistered", DEADLINE);
    eventually("binding removed when the socket closed", DEADLINE, || (options_status(&lab, "5001", 2) == 480).then_some(()));
    assert_eq!(tokio::task::block_in_place(|| options_status(&lab, "5002", 3)), 200, "the other agent stays registered");
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_and_unknown_user_look_the_same() {
    let lab = lab(&[]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    let wrong = register_with(&mut ws, "5001", &ClientSecret::Password("nope".into())).await;
    let unknown = register_with(&mut ws, "9999", &ClientSecret::Password("nope".into())).await;
    assert_ne!(wrong.status_code.code(), 200);
    assert_eq!(wrong.status_code, unknown.status_code);
    let names = |r: &rsip::Response| r.headers.iter().map(|h| h.to_string().split(':').next().unwrap().to_owned()).collect::<Vec<_>>();
    assert_eq!(names(&wrong), names(&unknown), "same headers for both");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_nonce_count_is_refused() {
    let lab = lab(&[]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    send(&mut ws, &register("5003", 1, 600).to_string()).await;
    let challenge = response(&mut ws).await;
    let mut first = register("5003", 2, 600);
    authorize_request(&mut first, &challenge, "5003", &ClientSecret::Password("pass5003".into()), 1, "abc").unwrap();
    send(&mut ws, &first.to_string()).await;
    assert_eq!(response(&mut ws).await.status_code.code(), 200);
    // The same credentials (same nc) on a new request.
    let mut replay = register("5003", 3, 600);
    authorize_request(&mut replay, &challenge, "5003", &ClientSecret::Password("pass5003".into()), 1, "abc").unwrap();
    send(&mut ws, &replay.to_string()).await;
    assert_ne!(response(&mut ws).await.status_code.code(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_nonce_gets_a_stale_challenge() {
    let lab = lab(&[("GATEWAYD_SIP__AUTH__NONCE_LIFETIME", "1s")]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    send(&mut ws, &register("5004", 1, 600).to_string()).await;
    let challenge = response(&mut ws).await;
    let mut cseq = 2;
    let stale = loop {
        let mut again = register("5004", cseq, 600);
        authorize_request(&mut again, &challenge, "5004", &ClientSecret::Password("pass5004".into()), cseq, "abc").unwrap();
        send(&mut ws, &again.to_string()).await;
        let r = response(&mut ws).await;
        if r.status_code.code() == 401 {
            break r;
        }
        assert!(cseq < 200, "the nonce never went stale");
        cseq += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(stale.to_string().contains("stale=true"), "{stale}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_origin_is_refused() {
    let lab = lab(&[]);
    let err = connect(&lab, "https://evil.example").await.expect_err("refused");
    match err {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        e => panic!("expected HTTP 403, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_sip_gets_400_keepalives_get_pong_and_the_socket_lives() {
    let lab = lab(&[]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    send(&mut ws, "\r\n\r\n").await;
    assert_eq!(recv(&mut ws).await, "\r\n");
    // The body is shorter than Content-Length says.
    send(&mut ws, "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS c.invalid;branch=z9hG4bKm\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:b@c>\r\nCall-ID: m1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 50\r\n\r\nshort").await;
    let r = response(&mut ws).await;
    assert_eq!(r.status_code.code(), 400, "{r}");
    send(&mut ws, "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS c.invalid;branch=z9hG4bKo\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").await;
    assert_eq!(response(&mut ws).await.status_code.code(), 200, "the connection still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_keeps_registered_agents_while_new_handshakes_see_the_new_certificate_and_origins() {
    let mut lab = lab(&[]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    let ok = register_with(&mut ws, "5006", &ClientSecret::Password("pass5006".into())).await;
    assert_eq!(ok.status_code.code(), 200);
    let old_cert = std::fs::read(lab.dir.path().join("state/web.crt")).unwrap();

    // A new certificate (files) and a new allowed origin, then SIGHUP.
    let g = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    std::fs::write(lab.dir.path().join("new.crt"), g.cert.pem()).unwrap();
    std::fs::write(lab.dir.path().join("new.key"), g.signing_key.serialize_pem()).unwrap();
    let profile = lab.dir.path().join("profile.toml");
    let text = std::fs::read_to_string(&profile).unwrap()
        .replace("source = \"self-signed\"", "source = \"files\"\ncertificate = \"new.crt\"\nkey = \"new.key\"")
        .replace("allowed_origins = [", "allowed_origins = [\"https://crm.example.com\", ");
    std::fs::write(&profile, &text).unwrap();
    lab.gw.signal("HUP");
    lab.gw.wait_for_log("profile reloaded", DEADLINE);
    lab.gw.wait_for_log("web: settings applied", DEADLINE);

    // The registered agent's socket is still up and still registered.
    send(&mut ws, "\r\n\r\n").await;
    assert_eq!(recv(&mut ws).await, "\r\n", "the old connection lives");
    assert_eq!(tokio::task::block_in_place(|| options_status(&lab, "5006", 9)), 200, "still registered");

    // New handshakes: the new certificate, and the newly allowed origin.
    let new_cert = g.cert.pem().into_bytes();
    assert_ne!(old_cert, new_cert);
    let ws2 = connect_with(&lab, tls_trusting(&new_cert), "https://crm.example.com").await;
    assert!(ws2.is_ok(), "new certificate and origin apply to new connections: {:?}", ws2.err());
    let stale = connect_with(&lab, tls_trusting(&old_cert), &own_origin(&lab)).await;
    assert!(stale.is_err(), "the old certificate is no longer served to new connections");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_over_its_sip_request_rate_is_told_to_retry_later() {
    let lab = lab(&[("GATEWAYD_BANS__RATE_LIMITS__SIP_REQUESTS_PER_SECOND", "1"), ("GATEWAYD_BANS__RATE_LIMITS__BURST", "2")]);
    let mut ws = connect(&lab, &own_origin(&lab)).await.unwrap();
    for n in 0..20 {
        send(&mut ws, &format!("OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS c.invalid;branch=z9hG4bKflood{n}\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: flood{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")).await;
    }
    // Keepalives are not counted; its pong comes after every answer to the flood.
    send(&mut ws, "\r\n\r\n").await;
    let (mut served, mut limited) = (0, 0);
    loop {
        let text = recv(&mut ws).await;
        if text == "\r\n" {
            break;
        }
        if text.starts_with("SIP/2.0 200 ") {
            served += 1;
        } else {
            assert!(text.starts_with("SIP/2.0 503 ") && text.contains("\r\nRetry-After: 1\r\n"), "{text}");
            limited += 1;
        }
    }
    // Every request is answered: a handful served, the rest told when to come back.
    assert!((1..=4).contains(&served) && served + limited == 20, "rate 1/s with burst 2: {served} served, {limited} limited of 20");
    // The guard counted it (loopback is never banned, but the failure is recorded).
    tokio::task::block_in_place(|| {
        eventually("rate-limited failure in the metrics", DEADLINE, || {
            common::http_get(lab.admin, "/metrics").filter(|m| m.contains("gatewayd_failures_total{kind=\"rate-limited\"} 1"))
        })
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_opening_connections_too_fast_is_cut_off_before_tls() {
    let lab = lab(&[("GATEWAYD_BANS__RATE_LIMITS__NEW_CONNECTIONS_PER_SECOND", "1"), ("GATEWAYD_BANS__RATE_LIMITS__BURST", "1")]);
    let mut completed = 0;
    for _ in 0..10 {
        let tcp = TcpStream::connect(("127.0.0.1", lab.https)).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        if tokio::time::timeout(DEADLINE, tls(&lab).connect(name, tcp)).await.expect("an answer either way").is_ok() {
            completed += 1;
        }
    }
    assert!((1..=3).contains(&completed), "1/s with burst 1 lets a couple of 10 through, got {completed}");
    tokio::task::block_in_place(|| {
        eventually("rate-limited failure in the metrics", DEADLINE, || {
            common::http_get(lab.admin, "/metrics").filter(|m| m.contains("gatewayd_failures_total{kind=\"rate-limited\"}"))
        })
    });
}
