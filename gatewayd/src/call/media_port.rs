//! What call control asks of the media bridge, as commands and their results, so the call core
//! stays sans-IO and never waits on media: a `MediaCommand` leaves among its outputs and the
//! `MediaReply` comes back later as an input, the call waiting in an explicit state meanwhile.
//! `MediaControl` is a synchronous media (scripted in tests, canned in the fuzz targets) on
//! which `run_in_place` carries a command out at once; the daemon runs them on the real bridge
//! (`media_bridge`).

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

/// One media operation for a call. SDP is text. The browser side is the agent's WebRTC leg;
/// the internal side is plain RTP toward the SIP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaOp {
    /// An echo endpoint answers the browser's offer (the call's first, or a re-offer): `Sdp`.
    Echo { offer: String },
    /// Reserves both legs of an outbound call and answers the browser: `Outbound`.
    OpenOutbound { browser_offer: String },
    /// Reserves both legs of an inbound call, answers the SIP server's offer if it made one and
    /// offers to the browser: `Inbound`.
    OpenInbound { internal_offer: Option<String> },
    BrowserAnswer { offer: String },
    BrowserAccept { answer: String },
    InternalOffer,
    InternalAnswer { offer: String },
    InternalAccept { answer: String },
    /// Releases the call's media: `Closed` with its quality figures.
    Close,
}

impl MediaOp {
    /// Whether the operation creates the call's media.
    pub fn opens(&self) -> bool {
        matches!(self, MediaOp::Echo { .. } | MediaOp::OpenOutbound { .. } | MediaOp::OpenInbound { .. })
    }
}

/// What a media operation gave.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaDone {
    Done,
    Sdp(String),
    Outbound { browser_answer: String, internal_offer: String },
    Inbound { browser_offer: String, internal_answer: Option<String> },
    Closed(Option<serde_json::Value>),
}

/// A media operation call control wants done; `id` ties its reply to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaCommand {
    pub call: CallRef,
    pub id: u64,
    pub op: MediaOp,
}

/// The result of the command `id` for `call`.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaReply {
    pub call: CallRef,
    pub id: u64,
    pub result: Result<MediaDone, MediaFailure>,
}

/// A media whose operations complete in place.
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
    /// Releases the call's media; returns its quality figures for the call record.
    fn close(&mut self, call: CallRef) -> Option<serde_json::Value>;
}

/// Carries `command` out on a synchronous media.
pub fn run_in_place(media: &mut impl MediaControl, command: &MediaCommand) -> MediaReply {
    let call = command.call;
    let result = match &command.op {
        MediaOp::Echo { offer } => media.echo(call, offer).map(MediaDone::Sdp),
        MediaOp::OpenOutbound { browser_offer } => media.open(call).and_then(|()| {
            let browser_answer = media.browser_answer(call, browser_offer)?;
            let internal_offer = media.internal_offer(call)?;
            Ok(MediaDone::Outbound { browser_answer, internal_offer })
        }),
        MediaOp::OpenInbound { internal_offer } => media.open(call).and_then(|()| {
            let internal_answer = match internal_offer {
                Some(o) => Some(media.internal_answer(call, o)?),
                None => None,
            };
            Ok(MediaDone::Inbound { browser_offer: media.browser_offer(call)?, internal_answer })
        }),
        MediaOp::BrowserAnswer { offer } => media.browser_answer(call, offer).map(MediaDone::Sdp),
        MediaOp::BrowserAccept { answer } => media.browser_accept(call, answer).map(|()| MediaDone::Done),
        MediaOp::InternalOffer => media.internal_offer(call).map(MediaDone::Sdp),
        MediaOp::InternalAnswer { offer } => media.internal_answer(call, offer).map(MediaDone::Sdp),
        MediaOp::InternalAccept { answer } => media.internal_accept(call, answer).map(|()| MediaDone::Done),
        MediaOp::Close => Ok(MediaDone::Closed(media.close(call))),
    };
    MediaReply { call, id: command.id, result }
}
