//! The handles call control uses. Each call is a small async handle; the work happens on the
//! media worker thread, reached through a bounded queue.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;

use mio::{Poll, Waker};
use tokio::sync::{mpsc, oneshot};

use super::cert::Identity;
use super::config::MediaConfig;
use super::driver::{waker, Command, Created, Op, OpResult, Worker};
use super::error::MediaError;
use super::sdp_plain::Direction;
use super::stats::{CallStats, ForwardingLatency};
use super::tap::RtcpTap;

pub use super::call::{MediaEvent, Side};
pub use super::driver::EngineStatus;

const COMMAND_QUEUE: usize = 1024;

struct Link {
    tx: SyncSender<Command>,
    waker: Waker,
}

impl Link {
    fn send(&self, cmd: Command) -> Result<(), MediaError> {
        // The queue is bounded; a full queue means the worker is overloaded: fail fast.
        match self.tx.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(MediaError::TooManyCalls),
            Err(TrySendError::Disconnected(_)) => return Err(MediaError::Stopped),
        }
        self.waker.wake().map_err(MediaError::Io)
    }
}

/// The media bridge: owns the worker thread, sockets and port pools.
pub struct MediaEngine {
    link: Arc<Link>,
    fingerprint: String,
    tap: Arc<RtcpTap>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MediaEngine {
    /// Loads (or creates) the DTLS identity, binds shared sockets and starts the worker.
    pub fn start(cfg: MediaConfig) -> Result<MediaEngine, MediaError> {
        cfg.validate()?;
        let identity = Identity::load(&cfg.dtls)?;
        let fingerprint = identity.fingerprint();
        let poll = Poll::new()?;
        let waker = waker(&poll)?;
        let (tx, rx) = sync_channel(COMMAND_QUEUE);
        let tap = Arc::new(RtcpTap::default());
        let worker = Worker::new(cfg, identity, poll, rx, tap.clone())?;
        let thread = std::thread::Builder::new().name("media".into()).spawn(move || worker.run())?;
        Ok(MediaEngine { link: Arc::new(Link { tx, waker }), fingerprint, tap, thread: Some(thread) })
    }

    /// Copies of the RTCP of every call, both legs and both ways, while switched on. A browser
    /// leg started while the tap is off is not copied (see `BrowserSetup::capture_rtcp`).
    pub fn rtcp_tap(&self) -> Arc<RtcpTap> {
        self.tap.clone()
    }

    /// "sha-256 AA:BB:..." of the DTLS certificate every browser leg presents.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Allocates ports for a bridged call. Fails with `PortsExhausted`/`TooManyCalls` (503).
    pub async fn create_call(&self) -> Result<CallMedia, MediaError> {
        let c = self.create(None).await?;
        Ok(CallMedia { id: c.id, link: self.link.clone(), events: c.events, closed: false })
    }

    /// Answers a browser offer with a leg whose audio comes straight back.
    pub async fn create_echo(&self, browser_offer: &str) -> Result<(EchoCall, String), MediaError> {
        let c = self.create(Some(browser_offer.to_owned())).await?;
        let answer = c.answer.clone().unwrap_or_default();
        Ok((EchoCall(CallMedia { id: c.id, link: self.link.clone(), events: c.events, closed: false }), answer))
    }

    async fn create(&self, echo_offer: Option<String>) -> Result<Created, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::Create { echo_offer, reply })?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// Time bridged packets spent inside the bridge (socket read to forwarded write) since the
    /// previous call: what the bridge adds to one-way latency, before kernel queueing.
    pub async fn take_forwarding_latency(&self) -> Result<ForwardingLatency, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::TakeLatency { reply })?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    pub async fn status(&self) -> Result<EngineStatus, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::Status { reply })?;
        rx.await.map_err(|_| MediaError::Stopped)
    }

    /// Closes every call and stops the worker.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.link.send(Command::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MediaEngine {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One bridged call's media. Dropping it tears the call down and returns its ports.
pub struct CallMedia {
    id: u64,
    link: Arc<Link>,
    events: mpsc::Receiver<MediaEvent>,
    closed: bool,
}

impl CallMedia {
    /// The number the RTCP tap gives this call's copies.
    pub fn id(&self) -> u64 {
        self.id
    }

    async fn op(&self, op: Op) -> Result<OpResult, MediaError> {
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::Op { id: self.id, op, reply })?;
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    async fn sdp(&self, op: Op) -> Result<String, MediaError> {
        match self.op(op).await? {
            OpResult::Sdp(s) => Ok(s),
            _ => Err(MediaError::State("unexpected reply".into())),
        }
    }

    /// Offer for the browser (calls toward the agent, or a re-offer): actpass, ICE-lite.
    pub async fn browser_create_offer(&self) -> Result<String, MediaError> {
        self.sdp(Op::BrowserCreateOffer).await
    }

    pub async fn browser_accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        self.op(Op::BrowserAcceptAnswer(sdp.to_owned())).await.map(|_| ())
    }

    /// Answers a browser offer: the first one, or a re-offer for hold, resume or ICE restart.
    pub async fn browser_answer(&self, offer: &str) -> Result<String, MediaError> {
        self.sdp(Op::BrowserAnswer(offer.to_owned())).await
    }

    pub async fn internal_create_offer(&self) -> Result<String, MediaError> {
        self.sdp(Op::InternalCreateOffer).await
    }

    pub async fn internal_accept_answer(&self, sdp: &str) -> Result<(), MediaError> {
        self.op(Op::InternalAcceptAnswer(sdp.to_owned())).await.map(|_| ())
    }

    pub async fn internal_answer(&self, offer: &str) -> Result<String, MediaError> {
        self.sdp(Op::InternalAnswer(offer.to_owned())).await
    }

    /// What the gateway does toward `side` (hold absorbed here: no renegotiation needed).
    pub async fn set_direction(&self, side: Side, dir: Direction) -> Result<(), MediaError> {
        self.op(Op::SetDirection(side, dir)).await.map(|_| ())
    }

    pub async fn stats(&self) -> Result<CallStats, MediaError> {
        match self.op(Op::Stats).await? {
            OpResult::Stats(s) => Ok(s),
            _ => Err(MediaError::State("unexpected reply".into())),
        }
    }

    /// The next media event (None once the engine is gone).
    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.events.recv().await
    }

    /// Tears the call down, returns its ports to the pools and gives the final figures.
    pub async fn close(mut self) -> Result<CallStats, MediaError> {
        self.closed = true;
        let (reply, rx) = oneshot::channel();
        self.link.send(Command::Close { id: self.id, reply: Some(reply) })?;
        rx.await.map_err(|_| MediaError::Stopped)
    }
}

impl Drop for CallMedia {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.link.send(Command::Close { id: self.id, reply: None });
        }
    }
}

/// The echo endpoint: a browser leg whose audio comes straight back.
pub struct EchoCall(CallMedia);

impl EchoCall {
    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub async fn browser_answer(&self, offer: &str) -> Result<String, MediaError> {
        self.0.browser_answer(offer).await
    }

    /// Quality figures of what the browser sent us (browser leg) and of the round trip.
    pub async fn stats(&self) -> Result<CallStats, MediaError> {
        self.0.stats().await
    }

    pub async fn next_event(&mut self) -> Option<MediaEvent> {
        self.0.next_event().await
    }

    pub async fn close(self) -> Result<CallStats, MediaError> {
        self.0.close().await
    }
}
