//! A legitimate agent that keeps working while the gateway is attacked: over one WSS
//! connection it registers (challenge, digest, 200) and places an echo call (INVITE to the
//! echo number with a browser's offer, challenge, 200 with an answer, ACK, BYE, 200), again
//! and again until stopped, and counts what succeeded and what did not, with the time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use tokio_tungstenite::tungstenite::Message;

use super::{wss_from, Wss};

/// What a browser offers for one audio track (as in fuzz/collect-seeds).
pub const BROWSER_OFFER: &str = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
a=group:BUNDLE 0\r\na=msid-semantic: WMS stream\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 0 8 126\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
a=candidate:1 1 udp 2122260223 203.0.113.5 61000 typ host generation 0\r\n\
a=ice-ufrag:Fz0a\r\na=ice-pwd:0123456789abcdefghijklmn\r\na=ice-options:trickle\r\n\
a=fingerprint:sha-256 7B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=msid:stream track\r\na=rtcp-mux\r\na=rtpmap:111 opus/48000/2\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:126 telephone-event/8000\r\n\
a=ssrc:1001 cname:agent\r\n";

/// How long one step (a response) may take before it counts as failed.
pub const STEP: Duration = Duration::from_secs(3);

#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub registered: u32,
    pub calls: u32,
    /// What failed, with the time since the agent started.
    pub failures: Vec<(Duration, String)>,
    /// The slowest registration (challenge to 200).
    pub slowest_register: Duration,
}

/// The agent's task; `stop` ends it and returns what it saw.
pub struct Agent {
    tally: Arc<Mutex<Tally>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Agent {
    /// Agent `dn` (password `pass<dn>`) from `src` in `ns`, one cycle every `pause`, a call every
    /// `call_every` cycles (0: never).
    pub fn start(ns: &str, src: &str, dn: &str, pause: Duration, call_every: u32) -> Agent {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ns, src, dn) = (ns.to_owned(), src.to_owned(), dn.to_owned());
        let (t, s) = (tally.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut ws: Option<Wss> = None;
            let mut cycle = 0u32;
            while !s.load(std::sync::atomic::Ordering::SeqCst) {
                cycle += 1;
                if ws.is_none() {
                    match wss_from(&ns, &src).await {
                        Ok(w) => ws = Some(w),
                        Err(e) => t.lock().unwrap().failures.push((start.elapsed(), format!("connect: {e}"))),
                    }
                }
                if let Some(w) = ws.as_mut() {
                    let began = Instant::now();
                    match register(w, &dn, cycle).await {
                        Ok(()) => {
                            let mut t = t.lock().unwrap();
                            t.registered += 1;
                            t.slowest_register = t.slowest_register.max(began.elapsed());
                        }
                        Err(e) => {
                            t.lock().unwrap().failures.push((start.elapsed(), format!("register: {e}")));
                            ws = None;
                        }
                    }
                }
                if let Some(w) = ws.as_mut().filter(|_| call_every > 0 && cycle % call_every == 0) {
                    match echo_call(w, &dn, cycle).await {
                        Ok(()) => t.lock().unwrap().calls += 1,
                        Err(e) => {
                            t.lock().unwrap().failures.push((start.elapsed(), format!("call: {e}")));
                            ws = None;
                        }
                    }
                }
                // The agent's own pace (a client's re-registration interval, shortened), not a
                // wait for an event.
                tokio::time::sleep(pause).await;
            }
        });
        Agent { tally, stop, task }
    }

    pub fn tally(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// The slowest registration since the last call (and starts counting again).
    pub fn take_slowest(&self) -> Duration {
        std::mem::take(&mut self.tally.lock().unwrap().slowest_register)
    }

    pub async fn stop(self) -> Tally {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
        self.tally.lock().unwrap().clone()
    }
}

pub fn request(text: &str) -> rsip::Request {
    match gatewayd::sip::message::parse(text.as_bytes()).expect("a request we wrote parses") {
        rsip::SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

/// The next response on `ws` within STEP; provisional ones are skipped unless `provisional`.
pub async fn response(ws: &mut Wss) -> Result<(rsip::Response, String), String> {
    let end = Instant::now() + STEP;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(rsip::SipMessage::Response(r)) = gatewayd::sip::message::parse(t.as_bytes()) {
                    if r.status_code.code() >= 200 {
                        return Ok((r, t.to_string()));
                    }
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) => return Err("connection closed".into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("socket: {e}")),
            Err(_) => return Err("no response in time".into()),
        }
    }
}

async fn send(ws: &mut Wss, text: String) -> Result<(), String> {
    ws.send(Message::text(text)).await.map_err(|e| format!("send: {e}"))
}

/// A request challenged, then sent again with credentials; returns the final response.
async fn authorised(ws: &mut Wss, dn: &str, first: rsip::Request, again: rsip::Request) -> Result<(rsip::Response, String), String> {
    send(ws, first.to_string()).await?;
    let (challenge, _) = response(ws).await?;
    if !matches!(challenge.status_code.code(), 401 | 407) {
        return Err(format!("expected a challenge, got {}", challenge.status_code));
    }
    let mut again = again;
    authorize_request(&mut again, &challenge, dn, &ClientSecret::Password(format!("pass{dn}")), 1, "agent").map_err(|e| format!("digest: {e:?}"))?;
    send(ws, again.to_string()).await?;
    response(ws).await
}

fn register_text(dn: &str, cseq: u32) -> String {
    format!(
        "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS agent.invalid;branch=z9hG4bKr{dn}x{cseq}\r\nMax-Forwards: 70\r\n\
To: <sip:{dn}@gw.test>\r\nFrom: <sip:{dn}@gw.test>;tag=a{dn}\r\nCall-ID: reg-{dn}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: <sip:a{dn}@agent.invalid;transport=ws>\r\nExpires: 120\r\nContent-Length: 0\r\n\r\n"
    )
}

pub async fn register(ws: &mut Wss, dn: &str, cycle: u32) -> Result<(), String> {
    let (ok, _) = authorised(ws, dn, request(&register_text(dn, cycle * 2)), request(&register_text(dn, cycle * 2 + 1))).await?;
    match ok.status_code.code() {
        200 => Ok(()),
        other => Err(format!("REGISTER answered {other}")),
    }
}

fn invite_text(dn: &str, call: &str, cseq: u32) -> String {
    format!(
        "INVITE sip:600@gw.test SIP/2.0\r\nVia: SIP/2.0/WSS agent.invalid;branch=z9hG4bKi{call}x{cseq}\r\nMax-Forwards: 70\r\n\
To: <sip:600@gw.test>\r\nFrom: <sip:{dn}@gw.test>;tag=c{call}\r\nCall-ID: {call}\r\nCSeq: {cseq} INVITE\r\n\
Contact: <sip:a{dn}@agent.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{BROWSER_OFFER}",
        BROWSER_OFFER.len()
    )
}

pub fn header<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.split_once(':').filter(|(n, _)| n.trim().eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

/// An echo call: set up, answered with SDP, acknowledged, hung up.
pub async fn echo_call(ws: &mut Wss, dn: &str, cycle: u32) -> Result<(), String> {
    let call = format!("echo-{dn}-{cycle}");
    let (ok, text) = authorised(ws, dn, request(&invite_text(dn, &call, 1)), request(&invite_text(dn, &call, 2))).await?;
    if ok.status_code.code() != 200 || !text.contains("a=fingerprint") {
        return Err(format!("INVITE answered {} ({} bytes)", ok.status_code, text.len()));
    }
    let to = header(&text, "To").ok_or("200 without To")?;
    let contact = header(&text, "Contact").and_then(|c| c.split_once('<')).and_then(|(_, r)| r.split_once('>')).map(|(u, _)| u.to_owned()).ok_or("200 without Contact")?;
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {contact} SIP/2.0\r\nVia: SIP/2.0/WSS agent.invalid;branch=z9hG4bK{branch}{call}\r\nMax-Forwards: 70\r\n\
To: {to}\r\nFrom: <sip:{dn}@gw.test>;tag=c{call}\r\nCall-ID: {call}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    send(ws, in_dialog("ACK", 2, "ack")).await?;
    send(ws, in_dialog("BYE", 3, "bye")).await?;
    let (bye, _) = response(ws).await?;
    match bye.status_code.code() {
        200 => Ok(()),
        other => Err(format!("BYE answered {other}")),
    }
}
