//! The calls in progress, as the admin endpoint's `GET /calls` shows them: who, which way, since
//! when, and each leg's quality so far. A read-only view of call control's state.

use serde::Serialize;

use super::build;
use super::control::{Call, CallControl, Direction, Leg};
use super::media_port::{CallRef, MediaControl};

/// A call: who, which way, since when, and its media figures (so far, or final in a record).
#[derive(Debug, Clone, Serialize)]
pub struct CallSummary {
    pub call: CallRef,
    pub dn: String,
    pub direction: Direction,
    pub peer: String,
    pub agent_call_id: Option<String>,
    pub upstream_call_id: Option<String>,
    pub started_ms: u64,
    pub answered_ms: Option<u64>,
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
            media: None,
        }
    }
}

impl<M: MediaControl> CallControl<M> {
    /// Every call in progress, oldest first, with its media figures read now.
    pub fn active(&mut self) -> Vec<CallSummary> {
        let mut calls: Vec<CallSummary> = self.calls.iter().map(|(r, c)| c.summary(*r)).collect();
        calls.sort_by_key(|c| c.call);
        for c in &mut calls {
            c.media = self.media.stats(c.call);
        }
        calls
    }
}
