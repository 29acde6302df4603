//! RFC 3261 conformance of what the gateway answers, over real sockets against a running
//! daemon: each malformed or unsupported request on an agent's WebSocket and on the internal
//! UDP and TCP side gets its exact status line and the connection keeps working; the REGISTER
//! binding query and `Contact: *`; sipp as the SIP server on the internal side; and a flood of
//! malformed messages leaves a few summary lines in the log, not one per message.

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use gatewayd::sip::framing::{StreamFramer, StreamItem};
use rsip::SipMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use common::{lab_profile_free_ports, Gateway, TempDir};

const DEADLINE: Duration = Duration::from_secs(20);

struct Lab {
    dir: TempDir,
    gw: Gateway,
    https: u16,
    sip: u16,
}

/// A lab gateway whose agent-side rate limit lets a test's requests through.
fn lab() -> Lab {
    let dir = TempDir::new("conformance");
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let env = [("GATEWAYD_BANS__RATE_LIMITS__SIP_REQUESTS_PER_SECOND", "100000"), ("GATEWAYD_BANS__RATE_LIMITS__BURST", "100000")];
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &env);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    Lab { https: ports[&8443], sip: ports[&5060], gw, dir }
}

/// How a request reaches the gateway: the Via transport, its sent-by and the Request-URI of an
/// OPTIONS the gateway answers 200 (itself on WSS, the echo number on the internal side).
struct Side {
    transport: &'static str,
    sent_by: String,
    uri: String,
}

/// A well-formed OPTIONS; `id` is its branch suffix and Call-ID.
fn options(side: &Side, id: &str) -> String {
    let (transport, sent_by, uri) = (side.transport, &side.sent_by, &side.uri);
    format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/{transport} {sent_by};branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.1>;tag=p{id}\r\nTo: <{uri}>\r\nCall-ID: {id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn without(text: &str, name: &str) -> String {
    text.split("\r\n").filter(|l| !l.starts_with(&format!("{name}:"))).collect::<Vec<_>>().join("\r\n")
}

fn as_method(text: &str, method: &str) -> String {
    text.replacen("OPTIONS ", &format!("{method} "), 1).replace("1 OPTIONS", &format!("1 {method}"))
}

/// Every refusal case: name, request, the exact status line, and whether it applies over TCP
/// (where Content-Length frames the stream, so a body shorter than declared just waits).
fn cases(side: &Side) -> Vec<(&'static str, String, &'static str, bool)> {
    let o = |id: &str| options(side, id);
    vec![
        ("missing To", without(&o("c1"), "To"), "SIP/2.0 400 Missing To header", true),
        ("missing From", without(&o("c2"), "From"), "SIP/2.0 400 Missing From header", true),
        ("missing Call-ID", without(&o("c3"), "Call-ID"), "SIP/2.0 400 Missing Call-ID header", true),
        ("missing CSeq", without(&o("c4"), "CSeq"), "SIP/2.0 400 Missing CSeq header", true),
        ("bad CSeq", o("c5").replace("CSeq: 1 OPTIONS", "CSeq: one OPTIONS"), "SIP/2.0 400 Bad CSeq header", true),
        ("CSeq of another method", o("c6").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"), "SIP/2.0 400 Bad CSeq header", true),
        ("two To headers", o("c7").replace("To: ", "To: <sip:x@127.0.0.1>\r\nTo: "), "SIP/2.0 400 Bad To header", true),
        ("Max-Forwards 256", o("c8").replace("Max-Forwards: 70", "Max-Forwards: 256"), "SIP/2.0 400 Bad Max-Forwards header", true),
        ("Max-Forwards not a number", o("c9").replace("Max-Forwards: 70", "Max-Forwards: ten"), "SIP/2.0 400 Bad Max-Forwards header", true),
        ("body shorter than Content-Length", o("c10").replace("Content-Length: 0\r\n\r\n", "Content-Length: 60\r\n\r\nshort"), "SIP/2.0 400 Bad Content-Length header", false),
        ("Require of an unsupported extension", o("c11").replace("Max-Forwards: 70", "Max-Forwards: 70\r\nRequire: 100rel"), "SIP/2.0 420 Bad Extension", true),
        ("http Request-URI", o("c12").replacen(&side.uri, "http://127.0.0.1/", 1), "SIP/2.0 416 Unsupported URI Scheme", true),
        ("tel Request-URI", o("c13").replacen(&side.uri, "tel:+4930123", 1), "SIP/2.0 416 Unsupported URI Scheme", true),
        ("SIP/3.0", o("c14").replacen(" SIP/2.0\r\n", " SIP/3.0\r\n", 1), "SIP/2.0 505 Version Not Supported", true),
        ("Max-Forwards 0", as_method(&o("c15"), "MESSAGE").replace("Max-Forwards: 70", "Max-Forwards: 0"), "SIP/2.0 483 Too Many Hops", true),
        ("unknown method", as_method(&o("c16"), "FROB"), "SIP/2.0 501 Not Implemented", true),
        // OPTIONS is answered by the gateway itself, so a hop count of 0 does not stop it.
        ("OPTIONS with Max-Forwards 0", o("c17").replace("Max-Forwards: 70", "Max-Forwards: 0"), "SIP/2.0 200 OK", true),
    ]
}

/// The status line of the response carrying branch `id`, skipping anything else.
fn status_for(text: &str, id: &str) -> Option<String> {
    let branch = format!("branch=z9hG4bK{id}\r\n");
    let branch_param = format!("branch=z9hG4bK{id};");
    (text.starts_with("SIP/2.0 ") && (text.contains(&branch) || text.contains(&branch_param))).then(|| text.split("\r\n").next().unwrap().to_owned())
}

fn id_of(request: &str) -> String {
    let at = request.find("branch=z9hG4bK").expect("a branch") + "branch=z9hG4bK".len();
    request[at..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect()
}

// ---- WebSocket ----

type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect(lab: &Lab) -> Ws {
    let pem = std::fs::read(lab.dir.path().join("state/web.crt")).unwrap();
    let config = common::tls_trusting(&pem);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", lab.https)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let mut request = format!("wss://127.0.0.1:{}/ws", lab.https).into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("https://127.0.0.1:{}", lab.https).parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    tokio_tungstenite::client_async(request, stream).await.unwrap().0
}

/// The next text frame, within the deadline.
async fn ws_recv(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a frame within the deadline").expect("the socket is open").unwrap();
        match msg {
            Message::Text(t) => return t.to_string(),
            Message::Close(c) => panic!("the gateway closed the connection: {c:?}"),
            _ => continue,
        }
    }
}

/// Sends `request`, returns the whole response to it.
async fn ws_exchange(ws: &mut Ws, request: &str) -> String {
    let id = id_of(request);
    ws.send(Message::text(request.to_owned())).await.unwrap();
    loop {
        let text = ws_recv(ws).await;
        if status_for(&text, &id).is_some() {
            return text;
        }
    }
}

fn status_line(response: &str) -> &str {
    response.split("\r\n").next().unwrap()
}

fn wss_side() -> Side {
    Side { transport: "WSS", sent_by: "client.invalid".into(), uri: "sip:127.0.0.1".into() }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_wss_each_refusal_is_answered_and_the_connection_lives() {
    let lab = lab();
    let mut ws = connect(&lab).await;
    let side = wss_side();
    for (name, request, expected, _) in cases(&side) {
        let response = ws_exchange(&mut ws, &request).await;
        assert_eq!(status_line(&response), expected, "{name}:\n{request}");
        if expected.contains(" 420 ") {
            assert!(response.contains("\r\nUnsupported: 100rel\r\n"), "{response}");
        }
    }
    // Without a Via there is nothing to answer; the next request still is.
    ws.send(Message::text(without(&options(&side, "noVia"), "Via"))).await.unwrap();
    let ok = ws_exchange(&mut ws, &options(&side, "after")).await;
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK", "the connection still works");
}

/// REGISTER requests for `dn` on one connection, authenticated with the first challenge.
struct Registration {
    dn: &'static str,
    challenge: Option<rsip::Response>,
    cseq: u32,
}

impl Registration {
    fn request(&mut self, contact: Option<&str>, expires: Option<u32>) -> String {
        self.cseq += 1;
        let (dn, cseq) = (self.dn, self.cseq);
        let contact = contact.map(|c| format!("Contact: {c}\r\n")).unwrap_or_default();
        let expires = expires.map(|e| format!("Expires: {e}\r\n")).unwrap_or_default();
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bKreg{cseq}\r\nMax-Forwards: 70\r\n\
             To: <sip:{dn}@127.0.0.1>\r\nFrom: <sip:{dn}@127.0.0.1>;tag=r{dn}\r\nCall-ID: reg-{dn}\r\nCSeq: {cseq} REGISTER\r\n\
             {contact}{expires}Content-Length: 0\r\n\r\n"
        );
        let Some(challenge) = &self.challenge else { return text };
        let Ok(SipMessage::Request(mut request)) = gatewayd::sip::message::parse(text.as_bytes()) else { panic!("{text}") };
        let secret = ClientSecret::Password(format!("pass{dn}"));
        authorize_request(&mut request, challenge, dn, &secret, cseq, "c0nf").unwrap();
        request.to_string()
    }

    async fn send(&mut self, ws: &mut Ws, contact: Option<&str>, expires: Option<u32>) -> String {
        if self.challenge.is_none() {
            let challenge = ws_exchange(ws, &self.request(None, None)).await;
            let Ok(SipMessage::Response(r)) = gatewayd::sip::message::parse(challenge.as_bytes()) else { panic!("{challenge}") };
            assert_eq!(r.status_code.code(), 401, "{challenge}");
            self.challenge = Some(r);
        }
        ws_exchange(ws, &self.request(contact, expires)).await
    }
}

fn contacts(response: &str) -> Vec<&str> {
    response.split("\r\n").filter_map(|l| l.strip_prefix("Contact: ")).collect()
}

/// What the SIP server hears when it asks about a DN: 200 only while it is registered.
fn internal_options_status(lab: &Lab, dn: &str) -> String {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let side = Side { transport: "UDP", sent_by: socket.local_addr().unwrap().to_string(), uri: format!("sip:{dn}@127.0.0.1:{}", lab.sip) };
    status_line(&udp_exchange(&socket, lab.sip, &options(&side, &format!("q{dn}")))).to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn register_without_contact_lists_the_bindings_and_a_wildcard_removes_them() {
    let lab = lab();
    let mut ws = connect(&lab).await;
    let side = wss_side();
    // A refused request first: the same connection then registers.
    assert_eq!(status_line(&ws_exchange(&mut ws, &without(&options(&side, "r0"), "To")).await), "SIP/2.0 400 Missing To header");
    let contact = "<sip:a5001@client.invalid;transport=ws>";
    let mut reg = Registration { dn: "5001", challenge: None, cseq: 0 };
    let ok = reg.send(&mut ws, Some(contact), Some(600)).await;
    assert_eq!(status_line(&ok), "SIP/2.0 200 OK", "{ok}");
    assert_eq!(tokio::task::block_in_place(|| internal_options_status(&lab, "5001")), "SIP/2.0 200 OK");

    // The binding query: 200 with the binding and what is left of its expiry.
    let listed = reg.send(&mut ws, None, None).await;
    assert_eq!(status_line(&listed), "SIP/2.0 200 OK", "{listed}");
    let found = contacts(&listed);
    assert_eq!(found.len(), 1, "{listed}");
    let expires: u32 = found[0].strip_prefix(&format!("{contact};expires=")).expect("the contact with its expiry").parse().unwrap();
    assert!((590..=600).contains(&expires), "{listed}");

    // `*` needs Expires 0 and no other Contact (RFC 3261 section 10.3 step 6).
    let refused = reg.send(&mut ws, Some("*"), Some(60)).await;
    assert!(status_line(&refused).starts_with("SIP/2.0 400 "), "{refused}");
    let refused = reg.send(&mut ws, Some(&format!("*, {contact}")), Some(0)).await;
    assert!(status_line(&refused).starts_with("SIP/2.0 400 "), "{refused}");
    assert_eq!(contacts(&reg.send(&mut ws, None, None).await).len(), 1, "still bound after the refusals");

    let removed = reg.send(&mut ws, Some("*"), Some(0)).await;
    assert_eq!(status_line(&removed), "SIP/2.0 200 OK", "{removed}");
    assert!(contacts(&removed).is_empty(), "{removed}");
    let listed = reg.send(&mut ws, None, None).await;
    assert_eq!(status_line(&listed), "SIP/2.0 200 OK");
    assert!(contacts(&listed).is_empty(), "no binding left: {listed}");
    assert!(tokio::task::block_in_place(|| internal_options_status(&lab, "5001")).starts_with("SIP/2.0 480 "), "unregistered");
    assert_eq!(status_line(&ws_exchange(&mut ws, &options(&side, "r9")).await), "SIP/2.0 200 OK");
}

// ---- internal side: UDP and TCP ----

/// Sends one datagram and returns the response carrying its branch.
fn udp_exchange(socket: &UdpSocket, port: u16, request: &str) -> String {
    let id = id_of(request);
    socket.send_to(request.as_bytes(), ("127.0.0.1", port)).unwrap();
    udp_response(socket, &id)
}

fn udp_response(socket: &UdpSocket, id: &str) -> String {
    let end = Instant::now() + DEADLINE;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = end.checked_duration_since(Instant::now()).expect("a response within the deadline");
        socket.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        let (n, _) = socket.recv_from(&mut buf).expect("a response within the deadline");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if status_for(&text, id).is_some() {
            return text;
        }
    }
}

fn internal_side(transport: &'static str, local: std::net::SocketAddr, lab: &Lab) -> Side {
    Side { transport, sent_by: local.to_string(), uri: format!("sip:600@127.0.0.1:{}", lab.sip) }
}

#[test]
fn over_internal_udp_each_refusal_is_answered_and_the_socket_still_serves() {
    let lab = lab();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let side = internal_side("UDP", socket.local_addr().unwrap(), &lab);
    for (name, request, expected, _) in cases(&side) {
        let response = udp_exchange(&socket, lab.sip, &request);
        assert_eq!(status_line(&response), expected, "{name}:\n{request}");
    }
    socket.send_to(without(&options(&side, "noVia"), "Via").as_bytes(), ("127.0.0.1", lab.sip)).unwrap();
    assert_eq!(status_line(&udp_exchange(&socket, lab.sip, &options(&side, "after"))), "SIP/2.0 200 OK");
}

/// A TCP connection to the internal listener, reading responses as the gateway frames them.
struct Tcp {
    stream: TcpStream,
    framer: StreamFramer,
}

impl Tcp {
    fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        Tcp { stream, framer: StreamFramer::new(65_535) }
    }

    /// The next message, or `None` once the gateway closed the connection.
    fn next(&mut self) -> Option<String> {
        let end = Instant::now() + DEADLINE;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(StreamItem::Message(m)) = self.framer.next_item().unwrap() {
                return Some(String::from_utf8_lossy(&m).into_owned());
            }
            let left = end.checked_duration_since(Instant::now()).expect("a response within the deadline");
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            match self.stream.read(&mut buf).expect("a response within the deadline") {
                0 => return None,
                n => self.framer.push(&buf[..n]).unwrap(),
            }
        }
    }

    fn exchange(&mut self, request: &str) -> String {
        let id = id_of(request);
        self.stream.write_all(request.as_bytes()).unwrap();
        loop {
            let text = self.next().expect("the connection stays open");
            if status_for(&text, &id).is_some() {
                return text;
            }
        }
    }
}

#[test]
fn over_internal_tcp_each_refusal_is_answered_on_the_same_connection() {
    let lab = lab();
    let mut tcp = Tcp::connect(lab.sip);
    let side = internal_side("TCP", tcp.stream.local_addr().unwrap(), &lab);
    for (name, request, expected, on_tcp) in cases(&side) {
        if on_tcp {
            let response = tcp.exchange(&request);
            assert_eq!(status_line(&response), expected, "{name}:\n{request}");
        }
    }
    tcp.stream.write_all(without(&options(&side, "noVia"), "Via").as_bytes()).unwrap();
    assert_eq!(status_line(&tcp.exchange(&options(&side, "after"))), "SIP/2.0 200 OK");

    // A Content-Length that cannot be read leaves no way to find the next message: the
    // request is told why, then the connection ends.
    let mut tcp = Tcp::connect(lab.sip);
    let side = internal_side("TCP", tcp.stream.local_addr().unwrap(), &lab);
    let request = options(&side, "cl").replace("Content-Length: 0", "Content-Length: many");
    assert_eq!(status_line(&tcp.exchange(&request)), "SIP/2.0 400 Bad Content-Length header");
    assert_eq!(tcp.next(), None, "closed after the refusal");
}

// ---- sipp as the SIP server ----

/// sipp sends refused requests one after another in one call and checks each status line, then
/// an OPTIONS that must still be answered; over UDP and then over one TCP connection.
const SIPP_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="refusals from the internal side">
  @STEPS@
  <send><![CDATA[
      OPTIONS sip:600@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:600@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 99 OPTIONS
      Content-Length: 0

  ]]></send>
  <recv response="200"/>
  <Reference variables="@VARS@"/>
</scenario>
"#;

/// One request of the sipp scenario and the check of its answer: the status line starts with
/// `expect`, and the response holds `also` when given.
fn sipp_step(n: usize, request_line: &str, headers: &str, expect: &str, also: Option<&str>) -> String {
    let code = &expect[..3];
    let pattern = regex_escape(expect);
    let also = also
        .map(|a| format!(r#"<ereg regexp="{}" search_in="msg" check_it="true" assign_to="a{n}"/>"#, regex_escape(a)))
        .unwrap_or_default();
    format!(
        r#"<send><![CDATA[
      {request_line}
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      Call-ID: [call_id]
      CSeq: {n} {method}
{headers}      Content-Length: 0

  ]]></send>
  <recv response="{code}"><action><ereg regexp="^SIP/2\.0 {pattern}" search_in="msg" check_it="true" assign_to="s{n}"/>{also}</action></recv>
"#,
        method = request_line.split(' ').next().unwrap(),
    )
}

fn regex_escape(text: &str) -> String {
    text.chars().map(|c| if "\\.+*?()[]{}|^$".contains(c) { format!("\\{c}") } else { c.to_string() }).collect()
}

fn sipp_scenario() -> String {
    let to = "      To: <sip:600@[remote_ip]:[remote_port]>\n";
    let mf = "      Max-Forwards: 70\n";
    let steps = [
        sipp_step(1, "OPTIONS sip:600@[remote_ip]:[remote_port] SIP/2.0", mf, "400 Missing To header", None),
        sipp_step(2, "OPTIONS sip:600@[remote_ip]:[remote_port] SIP/2.0", &format!("{to}      Max-Forwards: 300\n"), "400 Bad Max-Forwards header", None),
        sipp_step(3, "OPTIONS sip:600@[remote_ip]:[remote_port] SIP/2.0", &format!("{to}{mf}      Require: foo\n"), "420 Bad Extension", Some("Unsupported: foo")),
        sipp_step(4, "OPTIONS tel:+4930123 SIP/2.0", &format!("{to}{mf}"), "416 Unsupported URI Scheme", None),
        sipp_step(5, "OPTIONS sip:600@[remote_ip]:[remote_port] SIP/3.0", &format!("{to}{mf}"), "505 Version Not Supported", None),
        sipp_step(6, "MESSAGE sip:600@[remote_ip]:[remote_port] SIP/2.0", &format!("{to}      Max-Forwards: 0\n"), "483 Too Many Hops", None),
    ];
    let mut vars: Vec<String> = (1..=steps.len()).map(|n| format!("s{n}")).collect();
    vars.push("a3".into());
    SIPP_SCENARIO.replace("@STEPS@", &steps.concat()).replace("@VARS@", &vars.join(","))
}

#[test]
fn sipp_on_the_internal_side_gets_each_refusal_over_udp_and_tcp() {
    let lab = lab();
    let scenario = lab.dir.path().join("refusals.xml");
    std::fs::write(&scenario, sipp_scenario()).unwrap();
    for transport in ["u1", "t1"] {
        let out = Command::new("sipp")
            .current_dir(lab.dir.path())
            .args(["-sf", "refusals.xml", "-m", "1", "-t", transport, "-i", "127.0.0.1", "-p", &common::free_port().to_string()])
            .args(["-timeout", "15s", "-timeout_error", "-nostdin", "-trace_err"])
            .arg(format!("127.0.0.1:{}", lab.sip))
            .output()
            .expect("sipp runs (apt install sip-tester)");
        let errors = std::fs::read_dir(lab.dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with("_errors.log")).map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect::<String>();
        assert!(out.status.success(), "sipp -t {transport}: exit {:?}\n{}\n{errors}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    }
}

// ---- the log ----

/// Lines of the gateway's log that summarise rejected input from `side`, as (total, line).
fn summaries(gw: &Gateway, side: &str) -> Vec<(u64, String)> {
    gw.seen
        .iter()
        .filter(|l| l.contains("rejected SIP input") && l.contains(&format!("side=\"{side}\"")))
        .map(|l| {
            let total = l.split("rejected=").nth(1).and_then(|t| t.split(' ').next()).and_then(|t| t.parse().ok()).unwrap_or(0);
            (total, l.clone())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_malformed_messages_leaves_a_few_summary_lines() {
    const N: usize = 2000;
    let mut lab = lab();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = internal_side("UDP", socket.local_addr().unwrap(), &lab);
    let mut ws = connect(&lab).await;
    let wss = wss_side();
    let started = lab.gw.seen.len();
    // Sent in windows so nothing is lost to a socket buffer, each window's answers awaited.
    for window in 0..N / 50 {
        let ids: Vec<String> = (0..50).map(|i| format!("f{window}x{i}")).collect();
        for id in &ids {
            socket.send_to(without(&options(&udp, id), "To").as_bytes(), ("127.0.0.1", lab.sip)).unwrap();
            ws.send(Message::text(without(&options(&wss, id), "To"))).await.unwrap();
        }
        for id in &ids {
            assert_eq!(status_line(&udp_response(&socket, id)), "SIP/2.0 400 Missing To header");
        }
        for _ in &ids {
            assert!(ws_recv(&mut ws).await.starts_with("SIP/2.0 400 Missing To header\r\n"));
        }
    }
    // One more refusal per side, of another kind, marks the end: the line that counts it is the
    // last one that side has to give (the first rejection was told at once, the rest wait for
    // the end of the interval).
    let marker = options(&udp, "mark").replace("Max-Forwards: 70", "Max-Forwards: 300");
    assert_eq!(status_line(&udp_exchange(&socket, lab.sip, &marker)), "SIP/2.0 400 Bad Max-Forwards header");
    let marker = options(&wss, "mark").replace("Call-ID: mark", "Call-ID: mark\r\nCall-ID: again");
    assert_eq!(status_line(&ws_exchange(&mut ws, &marker).await), "SIP/2.0 400 Bad Call-ID header");
    lab.gw.wait_for_log("Bad Max-Forwards header: 1", DEADLINE);
    lab.gw.wait_for_log("Bad Call-ID header: 1", DEADLINE);
    for side in ["internal", "agents"] {
        let lines = summaries(&lab.gw, side);
        assert_eq!(lines.iter().map(|(n, _)| n).sum::<u64>(), N as u64 + 1, "{lines:?}");
        assert!(lines.len() <= 3, "{N} rejections gave {} lines: {lines:?}", lines.len());
        assert!(lines.iter().all(|(_, l)| l.contains("source=127.0.0.1")), "{lines:?}");
        assert!(lines[0].1.contains("reasons=Missing To header: 1"), "told at once: {lines:?}");
    }
    let since: Vec<&String> = lab.gw.seen[started..].iter().collect();
    assert!(since.len() < 20, "{} log lines for {} malformed messages:\n{since:?}", since.len(), 2 * N);
}
