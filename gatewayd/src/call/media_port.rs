//! What call control needs from the media bridge, as a synchronous port so the call core stays
//! sans-IO and testable with a scripted media; the daemon plugs the real bridge in.

use serde::Serialize;

pub use crate::media::RtcpSeen;

/// A call as call control numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
pub struct CallRef(pub u64);

/// Why media could not do what was asked; `status` is the SIP answer (488, 503, 500).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    pub status: u16,
    pub reason: String,
}

impl MediaFailure {
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        MediaFailure { status, reason: reason.into() }
    }
}

/// Media operations per call. Offers and answers are SDP text. The browser side is the agent's
/// WebRTC leg; the internal side is plain RTP toward the SIP server.
pub trait MediaControl {
    /// An echo endpoint answering the browser's offer: its audio comes straight back.
    fn echo(&mut self, call: CallRef, browser_offer: &str) -> Result<String, MediaFailure>;
    /// Reserves both legs of a bridged call (ports from the pools).
    fn open(&mut self, call: CallRef) -> Result<(), MediaFailure>;
    fn browser_offer(&mut self, call: CallRef) -> Result<String, MediaFailure>;
    fn browser_answer(&mut self, call: CallRef, offer: &str) -> Result<String, MediaFailure>;
    fn browser_accept(&mut self, call: CallRef, answer: &str) -> Result<(), MediaFailure>;
    fn internal_offer(&mut self, call: CallRef) -> Result<String, MediaFailure>;
    fn internal_answer(&mut self, call: CallRef, offer: &str) -> Result<String, MediaFailure>;
    fn internal_accept(&mut self, call: CallRef, answer: &str) -> Result<(), MediaFailure>;
    /// The call's quality figures so far, while it runs.
    fn stats(&mut self, _call: CallRef) -> Option<serde_json::Value> {
        None
    }
    /// Releases the call's media; returns its quality figures for the call record.
    fn close(&mut self, call: CallRef) -> Option<serde_json::Value>;
    /// Switches copies of the calls' RTCP on (HEP capture wants them) or off.
    fn tap_rtcp(&mut self, _on: bool) {}
    /// The RTCP copied since the last look, by call, and how many copies were dropped.
    fn take_rtcp(&mut self) -> (Vec<(CallRef, RtcpSeen)>, u64) {
        (Vec::new(), 0)
    }
    /// Calls whose media is dead (the browser leg failed or went silent), with why. Polled
    /// about once a second; call control ends them.
    fn poll_dead(&mut self) -> Vec<(CallRef, String)> {
        Vec::new()
    }
}
