//! The call-control driver: one task owning the sans-IO cores (agent edge and B2BUA), fed by
//! bounded channels from every WebSocket connection, the internal SIP sockets and the media
//! side. No task per transaction; each connection has one small task that only forwards
//! frames, and each call's media one that carries its commands out (`media_bridge`): the loop
//! starts media operations and takes their replies as events, it never waits on them, so it
//! runs on a current-thread runtime as well as on a multi-threaded one.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

use super::agents::{AgentEdge, EdgeConfig, EdgeOutput};
use super::control::{CallConfig, CallControl, CallOutput, CallRecord};
use super::in_progress::InProgress;
use super::internal::{Inbound, InternalSender};
use super::media_bridge::{MediaNote, MediaRunner};
use super::media_port::{CallRef, MediaDone, MediaOp, MediaReply};
use super::upstream::Upstreams;
use crate::sip::transaction::Destination;
use crate::web::{Outgoing, WsEvent};
use crate::guard::{Limit, RateLimiter, Verdict};
use crate::observe::hep::{self, HepCapture, IpProto, ProtoType, Selected};
use crate::observe::metrics::CallGauges;
use crate::guard::Report;
use crate::profile::{FailureKind, LoadedProfile};
use crate::sip::registrar::{ConnId, RegistrarEvent};

/// Room for events from all connections together; a full queue slows the readers down.
pub const EVENT_QUEUE: usize = 4096;


/// Loads the digest nonce key from the state directory, creating it once, so nonces handed out
/// before a restart stay verifiable after it.
pub fn digest_secret(state_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = state_dir.join("digest.key");
    if let Ok(key) = std::fs::read(&path) {
        if key.len() == 32 {
            return Ok(key);
        }
    }
    let mut key = vec![0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
    crate::system::write_private_file(&path, &key)?;
    Ok(key)
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A question from the admin endpoint, answered on its oneshot between two events.
pub enum AdminQuery {
    /// The calls in progress.
    Calls(tokio::sync::oneshot::Sender<Vec<super::active::CallSummary>>),
    /// Registered agents and recent authentication failures.
    Agents(tokio::sync::oneshot::Sender<Vec<super::agent_view::AgentInfo>>),
    /// This node lost the HA virtual addresses: end every call (cause `ha-failover`); the
    /// reply is how many.
    Standby(tokio::sync::oneshot::Sender<usize>),
}

/// Everything call control's task is given at start.
pub struct CallTask<M> {
    pub events: mpsc::Receiver<WsEvent>,
    pub internal: mpsc::Receiver<Inbound>,
    pub sender: InternalSender,
    pub profile: watch::Receiver<Arc<LoadedProfile>>,
    pub secret: Vec<u8>,
    pub failures: mpsc::Sender<Report>,
    /// Sources the guard banned: their connections are closed at once.
    pub closures: tokio::sync::broadcast::Receiver<IpAddr>,
    /// Live figures for metrics.
    pub gauges: Arc<CallGauges>,
    pub media: M,
    /// Replies and events from the media side.
    pub media_notes: mpsc::Receiver<MediaNote>,
    /// `GET /calls` and `GET /agents` from the admin endpoint.
    pub queries: mpsc::Receiver<AdminQuery>,
    /// HEP capture of both sides' SIP and of call quality.
    pub hep: HepCapture,
    /// Where the calls in progress are kept for the records after a crash.
    pub state_dir: std::path::PathBuf,
}

/// Runs call control until the agent event channel closes.
pub async fn run<M: MediaRunner>(task: CallTask<M>) {
    let CallTask { mut events, mut internal, sender, mut profile, secret, failures, mut closures, gauges, media, mut media_notes, mut queries, hep, state_dir } = task;
    let loaded = profile.borrow_and_update().clone();
    let calls = CallControl::new(CallConfig::from_profile(&loaded), Upstreams::from_profile(&loaded.profile.upstream));
    let mut state = Driver {
        edge: AgentEdge::new(EdgeConfig::from_profile(&loaded), secret.clone()),
        calls,
        media,
        closing: HashSet::new(),
        records: HashMap::new(),
        conns: HashMap::new(),
        peers: HashMap::new(),
        endpoints: HashMap::new(),
        sender,
        failures,
        cdr_file: loaded.profile.observe.cdr_file.as_ref().map(|p| loaded.resolve(p)),
        limiter: RateLimiter::new(&loaded.profile.bans),
        gauges,
        rng: StdRng::from_rng(&mut rand::rng()),
        hep,
        in_progress: InProgress::in_dir(&state_dir),
    };
    state.publish_upstream();
    let left = state.in_progress.recover();
    if !left.is_empty() {
        tracing::warn!(calls = left.len(), "calls were in progress when the gateway last stopped; their records say gateway-restart");
    }
    for r in &left {
        state.record(r);
    }
    // RTCP copies and the record of the calls in progress are looked at once a second.
    let mut media_check = tokio::time::interval(std::time::Duration::from_secs(1));
    media_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let wake = [state.edge.poll_timeout(), state.calls.poll_timeout()].into_iter().flatten().min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => state.handle(event),
                None => break,
            },
            Some(msg) = internal.recv() => {
                let at = SystemTime::now();
                state.calls.from_upstream(msg.message, msg.source, msg.transport, Instant::now(), wall_ms(), &mut state.rng);
                // Captured once call control knows the call, before what it answers goes out.
                if let Some(c) = state.capture_selection(&msg.raw, None) {
                    state.hep.sip(&c, msg.source, msg.local, ip_proto(msg.transport), &msg.raw, at);
                }
                state.flush_calls();
            }
            () = sleep => {
                let now = Instant::now();
                state.limiter.prune(std::time::SystemTime::now());
                let out = state.edge.handle_timeout(now);
                state.apply(out);
                state.log_rejections();
                state.calls.handle_timeout(now, wall_ms(), &mut state.rng);
                state.flush_calls();
            }
            Some(note) = media_notes.recv() => state.on_media_note(note),
            _ = media_check.tick() => {
                state.capture_rtcp();
                state.in_progress.update(state.calls.answer_states(), || state.calls.summaries());
                state.in_progress.touch();
                state.edge.housekeeping(wall_ms());
            }
            Some(query) = queries.recv() => match query {
                AdminQuery::Calls(reply) => state.answer_calls(reply),
                AdminQuery::Agents(reply) => {
                    let _ = reply.send(state.edge.agents(Instant::now(), wall_ms()));
                }
                AdminQuery::Standby(reply) => {
                    let ended = state.calls.end_all(crate::ha::FAILOVER_CAUSE, Instant::now(), wall_ms(), &mut state.rng);
                    state.flush_calls();
                    tracing::warn!(calls = ended, "HA standby: this node no longer holds the virtual addresses; calls in progress ended");
                    let _ = reply.send(ended);
                }
            },
            banned = closures.recv() => match banned {
                Ok(ip) => state.close_source(ip),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            changed = profile.changed() => {
                if changed.is_err() { break; }
                let loaded = profile.borrow_and_update().clone();
                state.edge.reconfigure(EdgeConfig::from_profile(&loaded), secret.clone());
                state.calls.reconfigure(CallConfig::from_profile(&loaded), &loaded.profile.upstream);
                state.cdr_file = loaded.profile.observe.cdr_file.as_ref().map(|p| loaded.resolve(p));
                state.limiter.reconfigure(&loaded.profile.bans);
            }
        }
    }
}

struct Driver<M: MediaRunner> {
    edge: AgentEdge,
    calls: CallControl,
    media: M,
    /// Calls whose media is being closed: their records wait for the final figures.
    closing: HashSet<CallRef>,
    records: HashMap<CallRef, CallRecord>,
    conns: HashMap<ConnId, mpsc::Sender<Outgoing>>,
    peers: HashMap<ConnId, IpAddr>,
    /// Each agent connection's (peer, local) addresses, for capture.
    endpoints: HashMap<ConnId, (SocketAddr, SocketAddr)>,
    sender: InternalSender,
    failures: mpsc::Sender<Report>,
    cdr_file: Option<std::path::PathBuf>,
    /// Per-source SIP request rate on the agent side (what Kamailio's pike did).
    limiter: RateLimiter,
    gauges: Arc<CallGauges>,
    rng: StdRng,
    hep: HepCapture,
    in_progress: InProgress,
}

impl<M: MediaRunner> Driver<M> {
    fn handle(&mut self, event: WsEvent) {
        match event {
            WsEvent::Opened { session, outbound } => {
                let conn = ConnId(session.id);
                self.conns.insert(conn, outbound);
                self.peers.insert(conn, session.peer.ip());
                self.endpoints.insert(conn, (session.peer, session.local));
                self.edge.connection_opened(conn, session.peer);
            }
            WsEvent::Message { id, data } => {
                let conn = ConnId(id);
                tracing::debug!(conn = id, first_line = %first_line(&data), bytes = data.len(), "SIP from agent");
                let keepalive = data.iter().all(|b| *b == b'\r' || *b == b'\n');
                if let Some(ip) = self.peers.get(&conn).copied().filter(|_| !keepalive) {
                    if let Verdict::Deny { first, retry_after } = self.limiter.check(ip, Limit::SipRequest, std::time::SystemTime::now()) {
                        // Answered 503 with Retry-After, so clients back off instead of timing
                        // out (a WebSocket's source cannot be spoofed: no reflection). A flood
                        // that does not read its answers fills its send queue and is closed.
                        // One failure per second of excess reaches the guard.
                        if first {
                            tracing::info!(source = %ip, "SIP request rate exceeded");
                            let _ = self.failures.try_send(Report { ip, kind: FailureKind::RateLimited, detail: "SIP request rate".into() });
                        }
                        if let Some(answer) = super::agents::rate_limited_answer(&data, retry_after, &mut self.rng) {
                            self.send(conn, Outgoing::Text(answer));
                        }
                        return;
                    }
                }
                if !keepalive {
                    self.capture_agent_side(conn, &data, true);
                }
                if data.starts_with(b"REGISTER ") {
                    if let Some(ua) = hep::header_value(&data, "User-Agent") {
                        self.calls.agent_software(conn, ua);
                    }
                }
                let out = self.edge.handle_frame(conn, &data, Instant::now(), wall_ms(), &mut self.rng);
                self.apply(out);
                self.log_rejections();
            }
            WsEvent::Closed { id } => {
                let conn = ConnId(id);
                self.conns.remove(&conn);
                self.peers.remove(&conn);
                self.endpoints.remove(&conn);
                let out = self.edge.connection_closed(conn);
                self.apply(out);
                self.calls.agent_gone(conn, Instant::now(), wall_ms(), &mut self.rng);
                self.flush_calls();
            }
        }
    }

    fn apply(&mut self, out: Vec<EdgeOutput>) {
        for o in out {
            match o {
                EdgeOutput::Send { conn, text } => self.send(conn, Outgoing::Text(text)),
                EdgeOutput::Close { conn, reason } => self.send(conn, Outgoing::Close(reason)),
                EdgeOutput::Failure { ip, kind, detail } => {
                    // Logged as the edge's summaries (`log_rejections`), not one by one.
                    // Never wait on the guard: a flood must not stall SIP.
                    let _ = self.failures.try_send(Report { ip, kind, detail });
                }
                EdgeOutput::Registration(event) => {
                    log_registration(&event);
                    self.gauges.registration_event(match event {
                        RegistrarEvent::Registered { .. } => "registered",
                        RegistrarEvent::Unregistered { .. } => "unregistered",
                        RegistrarEvent::Replaced { .. } => "replaced",
                    });
                    let dn = match &event {
                        RegistrarEvent::Registered { dn, .. } | RegistrarEvent::Unregistered { dn, .. } | RegistrarEvent::Replaced { dn, .. } => dn.clone(),
                    };
                    let binding = self.edge.registrar().bindings_of(&dn).last().map(|b| (b.conn, b.contacts.first().cloned().unwrap_or_default()));
                    let registered = binding.is_some();
                    self.calls.set_binding(&dn, binding);
                    self.gauges.registrations.store(self.edge.registrar().len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if matches!(event, RegistrarEvent::Registered { .. }) || !registered {
                        self.calls.mirror_registration(&dn, registered, Instant::now(), &mut self.rng);
                        self.flush_calls();
                    }
                }
                EdgeOutput::Request { conn, user, request } => {
                    self.calls.from_agent(conn, user, request.into(), Instant::now(), wall_ms(), &mut self.rng);
                    self.flush_calls();
                }
                EdgeOutput::Response { conn, response } => {
                    self.calls.from_agent(conn, None, response.into(), Instant::now(), wall_ms(), &mut self.rng);
                    self.flush_calls();
                }
            }
        }
    }

    /// What the edge refused, as at most one line per source per interval.
    fn log_rejections(&mut self) {
        while let Some(s) = self.edge.poll_summary() {
            log_summary("agents", &s);
        }
    }

    /// A banned source loses every connection it has.
    fn close_source(&mut self, ip: IpAddr) {
        let conns: Vec<ConnId> = self.peers.iter().filter(|(_, p)| **p == ip).map(|(c, _)| *c).collect();
        for conn in conns {
            tracing::info!(conn = conn.0, source = %ip, "closing the connection of a banned source");
            self.send(conn, Outgoing::Close("banned"));
        }
    }

    fn flush_calls(&mut self) {
        use std::sync::atomic::Ordering;
        self.publish_upstream();
        self.gauges.active_calls.store(self.calls.active_calls() as u64, Ordering::Relaxed);
        self.gauges.registrations.store(self.edge.registrar().len() as u64, Ordering::Relaxed);
        while let Some(o) = self.calls.poll_output() {
            match o {
                CallOutput::Send { target, message } => match target.destination {
                    Destination::Conn(conn) => self.send(conn, Outgoing::Text(message.to_string())),
                    Destination::Addr(addr) => {
                        let bytes = message.to_string().into_bytes();
                        let capture = self.capture_selection(&bytes, None);
                        self.sender.send(addr, target.transport, bytes, capture);
                    }
                },
                CallOutput::Media(command) => {
                    let (call, close) = (command.call, command.op == MediaOp::Close);
                    match self.media.submit(command) {
                        Some(note) => self.on_media_note(note),
                        None if close => {
                            self.closing.insert(call);
                        }
                        None => {}
                    }
                }
                CallOutput::Ended(record) => {
                    self.gauges.active_calls.store(self.calls.active_calls() as u64, std::sync::atomic::Ordering::Relaxed);
                    if self.closing.contains(&record.summary.call) {
                        self.records.insert(record.summary.call, record);
                    } else {
                        self.ended(record);
                    }
                }
            }
        }
    }

    /// A call's record, with its final media figures when it had media.
    fn ended(&mut self, record: CallRecord) {
        self.gauges.call_ended(&record);
        self.record(&record);
    }

    /// A reply or event from the media side.
    fn on_media_note(&mut self, note: MediaNote) {
        self.media.noted(&note);
        match note {
            MediaNote::Reply(reply) => {
                if let MediaReply { call, result: Ok(MediaDone::Closed(figures)), .. } = &reply {
                    self.closing.remove(call);
                    if let Some(mut record) = self.records.remove(call) {
                        record.summary.media = figures.clone();
                        self.ended(record);
                    }
                }
                self.calls.media_reply(reply, Instant::now(), wall_ms(), &mut self.rng);
            }
            MediaNote::Died(call, reason) => self.calls.media_died(call, &reason, Instant::now(), wall_ms(), &mut self.rng),
            MediaNote::Opened(..) => {}
        }
        self.flush_calls();
    }

    /// `GET /calls`: the calls in progress now, with the figures media gives within a second;
    /// answered from a task of its own, so the loop goes on meanwhile.
    fn answer_calls(&mut self, reply: tokio::sync::oneshot::Sender<Vec<super::active::CallSummary>>) {
        let mut calls = self.calls.summaries();
        let asked: Vec<_> = calls.iter().map(|c| self.media.stats(c.call)).collect();
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
            for (c, answer) in calls.iter_mut().zip(asked) {
                if let Some(answer) = answer {
                    c.media = tokio::time::timeout_at(until, answer).await.ok().and_then(|r| r.ok()).flatten();
                }
            }
            let _ = reply.send(calls);
        });
    }

    /// Upstream health as the checks left it, for metrics and the admin endpoint.
    fn publish_upstream(&self) {
        let u = self.calls.upstreams();
        let servers = u
            .servers()
            .iter()
            .map(|s| crate::observe::live::UpstreamHealth { address: s.address, transport: s.transport, priority: s.priority, weight: s.weight, up: s.is_up(u.threshold()), failures: s.failures })
            .collect();
        self.gauges.set_upstream(servers);
    }

    /// One structured record per call: journald fields, and a JSON line when a CDR file is set.
    fn record(&mut self, r: &CallRecord) {
        let media = r.summary.media.as_ref().map(|m| m.to_string()).unwrap_or_default();
        tracing::info!(
            target: "gatewayd::cdr",
            call = r.summary.call.0,
            dn = %r.summary.dn,
            direction = ?r.summary.direction,
            peer = %r.summary.peer,
            agent_call_id = r.summary.agent_call_id.as_deref().unwrap_or(""),
            upstream_call_id = r.summary.upstream_call_id.as_deref().unwrap_or(""),
            upstream_ids = %serde_json::to_string(&r.summary.upstream_ids).unwrap_or_default(),
            user_agent = r.summary.user_agent.as_deref().unwrap_or(""),
            started_ms = r.summary.started_ms,
            answered_ms = r.summary.answered_ms.unwrap_or(0),
            ended_ms = r.ended_ms,
            status = r.status,
            cause = %r.cause,
            media = %media,
            "call ended"
        );
        self.capture_quality(r);
        if let Some(path) = &self.cdr_file {
            let line = serde_json::to_string(r).unwrap_or_default() + "\n";
            let written = std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "cannot append the call record");
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: Outgoing) {
        let Some(tx) = self.conns.get(&conn) else { return };
        if let Outgoing::Text(text) = &msg {
            tracing::debug!(conn = conn.0, first_line = %first_line(text.as_bytes()), "SIP to agent");
        }
        let text = match &msg {
            Outgoing::Text(text) if self.hep.active() => Some(text.clone()),
            _ => None,
        };
        if tx.try_send(msg).is_ok() {
            if let Some(text) = text {
                self.capture_agent_side(conn, text.as_bytes(), false);
            }
        } else {
            // Too slow or gone: drop it rather than queue without bound.
            tracing::warn!(conn = conn.0, "connection cannot keep up; closing it");
            let _ = tx.try_send(Outgoing::Close("send queue full"));
            self.conns.remove(&conn);
        }
    }
}

impl<M: MediaRunner> Driver<M> {
    /// Whether HEP capture wants a SIP message, tied to its call. `agent` is the connection a
    /// message came from (`true`) or goes to (`false`) on the agent side.
    fn capture_selection(&self, bytes: &[u8], agent: Option<(ConnId, bool)>) -> Option<Selected> {
        if !self.hep.active() {
            return None;
        }
        let call_id = hep::header_value(bytes, "Call-ID")?;
        let call = self.calls.capture_context(call_id);
        // Outside calls (registrations, OPTIONS), the agent is the connection's proven DN, else
        // the agent's own URI: From of what it sends, To of what it is sent.
        let dn = match (&call, agent) {
            (Some(c), _) => Some(c.dn.as_str()),
            (None, Some((conn, from_agent))) => {
                let own = if hep::is_request(bytes) == from_agent { "From" } else { "To" };
                self.calls.conn_user(conn).or_else(|| hep::header_user(bytes, own))
            }
            (None, None) => hep::header_user(bytes, "To"),
        };
        let ctx = hep::Context {
            call_id,
            correlation: call.as_ref().map(|c| c.correlation.as_str()),
            other_call_id: call.as_ref().and_then(|c| c.other_call_id.as_deref()),
            dn,
        };
        self.hep.select(&ctx)
    }

    /// Captures a message on an agent's connection as the gateway sees it inside TLS.
    fn capture_agent_side(&self, conn: ConnId, bytes: &[u8], from_agent: bool) {
        let Some(&(peer, local)) = self.endpoints.get(&conn) else { return };
        if let Some(c) = self.capture_selection(bytes, Some((conn, from_agent))) {
            let (src, dst) = if from_agent { (peer, local) } else { (local, peer) };
            self.hep.sip(&c, src, dst, IpProto::Tcp, bytes, SystemTime::now());
        }
    }

    /// The RTCP the media bridge copied since the last tick, captured for the calls selected
    /// now; and the bridge told whether to go on copying.
    fn capture_rtcp(&mut self) {
        let on = self.hep.active();
        self.media.tap_rtcp(on);
        let (seen, dropped) = self.media.take_rtcp();
        if dropped > 0 {
            self.hep.count_queue_full(dropped);
        }
        for (call_id, c, s) in self.calls.tie_rtcp(seen) {
            let ctx = hep::Context { call_id: &call_id, correlation: Some(&c.correlation), other_call_id: c.other_call_id.as_deref(), dn: Some(&c.dn) };
            if let Some(selected) = self.hep.select(&ctx) {
                self.hep.rtcp(&selected, s.src, s.dst, &s.data, s.at);
            }
        }
    }

    /// A call's record, quality included, as a HEP JSON report correlated with its SIP.
    fn capture_quality(&self, r: &CallRecord) {
        if !self.hep.active() {
            return;
        }
        let s = &r.summary;
        let (first, second) = match s.direction {
            super::control::Direction::Inbound => (&s.upstream_call_id, &s.agent_call_id),
            _ => (&s.agent_call_id, &s.upstream_call_id),
        };
        let Some(call_id) = first.as_deref().or(second.as_deref()) else { return };
        let ctx = hep::Context { call_id, correlation: Some(call_id), other_call_id: second.as_deref(), dn: Some(&s.dn) };
        if let Some(c) = self.hep.select(&ctx) {
            let at = self.sender.local_addr().unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let json = serde_json::to_vec(r).unwrap_or_default();
            self.hep.report(&c, ProtoType::QualityReport, at, at, &json, SystemTime::now());
        }
    }
}

fn ip_proto(transport: crate::sip::transaction::Transport) -> IpProto {
    match transport {
        crate::sip::transaction::Transport::Udp => IpProto::Udp,
        _ => IpProto::Tcp,
    }
}

fn first_line(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == b'\r' || *b == b'\n').unwrap_or(bytes.len()).min(200);
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// One line for a source's rejected input since its last one (`side`: agents or internal).
pub(crate) fn log_summary(side: &str, s: &crate::sip::rejects::Summary) {
    tracing::info!(side, source = %s.source_text(), rejected = s.total, seconds = s.period.as_secs(), reasons = %s, "rejected SIP input");
}

fn log_registration(event: &RegistrarEvent) {
    match event {
        RegistrarEvent::Registered { dn, conn, expires } => tracing::info!(dn = %dn, conn = conn.0, expires, "agent registered"),
        RegistrarEvent::Unregistered { dn, conn, reason } => tracing::info!(dn = %dn, conn = conn.0, reason = ?reason, "agent unregistered"),
        RegistrarEvent::Replaced { dn, old_conn, new_conn } => tracing::info!(dn = %dn, old = old_conn.0, new = new_conn.0, "agent registration replaced"),
    }
}

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
