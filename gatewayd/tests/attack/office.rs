//! Softphones as a contact-centre office runs them, for the many-agents and churn runs: each
//! agent keeps one WebSocket, registers over it, and when the gateway goes away reconnects and
//! registers again on its own (as JsSIP does), backing off as a `503` with `Retry-After` tells
//! it to. Everything an agent saw is counted: registrations with their time, 503s and whether
//! they carried Retry-After, requests that got no answer at all, connections that failed.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use tokio_tungstenite::tungstenite::Message;

use super::agent::{header, request, response};
use super::{wss_from, Wss};

/// What the agents of an office saw, shared by their tasks.
#[derive(Default)]
pub struct Seen {
    /// (DN, when) for every registration that got its 200.
    pub registered: Mutex<Vec<(String, Instant)>>,
    /// 503 answers, and those of them without a Retry-After.
    pub rate_limited: AtomicU32,
    pub without_retry_after: AtomicU32,
    /// Requests the gateway left without a final answer (within the agent's step time) on a
    /// connection that stayed open.
    pub unanswered: AtomicU32,
    /// Connections that failed to open or closed under a request, with why and when.
    pub connection_failures: Mutex<Vec<(Instant, String)>>,
    pub stop: AtomicBool,
}

impl Seen {
    /// How many distinct DNs registered at or after `since`.
    pub fn registered_since(&self, since: Instant) -> usize {
        let r = self.registered.lock().unwrap();
        r.iter().filter(|(_, at)| *at >= since).map(|(dn, _)| dn.as_str()).collect::<std::collections::HashSet<_>>().len()
    }

    /// When the last of `n` DNs registered at or after `since` did so (first registration of each).
    pub fn last_of(&self, since: Instant) -> Option<Instant> {
        let r = self.registered.lock().unwrap();
        let mut first = std::collections::HashMap::new();
        for (dn, at) in r.iter().filter(|(_, at)| *at >= since) {
            first.entry(dn.clone()).or_insert(*at);
        }
        first.values().max().copied()
    }

    pub fn failures_since(&self, since: Instant) -> Vec<String> {
        self.connection_failures.lock().unwrap().iter().filter(|(at, _)| *at >= since).map(|(_, e)| e.clone()).collect()
    }
}

/// A spread that differs per agent and attempt, so that retries do not line up (a client
/// randomises its reconnect delay).
fn jitter(dn: &str, attempt: u32, max_ms: u64) -> Duration {
    let n: u64 = dn.bytes().fold(attempt as u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64));
    Duration::from_millis(n.wrapping_mul(2_654_435_761) % max_ms.max(1))
}

/// Reconnects are tried this often while the gateway is away (JsSIP waits 2 s and more; this
/// is harsher on the gateway, so the restart's backlog arrives at once).
pub const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// Agent `dn` (password `pass<dn>`) from `src` in `ns`: after `delay`, connects and registers,
/// then waits for the connection to end and does it again, until `seen.stop`.
pub async fn run(ns: String, src: String, dn: String, delay: Duration, seen: Arc<Seen>) {
    tokio::time::sleep(delay).await;
    let mut attempt = 0;
    while !seen.stop.load(Ordering::Relaxed) {
        attempt += 1;
        let mut ws = match wss_from(&ns, &src).await {
            Ok(ws) => ws,
            Err(e) => {
                // Refused while the gateway restarts, or by its new-connection limit.
                seen.connection_failures.lock().unwrap().push((Instant::now(), format!("connect: {e}")));
                tokio::time::sleep(RECONNECT_EVERY + jitter(&dn, attempt, 500)).await;
                continue;
            }
        };
        match register(&mut ws, &dn, attempt * 1000, &seen).await {
            Ok(()) => seen.registered.lock().unwrap().push((dn.clone(), Instant::now())),
            Err(e) => {
                seen.connection_failures.lock().unwrap().push((Instant::now(), format!("register: {e}")));
                continue;
            }
        }
        // Registered: hold the connection (answering pings, as the browser does) until the
        // gateway goes away or the test ends.
        while !seen.stop.load(Ordering::Relaxed) {
            match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => break,
                Ok(Some(Ok(_))) => {}
            }
        }
    }
}

fn register_text(dn: &str, cseq: u32, expires: u32) -> String {
    format!(
        "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS agent.invalid;branch=z9hG4bKo{dn}x{cseq}\r\nMax-Forwards: 70\r\n\
To: <sip:{dn}@gw.test>\r\nFrom: <sip:{dn}@gw.test>;tag=o{dn}\r\nCall-ID: office-{dn}\r\nCSeq: {cseq} REGISTER\r\n\
Contact: <sip:o{dn}@agent.invalid;transport=ws>\r\nExpires: {expires}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The final answer to `text`; a 503 is waited out as its Retry-After says and the request sent
/// again (with a new CSeq from `cseq`).
async fn ask(ws: &mut Wss, dn: &str, cseq: &mut u32, make: &(dyn Fn(u32) -> rsip::Request + Sync), seen: &Seen) -> Result<rsip::Response, String> {
    let mut tries = 0;
    loop {
        *cseq += 1;
        tries += 1;
        ws.send(Message::text(make(*cseq).to_string())).await.map_err(|e| format!("send: {e}"))?;
        let (answer, text) = match response(ws).await {
            Ok(a) => a,
            Err(e) => {
                if e.contains("no response") {
                    seen.unanswered.fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        if answer.status_code.code() != 503 || tries > 20 {
            return Ok(answer);
        }
        seen.rate_limited.fetch_add(1, Ordering::Relaxed);
        let wait = match header(&text, "Retry-After").and_then(|v| v.split(';').next()?.trim().parse::<u64>().ok()) {
            Some(s) => Duration::from_secs(s),
            None => {
                seen.without_retry_after.fetch_add(1, Ordering::Relaxed);
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait + jitter(dn, *cseq, 1000)).await;
    }
}

/// REGISTER with `expires` (0: unregister): challenge, then credentials, each answered (503s
/// waited out).
pub async fn register_for(ws: &mut Wss, dn: &str, base: u32, expires: u32, seen: &Seen) -> Result<(), String> {
    let mut cseq = base;
    let plain = |c: u32| request(&register_text(dn, c, expires));
    let challenge = ask(ws, dn, &mut cseq, &plain, seen).await?;
    if challenge.status_code.code() != 401 {
        return Err(format!("expected 401, got {}", challenge.status_code));
    }
    let signed = |c: u32| {
        let mut r = request(&register_text(dn, c, expires));
        authorize_request(&mut r, &challenge, dn, &ClientSecret::Password(format!("pass{dn}")), 1, "office").expect("digest");
        r
    };
    let ok = ask(ws, dn, &mut cseq, &signed, seen).await?;
    match ok.status_code.code() {
        200 => Ok(()),
        other => Err(format!("REGISTER answered {other}")),
    }
}

pub async fn register(ws: &mut Wss, dn: &str, base: u32, seen: &Seen) -> Result<(), String> {
    register_for(ws, dn, base, 120, seen).await
}

/// `cycles` registrations and unregistrations of `dn` over one connection.
pub async fn churn(ws: &mut Wss, dn: &str, cycles: u32, seen: &Seen) -> Result<(), String> {
    for c in 0..cycles {
        register_for(ws, dn, c * 100, 120, seen).await.map_err(|e| format!("cycle {c} register: {e}"))?;
        register_for(ws, dn, c * 100 + 50, 0, seen).await.map_err(|e| format!("cycle {c} unregister: {e}"))?;
    }
    Ok(())
}
