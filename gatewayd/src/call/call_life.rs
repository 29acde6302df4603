//! A call's life in call control's tables: a new call numbered and indexed by its legs' and
//! dialogs' keys, and its end — the other side told (BYE, CANCEL or a final response), its
//! keys and deadline dropped, its media released and its record out.

use std::time::Instant;

use rand::Rng;
use rsip::Method;

use super::build;
use super::control::{Call, CallControl, CallOutput, CallRecord, CallTimer, Leg, Side};
use super::media_port::{CallRef, MediaOp};

impl CallControl {
    pub(crate) fn new_call(&mut self, call: Call) -> CallRef {
        let id = CallRef(self.next_call);
        self.next_call += 1;
        // The INVITE that started the call came from the agent (outbound, echo) or the server.
        let first = match (&call.agent, &call.upstream) {
            (Some(leg), _) => Some((Side::Agent, leg.invite.headers.clone())),
            (None, Some(leg)) => Some((Side::Upstream, leg.invite.headers.clone())),
            (None, None) => None,
        };
        self.calls.insert(id, call);
        if let Some((side, headers)) = first {
            self.note_headers(id, side, &headers);
        }
        id
    }

    /// Makes in-dialog requests on a leg (early ones included) find their call: the key is the
    /// leg's Call-ID and our tag on it, known from the moment the leg exists.
    pub(crate) fn index_leg(&mut self, call: CallRef, side: Side) {
        let key = self.leg_mut(call, side).and_then(|l| Some((build::header(&l.invite.headers, "Call-ID")?, l.local_tag.clone())));
        if let Some(key) = key {
            self.remember_dialog_key(call, side, key);
        }
    }

    fn remember_dialog_key(&mut self, call: CallRef, side: Side, key: (String, String)) {
        if let Some(c) = self.calls.get_mut(&call) {
            if !c.dialog_keys.contains(&key) {
                c.dialog_keys.push(key.clone());
            }
        }
        self.by_dialog.insert(key, (call, side));
    }

    pub(crate) fn index_dialog(&mut self, call: CallRef, side: Side) {
        let key = self.leg_mut(call, side).and_then(|l| l.dialog.as_ref()).map(|d| (d.id.call_id.clone(), d.id.local_tag.clone()));
        if let Some(key) = key {
            self.remember_dialog_key(call, side, key);
        }
    }

    /// Ends a call because `from` side went away or hung up: the other side is told (BYE,
    /// CANCEL or a final response), media is released and the record goes out.
    pub(crate) fn hang_up(&mut self, call: CallRef, from: Side, status: u16, cause: &str, now: Instant, rng: &mut impl Rng) {
        let Some(c) = self.calls.get(&call).cloned() else { return };
        let other = match from {
            Side::Agent => c.upstream.clone().map(|l| (l, Side::Upstream)),
            Side::Upstream => c.agent.clone().map(|l| (l, Side::Agent)),
        };
        if let Some((leg, side)) = other {
            self.release_leg(call, side, leg, status, now, rng);
        }
        // The side that went away may still have an INVITE waiting for our answer.
        let own = match from {
            Side::Agent => c.agent.clone(),
            Side::Upstream => c.upstream.clone(),
        };
        if let Some(leg) = own {
            if !leg.confirmed() && self.tx.state(leg.invite_tx).is_some() && self.by_tx.get(&leg.invite_tx).is_some_and(|(_, s)| *s == from) {
                let r = build::response(&leg.invite, status.max(400), None, &leg.local_tag, None, None);
                self.send_response(leg.invite_tx, r, now);
            }
        }
        self.finish(call, status, cause, now);
    }

    /// Tells one leg the call is over, whatever state it is in.
    pub(crate) fn release_leg(&mut self, call: CallRef, side: Side, leg: Leg, status: u16, now: Instant, rng: &mut impl Rng) {
        let via = self.via_for(leg.target);
        match leg.dialog {
            Some(mut dialog) if dialog.state == crate::sip::dialog::DialogState::Confirmed => {
                let bye = dialog.request(Method::Bye, via.0, &via.1, None, rng);
                let target = self.dialog_target(leg.target, &dialog);
                if let Ok(tx) = self.tx.send_request(bye, target, now) {
                    self.by_tx.insert(tx, (call, side));
                }
            }
            _ => {
                let we_sent_invite = matches!(self.tx.state(leg.invite_tx), Some((crate::sip::transaction::Kind::InviteClient, _)));
                if we_sent_invite {
                    let cancel = crate::sip::transaction::build_cancel(&leg.invite);
                    let _ = self.tx.send_request(cancel, leg.target, now);
                } else if self.tx.state(leg.invite_tx).is_some() {
                    let code = if status >= 300 { status } else { 487 };
                    let r = build::response(&leg.invite, code, None, &leg.local_tag, None, None);
                    self.send_response(leg.invite_tx, r, now);
                }
            }
        }
    }

    /// Drops a call's state and emits its record.
    pub(crate) fn finish(&mut self, call: CallRef, status: u16, cause: &str, now: Instant) {
        let Some(c) = self.calls.remove(&call) else { return };
        self.touched.insert(call);
        self.timers.set(CallTimer::Media(call), None);
        self.remember_ended(&c);
        for key in &c.dialog_keys {
            if self.by_dialog.get(key).is_some_and(|(r, _)| *r == call) {
                self.by_dialog.remove(key);
            }
        }
        self.abandon(&c, now);
        self.command(call, MediaOp::Close);
        let summary = c.summary(call);
        self.out.push_back(CallOutput::Ended(CallRecord { summary, ended_ms: self.wall_ms, cause: cause.to_owned(), status }));
    }
}
