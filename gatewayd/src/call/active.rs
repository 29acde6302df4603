//! The calls in progress, as the admin endpoint's `GET /calls` shows them: who, which way, since
//! when, the peers' correlation ids and user agent, and each leg's quality so far; and what HEP
//! capture needs to tie a message to its call. Views of call control's state, plus the notes
//! taken from the peers' headers for the record.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::build;
use super::control::{Call, CallControl, Direction, Leg, Side};
use super::media_port::{CallRef, RtcpSeen};

/// A call: who, which way, since when, and its media figures (so far, or final in a record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallSummary {
    pub call: CallRef,
    pub dn: String,
    pub direction: Direction,
    pub peer: String,
    pub agent_call_id: Option<String>,
    pub upstream_call_id: Option<String>,
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
    /// The SIP server's correlation ids (`observe.record_headers`, e.g. `X-Genesys-CallUUID`),
    /// by header name, to match this record with the server's own.
    pub upstream_ids: BTreeMap<String, String>,
    /// The agent's softphone, from the User-Agent (or Server) header of its messages.
    pub user_agent: Option<String>,
    /// Per-leg figures from the media bridge (packets, loss, jitter, RTT, MOS).
    pub media: Option<serde_json::Value>,
}

impl Call {
    /// This call's summary, without media figures.
    pub(crate) fn summary(&self, call: CallRef) -> CallSummary {
        let call_id = |l: &Option<Leg>| l.as_ref().and_then(|l| build::header(&l.invite.headers, "Call-ID"));
        CallSummary {
            call,
            dn: self.dn.clone(),
            direction: self.direction,
            peer: self.peer.clone(),
            agent_call_id: call_id(&self.agent),
            upstream_call_id: call_id(&self.upstream),
            started_ms: self.started_ms,
            answered_ms: self.answered_ms,
            upstream_ids: self.notes.upstream_ids.clone(),
            user_agent: self.notes.user_agent.clone(),
            media: None,
        }
    }

    fn call_id(&self, side: Side) -> Option<String> {
        let leg = match side {
            Side::Agent => self.agent.as_ref(),
            Side::Upstream => self.upstream.as_ref(),
        };
        leg.and_then(|l| build::header(&l.invite.headers, "Call-ID"))
    }
}

/// What a call's record carries from the peers' messages; the first value seen is kept.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notes {
    upstream_ids: BTreeMap<String, String>,
    user_agent: Option<String>,
}

/// Values longer than this are cut: a record is not a place for a peer to fill.
const MAX_NOTE: usize = 256;
/// At most this many upstream ids per call.
const MAX_IDS: usize = 8;

/// Ended calls remembered for capture; a BYE's answer comes within a transaction's lifetime.
const ENDED_REMEMBERED: usize = 512;

/// An ended call's Call-IDs and what its capture was tied to.
#[derive(Debug, Clone)]
pub(crate) struct EndedCall {
    call_ids: [Option<String>; 2],
    context: CaptureContext,
}

/// What HEP capture needs to know of the call a message belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureContext {
    /// The Call-ID of the call's first leg: the SIP server's for inbound calls, the agent's
    /// otherwise. It is the correlation id on both legs' captures.
    pub correlation: String,
    /// The call's other leg's Call-ID, if it has one.
    pub other_call_id: Option<String>,
    pub dn: String,
}

impl CallControl {
    /// Each call in progress and when it was answered, by call: what the crash record
    /// (`in_progress`) compares each second before asking for [`summaries`](Self::summaries).
    pub fn answer_states(&self) -> Vec<(u64, Option<u64>)> {
        let mut states: Vec<(u64, Option<u64>)> = self.calls.iter().map(|(r, c)| (r.0, c.answered_ms)).collect();
        states.sort_unstable();
        states
    }

    /// The calls in progress, oldest first, without media figures (the driver asks media).
    pub fn summaries(&self) -> Vec<CallSummary> {
        let mut calls: Vec<CallSummary> = self.calls.iter().map(|(r, c)| c.summary(*r)).collect();
        calls.sort_by_key(|c| c.call);
        calls
    }
}

impl CallControl {
    /// Takes what the record needs from a message of `side` on `call`: the SIP server's
    /// correlation ids, the agent's user agent.
    pub(crate) fn note_headers(&mut self, call: CallRef, side: Side, headers: &rsip::Headers) {
        let names = match side {
            Side::Upstream => self.config.record_headers.clone(),
            Side::Agent => Vec::new(),
        };
        let Some(c) = self.calls.get_mut(&call) else { return };
        let clip = |v: String| v.chars().take(MAX_NOTE).collect::<String>();
        match side {
            Side::Upstream => {
                for name in names {
                    if c.notes.upstream_ids.len() >= MAX_IDS || c.notes.upstream_ids.contains_key(&name) {
                        continue;
                    }
                    if let Some(v) = build::header(headers, &name) {
                        c.notes.upstream_ids.insert(name, clip(v));
                    }
                }
            }
            Side::Agent if c.notes.user_agent.is_none() => {
                // Softphones often name themselves only when registering (JsSIP's answers do not).
                let conn = c.agent.as_ref().and_then(|l| match l.target.destination {
                    crate::sip::transaction::Destination::Conn(conn) => Some(conn),
                    crate::sip::transaction::Destination::Addr(_) => None,
                });
                let registered = conn.and_then(|conn| self.conn_agents.get(&conn).cloned());
                let own = build::header(headers, "User-Agent").or_else(|| build::header(headers, "Server"));
                c.notes.user_agent = own.or(registered).map(clip);
            }
            Side::Agent => {}
        }
    }

    /// The call a Call-ID belongs to (or belonged to, just before it ended), as HEP capture ties
    /// it to its other leg.
    pub fn capture_context(&self, call_id: &str) -> Option<CaptureContext> {
        let live = self.calls.values().find_map(|c| {
            let (agent, upstream) = (c.call_id(Side::Agent), c.call_id(Side::Upstream));
            if agent.as_deref() != Some(call_id) && upstream.as_deref() != Some(call_id) {
                return None;
            }
            Some(context_of(c, call_id, agent, upstream))
        });
        live.or_else(|| {
            let ended = self.ended.iter().rev().find(|e| e.call_ids.iter().any(|id| id.as_deref() == Some(call_id)))?;
            let mut context = ended.context.clone();
            if context.other_call_id.as_deref() == Some(call_id) {
                context.other_call_id = Some(context.correlation.clone());
            }
            Some(context)
        })
    }

    /// The RTCP the media bridge copied, each with the Call-ID of the leg it crossed (the
    /// agent's for the browser leg, the SIP server's for the internal one) and its call's
    /// capture ties; copies of calls no longer here are left out.
    pub fn tie_rtcp(&self, seen: Vec<(CallRef, RtcpSeen)>) -> Vec<(String, CaptureContext, RtcpSeen)> {
        seen
            .into_iter()
            .filter_map(|(call, s)| {
                let c = self.calls.get(&call)?;
                let (agent, upstream) = (c.call_id(Side::Agent), c.call_id(Side::Upstream));
                let own = match s.side {
                    crate::media::Side::Browser => agent.clone().or(upstream.clone()),
                    crate::media::Side::Internal => upstream.clone().or(agent.clone()),
                }?;
                let context = context_of(c, &own, agent, upstream);
                Some((own, context, s))
            })
            .collect()
    }

    /// Keeps an ending call's capture ties for the messages that follow its end.
    pub(crate) fn remember_ended(&mut self, c: &Call) {
        let (agent, upstream) = (c.call_id(Side::Agent), c.call_id(Side::Upstream));
        let Some(first) = (if c.direction == Direction::Inbound { upstream.clone() } else { agent.clone() }).or_else(|| agent.clone().or(upstream.clone())) else { return };
        let context = context_of(c, &first, agent.clone(), upstream.clone());
        if self.ended.len() >= ENDED_REMEMBERED {
            self.ended.pop_front();
        }
        self.ended.push_back(EndedCall { call_ids: [agent, upstream], context });
    }

    /// The User-Agent an agent connection registered with.
    pub fn agent_software(&mut self, conn: crate::sip::registrar::ConnId, user_agent: &str) {
        self.conn_agents.insert(conn, user_agent.chars().take(MAX_NOTE).collect());
    }

    /// The DN an agent connection proved, if it has.
    pub fn conn_user(&self, conn: crate::sip::registrar::ConnId) -> Option<&str> {
        self.conn_users.get(&conn).map(String::as_str)
    }
}

/// How `call_id`, a Call-ID of call `c`, is tied: to the first leg's Call-ID, with the other leg's.
fn context_of(c: &Call, call_id: &str, agent: Option<String>, upstream: Option<String>) -> CaptureContext {
    let (first, second) = if c.direction == Direction::Inbound { (upstream, agent) } else { (agent, upstream) };
    let correlation = first.clone().unwrap_or_else(|| call_id.to_owned());
    let other_call_id = if first.as_deref() == Some(call_id) { second } else { first };
    CaptureContext { correlation, other_call_id, dn: c.dn.clone() }
}
