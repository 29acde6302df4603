//! The calls in progress, as the admin endpoint's `GET /calls` shows them: who, which way, since
//! when, and each leg's quality so far. A read-only view of call control's state.

use serde::Serialize;

use super::build;
use super::control::{CallControl, Direction, Leg};
use super::media_port::{CallRef, MediaControl};

/// One call in progress.
#[derive(Debug, Clone, Serialize)]
pub struct ActiveCall {
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

impl<M: MediaControl> CallControl<M> {
    /// Every call in progress, oldest first, with its media figures read now.
    pub fn active(&mut self) -> Vec<ActiveCall> {
        let call_id = |l: &Option<Leg>| l.as_ref().and_then(|l| build::header(&l.invite.headers, "Call-ID"));
        let mut calls: Vec<ActiveCall> = self
            .calls
            .iter()
            .map(|(r, c)| ActiveCall {
                call: *r,
                dn: c.dn.clone(),
                direction: c.direction,
                peer: c.peer.clone(),
                agent_call_id: call_id(&c.agent),
                upstream_call_id: call_id(&c.upstream),
                started_ms: c.started_ms,
                answered_ms: c.answered_ms,
                media: None,
            })
            .collect();
        calls.sort_by_key(|c| c.call);
        for c in &mut calls {
            c.media = self.media.stats(c.call);
        }
        calls
    }
}
