//! Load agents for the call-setup benchmark: N softphones, each on its own WSS connection
//! (subprotocol `sip`), registered with digest auth, answering every call with 180 then 200.
//! `signalling` answers with a well-formed WebRTC SDP and no media behind it; `media` runs a
//! real DTLS-SRTP leg per call (str0m, full ICE, PCMU at 50 packets/s). Works against
//! gatewayd or any WSS registrar/proxy (the Kamailio anchor). Loopback only, bounded in time.
//!
//! calls-agent --url wss://127.0.0.1:18443/ws --origin https://127.0.0.1:18443 \
//!   --dns 6000-6499 --domain 127.0.0.1 [--mode signalling|media] [--password-prefix pass]
//!
//! Prints `registered N` once every agent is registered, then runs until SIGTERM/SIGINT and
//! prints one JSON line of counters.

mod media;
mod sip;
mod wss;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorization_value, Challenge, ClientSecret};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wss::{connect, next_response, tls_connector, Ws};

#[derive(Default)]
struct Stats {
    registered: AtomicU64,
    register_failed: AtomicU64,
    invites: AtomicU64,
    reinvites: AtomicU64,
    acks: AtomicU64,
    byes: AtomicU64,
    cancels: AtomicU64,
    other_requests: AtomicU64,
    unparsable: AtomicU64,
    closed: AtomicU64,
    media_failed: AtomicU64,
    dtls_connected: AtomicU64,
    rtp_sent: AtomicU64,
    rtp_received: AtomicU64,
}

#[derive(Clone)]
struct Config {
    url: String,
    origin: String,
    domain: String,
    password_prefix: String,
    media: bool,
    expires: u32,
    fingerprint: String,
}

async fn register(ws: &mut Ws, cfg: &Config, dn: &str, contact: &str) -> Result<(), String> {
    let mut reg = sip::Register { dn, domain: &cfg.domain, cseq: 1, contact, expires: cfg.expires, authorization: None };
    ws.send(WsMessage::text(sip::register(&reg))).await.map_err(|e| e.to_string())?;
    let text = next_response(ws).await?;
    let resp = sip::parse(&text).ok_or("unparsable response")?;
    if resp.status() == Some(200) {
        return Ok(());
    }
    if resp.status() != Some(401) {
        return Err(format!("REGISTER: {}", resp.start));
    }
    let challenge = resp.all("WWW-Authenticate").find_map(|v| Challenge::parse(v, false).ok()).ok_or("no usable challenge")?;
    let secret = ClientSecret::Password(format!("{}{dn}", cfg.password_prefix));
    let uri = format!("sip:{}", cfg.domain);
    let auth = authorization_value(&challenge, dn, &secret, "REGISTER", &uri, 1, &sip::token()).map_err(|e| e.to_string())?;
    reg.cseq = 2;
    reg.authorization = Some(&auth);
    ws.send(WsMessage::text(sip::register(&reg))).await.map_err(|e| e.to_string())?;
    let text = next_response(ws).await?;
    let resp = sip::parse(&text).ok_or("unparsable response")?;
    match resp.status() {
        Some(200) => Ok(()),
        _ => Err(format!("REGISTER with credentials: {}", resp.start)),
    }
}

/// One agent: connect, register, then answer until the connection ends.
async fn agent(cfg: Arc<Config>, tls: TlsConnector, dn: String, stats: Arc<Stats>, gate: Arc<tokio::sync::Semaphore>) {
    let permit = gate.acquire().await.expect("never closed");
    let mut ws = match connect(&cfg.url, &cfg.origin, &tls).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("agent {dn}: {e}");
            stats.register_failed.fetch_add(1, Relaxed);
            return;
        }
    };
    let contact = format!("<sip:{dn}@agent{dn}.invalid;transport=ws>");
    if let Err(e) = register(&mut ws, &cfg, &dn, &contact).await {
        eprintln!("agent {dn}: {e}");
        stats.register_failed.fetch_add(1, Relaxed);
        return;
    }
    drop(permit);
    stats.registered.fetch_add(1, Relaxed);
    let mut calls = media::Calls::new(cfg.media, stats.clone());
    while let Some(msg) = ws.next().await {
        let text = match msg {
            Ok(WsMessage::Text(t)) => t,
            Ok(WsMessage::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        for reply in answer(&cfg, &text, &contact, &stats, &mut calls) {
            if ws.feed(WsMessage::text(reply)).await.is_err() {
                break;
            }
        }
        if ws.flush().await.is_err() {
            break;
        }
    }
    stats.closed.fetch_add(1, Relaxed);
}

/// The replies to one message from the server.
fn answer(cfg: &Config, text: &str, contact: &str, stats: &Stats, calls: &mut media::Calls) -> Vec<String> {
    let Some(msg) = sip::parse(text) else {
        if !text.trim().is_empty() {
            stats.unparsable.fetch_add(1, Relaxed);
        }
        return Vec::new();
    };
    let Some(method) = msg.method() else { return Vec::new() };
    let call_id = msg.header("Call-ID").unwrap_or("");
    match method {
        "INVITE" => {
            let reinvite = msg.has_to_tag();
            let counter = if reinvite { &stats.reinvites } else { &stats.invites };
            counter.fetch_add(1, Relaxed);
            let tag = sip::token();
            let sdp = match calls.answer(call_id, msg.body, &cfg.fingerprint) {
                Ok(sdp) => sdp,
                Err(e) => {
                    eprintln!("media answer: {e}");
                    stats.media_failed.fetch_add(1, Relaxed);
                    return vec![sip::response(&msg, 488, "Not Acceptable Here", &tag, None, None)];
                }
            };
            let mut out = Vec::with_capacity(2);
            if !reinvite {
                out.push(sip::response(&msg, 180, "Ringing", &tag, Some(contact), None));
            }
            out.push(sip::response(&msg, 200, "OK", &tag, Some(contact), Some(&sdp)));
            out
        }
        "ACK" => {
            stats.acks.fetch_add(1, Relaxed);
            Vec::new()
        }
        "BYE" => {
            stats.byes.fetch_add(1, Relaxed);
            calls.end(call_id);
            vec![sip::response(&msg, 200, "OK", "", None, None)]
        }
        "CANCEL" => {
            stats.cancels.fetch_add(1, Relaxed);
            calls.end(call_id);
            vec![sip::response(&msg, 200, "OK", "", None, None)]
        }
        _ => {
            stats.other_requests.fetch_add(1, Relaxed);
            vec![sip::response(&msg, 200, "OK", "", None, None)]
        }
    }
}

fn dn_range(spec: &str) -> Result<Vec<String>, String> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (u64, u64) = (a.parse().map_err(|_| "bad --dns")?, b.parse().map_err(|_| "bad --dns")?);
    Ok((a..=b).map(|d| d.to_string()).collect())
}

fn stats_json(s: &Stats) -> String {
    let f = |a: &AtomicU64| a.load(Relaxed);
    format!(
        "{{\"registered\":{},\"register_failed\":{},\"invites\":{},\"reinvites\":{},\"acks\":{},\"byes\":{},\"cancels\":{},\"other_requests\":{},\"unparsable\":{},\"closed\":{},\"media_failed\":{},\"dtls_connected\":{},\"rtp_sent\":{},\"rtp_received\":{}}}",
        f(&s.registered), f(&s.register_failed), f(&s.invites), f(&s.reinvites), f(&s.acks), f(&s.byes), f(&s.cancels),
        f(&s.other_requests), f(&s.unparsable), f(&s.closed), f(&s.media_failed), f(&s.dtls_connected), f(&s.rtp_sent), f(&s.rtp_received)
    )
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut origin, mut dns, mut domain) = (None, None, None, "127.0.0.1".to_owned());
    let (mut mode, mut prefix, mut parallel) = ("signalling".to_owned(), "pass".to_owned(), 32usize);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--origin" => origin = Some(value),
            "--dns" => dns = Some(value),
            "--domain" => domain = value,
            "--mode" => mode = value,
            "--password-prefix" => prefix = value,
            "--parallel" => parallel = value.parse().map_err(|_| "bad --parallel")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let cfg = Arc::new(Config {
        origin: origin.unwrap_or_else(|| url.replacen("wss://", "https://", 1).split("/ws").next().unwrap_or("").to_owned()),
        url,
        domain,
        password_prefix: prefix,
        media: match mode.as_str() {
            "signalling" => false,
            "media" => true,
            other => return Err(format!("unknown mode {other}")),
        },
        expires: 3600,
        fingerprint: sip::fake_fingerprint(),
    });
    let dns = dn_range(&dns.ok_or("--dns is required")?)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let stats = Arc::new(Stats::default());
        let tls = tls_connector();
        let gate = Arc::new(tokio::sync::Semaphore::new(parallel));
        let total = dns.len() as u64;
        for dn in dns {
            tokio::spawn(agent(cfg.clone(), tls.clone(), dn, stats.clone(), gate.clone()));
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
        let mut announced = false;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let (ok, failed) = (stats.registered.load(Relaxed), stats.register_failed.load(Relaxed));
                    if !announced && ok + failed == total {
                        announced = true;
                        println!("registered {ok} failed {failed}");
                    }
                }
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
            }
        }
        println!("{}", stats_json(&stats));
        Ok(())
    })
}
