//! The call flows of the B2BUA: an agent's INVITE (echo test or outbound call), the SIP server's
//! INVITE to an agent (early or late offer), responses relayed between legs, CANCEL, re-offers.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use rsip::{Request, Response};

use super::build::{self, InviteSpec};
use super::control::{Call, CallControl, Direction, Leg, Side};
use super::awaiting::Waiting;
use super::media_port::{CallRef, MediaFailure, MediaOp};
use super::session_timer;
use crate::profile::AutoAnswer;
use crate::sip::dialog::Dialog;
use crate::sip::message::new_tag;
use crate::sip::registrar::ConnId;
use crate::sip::transaction::{Destination, Target, Transport, TxId};

impl CallControl {
    /// An agent's new INVITE: the echo number, or an outbound call through the SIP server.
    pub(crate) fn agent_invite(&mut self, tx: TxId, request: Request, source: Target, now: Instant, rng: &mut impl Rng) {
        let Destination::Conn(conn) = source.destination else { return };
        let Some(dn) = self.conn_users.get(&conn).cloned() else {
            return self.respond(tx, &request, 403, Some("Not Authenticated"), now, rng);
        };
        if self.calls.len() >= self.config.max_calls {
            return self.respond(tx, &request, 503, Some("Too Many Calls"), now, rng);
        }
        let dest = build::uri_user(&request.uri).unwrap_or_default();
        let offer = build::sdp_of(&request.headers, &request.body);
        let local_tag = new_tag(rng);
        let agent = Leg::new(source, request.clone(), tx, local_tag.clone());
        let call = Call {
            direction: Direction::Outbound,
            dn: dn.clone(),
            peer: dest.clone(),
            agent: Some(agent),
            upstream: None,
            agent_sdp: None,
            upstream_sdp: None,
            failover: Vec::new(),
            session_expires: self.config.session_expires,
            started_ms: self.wall_ms,
            answered_ms: None,
            notes: Default::default(),
            pending: None,
            dialog_keys: Vec::new(),
        };

        if self.config.echo_number.as_deref() == Some(dest.as_str()) {
            let Some(offer) = offer else { return self.respond(tx, &request, 488, Some("Offer Required"), now, rng) };
            let id = self.new_call(Call { direction: Direction::Echo, ..call });
            self.by_tx.insert(tx, (id, Side::Agent));
            self.index_leg(id, Side::Agent);
            // Answered once the echo's answer comes back (`awaiting`).
            return self.wait_for(id, MediaOp::Echo { offer }, Waiting::Echo, now);
        }

        if !self.destination_allowed(&dn, &dest) {
            return self.respond(tx, &request, 403, Some("Destination Not Allowed"), now, rng);
        }
        if let Some(policy) = &self.config.token {
            let token = build::header(&request.headers, &policy.header);
            if let Err(e) = super::token::verify(&policy.secret, token.as_deref(), &dn, &dest, self.wall_ms / 1000, policy.max_age_secs) {
                tracing::info!(dn = %dn, destination = %dest, reason = %e, "outbound call refused: click-to-dial token");
                return self.respond(tx, &request, 403, Some("Invalid Token"), now, rng);
            }
        }
        let Some(offer) = offer else { return self.respond(tx, &request, 488, Some("Offer Required"), now, rng) };
        let Some(max_forwards) = build::next_max_forwards(&request) else {
            return self.respond(tx, &request, 483, None, now, rng);
        };
        let id = self.new_call(call);
        self.by_tx.insert(tx, (id, Side::Agent));
        self.index_leg(id, Side::Agent);
        self.wait_for(id, MediaOp::OpenOutbound { browser_offer: offer }, Waiting::Outbound { max_forwards }, now);
    }

    /// Outbound: media for both legs is there; the call goes to the first upstream server.
    pub(crate) fn outbound_media_ready(&mut self, id: CallRef, answer: String, internal: String, max_forwards: u32, now: Instant, rng: &mut impl Rng) {
        let mut servers = self.upstreams.failover_order();
        if servers.is_empty() {
            return self.fail_setup(id, Side::Agent, MediaFailure::new(503, "No Upstream Server"), now, rng);
        }
        let first = servers.remove(0);
        if let Some(c) = self.calls.get_mut(&id) {
            c.agent_sdp = Some(answer);
            c.upstream_sdp = Some(internal);
            c.failover = servers;
        }
        self.invite_upstream(id, first, max_forwards, now, rng);
    }

    fn destination_allowed(&self, dn: &str, dest: &str) -> bool {
        !dest.is_empty()
            && (self.config.outbound_patterns.iter().any(|p| p.is_match(dest))
                || self.config.agent_destinations.get(dn).is_some_and(|v| v.iter().any(|p| p.is_match(dest))))
    }

    /// Sends (or re-sends, on failover) the outbound call's INVITE to `server`.
    fn invite_upstream(&mut self, call: CallRef, server: SocketAddr, max_forwards: u32, now: Instant, rng: &mut impl Rng) {
        let Some(c) = self.calls.get(&call) else { return };
        let Some(agent_invite) = c.agent.as_ref().map(|l| l.invite.clone()) else { return };
        let sdp = c.upstream_sdp.clone();
        let (dn, dest) = (c.dn.clone(), c.peer.clone());
        let target = self.upstream_target(server);
        let (via_transport, sent_by) = self.via_for(target);
        let token_header = self.config.token.as_ref().map(|t| t.header.to_ascii_lowercase());
        let mut extra = build::passed_through(&agent_invite.headers);
        extra.retain(|(n, _)| token_header.as_deref() != Some(n.to_ascii_lowercase().as_str()));
        // We ask for a session timer and let the SIP server pick who refreshes (RFC 4028).
        extra.push(("Session-Expires".into(), c.session_expires.to_string()));
        extra.push(("Min-SE".into(), session_timer::MIN_SE_SECS.to_string()));
        let domain = self.config.domain.clone();
        let (invite, tag) = match build::invite(
            &InviteSpec {
                request_uri: &format!("sip:{dest}@{server}"),
                via_transport,
                via_sent_by: &sent_by,
                from: &format!("<sip:{dn}@{domain}>"),
                to: &format!("<sip:{dest}@{domain}>"),
                contact: &format!("<sip:{dn}@{sent_by}>"),
                max_forwards,
                extra: &extra,
                sdp: sdp.as_deref(),
            },
            rng,
        ) {
            Ok(built) => built,
            Err(e) => return self.fail_setup(call, Side::Agent, MediaFailure::new(e.status_code(), e.to_string()), now, rng),
        };
        match self.tx.send_request_within(invite.clone(), target, now, Some(self.config.reply_timeout)) {
            Ok(tx) => {
                self.by_tx.insert(tx, (call, Side::Upstream));
                if let Some(c) = self.calls.get_mut(&call) {
                    c.upstream = Some(Leg::new(target, invite, tx, tag));
                }
                self.index_leg(call, Side::Upstream);
            }
            Err(e) => self.fail_setup(call, Side::Agent, MediaFailure::new(e.status_code(), e.to_string()), now, rng),
        }
    }

    /// The SIP server's INVITE for a DN: route it to the agent's connection.
    pub(crate) fn upstream_invite(&mut self, tx: TxId, request: Request, source: Target, now: Instant, rng: &mut impl Rng) {
        let Destination::Addr(addr) = source.destination else { return };
        if !self.upstreams.is_upstream(addr.ip()) {
            return self.respond(tx, &request, 403, Some("Not An Upstream Server"), now, rng);
        }
        let Some(dn) = build::uri_user(&request.uri) else { return self.respond(tx, &request, 404, None, now, rng) };
        let Some((conn, contact)) = self.bindings.get(&dn).cloned() else {
            return self.respond(tx, &request, 480, Some("Agent Not Registered"), now, rng);
        };
        if self.calls.values().any(|c| c.dn == dn) {
            return self.respond(tx, &request, 486, None, now, rng);
        }
        if self.calls.len() >= self.config.max_calls {
            return self.respond(tx, &request, 503, Some("Too Many Calls"), now, rng);
        }
        let offer = build::sdp_of(&request.headers, &request.body);
        let caller = build::header(&request.headers, "From").map(|f| strip_tag(&f)).unwrap_or_else(|| "<sip:anonymous@anonymous.invalid>".into());
        let local_tag = new_tag(rng);
        let id = self.new_call(Call {
            direction: Direction::Inbound,
            dn: dn.clone(),
            peer: caller.clone(),
            agent: None,
            upstream: Some(Leg::new(source, request.clone(), tx, local_tag)),
            agent_sdp: None,
            upstream_sdp: None,
            failover: Vec::new(),
            session_expires: self.config.session_expires,
            started_ms: self.wall_ms,
            answered_ms: None,
            notes: Default::default(),
            pending: None,
            dialog_keys: Vec::new(),
        });
        self.by_tx.insert(tx, (id, Side::Upstream));
        self.index_leg(id, Side::Upstream);
        self.wait_for(id, MediaOp::OpenInbound { internal_offer: offer }, Waiting::Inbound { conn, contact }, now);
    }

    /// Inbound: media for both legs is there; the agent is called with our browser offer.
    /// `agent` is the connection and Contact the agent was registered with when the INVITE came.
    pub(crate) fn inbound_media_ready(&mut self, id: CallRef, internal: Option<String>, browser: String, agent: (ConnId, String), now: Instant, rng: &mut impl Rng) {
        let (conn, contact) = agent;
        let Some(c) = self.calls.get_mut(&id) else { return };
        c.upstream_sdp = internal;
        let dn = c.dn.clone();
        if self.bindings.get(&dn).map(|b| b.0) != Some(conn) {
            // The agent went away while media was being set up.
            return self.fail_setup(id, Side::Upstream, MediaFailure::new(480, "Agent Not Registered"), now, rng);
        }
        let Some(request) = c.upstream.as_ref().map(|l| l.invite.clone()) else { return };
        let caller = build::header(&request.headers, "From").map(|f| strip_tag(&f)).unwrap_or_else(|| "<sip:anonymous@anonymous.invalid>".into());
        let mut extra = build::passed_through(&request.headers);
        match self.config.auto_answer.get(&dn).copied().unwrap_or_default() {
            AutoAnswer::Never => extra.retain(|(n, v)| !is_auto_answer(n, v)),
            AutoAnswer::Always if !extra.iter().any(|(n, v)| is_auto_answer(n, v)) => {
                extra.push(("Call-Info".into(), format!("<sip:{}>;answer-after=0", self.config.domain)));
            }
            _ => {}
        }
        let target = Target { transport: Transport::Wss, destination: Destination::Conn(conn) };
        let (host, domain) = (self.config.agent_host.clone(), self.config.domain.clone());
        let (invite, tag) = match build::invite(
            &InviteSpec {
                request_uri: &bare_uri(&contact),
                via_transport: "WSS",
                via_sent_by: &host,
                from: &caller,
                to: &format!("<sip:{dn}@{domain}>"),
                contact: &format!("<sip:gatewayd@{host};transport=ws>"),
                max_forwards: build::next_max_forwards(&request).unwrap_or(69),
                extra: &extra,
                sdp: Some(&browser),
            },
            rng,
        ) {
            Ok(built) => built,
            Err(e) => return self.fail_setup(id, Side::Upstream, MediaFailure::new(e.status_code(), e.to_string()), now, rng),
        };
        match self.tx.send_request(invite.clone(), target, now) {
            Ok(agent_tx) => {
                self.by_tx.insert(agent_tx, (id, Side::Agent));
                if let Some(c) = self.calls.get_mut(&id) {
                    c.agent = Some(Leg::new(target, invite, agent_tx, tag));
                }
                self.index_leg(id, Side::Agent);
            }
            Err(e) => self.fail_setup(id, Side::Upstream, MediaFailure::new(e.status_code(), e.to_string()), now, rng),
        }
    }

    /// A response to an INVITE (or BYE, CANCEL, OPTIONS) we sent.
    pub(crate) fn on_response(&mut self, tx: TxId, response: Response, now: Instant, rng: &mut impl Rng) {
        if self.on_register_response(tx, &response, now, rng) {
            return;
        }
        if response.status_code.code() >= 200 {
            if let Some((server_tx, request)) = self.relays.remove(&tx) {
                let code = response.status_code.code();
                let r = build::response(&request, code, None, &new_tag(rng), None, None);
                return self.send_response(server_tx, r, now);
            }
        }
        let code = response.status_code.code();
        if let Some(server) = self.health_checks.get(&tx).copied() {
            if code >= 200 {
                self.health_checks.remove(&tx);
                if code == 408 || code == 503 {
                    self.upstreams.record_failure(server);
                } else {
                    self.upstreams.record_success(server);
                }
            }
            return;
        }
        if self.on_refresh_response(tx, &response, now, rng) {
            return;
        }
        let Some((call, side)) = self.by_tx.get(&tx).copied() else { return };
        self.note_headers(call, side, &response.headers);
        let is_invite = self.leg_mut(call, side).is_some_and(|l| l.invite_tx == tx);
        if !is_invite {
            return;
        }
        match side {
            Side::Upstream => self.upstream_answered(call, tx, response, now, rng),
            Side::Agent => self.agent_answered(call, tx, response, now, rng),
        }
    }

    /// Outbound: the SIP server's response to our INVITE, relayed to the agent.
    fn upstream_answered(&mut self, call: CallRef, tx: TxId, response: Response, now: Instant, rng: &mut impl Rng) {
        let code = response.status_code.code();
        let Some(c) = self.calls.get(&call).cloned() else { return };
        let (Some(agent), Some(up)) = (c.agent.clone(), c.upstream.clone()) else { return };
        let Destination::Addr(server) = up.target.destination else { return };
        let sdp = build::sdp_of(&response.headers, &response.body);
        match code {
            100 => {}
            101..=199 => {
                if let Some(l) = self.leg_mut(call, Side::Upstream) {
                    l.provisional = true;
                }
                self.upstreams.record_success(server);
                // Early media: the server's answer goes to media (a refusal is logged when it
                // comes back); the agent already has our answer, which the provisional repeats.
                let body = match sdp {
                    Some(s) => {
                        self.command(call, MediaOp::InternalAccept { answer: s });
                        c.agent_sdp.as_deref()
                    }
                    None => None,
                };
                let relay = build::response(&agent.invite, code, None, &agent.local_tag, Some(&self.agent_contact()), body);
                self.send_response(agent.invite_tx, relay, now);
            }
            200..=299 => {
                self.upstreams.record_success(server);
                if up.confirmed() {
                    return self.ack(call, Side::Upstream, &response, rng);
                }
                if let Some(s) = sdp {
                    self.command(call, MediaOp::InternalAccept { answer: s });
                }
                if let Ok(dialog) = Dialog::from_uac(&up.invite, &response) {
                    if let Some(l) = self.leg_mut(call, Side::Upstream) {
                        l.dialog = Some(dialog);
                    }
                    self.index_dialog(call, Side::Upstream);
                }
                self.session_as_uac(call, Side::Upstream, &response, now);
                self.ack(call, Side::Upstream, &response, rng);
                let answer = c.agent_sdp.clone().unwrap_or_default();
                self.answer_agent(call, &answer, now);
            }
            _ => {
                if code == 503 || code == 408 {
                    self.upstreams.record_failure(server);
                } else {
                    self.upstreams.record_success(server);
                }
                let min_se = session_timer::min_se(&response);
                if let (422, Some(min_se)) = (code, min_se) {
                    if min_se > c.session_expires {
                        // RFC 4028 section 7.3: ask again with the interval the server wants.
                        self.by_tx.remove(&tx);
                        if let Some(c) = self.calls.get_mut(&call) {
                            c.session_expires = min_se;
                        }
                        let mf = build::next_max_forwards(&agent.invite).unwrap_or(69);
                        return self.invite_upstream(call, server, mf, now, rng);
                    }
                }
                let retry = (code == 503 || code == 408) && !c.failover.is_empty() && !up.provisional;
                if retry {
                    let mut rest = c.failover.clone();
                    let next = rest.remove(0);
                    tracing::info!(call = call.0, failed = %server, next = %next, status = code, "failing over to the next upstream server");
                    self.by_tx.remove(&tx);
                    if let Some(c) = self.calls.get_mut(&call) {
                        c.failover = rest;
                    }
                    let mf = build::next_max_forwards(&agent.invite).unwrap_or(69);
                    return self.invite_upstream(call, next, mf, now, rng);
                }
                if code == 408 && !up.provisional {
                    // No server answered at all: unavailable, not the agent's request timing out.
                    let relay = build::response(&agent.invite, 503, Some("SIP Server Not Answering"), &agent.local_tag, None, None);
                    self.send_response(agent.invite_tx, relay, now);
                    return self.finish(call, 503, "no SIP server answered", now);
                }
                let relay = build::response(&agent.invite, code, None, &agent.local_tag, None, None);
                self.send_response(agent.invite_tx, relay, now);
                self.finish(call, code, "call refused by the SIP server", now);
            }
        }
    }

    /// The ACK for a 2xx to the INVITE we sent on `side` (end to end, outside any transaction):
    /// toward the SIP server it follows the dialog's next hop, toward an agent its connection.
    pub(crate) fn ack(&mut self, call: CallRef, side: Side, response: &Response, rng: &mut impl Rng) {
        let Some(leg) = self.leg_mut(call, side).cloned() else { return };
        let Some(dialog) = leg.dialog else { return };
        let (t, sent_by) = self.via_for(leg.target);
        let ack = dialog.ack(build::cseq_number(&response.headers), t, &sent_by, rng);
        let target = self.dialog_target(leg.target, &dialog);
        self.out.push_back(super::control::CallOutput::Send { target, message: ack.into() });
    }

    /// Our 200 to the agent's INVITE (outbound or echo), which confirms the agent dialog.
    pub(crate) fn answer_agent(&mut self, call: CallRef, sdp: &str, now: Instant) {
        let Some(leg) = self.leg_mut(call, Side::Agent).cloned() else { return };
        let mut ok = build::response(&leg.invite, 200, None, &leg.local_tag, Some(&self.agent_contact()), Some(sdp));
        if let Ok(dialog) = Dialog::from_uas(&leg.invite, &leg.local_tag) {
            if let Some(l) = self.leg_mut(call, Side::Agent) {
                l.dialog = Some(dialog);
            }
            self.index_dialog(call, Side::Agent);
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.answered_ms = Some(self.wall_ms);
        }
        self.session_as_uas(call, Side::Agent, &leg.invite, &mut ok, now);
        self.send_response(leg.invite_tx, ok, now);
    }

    /// Inbound: the agent's response to our INVITE, relayed to the SIP server.
    fn agent_answered(&mut self, call: CallRef, _tx: TxId, response: Response, now: Instant, rng: &mut impl Rng) {
        let code = response.status_code.code();
        let Some(c) = self.calls.get(&call).cloned() else { return };
        let (Some(agent), Some(up)) = (c.agent.clone(), c.upstream.clone()) else { return };
        match code {
            100 => {}
            101..=199 => {
                let early = if agent.dialog.is_none() { Dialog::from_uac(&agent.invite, &response).ok() } else { None };
                if let Some(l) = self.leg_mut(call, Side::Agent) {
                    l.provisional = true;
                    if early.is_some() {
                        l.dialog = early;
                    }
                }
                let mut relay = build::response(&up.invite, code, None, &up.local_tag, Some(&self.upstream_contact(&c.dn)), None);
                // The gateway answers and holds for the browser when the server asks (NOTIFY).
                build::insert_before_length(&mut relay.headers, rsip::Header::Other("Allow-Events".into(), "talk, hold".into()));
                self.send_response(up.invite_tx, relay, now);
            }
            200..=299 => {
                if agent.confirmed() {
                    return self.ack(call, Side::Agent, &response, rng);
                }
                if let Some(answer) = build::sdp_of(&response.headers, &response.body) {
                    self.command(call, MediaOp::BrowserAccept { answer });
                }
                if let Ok(dialog) = Dialog::from_uac(&agent.invite, &response) {
                    if let Some(l) = self.leg_mut(call, Side::Agent) {
                        l.dialog = Some(dialog);
                    }
                    self.index_dialog(call, Side::Agent);
                }
                self.session_as_uac(call, Side::Agent, &response, now);
                self.ack(call, Side::Agent, &response, rng);
                match c.upstream_sdp.clone() {
                    Some(answer) => self.answer_upstream(call, &answer, now),
                    // Late offer: our 200 carries the offer, the ACK will carry the answer.
                    None => self.wait_for(call, MediaOp::InternalOffer, Waiting::LateOffer, now),
                }
            }
            _ => {
                // No answer from the browser (timeout) reads as unavailable to the SIP server.
                let relay_code = if code == 408 { 480 } else { code };
                let relay = build::response(&up.invite, relay_code, None, &up.local_tag, None, None);
                self.send_response(up.invite_tx, relay, now);
                self.finish(call, relay_code, "agent did not take the call", now);
            }
        }
    }

    /// Inbound: our 200 to the SIP server's INVITE, with our answer (or, late offer, our offer).
    pub(crate) fn answer_upstream(&mut self, call: CallRef, body: &str, now: Instant) {
        let Some(c) = self.calls.get(&call) else { return };
        let Some(up) = c.upstream.clone() else { return };
        let dn = c.dn.clone();
        let mut ok = build::response(&up.invite, 200, None, &up.local_tag, Some(&self.upstream_contact(&dn)), Some(body));
        if let Ok(dialog) = Dialog::from_uas(&up.invite, &up.local_tag) {
            if let Some(l) = self.leg_mut(call, Side::Upstream) {
                l.dialog = Some(dialog);
            }
            self.index_dialog(call, Side::Upstream);
        }
        if let Some(c) = self.calls.get_mut(&call) {
            c.answered_ms = Some(self.wall_ms);
        }
        self.session_as_uas(call, Side::Upstream, &up.invite, &mut ok, now);
        self.send_response(up.invite_tx, ok, now);
    }

    /// An ACK for one of our 2xx: a late-offer call gets the SIP server's answer here.
    pub(crate) fn on_ack(&mut self, request: Request, _acked: Option<TxId>) {
        let Some(id) = crate::sip::dialog::DialogId::of_request(&request) else { return };
        let Some((call, side)) = self.by_dialog.get(&(id.call_id, id.local_tag)).copied() else { return };
        // An SDP in an ACK answers the offer our 200 carried (late offer, or a re-INVITE that
        // asked for our offer).
        if side == Side::Upstream {
            if let Some(answer) = build::sdp_of(&request.headers, &request.body) {
                self.command(call, MediaOp::InternalAccept { answer });
            }
        }
    }

    /// A CANCEL matched the INVITE from `side`: answer it 487 and give up the other leg.
    pub(crate) fn cancelled(&mut self, call: CallRef, side: Side, now: Instant, rng: &mut impl Rng) {
        let Some(c) = self.calls.get(&call) else { return };
        let answered = match side {
            Side::Agent => c.agent.as_ref().is_some_and(Leg::confirmed),
            Side::Upstream => c.upstream.as_ref().is_some_and(Leg::confirmed),
        };
        if answered {
            return;
        }
        self.hang_up(call, side, 487, "cancelled before answer", now, rng);
    }

    /// Media refused a call being set up: answer the side that asked and end the call.
    pub(crate) fn fail_setup(&mut self, call: CallRef, side: Side, failure: MediaFailure, now: Instant, rng: &mut impl Rng) {
        tracing::warn!(call = call.0, status = failure.status, reason = %failure.reason, "call setup failed");
        if let Some(leg) = self.leg_mut(call, side).cloned() {
            let r = build::response(&leg.invite, failure.status, Some(&failure.reason), &leg.local_tag, None, None);
            self.send_response(leg.invite_tx, r, now);
        }
        let other = if side == Side::Agent { Side::Upstream } else { Side::Agent };
        if self.leg_mut(call, other).is_some() {
            return self.hang_up(call, side, failure.status, &failure.reason, now, rng);
        }
        self.finish(call, failure.status, &failure.reason, now);
    }

    fn agent_contact(&self) -> String {
        format!("<sip:gatewayd@{};transport=ws>", self.config.agent_host)
    }

    fn upstream_contact(&self, dn: &str) -> String {
        format!("<sip:{dn}@{}>", self.config.internal_sent_by)
    }

    pub(crate) fn contact_for(&self, call: CallRef, side: Side) -> String {
        match side {
            Side::Agent => self.agent_contact(),
            Side::Upstream => self.upstream_contact(self.calls.get(&call).map(|c| c.dn.as_str()).unwrap_or("gatewayd")),
        }
    }
}

/// A From value without its tag (we start our own dialog toward the agent).
fn strip_tag(value: &str) -> String {
    let mut out = String::new();
    for (i, part) in value.split(';').enumerate() {
        if i > 0 && part.trim().to_ascii_lowercase().starts_with("tag=") {
            continue;
        }
        if i > 0 {
            out.push(';');
        }
        out.push_str(part);
    }
    out
}

/// The URI inside a Contact value (`"Name" <sip:x@y;transport=ws>;expires=60` -> `sip:x@y;transport=ws`).
fn bare_uri(contact: &str) -> String {
    crate::sip::headers::name_addr_uri_text(contact).unwrap_or(contact.trim()).to_owned()
}

fn is_auto_answer(name: &str, value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    (name.eq_ignore_ascii_case("Call-Info") && v.contains("answer-after")) || (name.eq_ignore_ascii_case("Alert-Info") && v.contains("auto"))
}
