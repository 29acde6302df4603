//! The B2BUA core, sans-IO: calls between an agent leg (SIP over WebSocket) and an upstream leg
//! (SIP over UDP/TCP toward the SIP server) or the echo endpoint. Messages, the current time and
//! randomness come in; messages to send and call records go out. One transaction layer serves
//! both sides; media is asked for with commands among the outputs, whose replies come back as
//! inputs (`awaiting`): the core never waits on media.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use rsip::{Method, Request, SipMessage};
use serde::Serialize;

use super::active::CallSummary;
use super::build;
use super::deadlines::Deadlines;
pub use super::config::{CallConfig, TokenPolicy};
use super::awaiting::Pending;
use super::media_port::{CallRef, MediaCommand};
use super::registration::Registrations;
use super::upstream::Upstreams;
use crate::sip::dialog::Dialog;
use crate::sip::message::new_tag;
use crate::sip::registrar::ConnId;
use crate::sip::transaction::{Destination, Output, Target, TransactionLayer, Transport, TxConfig, TxEvent, TxId};

/// Which side of a call a message belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Agent,
    Upstream,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the SIP server to an agent.
    Inbound,
    /// From an agent through the SIP server.
    Outbound,
    /// An agent's echo test.
    Echo,
}

/// One call, as it ends up in the journal and the CDR file: what `GET /calls` showed while it
/// ran, and how it ended.
#[derive(Debug, Clone, Serialize)]
pub struct CallRecord {
    #[serde(flatten)]
    pub summary: CallSummary,
    pub ended_ms: u64,
    pub cause: String,
    pub status: u16,
}

/// What the driver must do.
#[derive(Debug, Clone)]
pub enum CallOutput {
    Send { target: Target, message: SipMessage },
    /// A media operation to start; its reply goes to `CallControl::media_reply`.
    Media(MediaCommand),
    /// A call's record; its media figures follow from the reply to the call's `Close`.
    Ended(CallRecord),
}

/// One leg: the INVITE that started it, its transaction and, once there, its dialog.
#[derive(Debug, Clone)]
pub(crate) struct Leg {
    pub target: Target,
    pub invite: Request,
    pub invite_tx: TxId,
    /// Our tag on this leg (From tag as UAC, To tag as UAS).
    pub local_tag: String,
    pub dialog: Option<Dialog>,
    /// As UAC: a provisional response arrived, so CANCEL may be sent.
    pub provisional: bool,
    /// The RFC 4028 session timer negotiated on this leg, if any.
    pub session: Option<super::session_timer::SessionTimer>,
    /// Our own session refresh in flight (or last sent), for glare and its answer.
    pub refresh: Option<super::in_dialog::Refresh>,
    /// The peer listed UPDATE in its Allow: refreshes go as bodiless UPDATEs.
    pub peer_allows_update: bool,
}

impl Call {
    /// The description we last gave `side`.
    pub fn our_sdp(&self, side: Side) -> Option<&String> {
        match side {
            Side::Agent => self.agent_sdp.as_ref(),
            Side::Upstream => self.upstream_sdp.as_ref(),
        }
    }

    pub fn our_sdp_mut(&mut self, side: Side) -> &mut Option<String> {
        match side {
            Side::Agent => &mut self.agent_sdp,
            Side::Upstream => &mut self.upstream_sdp,
        }
    }
}

impl Leg {
    pub fn new(target: Target, invite: Request, invite_tx: TxId, local_tag: String) -> Self {
        Leg { target, invite, invite_tx, local_tag, dialog: None, provisional: false, session: None, refresh: None, peer_allows_update: false }
    }

    /// The peer's `Allow`, when a message carries one, says whether it takes UPDATE.
    pub fn learn_allow(&mut self, headers: &rsip::Headers) {
        if let Some(allow) = build::header(headers, "Allow") {
            self.peer_allows_update = super::session_timer::lists(&allow, "UPDATE");
        }
    }

    /// A 2xx confirmed this leg's dialog.
    pub fn confirmed(&self) -> bool {
        self.dialog.as_ref().is_some_and(|d| d.state == crate::sip::dialog::DialogState::Confirmed)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub direction: Direction,
    pub dn: String,
    pub peer: String,
    pub agent: Option<Leg>,
    pub upstream: Option<Leg>,
    /// Our SDP for the agent leg, held until the answer goes out (outbound) .
    pub agent_sdp: Option<String>,
    /// Our SDP for the upstream leg, held until the 200 goes out (inbound).
    pub upstream_sdp: Option<String>,
    /// Outbound: servers still to try after the current one.
    pub failover: Vec<SocketAddr>,
    /// The Session-Expires we ask of the SIP server on an outbound call (raised by a 422).
    pub session_expires: u32,
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
    /// What the call's record carries from the peers' messages.
    pub notes: super::active::Notes,
    /// The media reply the call waits for, and what it then does.
    pub pending: Option<Pending>,
    /// The `by_dialog` keys that lead to this call, removed with it (no walk of every dialog).
    pub dialog_keys: Vec<(String, String)>,
}

/// The B2BUA state.
pub struct CallControl {
    pub(crate) config: CallConfig,
    pub(crate) tx: TransactionLayer,
    pub(crate) upstreams: Upstreams,
    pub(crate) calls: HashMap<CallRef, Call>,
    pub(crate) by_tx: HashMap<TxId, (CallRef, Side)>,
    pub(crate) by_dialog: HashMap<(String, String), (CallRef, Side)>,
    pub(crate) health_checks: HashMap<TxId, SocketAddr>,
    /// DN -> the connection and Contact of its registration.
    pub(crate) bindings: HashMap<String, (ConnId, String)>,
    /// The DN each agent connection proved.
    pub(crate) conn_users: HashMap<ConnId, String>,
    /// The User-Agent each agent connection registered with, for call records.
    pub(crate) conn_agents: HashMap<ConnId, String>,
    pub(crate) registrations: Registrations,
    /// In-dialog requests relayed to the other leg: our client transaction -> the server
    /// transaction (and its request) waiting for the answer.
    pub(crate) relays: HashMap<TxId, (TxId, Request)>,
    /// (Call-ID, From tag, CSeq) of the INVITEs whose server transactions are running, for
    /// merged-request detection; as many as the transaction table holds, no more.
    invite_keys: HashMap<(String, String, u32), TxId>,
    invite_key_of: HashMap<TxId, (String, String, u32)>,
    pub(crate) next_call: u64,
    pub(crate) next_media_op: u64,
    /// Calls that just ended, for the capture of their last messages (BYE and its answer).
    pub(crate) ended: VecDeque<super::active::EndedCall>,
    pub(crate) out: VecDeque<CallOutput>,
    pub(crate) wall_ms: u64,
    /// Each leg's session-timer deadline, so a wake-up looks at what is due, not at every call.
    pub(crate) timers: Deadlines<CallTimer>,
    /// Calls whose legs may have changed since their deadlines were last taken.
    pub(crate) touched: HashSet<CallRef>,
}

/// What a call's deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum CallTimer {
    /// The RFC 4028 session timer of one leg.
    Session(CallRef, Side),
    /// How long the call's pending media operation may take.
    Media(CallRef),
}

impl CallControl {
    pub fn new(config: CallConfig, upstreams: Upstreams) -> Self {
        let tx_config = TxConfig { max_transactions: transaction_limit(config.max_calls), ..TxConfig::default() };
        CallControl {
            config,
            tx: TransactionLayer::new(tx_config),
            upstreams,
            calls: HashMap::new(),
            by_tx: HashMap::new(),
            by_dialog: HashMap::new(),
            health_checks: HashMap::new(),
            bindings: HashMap::new(),
            conn_users: HashMap::new(),
            conn_agents: HashMap::new(),
            registrations: Registrations::default(),
            relays: HashMap::new(),
            invite_keys: HashMap::new(),
            invite_key_of: HashMap::new(),
            next_call: 1,
            next_media_op: 1,
            ended: VecDeque::new(),
            out: VecDeque::new(),
            wall_ms: 0,
            timers: Deadlines::default(),
            touched: HashSet::new(),
        }
    }

    pub fn reconfigure(&mut self, config: CallConfig, upstream: &crate::profile::Upstream) {
        self.tx.set_max_transactions(transaction_limit(config.max_calls));
        self.config = config;
        self.upstreams.reconfigure(upstream);
    }

    pub fn active_calls(&self) -> usize {
        self.calls.len()
    }

    /// Ends every call in progress with `cause` in its record (this node is handing over to its
    /// HA peer: media state is not replicated, so the calls cannot continue there). Returns how
    /// many were ended.
    pub fn end_all(&mut self, cause: &str, now: Instant, wall_ms: u64, rng: &mut impl Rng) -> usize {
        self.wall_ms = wall_ms;
        let calls: Vec<CallRef> = self.calls.keys().copied().collect();
        for call in &calls {
            self.terminate(*call, cause, now, rng);
        }
        self.drain(now, rng);
        calls.len()
    }

    pub fn upstreams(&self) -> &Upstreams {
        &self.upstreams
    }

    /// The registrar bound (`Some`) or unbound (`None`) a DN.
    pub fn set_binding(&mut self, dn: &str, binding: Option<(ConnId, String)>) {
        match binding {
            Some(b) => {
                self.bindings.insert(dn.to_owned(), b);
            }
            None => {
                self.bindings.remove(dn);
            }
        }
    }

    /// A message from an agent's connection (already past the agent edge).
    pub fn from_agent(&mut self, conn: ConnId, user: Option<String>, message: SipMessage, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        if let Some(user) = user {
            self.conn_users.insert(conn, user);
        }
        let target = Target { transport: Transport::Wss, destination: Destination::Conn(conn) };
        self.receive(message, target, now, wall_ms, rng);
    }

    /// A message from the internal side.
    pub fn from_upstream(&mut self, message: SipMessage, source: SocketAddr, transport: Transport, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        let target = Target { transport, destination: Destination::Addr(source) };
        self.receive(message, target, now, wall_ms, rng);
    }

    /// An agent's connection closed: its calls end.
    pub fn agent_gone(&mut self, conn: ConnId, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        self.wall_ms = wall_ms;
        self.conn_users.remove(&conn);
        self.conn_agents.remove(&conn);
        let gone: Vec<CallRef> = self
            .calls
            .iter()
            .filter(|(_, c)| c.agent.as_ref().is_some_and(|l| l.target.destination == Destination::Conn(conn)))
            .map(|(r, _)| *r)
            .collect();
        for call in gone {
            self.hang_up(call, Side::Agent, 480, "agent connection closed", now, rng);
        }
        self.drain(now, rng);
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.tx.poll_timeout(), self.upstreams.poll_timeout(), self.registrations.poll_timeout(), self.timers.next()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        self.wall_ms = wall_ms;
        self.tx.handle_timeout(now);
        for addr in self.upstreams.due_checks(now) {
            self.send_health_check(addr, now, rng);
        }
        self.refresh_registrations(now, rng);
        self.run_call_timers(now, rng);
        self.drain(now, rng);
    }

    /// Releases both legs of a call (BYE, CANCEL or a final response, as each leg's state
    /// calls for) and emits its record.
    pub(crate) fn terminate(&mut self, call: CallRef, cause: &str, now: Instant, rng: &mut impl Rng) {
        let Some(c) = self.calls.get(&call).cloned() else { return };
        for (leg, side) in [(c.agent, Side::Agent), (c.upstream, Side::Upstream)] {
            if let Some(leg) = leg {
                self.release_leg(call, side, leg, 480, now, rng);
            }
        }
        self.finish(call, 480, cause, now);
    }

    pub fn poll_output(&mut self) -> Option<CallOutput> {
        self.out.pop_front()
    }

    fn receive(&mut self, message: SipMessage, target: Target, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        self.wall_ms = wall_ms;
        let request = match &message {
            SipMessage::Request(r) if r.method != Method::Ack => Some(r.clone()),
            _ => None,
        };
        if let Err(e) = self.tx.receive(message, target, now) {
            if let Some(request) = request {
                let r = crate::sip::message::response_to(&request, e.status_code(), Some(&e.to_string()), Some(&new_tag(rng)));
                self.out.push_back(CallOutput::Send { target, message: r.into() });
            }
        }
        self.drain(now, rng);
    }

    /// Moves transaction-layer output along until there is none.
    pub(crate) fn drain(&mut self, now: Instant, rng: &mut impl Rng) {
        while let Some(o) = self.tx.poll_output() {
            match o {
                Output::Send { target, message, .. } => self.out.push_back(CallOutput::Send { target, message }),
                Output::Event(event) => self.on_event(event, now, rng),
            }
        }
        self.take_deadlines();
    }

    /// Brings the deadlines of the calls touched since the last look up to date.
    fn take_deadlines(&mut self) {
        for call in std::mem::take(&mut self.touched) {
            let c = self.calls.get(&call);
            for side in [Side::Agent, Side::Upstream] {
                let leg = c.and_then(|c| if side == Side::Agent { c.agent.as_ref() } else { c.upstream.as_ref() });
                let at = leg.and_then(|l| l.session.as_ref()).map(super::session_timer::SessionTimer::deadline);
                self.timers.set(CallTimer::Session(call, side), at);
            }
        }
    }

    fn on_event(&mut self, event: TxEvent, now: Instant, rng: &mut impl Rng) {
        match event {
            TxEvent::Request { tx, request, source, cancels } => self.on_request(tx, request, source, cancels, now, rng),
            TxEvent::Ack { request, acked, .. } => self.on_ack(request, acked),
            TxEvent::Response { tx, response } => self.on_response(tx, response, now, rng),
            TxEvent::Timeout { tx, response } => self.on_response(tx, response, now, rng),
            TxEvent::TransportError { tx, response } => {
                if let Some(r) = response {
                    self.on_response(tx, r, now, rng);
                }
            }
            TxEvent::AckTimeout { tx } => {
                if let Some((call, side)) = self.by_tx.get(&tx).copied() {
                    self.hang_up(call, side, 408, "no ACK for our answer", now, rng);
                }
            }
            TxEvent::Terminated { tx } => {
                self.health_checks.remove(&tx);
                if let Some(key) = self.invite_key_of.remove(&tx) {
                    self.invite_keys.remove(&key);
                }
                self.relays.remove(&tx);
                if let Some((call, _)) = self.by_tx.get(&tx) {
                    if !self.calls.contains_key(call) {
                        self.by_tx.remove(&tx);
                    }
                }
            }
            TxEvent::StrayResponse { .. } => {}
        }
    }

    fn on_request(&mut self, tx: TxId, request: Request, source: Target, cancels: Option<TxId>, now: Instant, rng: &mut impl Rng) {
        if request.method == Method::Cancel {
            self.respond(tx, &request, 200, None, now, rng);
            if let Some((call, side)) = cancels.and_then(|inv| self.by_tx.get(&inv).copied()) {
                self.cancelled(call, side, now, rng);
            }
            return;
        }
        let in_dialog = crate::sip::dialog::DialogId::of_request(&request).is_some();
        if in_dialog {
            return self.in_dialog(tx, request, source, now, rng);
        }
        if request.method == Method::Invite && self.merged(tx, &request) {
            return self.respond(tx, &request, 482, Some("Loop Detected"), now, rng);
        }
        if request.method == Method::Invite {
            if let super::session_timer::UasDecision::TooSmall { min_se } = super::in_dialog::uas_decision(&request) {
                return self.too_small(tx, &request, min_se, now, rng);
            }
        }
        let from_agent = matches!(source.destination, Destination::Conn(_));
        match (request.method, from_agent) {
            (Method::Invite, true) => self.agent_invite(tx, request, source, now, rng),
            (Method::Invite, false) => self.upstream_invite(tx, request, source, now, rng),
            (Method::Options, false) => self.upstream_options(tx, &request, now, rng),
            (Method::Options, true) => {
                let r = build::response(&request, 200, None, &new_tag(rng), None, None);
                self.send_response(tx, r, now);
            }
            _ => self.respond(tx, &request, 405, None, now, rng),
        }
    }

    /// RFC 3261 section 8.2.2.2: a new INVITE with the Call-ID, From tag and CSeq of one whose
    /// transaction is still running, on another transaction, reached us twice (forked, or
    /// looping back). Otherwise it is remembered until its transaction ends.
    fn merged(&mut self, tx: TxId, request: &Request) -> bool {
        let key = (build::header(&request.headers, "Call-ID").unwrap_or_default(), build::header(&request.headers, "From").and_then(|f| crate::sip::headers::to_tag_of(&f)).unwrap_or_default(), build::cseq_number(&request.headers));
        match self.invite_keys.get(&key) {
            Some(other) if *other != tx => true,
            Some(_) => false,
            None => {
                self.invite_keys.insert(key.clone(), tx);
                self.invite_key_of.insert(tx, key);
                false
            }
        }
    }

    /// The SIP server's OPTIONS for a DN is 200 only while the DN is registered.
    fn upstream_options(&mut self, tx: TxId, request: &Request, now: Instant, rng: &mut impl Rng) {
        let code = match build::uri_user(&request.uri) {
            Some(dn) if !self.bindings.contains_key(&dn) && self.config.echo_number.as_deref() != Some(dn.as_str()) => 480,
            _ => 200,
        };
        self.respond(tx, request, code, None, now, rng);
    }

    fn in_dialog(&mut self, tx: TxId, request: Request, source: Target, now: Instant, rng: &mut impl Rng) {
        let id = crate::sip::dialog::DialogId::of_request(&request).expect("checked by the caller");
        let Some((call, side)) = self.by_dialog.get(&(id.call_id.clone(), id.local_tag.clone())).copied() else {
            return self.respond(tx, &request, 481, None, now, rng);
        };
        self.note_headers(call, side, &request.headers);
        let check = self.leg_mut(call, side).and_then(|l| l.dialog.as_mut()).map(|d| d.on_request(&request));
        if let Some(Err(e)) = check {
            return self.respond(tx, &request, e.status_code(), None, now, rng);
        }
        let _ = source;
        match request.method {
            Method::Bye => {
                self.respond(tx, &request, 200, None, now, rng);
                self.hang_up(call, side, 200, if side == Side::Agent { "agent hung up" } else { "remote party hung up" }, now, rng);
            }
            Method::Invite | Method::Update => self.reoffer(tx, call, side, &request, now, rng),
            Method::Info => self.relay_in_dialog(tx, call, side, &request, now, rng),
            Method::Notify if side == Side::Upstream => self.remote_control(tx, call, &request, now, rng),
            _ => self.respond(tx, &request, 200, None, now, rng),
        }
    }

    /// A leg to read or change; its call's deadlines are taken again before the wake-up.
    pub(crate) fn leg_mut(&mut self, call: CallRef, side: Side) -> Option<&mut Leg> {
        let c = self.calls.get_mut(&call)?;
        self.touched.insert(call);
        match side {
            Side::Agent => c.agent.as_mut(),
            Side::Upstream => c.upstream.as_mut(),
        }
    }

    pub(crate) fn respond(&mut self, tx: TxId, request: &Request, code: u16, reason: Option<&str>, now: Instant, rng: &mut impl Rng) {
        let r = build::response(request, code, reason, &new_tag(rng), None, None);
        self.send_response(tx, r, now);
    }

    pub(crate) fn send_response(&mut self, tx: TxId, response: rsip::Response, now: Instant) {
        if let Err(e) = self.tx.send_response(tx, response, now) {
            tracing::debug!(error = %e, "response not sent");
        }
    }
}

/// How many transactions may live at once. A finished call leaves about three behind for 32 s
/// (the INVITE server transactions of both legs in RFC 6026's Accepted state, the BYE's in
/// Completed over UDP), so the table must hold 3 × 32 s × the call rate. 200 per allowed call
/// carries a site through bursts of about twice its size in calls per second, and still bounds
/// what a flood can make us keep (a few KiB each).
fn transaction_limit(max_calls: usize) -> usize {
    max_calls.saturating_mul(200).max(10_000)
}
