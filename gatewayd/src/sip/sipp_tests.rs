//! The cores against a real peer: sipp (Debian `sip-tester`) over UDP on loopback, driven by a
//! small blocking loop that plays the driver. This checks what unit tests cannot: that what
//! rsip writes is what a real stack accepts, and that matching, ACKs and retransmissions work
//! with someone else's idea of them.

use crate::sip::dialog::Dialog;
use crate::sip::digest::{Algorithm, DigestConfig, DigestServer, StoredCredentials, Verdict};
use crate::sip::framing::{classify_frame, Frame};
use crate::sip::message::{new_branch, new_call_id, new_tag, parse, response_to};
use crate::sip::registrar::{ConnId, Registrar, RegistrarEvent};
use crate::sip::transaction::{
    Destination, Output, Target, TransactionLayer, Transport, TxConfig, TxEvent, TxId,
};
use rand::SeedableRng;
use rsip::headers::UntypedHeader;
use rsip::{Header, Response, SipMessage};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const DEADLINE: Duration = Duration::from_secs(20);

struct Harness {
    socket: UdpSocket,
    layer: TransactionLayer,
    workdir: std::path::PathBuf,
    /// In order: "200" for each 2xx to an INVITE put on the wire, "ACK" for each ACK event.
    log: Vec<&'static str>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.workdir).ok();
    }
}

impl Harness {
    fn new(name: &str) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind loopback");
        let workdir =
            std::env::temp_dir().join(format!("gatewayd-sipp-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&workdir).unwrap();
        Harness {
            socket,
            layer: TransactionLayer::new(TxConfig::default()),
            workdir,
            log: Vec::new(),
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    fn sipp(&self, args: &[&str]) -> Child {
        Command::new("sipp")
            .args(args)
            .args([
                "-i",
                "127.0.0.1",
                "-m",
                "1",
                "-nostdin",
                "-timeout",
                "15",
                "-timeout_error",
            ])
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sipp must be installed (Debian package sip-tester)")
    }

    /// Writes `scenario` into the work directory and runs it as a UAC against our socket.
    fn sipp_scenario(&self, name: &str, scenario: &str) -> Child {
        let path = self.workdir.join(name);
        std::fs::write(&path, scenario).unwrap();
        self.sipp(&[
            &format!("127.0.0.1:{}", self.port()),
            "-sf",
            path.to_str().unwrap(),
        ])
    }

    fn flush(&mut self, seen: &mut Vec<TxEvent>) {
        while let Some(output) = self.layer.poll_output() {
            match output {
                Output::Send {
                    target,
                    message,
                    tx,
                } => self.send(target, &message, Some(tx)),
                Output::Event(event) => seen.push(event),
            }
        }
    }

    fn send(&mut self, target: Target, message: &SipMessage, tx: Option<TxId>) {
        let Destination::Addr(addr) = target.destination else {
            panic!("UDP only here")
        };
        if let SipMessage::Response(r) = message {
            let invite = r
                .headers
                .iter()
                .any(|h| matches!(h, Header::CSeq(c) if c.value().ends_with("INVITE")));
            if invite && r.status_code.code() == 200 {
                self.log.push("200");
            }
        }
        if self
            .socket
            .send_to(message.to_string().as_bytes(), addr)
            .is_err()
        {
            if let Some(tx) = tx {
                self.layer.transport_failed(tx, Instant::now());
            }
        }
    }

    /// Waits for the next message, firing timers meanwhile; `None` when `until` passes.
    fn next(&mut self, until: Instant, seen: &mut Vec<TxEvent>) -> Option<(SipMessage, Target)> {
        let mut buffer = vec![0u8; 65_535];
        loop {
            let now = Instant::now();
            if now >= until {
                return None;
            }
            let wake = self.layer.poll_timeout().map_or(until, |t| t.min(until));
            let wait = wake
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait)).unwrap();
            match self.socket.recv_from(&mut buffer) {
                Ok((len, from)) => {
                    let target = Target {
                        transport: Transport::Udp,
                        destination: Destination::Addr(from),
                    };
                    match classify_frame(&buffer[..len]) {
                        Frame::Message(bytes) => {
                            let message = parse(bytes).expect("sipp sends valid SIP");
                            return Some((message, target));
                        }
                        _ => continue,
                    }
                }
                Err(_) => {
                    self.layer.handle_timeout(Instant::now());
                    self.flush(seen);
                }
            }
        }
    }
}

fn finish(mut sipp: Child, until: Instant) {
    loop {
        if let Some(status) = sipp.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            sipp.stderr.take().unwrap().read_to_string(&mut stderr).ok();
            assert!(status.success(), "sipp failed: {status} {stderr}");
            return;
        }
        if Instant::now() >= until {
            sipp.kill().ok();
            panic!("sipp did not finish in time");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn rng() -> rand::rngs::StdRng {
    rand::rngs::StdRng::seed_from_u64(5)
}

/// Plays a UAS for one call from sipp: answers INVITE with 180 and 200, BYE with 200.
/// Returns the INVITE transaction, the transaction the end-to-end ACK was matched to, and
/// what happened in order ("200" for each INVITE 2xx put on the wire, "ACK").
fn answer_one_call(h: &mut Harness, until: Instant) -> (TxId, Option<TxId>, Vec<&'static str>) {
    let mut seen = Vec::new();
    let mut invite_tx = None;
    let mut acked = None;
    let mut bye_answered = false;
    while !bye_answered {
        let (message, source) = h.next(until, &mut seen).expect("sipp's call in time");
        h.layer.receive(message, source, Instant::now()).unwrap();
        h.flush(&mut seen);
        for event in std::mem::take(&mut seen) {
            match event {
                TxEvent::Request { tx, request, .. } => {
                    let tag = "uas1";
                    let mut ok = response_to(&request, 200, None, Some(tag));
                    let contact = format!("<sip:gw@127.0.0.1:{}>", h.port());
                    ok.headers
                        .push(Header::Contact(rsip::headers::Contact::new(contact)));
                    if request.method == rsip::Method::Invite {
                        invite_tx = Some(tx);
                        let ringing = response_to(&request, 180, None, Some(tag));
                        h.layer.send_response(tx, ringing, Instant::now()).unwrap();
                    } else {
                        assert_eq!(request.method, rsip::Method::Bye);
                        bye_answered = true;
                    }
                    h.layer.send_response(tx, ok, Instant::now()).unwrap();
                }
                TxEvent::Ack { acked: a, .. } => {
                    acked = a;
                    h.log.push("ACK");
                }
                _ => {}
            }
            h.flush(&mut seen);
        }
    }
    (
        invite_tx.expect("an INVITE"),
        acked,
        std::mem::take(&mut h.log),
    )
}

/// Answers one call from `sipp -sn uac`: INVITE (180, 200), end-to-end ACK, BYE (200).
#[test]
fn answers_a_call_from_sipp() {
    let mut h = Harness::new("uas");
    let sipp = h.sipp(&[&format!("127.0.0.1:{}", h.port()), "-sn", "uac"]);
    let until = Instant::now() + DEADLINE;
    let (invite_tx, acked, _) = answer_one_call(&mut h, until);
    assert_eq!(
        acked,
        Some(invite_tx),
        "the 2xx ACK found its INVITE transaction"
    );
    finish(sipp, until);
}

const LATE_ACK_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="uac with a late ACK">
  <send retrans="500"><![CDATA[
INVITE sip:service@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:service@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:sipp@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rrs="true"/>
  <pause milliseconds="1200"/>
  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:service@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"#;

/// Over UDP the 2xx is retransmitted until the (late) ACK, and not after it.
#[test]
fn retransmits_the_2xx_until_sipp_acks() {
    let mut h = Harness::new("late-ack");
    let sipp = h.sipp_scenario("late-ack.xml", LATE_ACK_SCENARIO);
    let until = Instant::now() + DEADLINE;
    let (invite_tx, acked, log) = answer_one_call(&mut h, until);
    assert_eq!(acked, Some(invite_tx));
    let ack_at = log.iter().position(|e| *e == "ACK").expect("an ACK");
    assert!(
        ack_at >= 2,
        "the 2xx went out again before the ACK: {log:?}"
    );
    assert!(
        !log[ack_at..].contains(&"200"),
        "no 2xx after the ACK: {log:?}"
    );
    finish(sipp, until);
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Calls `sipp -sn uas` and hangs up: client transactions, dialog, end-to-end ACK, BYE.
#[test]
fn calls_sipp_and_hangs_up() {
    let mut h = Harness::new("uac");
    let port = free_udp_port();
    let sipp = h.sipp(&["-sn", "uas", "-p", &port.to_string()]);
    let peer: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let target = Target {
        transport: Transport::Udp,
        destination: Destination::Addr(peer),
    };
    let mut rng = rng();
    let me = format!("127.0.0.1:{}", h.port());
    let text = format!(
        "INVITE sip:service@{peer} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch={}\r\nMax-Forwards: 70\r\n\
         From: <sip:5001@{me}>;tag={}\r\nTo: <sip:service@{peer}>\r\nCall-ID: {}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:5001@{me}>\r\nContent-Length: 0\r\n\r\n",
        new_branch(&mut rng),
        new_tag(&mut rng),
        new_call_id(&mut rng)
    );
    let Ok(SipMessage::Request(invite)) = parse(text.as_bytes()) else {
        unreachable!()
    };
    let until = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    // sipp may not listen yet: timer A retransmits until it does.
    let invite_tx = h
        .layer
        .send_request(invite.clone(), target, Instant::now())
        .unwrap();
    h.flush(&mut seen);
    let mut dialog: Option<Dialog> = None;
    let mut bye_tx = None;
    let mut codes = Vec::new();
    'call: loop {
        for event in std::mem::take(&mut seen) {
            match event {
                TxEvent::Response { tx, response } if tx == invite_tx => {
                    codes.push(response.status_code.code());
                    if response.status_code.code() == 200 {
                        let mut d = Dialog::from_uac(&invite, &response).unwrap();
                        let ack = d.ack(1, "UDP", &me, &mut rng);
                        h.send(target, &ack.into(), None);
                        let bye = d.request(rsip::Method::Bye, "UDP", &me, None, &mut rng);
                        bye_tx = Some(h.layer.send_request(bye, target, Instant::now()).unwrap());
                        dialog = Some(d);
                    }
                }
                TxEvent::Response { tx, response } if Some(tx) == bye_tx => {
                    assert_eq!(response.status_code.code(), 200);
                    break 'call;
                }
                TxEvent::Timeout { tx, .. } => panic!("transaction {tx:?} timed out"),
                _ => {}
            }
        }
        h.flush(&mut seen);
        if !seen.is_empty() {
            continue;
        }
        let (message, source) = h.next(until, &mut seen).expect("sipp answers in time");
        h.layer.receive(message, source, Instant::now()).unwrap();
        h.flush(&mut seen);
    }
    assert_eq!(codes.first(), Some(&180));
    assert!(dialog.is_some());
    finish(sipp, until);
}

const REGISTER_SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:5001@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:5001@[remote_ip]>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:5001@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 120
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:5001@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
To: <sip:5001@[remote_ip]>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:5001@[local_ip]:[local_port]>
[authentication username=5001 password=pass5001]
Max-Forwards: 70
Expires: 120
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"#;

/// sipp registers with digest auth: challenge, MD5 credentials, registrar binding.
#[test]
fn registers_sipp_with_digest_authentication() {
    let mut h = Harness::new("register");
    let sipp = h.sipp_scenario("register.xml", REGISTER_SCENARIO);
    // sipp, like the browser stacks, answers only the first challenge and only MD5.
    let mut config = DigestConfig::new("127.0.0.1", b"sipp test secret".to_vec());
    config.algorithms = vec![Algorithm::Md5, Algorithm::Sha256];
    let mut digest = DigestServer::new(config);
    let mut registrar = Registrar::default();
    let wall_ms = || {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let lookup = |user: &str| {
        (user == "5001").then(|| StoredCredentials::from_password("5001", "127.0.0.1", "pass5001"))
    };
    let until = Instant::now() + DEADLINE;
    let mut seen = Vec::new();
    let mut rng = rng();
    let mut verdicts = Vec::new();
    while registrar.binding("5001").is_none() {
        let (message, source) = h.next(until, &mut seen).expect("sipp registers in time");
        h.layer.receive(message, source, Instant::now()).unwrap();
        h.flush(&mut seen);
        for event in std::mem::take(&mut seen) {
            let TxEvent::Request { tx, request, .. } = event else {
                continue;
            };
            let verdict = digest.verify_request(&request, wall_ms(), lookup);
            let response: Response = match &verdict {
                Verdict::Authenticated { user } => {
                    registrar.handle_register(&request, user, ConnId(1), Instant::now(), "reg1")
                }
                other => digest
                    .respond(other, &request, wall_ms(), &mut rng, "reg1")
                    .unwrap(),
            };
            verdicts.push(verdict);
            h.layer.send_response(tx, response, Instant::now()).unwrap();
            h.flush(&mut seen);
        }
    }
    assert!(
        matches!(
            verdicts.as_slice(),
            [
                Verdict::Challenge {
                    stale: false,
                    failure: None
                },
                Verdict::Authenticated { .. }
            ]
        ),
        "{verdicts:?}"
    );
    assert!(matches!(
        registrar.poll_event(),
        Some(RegistrarEvent::Registered { expires: 120, .. })
    ));
    finish(sipp, until);
}
