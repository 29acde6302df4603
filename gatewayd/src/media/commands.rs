//! What call control and the other workers ask a media worker to do, over its bounded queue.

use tokio::sync::oneshot;

use super::api::CallMedia;
use super::call::Side;
use super::error::MediaError;
use super::routes::RouteUpdate;
use super::sdp_plain::Direction;
use super::stats::{CallStats, Histogram};

pub enum Op {
    BrowserCreateOffer,
    BrowserAcceptAnswer(String),
    BrowserAnswer(String),
    InternalCreateOffer,
    InternalAcceptAnswer(String),
    InternalAnswer(String),
    SetDirection(Side, Direction),
    Stats,
}

pub enum OpResult {
    Sdp(String),
    Done,
    Stats(CallStats),
}

/// A created call: its handle (dropping it closes the call, so a reply nobody takes does not
/// leave the call behind) and, for an echo, the answer to the browser.
pub struct Created {
    pub media: CallMedia,
    pub answer: Option<String>,
}

pub enum Command {
    /// A call admitted on this worker under `id` (see `Shared::admit`).
    Create { id: u64, echo_offer: Option<String>, reply: oneshot::Sender<Result<Created, MediaError>> },
    Op { id: u64, op: Op, reply: oneshot::Sender<Result<OpResult, MediaError>> },
    Close { id: u64, reply: Option<oneshot::Sender<CallStats>> },
    /// The worker's call count, once every command queued before has been handled.
    Status { reply: oneshot::Sender<usize> },
    TakeLatency { reply: oneshot::Sender<Histogram> },
    /// The shared port's routing table changed on another worker.
    Route(RouteUpdate),
    Shutdown,
}

impl Command {
    /// The call a change is about: the worker's own (an operation, a close) or, for a route,
    /// any worker's. None for what is not a change to a call.
    pub fn call(&self) -> Option<u64> {
        match self {
            Command::Op { id, .. } | Command::Close { id, .. } => Some(*id),
            Command::Route(RouteUpdate::Ufrag { owner, .. }) => Some(owner.call),
            Command::Route(RouteUpdate::Remove { call }) => Some(*call),
            Command::Create { .. } | Command::Status { .. } | Command::TakeLatency { .. } | Command::Shutdown => None,
        }
    }
}
