//! HEP capture: which messages go to the collector (the profile's `observe.hep.capture` mode
//! and the agents and Call-IDs selected at run time through the admin API), the bounded queue,
//! and the one task that sends the packets over UDP.
//!
//! Call handling only calls the non-blocking methods here: when the queue is full, or the
//! collector is down, the capture is dropped and counted, and the call goes on. It reads the
//! messages it is handed and never changes them, nor any call state; the encoding is
//! `hep_encode`'s.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

pub use super::hep_encode::{IpProto, ProtoType};
use super::hep_encode::{encode, HepPacket};
use crate::profile::{CaptureMode, Hep, LoadedProfile};

/// Captures waiting for the sender; beyond this they are dropped.
pub const QUEUE: usize = 4096;
/// Agents, and Call-IDs, that can be selected at once.
pub const MAX_SELECTED: usize = 1000;

/// The capture handle: cheap to clone, shared by call control, the internal SIP transport,
/// the admin endpoint and metrics.
#[derive(Clone)]
pub struct HepCapture(Arc<Inner>);

struct Inner {
    state: Mutex<State>,
    queue: mpsc::Sender<(Vec<u8>, SocketAddr)>,
    counters: Counters,
}

#[derive(Default)]
struct State {
    /// `None`: the profile has no `[observe.hep]`.
    config: Option<Hep>,
    mode: CaptureMode,
    agents: BTreeSet<String>,
    call_ids: BTreeSet<String>,
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    queue_full: AtomicU64,
    send_errors: AtomicU64,
    too_large: AtomicU64,
}

/// The figures metrics shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub sent: u64,
    pub queue_full: u64,
    pub send_errors: u64,
    pub too_large: u64,
}

/// What `GET /capture` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub configured: bool,
    pub collector: Option<SocketAddr>,
    pub mode: CaptureMode,
    pub agents: Vec<String>,
    pub call_ids: Vec<String>,
    pub sent: u64,
    pub dropped: u64,
}

/// The run-time selection is full.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("at most {MAX_SELECTED} agents and {MAX_SELECTED} Call-IDs can be selected")]
pub struct SelectionFull;

/// What is known of a message when deciding whether to capture it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// The message's own Call-ID.
    pub call_id: &'a str,
    /// The Call-ID of the call's first leg when the message belongs to a call.
    pub correlation: Option<&'a str>,
    /// The call's other leg's Call-ID.
    pub other_call_id: Option<&'a str>,
    /// The agent the message concerns.
    pub dn: Option<&'a str>,
}

/// A message chosen for capture, and how it is tied to its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    /// The correlation id (HEP chunk 0x0011): the Call-ID of the call's first leg.
    pub correlation: String,
    /// On a call's second leg: the header naming the first leg's Call-ID, as sngrep and Homer
    /// read it.
    link: Option<(String, String)>,
}

impl std::fmt::Debug for HepCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HepCapture").field("active", &self.active()).finish()
    }
}

impl HepCapture {
    /// Starts the sender task and follows the profile's `observe.hep` through reloads.
    pub fn start(mut profile: watch::Receiver<Arc<LoadedProfile>>) -> Self {
        let (capture, rx) = Self::new(profile.borrow_and_update().profile.observe.hep.clone());
        tokio::spawn(send_loop(rx, capture.clone()));
        let follower = capture.clone();
        tokio::spawn(async move {
            while profile.changed().await.is_ok() {
                let hep = profile.borrow_and_update().profile.observe.hep.clone();
                follower.reconfigure(hep);
            }
        });
        capture
    }

    /// A handle that captures nothing (no collector), for call control run without one.
    pub fn disabled() -> Self {
        Self::new(None).0
    }

    fn new(config: Option<Hep>) -> (Self, mpsc::Receiver<(Vec<u8>, SocketAddr)>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let mode = config.as_ref().map(|c| c.capture).unwrap_or_default();
        let state = State { config, mode, ..State::default() };
        (HepCapture(Arc::new(Inner { state: Mutex::new(state), queue, counters: Counters::default() })), rx)
    }

    /// A reloaded profile: the collector, id and key take effect at once; the run-time mode
    /// returns to the profile's only when the profile's mode changed.
    fn reconfigure(&self, hep: Option<Hep>) {
        let mut s = self.state();
        let old_mode = s.config.as_ref().map(|c| c.capture);
        let new_mode = hep.as_ref().map(|c| c.capture);
        if old_mode != new_mode {
            s.mode = new_mode.unwrap_or_default();
        }
        s.config = hep;
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether anything can be captured now; a cheap first check before looking at a message.
    pub fn active(&self) -> bool {
        let s = self.state();
        s.config.is_some() && s.mode != CaptureMode::Off
    }

    /// Whether to capture a message, and with which correlation.
    pub fn select(&self, ctx: &Context<'_>) -> Option<Selected> {
        let s = self.state();
        let config = s.config.as_ref()?;
        let wanted = match s.mode {
            CaptureMode::All => true,
            CaptureMode::Off => false,
            CaptureMode::Selected => {
                ctx.dn.is_some_and(|dn| s.agents.contains(dn))
                    || [Some(ctx.call_id), ctx.correlation, ctx.other_call_id].into_iter().flatten().any(|id| s.call_ids.contains(id))
            }
        };
        if !wanted {
            return None;
        }
        let correlation = ctx.correlation.unwrap_or(ctx.call_id).to_owned();
        let link = (correlation != ctx.call_id && !config.link_header.is_empty()).then(|| (config.link_header.clone(), correlation.clone()));
        Some(Selected { correlation, link })
    }

    /// Captures one SIP message as it was sent or received.
    pub fn sip(&self, selected: &Selected, src: SocketAddr, dst: SocketAddr, transport: IpProto, payload: &[u8], at: SystemTime) {
        let linked;
        let payload = match &selected.link {
            Some((name, value)) => {
                linked = with_header(payload, name, value);
                &linked[..]
            }
            None => payload,
        };
        self.emit(selected, ProtoType::Sip, src, dst, transport, payload, at);
    }

    /// Captures one RTCP compound packet of a call's media, as heplify reports it (JSON, type
    /// 5; see `hep_rtcp`). Bytes that are not RTCP are not sent.
    pub fn rtcp(&self, selected: &Selected, src: SocketAddr, dst: SocketAddr, compound: &[u8], at: SystemTime) {
        if let Some(json) = super::hep_rtcp::rtcp_json(compound) {
            self.emit(selected, ProtoType::RtcpJson, src, dst, IpProto::Udp, &json, at);
        }
    }

    /// Captures lost before they reached the queue (the media bridge's RTCP tap was full).
    pub fn count_queue_full(&self, n: u64) {
        self.0.counters.queue_full.fetch_add(n, Ordering::Relaxed);
    }

    /// Captures a JSON report (a call's quality summary).
    pub fn report(&self, selected: &Selected, kind: ProtoType, src: SocketAddr, dst: SocketAddr, json: &[u8], at: SystemTime) {
        self.emit(selected, kind, src, dst, IpProto::Udp, json, at);
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(&self, selected: &Selected, kind: ProtoType, src: SocketAddr, dst: SocketAddr, ip_proto: IpProto, payload: &[u8], at: SystemTime) {
        let (collector, bytes) = {
            let s = self.state();
            let Some(c) = s.config.as_ref() else { return };
            let packet = HepPacket {
                src,
                dst,
                ip_proto,
                time: at,
                proto_type: kind,
                capture_id: c.id,
                auth_key: c.auth_key.as_deref(),
                correlation_id: Some(&selected.correlation),
                payload,
            };
            (c.collector, encode(&packet))
        };
        let counters = &self.0.counters;
        match bytes {
            Err(_) => {
                counters.too_large.fetch_add(1, Ordering::Relaxed);
            }
            Ok(bytes) => {
                if self.0.queue.try_send((bytes, collector)).is_err() {
                    counters.queue_full.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let c = &self.0.counters;
        Snapshot {
            sent: c.sent.load(Ordering::Relaxed),
            queue_full: c.queue_full.load(Ordering::Relaxed),
            send_errors: c.send_errors.load(Ordering::Relaxed),
            too_large: c.too_large.load(Ordering::Relaxed),
        }
    }

    pub fn status(&self) -> Status {
        let n = self.snapshot();
        let s = self.state();
        Status {
            configured: s.config.is_some(),
            collector: s.config.as_ref().map(|c| c.collector),
            mode: s.mode,
            agents: s.agents.iter().cloned().collect(),
            call_ids: s.call_ids.iter().cloned().collect(),
            sent: n.sent,
            dropped: n.queue_full + n.send_errors + n.too_large,
        }
    }

    pub fn set_mode(&self, mode: CaptureMode) {
        self.state().mode = mode;
    }

    /// Adds (`on`) or removes an agent from the run-time selection.
    pub fn select_agent(&self, dn: &str, on: bool) -> Result<(), SelectionFull> {
        toggle(&mut self.state().agents, dn, on)
    }

    /// Adds (`on`) or removes a Call-ID (of either leg) from the run-time selection.
    pub fn select_call(&self, call_id: &str, on: bool) -> Result<(), SelectionFull> {
        toggle(&mut self.state().call_ids, call_id, on)
    }
}

fn toggle(set: &mut BTreeSet<String>, item: &str, on: bool) -> Result<(), SelectionFull> {
    if !on {
        set.remove(item);
    } else if !set.contains(item) {
        if set.len() >= MAX_SELECTED {
            return Err(SelectionFull);
        }
        set.insert(item.to_owned());
    }
    Ok(())
}

/// Sends queued packets until every handle is gone. The socket is connected to the collector
/// so that a collector that is down shows as send errors (ICMP port unreachable).
async fn send_loop(mut rx: mpsc::Receiver<(Vec<u8>, SocketAddr)>, capture: HepCapture) {
    let weak = Arc::downgrade(&capture.0);
    drop(capture);
    let mut socket: Option<(UdpSocket, SocketAddr)> = None;
    while let Some((bytes, to)) = rx.recv().await {
        let Some(inner) = weak.upgrade() else { return };
        if socket.as_ref().is_none_or(|(_, at)| *at != to) {
            socket = connect(to).await.map(|s| (s, to));
        }
        let sent = match &socket {
            Some((s, _)) => s.send(&bytes).await.is_ok(),
            None => false,
        };
        let counter = if sent { &inner.counters.sent } else { &inner.counters.send_errors };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

async fn connect(to: SocketAddr) -> Option<UdpSocket> {
    let any: SocketAddr = if to.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let socket = match UdpSocket::bind(any).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "HEP: cannot open a UDP socket");
            return None;
        }
    };
    match socket.connect(to).await {
        Ok(()) => Some(socket),
        Err(e) => {
            tracing::warn!(collector = %to, error = %e, "HEP: cannot reach the collector");
            None
        }
    }
}

/// The message with `name: value` after its start line, unless it has that header already.
fn with_header(message: &[u8], name: &str, value: &str) -> Vec<u8> {
    if header_value(message, name).is_some() {
        return message.to_vec();
    }
    let Some(eol) = message.windows(2).position(|w| w == b"\r\n") else { return message.to_vec() };
    let mut out = Vec::with_capacity(message.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&message[..eol + 2]);
    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    out.extend_from_slice(&message[eol + 2..]);
    out
}

/// The value of the first header `name` (or its compact form) in a SIP message's head.
pub fn header_value<'a>(message: &'a [u8], name: &str) -> Option<&'a str> {
    let head_end = message.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(message.len());
    let head = std::str::from_utf8(&message[..head_end]).ok()?;
    let compact = match name.to_ascii_lowercase().as_str() {
        "call-id" => Some("i"),
        "from" => Some("f"),
        "to" => Some("t"),
        _ => None,
    };
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        let n = n.trim();
        (n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))).then(|| v.trim())
    })
}

/// The user part of the SIP URI in header `name` (`From`, `To`).
pub fn header_user<'a>(message: &'a [u8], name: &str) -> Option<&'a str> {
    let v = header_value(message, name)?;
    let start = v.find("sip:").or_else(|| v.find("sips:").map(|i| i + 1))? + 4;
    let rest = &v[start..];
    let end = rest.find('@')?;
    Some(&rest[..end]).filter(|u| !u.is_empty())
}

/// Whether a SIP message is a request (else a response).
pub fn is_request(message: &[u8]) -> bool {
    !message.starts_with(b"SIP/2.0")
}

#[cfg(test)]
#[path = "hep_tests.rs"]
mod tests;
