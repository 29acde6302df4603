//! The driver with a media side that holds its replies: SIP keeps being answered (another
//! agent's REGISTER, the SIP server's OPTIONS) while a call waits on media, on the
//! current-thread runtime `#[tokio::test]` gives, which a driver waiting in place on media
//! could not run on at all.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::*;
use crate::call::media_port::{run_in_place, CallRef, MediaCommand, MediaControl, MediaFailure};
use crate::profile::{SipListen, Transport as ProfileTransport};
use crate::sip::digest::{authorize_request, ClientSecret};
use crate::web::{Outgoing, SessionInfo, WsEvent};

const DEADLINE: Duration = Duration::from_secs(5);

/// Media that answers at once, except the calls' setups, which wait for `gate` to open.
struct HeldMedia {
    notes: mpsc::Sender<MediaNote>,
    gate: watch::Receiver<bool>,
}

struct Canned;

impl MediaControl for Canned {
    fn echo(&mut self, _: CallRef, _: &str) -> Result<String, MediaFailure> {
        Ok("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=held-echo\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n".into())
    }
    fn open(&mut self, _: CallRef) -> Result<(), MediaFailure> {
        Ok(())
    }
    fn browser_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        self.echo(CallRef(0), "")
    }
    fn browser_answer(&mut self, _: CallRef, _: &str) -> Result<String, MediaFailure> {
        self.echo(CallRef(0), "")
    }
    fn browser_accept(&mut self, _: CallRef, _: &str) -> Result<(), MediaFailure> {
        Ok(())
    }
    fn internal_offer(&mut self, _: CallRef) -> Result<String, MediaFailure> {
        self.echo(CallRef(0), "")
    }
    fn internal_answer(&mut self, _: CallRef, _: &str) -> Result<String, MediaFailure> {
        self.echo(CallRef(0), "")
    }
    fn internal_accept(&mut self, _: CallRef, _: &str) -> Result<(), MediaFailure> {
        Ok(())
    }
    fn close(&mut self, _: CallRef) -> Option<serde_json::Value> {
        None
    }
}

impl MediaRunner for HeldMedia {
    fn submit(&mut self, command: MediaCommand) -> Option<MediaNote> {
        let reply = run_in_place(&mut Canned, &command);
        if !command.op.opens() {
            return Some(MediaNote::Reply(reply));
        }
        let (notes, mut gate) = (self.notes.clone(), self.gate.clone());
        tokio::spawn(async move {
            let _ = gate.wait_for(|open| *open).await;
            let _ = notes.send(MediaNote::Reply(reply)).await;
        });
        None
    }
    fn stats(&mut self, _: CallRef) -> Option<tokio::sync::oneshot::Receiver<Option<serde_json::Value>>> {
        None
    }
}

struct Agent {
    id: u64,
    outbound: mpsc::Receiver<Outgoing>,
}

impl Agent {
    async fn open(events: &mpsc::Sender<WsEvent>, id: u64) -> Agent {
        let (tx, outbound) = mpsc::channel(64);
        let peer = format!("127.0.0.1:{}", 40000 + id).parse().unwrap();
        let session = SessionInfo { id, peer, local: "127.0.0.1:8443".parse().unwrap(), origin: "https://127.0.0.1:8443".into() };
        events.send(WsEvent::Opened { session, outbound: tx }).await.unwrap();
        Agent { id, outbound }
    }

    async fn send(&self, events: &mpsc::Sender<WsEvent>, request: &rsip::Request) {
        events.send(WsEvent::Message { id: self.id, data: request.to_string().into() }).await.unwrap();
    }

    /// The next final response (provisional ones skipped), within the deadline.
    async fn final_response(&mut self) -> rsip::Response {
        loop {
            let Ok(Some(Outgoing::Text(text))) = tokio::time::timeout(DEADLINE, self.outbound.recv()).await else { panic!("no answer in {DEADLINE:?}") };
            if let Ok(rsip::SipMessage::Response(r)) = crate::sip::message::parse(text.as_bytes()) {
                if r.status_code.code() >= 200 {
                    return r;
                }
            }
        }
    }

    /// Whatever the agent got so far, without waiting.
    fn got(&mut self) -> Vec<String> {
        let mut v = Vec::new();
        while let Ok(Outgoing::Text(t)) = self.outbound.try_recv() {
            v.push(t);
        }
        v
    }
}

fn request(text: &str) -> rsip::Request {
    match crate::sip::message::parse(text.as_bytes()) {
        Ok(rsip::SipMessage::Request(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn register(dn: &str, cseq: u32) -> rsip::Request {
    request(&format!("REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}r{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{dn}@127.0.0.1>\r\nFrom: <sip:{dn}@127.0.0.1>;tag=t{dn}\r\nCall-ID: reg-{dn}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:x{dn}@client.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n"))
}

fn echo_invite(dn: &str, cseq: u32) -> rsip::Request {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=browser\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";
    request(&format!("INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}i{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:600@127.0.0.1>\r\nFrom: <sip:{dn}@127.0.0.1>;tag=e{dn}\r\nCall-ID: echo-{dn}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:x{dn}@client.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len()))
}

/// Sends `make(1)`, answers its challenge with `make(2)`: the final response to that.
async fn with_digest(agent: &mut Agent, events: &mpsc::Sender<WsEvent>, dn: &str, make: impl Fn(u32) -> rsip::Request) -> rsip::Response {
    agent.send(events, &make(1)).await;
    let challenge = agent.final_response().await;
    assert!(matches!(challenge.status_code.code(), 401 | 407), "{challenge}");
    let mut again = make(2);
    authorize_request(&mut again, &challenge, dn, &ClientSecret::Password(format!("pass{dn}")), 1, "cn0nce").unwrap();
    agent.send(events, &again).await;
    agent.final_response().await
}

#[tokio::test]
async fn registrations_and_options_are_answered_while_a_call_waits_on_media() {
    let loaded = Arc::new(crate::fuzz::lab().clone());
    let (_profile_tx, profile) = watch::channel(loaded.clone());
    let hep = crate::observe::hep::HepCapture::start(profile.clone());
    let listen = [SipListen { address: "127.0.0.1:0".parse().unwrap(), transport: ProfileTransport::Udp }];
    let (sender, internal) = super::super::internal::bind(&listen, EVENT_QUEUE, hep.clone()).await.unwrap();
    let sip_addr = sender.local_addr().unwrap();
    let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
    let (notes_tx, media_notes) = mpsc::channel(EVENT_QUEUE);
    let (gate_tx, gate) = watch::channel(false);
    let (failures, _failures_rx) = mpsc::channel(64);
    let (_closures_tx, closures) = broadcast::channel(4);
    let (_queries_tx, queries) = mpsc::channel(4);
    let state_dir = std::env::temp_dir().join(format!("driver-held-media-{}", std::process::id()));
    std::fs::create_dir_all(&state_dir).unwrap();
    tokio::spawn(run(CallTask {
        events,
        internal,
        sender,
        profile,
        secret: vec![7; 32],
        failures,
        closures,
        gauges: Arc::default(),
        media: HeldMedia { notes: notes_tx, gate },
        media_notes,
        queries,
        hep,
        state_dir: state_dir.clone(),
    }));

    let mut a = Agent::open(&events_tx, 1).await;
    assert_eq!(with_digest(&mut a, &events_tx, "5001", |n| register("5001", n)).await.status_code.code(), 200);
    // The echo call's media is held: no answer for it yet.
    a.send(&events_tx, &echo_invite("5001", 1)).await;
    let challenge = a.final_response().await;
    let mut invite = echo_invite("5001", 2);
    authorize_request(&mut invite, &challenge, "5001", &ClientSecret::Password("pass5001".into()), 1, "cn0nce2").unwrap();
    a.send(&events_tx, &invite).await;

    // Meanwhile another agent registers and the SIP server's OPTIONS is answered, promptly.
    let started = std::time::Instant::now();
    let mut b = Agent::open(&events_tx, 2).await;
    assert_eq!(with_digest(&mut b, &events_tx, "5002", |n| register("5002", n)).await.status_code.code(), 200);
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let options = format!("OPTIONS sip:5002@{sip_addr} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKopt1\r\nMax-Forwards: 70\r\nFrom: <sip:srv@127.0.0.1>;tag=o1\r\nTo: <sip:5002@127.0.0.1>\r\nCall-ID: opt-held\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n", server.local_addr().unwrap());
    server.send_to(options.as_bytes(), sip_addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(DEADLINE, server.recv_from(&mut buf)).await.expect("OPTIONS answered").unwrap();
    assert!(buf[..n].starts_with(b"SIP/2.0 200"), "{}", String::from_utf8_lossy(&buf[..n]));
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(1), "answered while media was held, in {waited:?}");
    assert!(a.got().iter().all(|m| !m.starts_with("SIP/2.0 200")), "the echo call is still waiting on media");

    gate_tx.send_replace(true);
    let ok = a.final_response().await;
    assert_eq!(ok.status_code.code(), 200, "{ok}");
    assert!(String::from_utf8_lossy(&ok.body).contains("s=held-echo"));
    let _ = std::fs::remove_dir_all(&state_dir);
}
