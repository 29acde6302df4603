//! In-dialog requests of a running call: re-INVITE and UPDATE (re-offers, session refreshes and
//! glare), INFO relayed to the other leg, the SIP server's remote-control NOTIFY, and the RFC 4028
//! session timer each leg runs. A change that stays on one side (hold, ICE restart, a refresh) is
//! answered on that leg alone; the other leg is never re-negotiated for it.

use std::time::Instant;

use rand::Rng;
use rsip::{Header, Method, Request, Response};

use super::build;
use super::control::{CallControl, Direction, Side};
use super::awaiting::Waiting;
use super::media_port::{CallRef, MediaOp};
use super::session_timer::{self, Due, Refresher, SessionExpires, SessionTimer, UasDecision};
use crate::sip::message::new_tag;
use crate::sip::transaction::TxId;

/// Our own session refresh in flight on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refresh {
    pub tx: TxId,
    /// A re-INVITE carrying our SDP as an offer (an UPDATE refresh carries none).
    pub offer: bool,
}

impl CallControl {
    /// A re-INVITE or UPDATE inside a call: the new offer is answered by media for that side,
    /// without disturbing the other leg (hold and ICE restarts are absorbed here). Any 2xx we
    /// send also refreshes the leg's session timer.
    pub(crate) fn reoffer(&mut self, tx: TxId, call: CallRef, side: Side, request: &Request, now: Instant, rng: &mut impl Rng) {
        let offer = build::sdp_of(&request.headers, &request.body);
        let our_offer_pending = self.leg_mut(call, side).is_some_and(|l| l.refresh.is_some_and(|r| r.offer) && l.session.as_ref().is_some_and(|s| s.refreshing));
        if our_offer_pending && (request.method == Method::Invite || offer.is_some()) {
            // RFC 3261 section 14.2 and RFC 3311 section 5.2: both ends offered at once.
            return self.respond(tx, request, 491, None, now, rng);
        }
        if let UasDecision::TooSmall { min_se } = uas_decision(request) {
            return self.too_small(tx, request, min_se, now, rng);
        }
        let body = match offer {
            // A bare UPDATE (a session refresh) is answered without a body (RFC 3311).
            None if request.method == Method::Update => None,
            // A re-INVITE without an offer gets ours; the answer comes in the ACK.
            None => self.calls.get(&call).and_then(|c| c.our_sdp(side).cloned()),
            Some(offer) => {
                if self.calls.get(&call).is_some_and(|c| c.pending.is_some()) {
                    // RFC 3261 section 14.2, RFC 3311 section 5.2: one offer at a time.
                    let mut r = build::response(request, 500, Some("Offer Pending"), &new_tag(rng), None, None);
                    build::insert_before_length(&mut r.headers, Header::Other("Retry-After".into(), (1 + rng.next_u32() % 5).to_string()));
                    return self.send_response(tx, r, now);
                }
                let echo = self.calls.get(&call).is_some_and(|c| c.direction == Direction::Echo);
                let op = match side {
                    Side::Agent if echo => MediaOp::Echo { offer },
                    Side::Agent => MediaOp::BrowserAnswer { offer },
                    Side::Upstream => MediaOp::InternalAnswer { offer },
                };
                // Answered when media's answer comes back (`awaiting::reoffer_answered`).
                return self.wait_for(call, op, Waiting::Reoffer { tx, side, request: request.clone() }, now);
            }
        };
        self.answer_reoffer(tx, call, side, request, body.as_deref(), now);
    }

    /// Our 2xx to a re-INVITE or UPDATE on `side`, with our description when it needs one.
    pub(crate) fn answer_reoffer(&mut self, tx: TxId, call: CallRef, side: Side, request: &Request, body: Option<&str>, now: Instant) {
        // The request was matched to this leg by our tag on it, so the leg is there.
        let tag = self.leg_mut(call, side).map(|l| l.local_tag.clone()).unwrap_or_default();
        let contact = self.contact_for(call, side);
        let mut r = build::response(request, 200, None, &tag, Some(&contact), body);
        self.session_as_uas(call, side, request, &mut r, now);
        self.send_response(tx, r, now);
    }

    /// 422 Session Interval Too Small, naming the smallest interval we take.
    pub(crate) fn too_small(&mut self, tx: TxId, request: &Request, min_se: u32, now: Instant, rng: &mut impl Rng) {
        let mut r = build::response(request, 422, None, &new_tag(rng), None, None);
        build::insert_before_length(&mut r.headers, Header::Other("Min-SE".into(), min_se.to_string()));
        self.send_response(tx, r, now);
    }

    /// Completes a 2xx we send to an INVITE or UPDATE on `side`: the capabilities we have, and
    /// the session timer the request asked for (RFC 4028 section 9), which starts now.
    pub(crate) fn session_as_uas(&mut self, call: CallRef, side: Side, request: &Request, response: &mut Response, now: Instant) {
        build::insert_before_length(&mut response.headers, Header::Allow(build::ALLOW.into()));
        build::insert_before_length(&mut response.headers, Header::Supported("timer".into()));
        let decision = uas_decision(request);
        if let UasDecision::Timer { secs, refresher } = decision {
            build::insert_before_length(&mut response.headers, Header::Other("Session-Expires".into(), SessionExpires::header_value(secs, refresher)));
            if refresher == Refresher::Uac {
                build::insert_before_length(&mut response.headers, Header::Require("timer".into()));
            }
        }
        if let Some(leg) = self.leg_mut(call, side) {
            leg.session = match decision {
                UasDecision::Timer { secs, refresher } => Some(SessionTimer::negotiated(secs, refresher, Refresher::Uas, now)),
                _ => None,
            };
            leg.learn_allow(&request.headers);
        }
    }

    /// A 2xx to an INVITE or UPDATE we sent on `side`: the timer its Session-Expires names
    /// (none when it names none, RFC 4028 section 7.2) starts now.
    pub(crate) fn session_as_uac(&mut self, call: CallRef, side: Side, response: &Response, now: Instant) {
        let se = build::header(&response.headers, "Session-Expires").and_then(|v| SessionExpires::parse(&v));
        if let Some(leg) = self.leg_mut(call, side) {
            leg.session = se.map(|se| SessionTimer::negotiated(se.secs, se.refresher.unwrap_or(Refresher::Uac), Refresher::Uac, now));
            leg.learn_allow(&response.headers);
        }
    }

    /// Sends the refreshes that are due and ends the calls whose peer stopped refreshing: only
    /// the legs whose deadline has come are looked at.
    pub(crate) fn run_session_timers(&mut self, legs: Vec<(CallRef, Side)>, now: Instant, rng: &mut impl Rng) {
        let mut due = Vec::new();
        for (call, side) in legs {
            // Taken out of the deadlines: the call's are taken again once it has been handled.
            self.touched.insert(call);
            match self.leg_mut(call, side).and_then(|l| l.session.as_ref()).map(|s| s.due(now)) {
                Some(Due::Nothing) | None => {}
                Some(d) => due.push((call, side, d)),
            }
        }
        for (call, side, d) in due {
            match d {
                Due::Refresh => self.send_refresh(call, side, now, rng),
                Due::Expired => {
                    tracing::info!(call = call.0, side = ?side, "session timer expired");
                    self.terminate(call, "session timer expired", now, rng);
                }
                Due::Nothing => {}
            }
        }
    }

    /// Our session refresh (RFC 4028 section 7.4): an UPDATE without a body when the peer takes
    /// UPDATE, otherwise a re-INVITE repeating our current description unchanged.
    fn send_refresh(&mut self, call: CallRef, side: Side, now: Instant, rng: &mut impl Rng) {
        let Some(leg) = self.leg_mut(call, side).cloned() else { return };
        let (Some(mut dialog), Some(timer)) = (leg.dialog.clone(), leg.session.clone()) else {
            // Nothing to refresh on: the timer goes, rather than fire again at once.
            if let Some(l) = self.leg_mut(call, side) {
                l.session = None;
            }
            return;
        };
        let ours = self.calls.get(&call).and_then(|c| c.our_sdp(side).cloned());
        let use_update = leg.peer_allows_update || ours.is_none();
        let (t, sent_by) = self.via_for(leg.target);
        let contact = self.contact_for(call, side);
        let mut request = dialog.request(if use_update { Method::Update } else { Method::Invite }, t, &sent_by, Some(&contact), rng);
        build::insert_before_length(&mut request.headers, Header::Other("Session-Expires".into(), SessionExpires::header_value(timer.secs, Refresher::Uac)));
        build::insert_before_length(&mut request.headers, Header::Supported("timer".into()));
        if !use_update {
            if let Some(sdp) = &ours {
                build::set_sdp(&mut request.headers, &mut request.body, sdp);
            }
        }
        let target = self.dialog_target(leg.target, &dialog);
        let sent = self.tx.send_request(request, target, now);
        let retry_ms = rng.next_u32();
        if let Ok(tx) = sent {
            self.by_tx.insert(tx, (call, side));
        }
        if let Some(l) = self.leg_mut(call, side) {
            l.dialog = Some(dialog);
            match sent {
                Ok(tx) => {
                    l.refresh = Some(Refresh { tx, offer: !use_update });
                    if let Some(s) = l.session.as_mut() {
                        s.refreshing = true;
                        s.retry_at = None;
                    }
                }
                Err(_) => {
                    if let Some(s) = l.session.as_mut() {
                        s.back_off(now, false, retry_ms);
                    }
                }
            }
        }
    }

    /// A response to our session refresh. Returns false when `tx` is not one.
    pub(crate) fn on_refresh_response(&mut self, tx: TxId, response: &Response, now: Instant, rng: &mut impl Rng) -> bool {
        let Some((call, side)) = self.by_tx.get(&tx).copied() else { return false };
        let Some(refresh) = self.leg_mut(call, side).and_then(|l| l.refresh) else { return false };
        if refresh.tx != tx {
            return false;
        }
        let code = response.status_code.code();
        if code < 200 {
            return true;
        }
        let pending = self.leg_mut(call, side).and_then(|l| l.session.as_ref()).is_some_and(|s| s.refreshing);
        match code {
            200..=299 => {
                if refresh.offer {
                    // Every 2xx to our re-INVITE is acknowledged, retransmissions included.
                    self.ack(call, side, response, rng);
                }
                if !pending {
                    return true;
                }
                if side == Side::Upstream && refresh.offer {
                    if let Some(answer) = build::sdp_of(&response.headers, &response.body) {
                        self.command(call, MediaOp::InternalAccept { answer });
                    }
                }
                self.session_as_uac(call, side, response, now);
            }
            491 => {
                let owner = self.calls.get(&call).is_some_and(|c| matches!((c.direction, side), (Direction::Outbound, Side::Upstream) | (Direction::Inbound, Side::Agent)));
                let random = rng.next_u32();
                if let Some(s) = self.leg_mut(call, side).and_then(|l| l.session.as_mut()) {
                    s.back_off(now, owner, random);
                }
            }
            422 => {
                let min_se = session_timer::min_se(response);
                if let Some(s) = self.leg_mut(call, side).and_then(|l| l.session.as_mut()) {
                    s.secs = s.secs.max(min_se.unwrap_or(session_timer::MIN_SE_SECS));
                    s.refreshing = false;
                    s.retry_at = Some(now);
                }
            }
            // RFC 4028 section 10: a refresh that times out or finds no dialog ends the session.
            408 | 481 => self.terminate(call, "session refresh failed", now, rng),
            _ => {
                tracing::info!(call = call.0, status = code, "session refresh refused; the call goes on");
                if let Some(s) = self.leg_mut(call, side).and_then(|l| l.session.as_mut()) {
                    s.refreshed(now);
                }
            }
        }
        true
    }
}

/// What RFC 4028 makes of a request's Session-Expires and Supported headers.
pub(crate) fn uas_decision(request: &Request) -> UasDecision {
    // Compact forms (`x`, `k`) were expanded when the message was parsed.
    let se = build::header(&request.headers, "Session-Expires");
    let supported = request.headers.iter().filter_map(build::name_value).any(|(n, v)| n.eq_ignore_ascii_case("Supported") && session_timer::lists(&v, "timer"));
    session_timer::as_uas(se.as_deref(), supported)
}
impl CallControl {
    /// An INFO (DTMF or application data) goes on to the other leg; its answer comes back.
    pub(crate) fn relay_in_dialog(&mut self, tx: TxId, call: CallRef, side: Side, request: &Request, now: Instant, rng: &mut impl Rng) {
        let other = if side == Side::Agent { Side::Upstream } else { Side::Agent };
        let Some(leg) = self.leg_mut(call, other).cloned() else {
            return self.respond(tx, request, 200, None, now, rng);
        };
        let Some(mut dialog) = leg.dialog.clone() else {
            return self.respond(tx, request, 200, None, now, rng);
        };
        let (t, sent_by) = self.via_for(leg.target);
        let mut relayed = dialog.request(request.method, t, &sent_by, None, rng);
        if let Some(ct) = build::header(&request.headers, "Content-Type") {
            build::set_body(&mut relayed.headers, &mut relayed.body, &ct, &request.body);
        }
        let target = self.dialog_target(leg.target, &dialog);
        if let Some(l) = self.leg_mut(call, other) {
            l.dialog = Some(dialog);
        }
        match self.tx.send_request(relayed, target, now) {
            Ok(client) => {
                self.relays.insert(client, (tx, request.clone()));
            }
            Err(e) => self.respond(tx, request, e.status_code(), None, now, rng),
        }
    }

    /// The SIP server's NOTIFY `Event: talk` or `hold` (remote answer and hold, as contact-centre
    /// servers drive desk phones) is passed into the agent's dialog, early or confirmed; the
    /// softphone answers, holds or resumes on it.
    pub(crate) fn remote_control(&mut self, tx: TxId, call: CallRef, request: &Request, now: Instant, rng: &mut impl Rng) {
        let event = build::header(&request.headers, "Event").unwrap_or_default().split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        if event != "talk" && event != "hold" {
            return self.respond(tx, request, 489, Some("Bad Event"), now, rng);
        }
        let Some(agent) = self.leg_mut(call, Side::Agent).cloned() else {
            return self.respond(tx, request, 481, None, now, rng);
        };
        let Some(mut dialog) = agent.dialog.clone() else {
            // Not even ringing yet: nothing to answer.
            return self.respond(tx, request, 481, None, now, rng);
        };
        self.respond(tx, request, 200, None, now, rng);
        let (t, sent_by) = self.via_for(agent.target);
        let mut notify = dialog.request(rsip::Method::Notify, t, &sent_by, None, rng);
        build::insert_before_length(&mut notify.headers, rsip::Header::Event(rsip::headers::Event::from(event.clone())));
        build::insert_before_length(&mut notify.headers, rsip::Header::SubscriptionState(rsip::headers::SubscriptionState::from("terminated")));
        if let Some(l) = self.leg_mut(call, Side::Agent) {
            l.dialog = Some(dialog);
        }
        tracing::info!(call = call.0, event = %event, "remote control from the SIP server");
        let _ = self.tx.send_request(notify, agent.target, now);
    }
}
