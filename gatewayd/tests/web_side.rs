//! The public HTTPS side over real sockets on 127.0.0.1 with real TLS: pages and headers, the
//! redirect listener, SIP WebSocket upgrades (Origin, subprotocol, permessage-deflate, size and
//! connection limits) and reloads that swap certificate, origins and listeners.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use gatewayd::guard::Report;
use gatewayd::profile::{self, FailureKind, LoadedProfile, TlsSource};
use gatewayd::tls::CertifiedPem;
use gatewayd::web::{self, Outgoing, WebHandle, WsEvent};
use http_body_util::{BodyExt, Empty};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const DEADLINE: Duration = Duration::from_secs(10);

// ---------- a gateway web side on loopback ----------

struct Gateway {
    handle: WebHandle,
    events: mpsc::Receiver<WsEvent>,
    failures: mpsc::Receiver<Report>,
    profile: watch::Sender<Arc<LoadedProfile>>,
    dir: PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("gatewayd-web-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn new_pair() -> CertifiedPem {
    let g = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    CertifiedPem { chain: g.cert.pem().into_bytes(), key: g.signing_key.serialize_pem().into_bytes() }
}

/// The lab profile with its listeners on ephemeral loopback ports, the certificate from files.
fn lab(dir: &Path, pem: &CertifiedPem, cert_name: &str, tag: &str) -> LoadedProfile {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.toml")).unwrap();
    let mut loaded = profile::load_str(&dir.join("lab.toml"), &text, Vec::new()).expect("lab profile loads");
    std::fs::write(dir.join(format!("{cert_name}.crt")), &pem.chain).unwrap();
    std::fs::write(dir.join(format!("{cert_name}.key")), &pem.key).unwrap();
    let p = &mut loaded.profile;
    p.tls.source = TlsSource::Files;
    p.tls.certificate = Some(format!("{cert_name}.crt").into());
    p.tls.key = Some(format!("{cert_name}.key").into());
    p.web.https = vec!["127.0.0.1:0".parse().unwrap()];
    p.web.http_redirect = vec!["127.0.0.1:0".parse().unwrap()];
    loaded.dir = dir.to_owned();
    loaded.sha256 = tag.to_owned();
    loaded
}

async fn start_with(edit: impl FnOnce(&mut LoadedProfile)) -> Gateway {
    let dir = temp_dir();
    let mut loaded = lab(&dir, &new_pair(), "web", "first");
    edit(&mut loaded);
    let (profile, rx) = watch::channel(Arc::new(loaded));
    let (events_tx, events) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel(64);
    let handle = web::start(&dir.join("state"), rx, events_tx, failures_tx).await.expect("web side starts");
    Gateway { handle, events, failures, profile, dir }
}

impl Gateway {
    fn https(&self) -> SocketAddr {
        self.handle.bound().https[0]
    }

    async fn event(&mut self) -> WsEvent {
        tokio::time::timeout(DEADLINE, self.events.recv()).await.expect("an event in time").expect("events open")
    }

    async fn opened(&mut self) -> (web::SessionInfo, mpsc::Sender<Outgoing>) {
        match self.event().await {
            WsEvent::Opened { session, outbound } => (session, outbound),
            other => panic!("expected Opened, got {other:?}"),
        }
    }

    async fn message(&mut self) -> (u64, Bytes) {
        match self.event().await {
            WsEvent::Message { id, data } => (id, data),
            other => panic!("expected Message, got {other:?}"),
        }
    }

    /// Waits for a failure of `kind`, skipping others.
    async fn failure(&mut self, kind: FailureKind) -> Report {
        let wait = async {
            loop {
                let f = self.failures.recv().await.expect("failures open");
                if f.kind == kind {
                    return f;
                }
            }
        };
        tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| panic!("no {kind:?} failure in time"))
    }
}

// ---------- TLS, HTTP and WebSocket clients ----------

/// Accepts any server certificate: the tests compare fingerprints themselves.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(&self, _: &CertificateDer<'_>, _: &[CertificateDer<'_>], _: &ServerName<'_>, _: &[u8], _: UnixTime) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    tls_connect_with(addr, &[&rustls::version::TLS13]).await.expect("TLS handshake")
}

async fn tls_connect_with(addr: SocketAddr, versions: &[&'static rustls::SupportedProtocolVersion]) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let connector = tokio_rustls::TlsConnector::from(client_config(versions));
    tokio::time::timeout(DEADLINE, connector.connect(ServerName::try_from("localhost").unwrap(), tcp)).await.expect("handshake in time")
}

fn fingerprint(tls: &TlsStream<TcpStream>) -> String {
    let certs = tls.get_ref().1.peer_certificates().expect("server sent a certificate");
    hex::encode(Sha256::digest(certs[0].as_ref()))
}

fn pem_fingerprint(pem: &CertifiedPem) -> String {
    web::leaf_sha256(pem)
}

struct Reply {
    status: u16,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("")
    }
}

async fn https_get(addr: SocketAddr, path: &str, extra: &[(&str, &str)]) -> Reply {
    let tls = tls_connect(addr).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path);
    if !extra.iter().any(|(k, _)| *k == "host") {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = tokio::time::timeout(DEADLINE, sender.send_request(req.body(Empty::<Bytes>::new()).unwrap())).await.unwrap().unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body }
}

type Ws = WebSocketStream<TlsStream<TcpStream>>;

/// Opens `/ws` with the given Origin and subprotocols; Err carries the HTTP status of a refusal.
async fn ws_connect(addr: SocketAddr, origin: Option<&str>, protocols: &str) -> Result<(Ws, tokio_tungstenite::tungstenite::handshake::client::Response), u16> {
    let tls = tls_connect(addr).await;
    let mut req = format!("wss://{addr}/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", HeaderValue::from_str(o).unwrap());
    }
    if !protocols.is_empty() {
        req.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_str(protocols).unwrap());
    }
    match tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(req, tls)).await.expect("upgrade answered in time") {
        Ok(x) => Ok(x),
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
    }
}

async fn own_ws(g: &Gateway) -> Ws {
    let addr = g.https();
    ws_connect(addr, Some(&format!("https://{addr}")), "sip").await.expect("upgrade accepted").0
}

async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("a frame in time") {
            Some(Ok(Message::Text(t))) => return t.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Round trip on an open session: client -> Message event, outbound queue -> client.
async fn round_trip(g: &mut Gateway, ws: &mut Ws, id: u64, outbound: &mpsc::Sender<Outgoing>, text: &str) {
    ws.send(Message::text(text)).await.unwrap();
    let (got_id, data) = g.message().await;
    assert_eq!((got_id, &data[..]), (id, text.as_bytes()));
    outbound.send(Outgoing::Text(format!("re: {text}"))).await.unwrap();
    assert_eq!(next_text(ws).await, format!("re: {text}"));
}

// ---------- tests ----------

#[tokio::test]
async fn softphone_page_config_and_security_headers() {
    let mut g = start_with(|_| {}).await;
    let addr = g.https();
    let page = https_get(addr, "/", &[]).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        page.header("content-security-policy"),
        format!("default-src 'self'; connect-src 'self' wss://{addr}; img-src 'self' data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'")
    );
    assert!(page.header("strict-transport-security").starts_with("max-age="));
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert_eq!(page.header("referrer-policy"), "no-referrer");
    assert_eq!(page.header("cache-control"), "no-cache");
    assert!(String::from_utf8_lossy(&page.body).contains("<html"));
    let etag = page.header("etag").to_owned();
    let again = https_get(addr, "/", &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());

    if !String::from_utf8_lossy(&page.body).contains("Softphone not installed") {
        let js = https_get(addr, "/app.js", &[]).await;
        assert_eq!((js.status, js.header("content-type")), (200, "text/javascript; charset=utf-8"));
        let css = https_get(addr, "/app.css", &[]).await;
        assert_eq!((css.status, css.header("content-type")), (200, "text/css; charset=utf-8"));
    }

    let config = https_get(addr, "/config.json", &[]).await;
    assert_eq!((config.status, config.header("content-type")), (200, "application/json"));
    let json: serde_json::Value = serde_json::from_slice(&config.body).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"site": "lab", "sip_domain": "127.0.0.1", "ws_path": "/ws", "echo_number": "600", "token_header": "X-Gatewayd-Token", "ice_servers": [], "turn_credentials": "/turn-credentials"})
    );

    let missing = https_get(addr, "/no/such/file", &[]).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("x-content-type-options"), "nosniff");
    let f = g.failure(FailureKind::Http4xx).await;
    assert_eq!(f.ip, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());

    // A Host that would smuggle directives into the CSP is not echoed.
    let odd = https_get(addr, "/", &[("host", "a.example; script-src *")]).await;
    assert!(odd.header("content-security-policy").contains(&format!("wss://{addr};")));

    // TLS 1.2 is offered too; ALPN says http/1.1.
    let tls12 = tls_connect_with(addr, &[&rustls::version::TLS12]).await.expect("TLS 1.2 handshake");
    assert_eq!(tls12.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn softphone_off_hides_pages_but_not_ws() {
    let mut g = start_with(|l| l.profile.web.softphone = false).await;
    let addr = g.https();
    assert_eq!(https_get(addr, "/", &[]).await.status, 404);
    assert_eq!(https_get(addr, "/config.json", &[]).await.status, 404);
    let mut ws = own_ws(&g).await;
    let (session, outbound) = g.opened().await;
    round_trip(&mut g, &mut ws, session.id, &outbound, "OPTIONS sip:x SIP/2.0").await;
}

async fn http_request(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", addr.port());
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(DEADLINE, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

#[tokio::test]
async fn redirect_listener_answers_acme_challenges() {
    let g = start_with(|_| {}).await;
    let http = g.handle.bound().http_redirect[0];
    let challenges = g.dir.join("state").join(web::HTTP01_DIR);
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("tok-EN_1"), "tok-EN_1.thumbprint").unwrap();
    let answer = http_request(http, "GET", "/.well-known/acme-challenge/tok-EN_1").await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(answer.ends_with("\r\n\r\ntok-EN_1.thumbprint"), "{answer}");
    // Unknown or path-like tokens are just redirected.
    for path in ["/.well-known/acme-challenge/other", "/.well-known/acme-challenge/..%2Fweb.key", "/.well-known/acme-challenge/"] {
        assert!(http_request(http, "GET", path).await.starts_with("HTTP/1.1 301 "), "{path}");
    }
}

#[tokio::test]
async fn redirect_listener_sends_to_https_keeping_path() {
    let g = start_with(|_| {}).await;
    let bound = g.handle.bound();
    let (http, https) = (bound.http_redirect[0], bound.https[0]);
    for (method, status) in [("GET", "301"), ("POST", "308")] {
        let mut tcp = TcpStream::connect(http).await.unwrap();
        let req = format!("{method} /call?to=600 HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", http.port());
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(DEADLINE, tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with(&format!("HTTP/1.1 {status} ")), "{answer}");
        let location = format!("location: https://127.0.0.1:{}/call?to=600\r\n", https.port());
        assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    }
}

#[tokio::test]
async fn sip_websocket_with_own_origin_round_trips() {
    let mut g = start_with(|_| {}).await;
    let addr = g.https();
    let (mut ws, response) = ws_connect(addr, Some(&format!("https://{addr}")), "sip").await.expect("upgrade accepted");
    assert_eq!(response.headers().get("sec-websocket-protocol").unwrap(), "sip");
    let (session, outbound) = g.opened().await;
    assert_eq!(session.origin, format!("https://{addr}"));
    assert_eq!(session.local, addr);
    assert_eq!(session.peer.ip(), addr.ip());
    round_trip(&mut g, &mut ws, session.id, &outbound, "REGISTER sip:127.0.0.1 SIP/2.0").await;

    // The profile's allowed origin works as well; a second session gets its own id.
    let (mut ws2, _) = ws_connect(addr, Some("https://127.0.0.1:8443"), "chat, sip").await.expect("listed origin accepted");
    let (second, outbound2) = g.opened().await;
    assert_ne!(second.id, session.id);
    assert_eq!(g.handle.open_sessions(), 2);
    assert!(g.handle.open_connections() >= 2);
    round_trip(&mut g, &mut ws2, second.id, &outbound2, "OPTIONS sip:127.0.0.1 SIP/2.0").await;

    // Close on request (a ban): the client sees 1008 and the session reports closed.
    outbound2.send(Outgoing::Close("banned")).await.unwrap();
    match tokio::time::timeout(DEADLINE, ws2.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!((frame.code, frame.reason.as_str()), (CloseCode::Policy, "banned")),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(matches!(g.event().await, WsEvent::Closed { id } if id == second.id));

    // Dropping the last sender closes the socket.
    drop(outbound);
    match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(_))) | None => {}
        other => panic!("expected the socket to close, got {other:?}"),
    }
    assert!(matches!(g.event().await, WsEvent::Closed { id } if id == session.id));
    assert_eq!(g.handle.open_sessions(), 0);
}

#[tokio::test]
async fn foreign_or_missing_origin_and_missing_subprotocol_are_refused() {
    let mut g = start_with(|_| {}).await;
    let addr = g.https();
    assert_eq!(ws_connect(addr, Some("https://evil.example"), "sip").await.err(), Some(403));
    let f = g.failure(FailureKind::OriginRejected).await;
    assert!(f.detail.contains("evil.example"), "{}", f.detail);
    // Same host, other port: not the gateway's origin.
    assert_eq!(ws_connect(addr, Some(&format!("https://127.0.0.1:{}", addr.port() + 1)), "sip").await.err(), Some(403));
    g.failure(FailureKind::OriginRejected).await;
    assert_eq!(ws_connect(addr, None, "sip").await.err(), Some(403));
    g.failure(FailureKind::OriginRejected).await;
    assert_eq!(ws_connect(addr, Some(&format!("https://{addr}")), "chat").await.err(), Some(400));
    assert_eq!(ws_connect(addr, Some(&format!("https://{addr}")), "").await.err(), Some(400));
    // A plain GET of /ws is told to upgrade.
    assert_eq!(https_get(addr, "/ws", &[]).await.status, 426);
    // Nothing was handed over.
    assert!(g.events.try_recv().is_err());
}

#[tokio::test]
async fn messages_over_the_size_limit_close_the_connection() {
    let mut g = start_with(|l| l.profile.web.max_message_bytes = 2048).await;
    let mut ws = own_ws(&g).await;
    let (session, _outbound) = g.opened().await;
    let exact = "x".repeat(2048);
    ws.send(Message::text(exact.clone())).await.unwrap();
    assert_eq!(g.message().await.1.len(), 2048);
    ws.send(Message::text("y".repeat(2049))).await.unwrap();
    match tokio::time::timeout(DEADLINE, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Size),
        other => panic!("expected close 1009, got {other:?}"),
    }
    // The oversized message never reaches the consumer.
    assert!(matches!(g.event().await, WsEvent::Closed { id } if id == session.id));
}

#[tokio::test]
async fn connections_per_source_are_limited() {
    let mut g = start_with(|l| l.profile.web.max_connections_per_source = 3).await;
    let addr = g.https();
    let mut open = Vec::new();
    for _ in 0..3 {
        let ws = own_ws(&g).await;
        open.push((ws, g.opened().await));
    }
    let over = ws_connect(addr, Some(&format!("https://{addr}")), "sip").await.err();
    assert_eq!(over, Some(503));
    g.failure(FailureKind::RateLimited).await;

    // One closes; its slot is free again once the session has ended.
    let (mut first, (session, _outbound)) = open.remove(0);
    first.close(None).await.unwrap();
    assert!(matches!(g.event().await, WsEvent::Closed { id } if id == session.id));
    let _again = own_ws(&g).await;
    let _kept = g.opened().await;
}

#[tokio::test]
async fn permessage_deflate_is_negotiated_and_used() {
    let mut g = start_with(|_| {}).await;
    let addr = g.https();
    let mut tls = tls_connect(addr).await;
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\nOrigin: https://{addr}\r\n\r\n"
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let b = tokio::time::timeout(DEADLINE, tls.read_u8()).await.unwrap().unwrap();
        head.push(b);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let extensions = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-extensions")).map(|(_, v)| v.trim().to_owned()))
        .expect("the extension was accepted");
    assert!(extensions.starts_with("permessage-deflate"), "{extensions}");
    let mut ws = yawc::WebSocket::from_stream_with_extensions(
        tls,
        yawc::Role::Client,
        Some(&extensions),
        yawc::Options::default().with_low_latency_compression(),
    )
    .unwrap();
    let (session, outbound) = g.opened().await;
    let invite = format!("INVITE sip:600@127.0.0.1 SIP/2.0\r\n{}", "a=candidate:1 1 udp 2122260223 127.0.0.1 40000 typ host\r\n".repeat(40));
    ws.send(yawc::frame::Frame::text(invite.clone())).await.unwrap();
    let (id, data) = g.message().await;
    assert_eq!((id, &data[..]), (session.id, invite.as_bytes()));
    outbound.send(Outgoing::Text(invite.clone())).await.unwrap();
    let frame = tokio::time::timeout(DEADLINE, ws.next_frame()).await.unwrap().unwrap();
    assert_eq!(frame.payload(), invite.as_bytes());
}

#[tokio::test]
async fn reload_swaps_certificate_and_origins_and_keeps_open_sessions() {
    let dir = temp_dir();
    let (cert_a, cert_b) = (new_pair(), new_pair());
    let mut first = lab(&dir, &cert_a, "a", "first");
    first.profile.web.allowed_origins = vec!["https://a.example".into()];
    let (profile, rx) = watch::channel(Arc::new(first));
    let (events_tx, events) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel(64);
    let handle = web::start(&dir.join("state"), rx, events_tx, failures_tx).await.unwrap();
    let mut g = Gateway { handle, events, failures, profile, dir: dir.clone() };
    let addr = g.https();
    assert_eq!(fingerprint(&tls_connect(addr).await), pem_fingerprint(&cert_a));
    assert_eq!(g.handle.settings().certificate_sha256, pem_fingerprint(&cert_a));

    let (mut ws, _) = ws_connect(addr, Some("https://a.example"), "sip").await.expect("origin a allowed");
    let (session, outbound) = g.opened().await;
    round_trip(&mut g, &mut ws, session.id, &outbound, "before").await;

    let mut second = lab(&dir, &cert_b, "b", "second");
    second.profile.web.allowed_origins = vec!["https://b.example".into()];
    g.profile.send_replace(Arc::new(second));
    assert!(g.handle.wait_applied("second").await);

    // The open session lives on, on the old certificate.
    round_trip(&mut g, &mut ws, session.id, &outbound, "after").await;
    // New handshakes get the new certificate; the listener did not move.
    assert_eq!(g.https(), addr);
    assert_eq!(fingerprint(&tls_connect(addr).await), pem_fingerprint(&cert_b));
    // New upgrades follow the new Origin policy.
    assert_eq!(ws_connect(addr, Some("https://a.example"), "sip").await.err(), Some(403));
    g.failure(FailureKind::OriginRejected).await;
    let _b = ws_connect(addr, Some("https://b.example"), "sip").await.expect("origin b allowed");
    let _b_session = g.opened().await;

    // A profile whose certificate cannot be read is refused; the running settings stay.
    let mut broken = lab(&dir, &cert_b, "c", "broken");
    std::fs::remove_file(dir.join("c.key")).unwrap();
    broken.profile.web.allowed_origins = vec!["https://c.example".into()];
    g.profile.send_replace(Arc::new(broken));
    // Then a good one with a moved listener: new address up, old one stops accepting.
    let mut moved = lab(&dir, &cert_b, "b", "moved");
    moved.profile.web.https = vec!["127.0.0.2:0".parse().unwrap()];
    g.profile.send_replace(Arc::new(moved));
    assert!(g.handle.wait_applied("moved").await);
    let new_addr = g.https();
    assert_eq!(new_addr.ip().to_string(), "127.0.0.2");
    assert!(TcpStream::connect(addr).await.is_err(), "the old listener still accepts");
    assert_eq!(fingerprint(&tls_connect(new_addr).await), pem_fingerprint(&cert_b));
    round_trip(&mut g, &mut ws, session.id, &outbound, "after the move").await;
}

#[tokio::test]
async fn bad_tls_is_a_failure_and_lab_certificate_is_generated() {
    let dir = temp_dir();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../profiles/lab.toml")).unwrap();
    let mut loaded = profile::load_str(&dir.join("lab.toml"), &text, Vec::new()).unwrap();
    loaded.profile.web.https = vec!["127.0.0.1:0".parse().unwrap()];
    loaded.profile.web.http_redirect = vec![];
    let (profile, rx) = watch::channel(Arc::new(loaded));
    let (events_tx, events) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel(64);
    let state = dir.join("state");
    let handle = web::start(&state, rx, events_tx, failures_tx).await.unwrap();
    let mut g = Gateway { handle, events, failures, profile, dir: dir.clone() };
    let generated = CertifiedPem { chain: std::fs::read(state.join("web.crt")).unwrap(), key: std::fs::read(state.join("web.key")).unwrap() };
    assert_eq!(fingerprint(&tls_connect(g.https()).await), pem_fingerprint(&generated));

    let mut tcp = TcpStream::connect(g.https()).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    g.failure(FailureKind::TlsHandshake).await;
}

#[tokio::test]
async fn acme_serves_a_placeholder_until_its_certificate_is_there() {
    let dir = temp_dir();
    let mut first = lab(&dir, &new_pair(), "unused", "placeholder");
    first.profile.tls.source = TlsSource::Acme;
    // From TOML, as a profile gives it, so the fields left out take their defaults.
    let acme: profile::Acme = toml::from_str(
        r#"directory = "https://acme.invalid/directory"
contact = "mailto:noc@example.com"
domains = ["agents.example.com"]"#,
    )
    .unwrap();
    first.profile.tls.acme = Some(acme);
    let (profile, rx) = watch::channel(Arc::new(first.clone()));
    let (events_tx, events) = mpsc::channel(64);
    let (failures_tx, failures) = mpsc::channel(64);
    let state = dir.join("state");
    let handle = web::start(&state, rx, events_tx, failures_tx).await.expect("starts before ACME has a certificate");
    let mut g = Gateway { handle, events, failures, profile, dir: dir.clone() };
    let placeholder = fingerprint(&tls_connect(g.https()).await);

    let obtained = new_pair();
    std::fs::create_dir_all(state.join("acme")).unwrap();
    std::fs::write(state.join("acme/web.crt"), &obtained.chain).unwrap();
    std::fs::write(state.join("acme/web.key"), &obtained.key).unwrap();
    let mut again = first;
    again.sha256 = "obtained".into();
    g.profile.send_replace(Arc::new(again));
    assert!(g.handle.wait_applied("obtained").await);
    let now = fingerprint(&tls_connect(g.https()).await);
    assert_ne!(now, placeholder);
    assert_eq!(now, pem_fingerprint(&obtained));
}
