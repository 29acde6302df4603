//! Calls waiting on media: the core asks with a command (`CallControl::command`) and goes on
//! with SIP; the reply comes back as an input here and the call takes up where it stopped.
//! Meanwhile its SIP goes on as usual: retransmissions are absorbed by the transactions, a
//! CANCEL, BYE or a closed connection end the call (and a reply that comes later finds no call
//! and is dropped; the call's `Close` follows it to the media side, which releases what it set
//! up), and a reply that does not come in `MEDIA_REPLY_TIMEOUT` fails the operation.

use std::time::{Duration, Instant};

use rand::Rng;
use rsip::Request;

use super::build;
use super::control::{Call, CallControl, CallOutput, CallTimer, Side};
use super::media_port::{CallRef, MediaCommand, MediaDone, MediaFailure, MediaOp, MediaReply};
use crate::sip::registrar::ConnId;
use crate::sip::transaction::TxId;

/// How long call control waits for a media operation before it fails it (503). The media
/// worker answers in microseconds; this is for a stalled or overloaded one.
pub const MEDIA_REPLY_TIMEOUT: Duration = Duration::from_secs(3);

/// What a call does once its media reply is in.
#[derive(Debug, Clone)]
pub(crate) enum Waiting {
    /// The echo's answer for the agent's INVITE.
    Echo,
    /// Both legs of an outbound call; then the INVITE to the SIP server.
    Outbound { max_forwards: u32 },
    /// Both legs of an inbound call; then the INVITE to the agent on `conn`.
    Inbound { conn: ConnId, contact: String },
    /// Late offer: our offer, for the 200 to the SIP server.
    LateOffer,
    /// Our answer to a re-offer (re-INVITE or UPDATE) on `side`, for the 2xx to it.
    Reoffer { tx: TxId, side: Side, request: Request },
}

/// The media command a call waits for.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub id: u64,
    pub waiting: Waiting,
}

impl CallControl {
    /// Ends a call whose media died: both legs are released and the record says why.
    pub fn media_died(&mut self, call: CallRef, reason: &str, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        self.wall_ms = wall_ms;
        if self.calls.contains_key(&call) {
            tracing::warn!(call = call.0, reason = %reason, "ending a call whose media died");
            self.terminate(call, reason, now, rng);
        }
        self.drain(now, rng);
    }

    /// Asks media for `op` on `call`; returns the command's id, which its reply carries.
    pub(crate) fn command(&mut self, call: CallRef, op: MediaOp) -> u64 {
        let id = self.next_media_op;
        self.next_media_op += 1;
        self.out.push_back(CallOutput::Media(MediaCommand { call, id, op }));
        id
    }

    /// A media operation the call cannot go on without: it waits for the reply (or its timeout).
    pub(crate) fn wait_for(&mut self, call: CallRef, op: MediaOp, waiting: Waiting, now: Instant) {
        let id = self.command(call, op);
        if let Some(c) = self.calls.get_mut(&call) {
            c.pending = Some(Pending { id, waiting });
            self.timers.set(CallTimer::Media(call), Some(now + MEDIA_REPLY_TIMEOUT));
        }
    }

    /// The reply to a media command.
    pub fn media_reply(&mut self, reply: MediaReply, now: Instant, wall_ms: u64, rng: &mut impl Rng) {
        self.wall_ms = wall_ms;
        self.on_media_reply(reply, now, rng);
        self.drain(now, rng);
    }

    fn on_media_reply(&mut self, reply: MediaReply, now: Instant, rng: &mut impl Rng) {
        let MediaReply { call, id, result } = reply;
        let Some(c) = self.calls.get_mut(&call) else {
            // The call ended meanwhile; its Close, sent after this command, releases the media.
            tracing::debug!(call = call.0, "media reply for a call that has ended: dropped");
            return;
        };
        if c.pending.as_ref().is_none_or(|p| p.id != id) {
            // An operation nothing waits on (an answer accepted), or one that timed out.
            if let Err(f) = result {
                tracing::warn!(call = call.0, status = f.status, reason = %f.reason, "media refused an operation");
            }
            return;
        }
        let Some(Pending { waiting, .. }) = c.pending.take() else { return };
        self.timers.set(CallTimer::Media(call), None);
        match (waiting, result) {
            (Waiting::Echo, Ok(MediaDone::Sdp(answer))) => self.answer_agent(call, &answer, now),
            (Waiting::Outbound { max_forwards }, Ok(MediaDone::Outbound { browser_answer, internal_offer })) => {
                self.outbound_media_ready(call, browser_answer, internal_offer, max_forwards, now, rng)
            }
            (Waiting::Inbound { conn, contact }, Ok(MediaDone::Inbound { browser_offer, internal_answer })) => {
                self.inbound_media_ready(call, internal_answer, browser_offer, (conn, contact), now, rng)
            }
            (Waiting::LateOffer, Ok(MediaDone::Sdp(offer))) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.upstream_sdp = Some(offer.clone());
                }
                self.answer_upstream(call, &offer, now);
            }
            (Waiting::Reoffer { tx, side, request }, Ok(MediaDone::Sdp(answer))) => {
                if let Some(c) = self.calls.get_mut(&call) {
                    *c.our_sdp_mut(side) = Some(answer.clone());
                }
                self.answer_reoffer(tx, call, side, &request, Some(&answer), now);
            }
            (waiting, result) => {
                let failure = match result {
                    Err(f) => f,
                    Ok(other) => MediaFailure::new(500, format!("unexpected media reply {other:?}")),
                };
                self.media_failed(call, waiting, failure, now, rng);
            }
        }
    }

    /// The operation a call waited on failed (or took too long): the side that asked is
    /// answered with the failure's status.
    fn media_failed(&mut self, call: CallRef, waiting: Waiting, failure: MediaFailure, now: Instant, rng: &mut impl Rng) {
        match waiting {
            Waiting::Echo | Waiting::Outbound { .. } => self.fail_setup(call, Side::Agent, failure, now, rng),
            Waiting::Inbound { .. } => self.fail_setup(call, Side::Upstream, failure, now, rng),
            Waiting::LateOffer => self.hang_up(call, Side::Agent, failure.status, &failure.reason, now, rng),
            Waiting::Reoffer { tx, side, request } => {
                // The call goes on with what it had; only this offer is refused.
                let tag = self.leg_mut(call, side).map(|l| l.local_tag.clone()).unwrap_or_default();
                let r = build::response(&request, failure.status, Some(&failure.reason), &tag, None, None);
                self.send_response(tx, r, now);
            }
        }
    }

    /// Fires what is due: media operations that took too long, then session timers.
    pub(crate) fn run_call_timers(&mut self, now: Instant, rng: &mut impl Rng) {
        let mut sessions = Vec::new();
        let mut late = Vec::new();
        for timer in self.timers.take_due(now) {
            match timer {
                CallTimer::Session(call, side) => sessions.push((call, side)),
                CallTimer::Media(call) => late.push(call),
            }
        }
        for call in late {
            let Some(id) = self.calls.get(&call).and_then(|c| c.pending.as_ref()).map(|p| p.id) else { continue };
            tracing::warn!(call = call.0, "media did not answer in time");
            let result = Err(MediaFailure::new(503, "Media Not Answering"));
            self.on_media_reply(MediaReply { call, id, result }, now, rng);
        }
        self.run_session_timers(sessions, now, rng);
    }

    /// A call ends while it waits: a re-offer still unanswered gets 487 (the setup waits'
    /// INVITEs are answered as their legs are released).
    pub(crate) fn abandon(&mut self, c: &Call, now: Instant) {
        let Some(Pending { waiting: Waiting::Reoffer { tx, side, request }, .. }) = &c.pending else { return };
        let leg = if *side == Side::Agent { c.agent.as_ref() } else { c.upstream.as_ref() };
        if self.tx.state(*tx).is_some() {
            let r = build::response(request, 487, None, leg.map(|l| l.local_tag.as_str()).unwrap_or_default(), None, None);
            self.send_response(*tx, r, now);
        }
    }
}
