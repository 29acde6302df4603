//! The handles call control uses. Each call is a small async handle; the work happens on the
//! media worker that owns the call, reached through that worker's bounded queue.

use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use mio::Poll;
use tokio::sync::{mpsc, oneshot};

use super::cert::Identity;
use super::config::MediaConfig;
use super::driver::{waker, Command, Created, Op, OpResult, Worker, WorkerSetup};
use super::error::MediaError;
use super::ports::PortPool;
use super::sdp_plain::Direction;
use super::shards::{default_workers, Link, Pools, Shared};
use super::stats::{CallStats, ForwardingLatency, Histogram};
use super::tap::RtcpTap;

pub use super::call::{MediaEvent, Side};

const COMMAND_QUEUE: usize = 1024;
/// Shared-port datagrams waiting for their worker; beyond this they are dropped.
const HANDOFF_QUEUE: usize = 256;

/// Pool and call counts, for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineStatus {
    pub calls: usize,
    pub public_ports_free: usize,
    pub public_ports_total: usize,
    pub internal_pairs_free: usize,
    pub internal_pairs_total: usize,
}

/// The media bridge: owns the worker threads, their sockets and the port pools.
pub struct MediaEngine {
    links: Arc<[Arc<Link>]>,
    shared: Arc<Shared>,
    fingerprint: String,
    tap: Arc<RtcpTap>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl MediaEngine {
    /// Loads (or creates) the DTLS identity, binds shared sockets and starts one worker per
    /// CPU this process may use.
    pub fn start(cfg: MediaConfig) -> Result<MediaEngine, MediaError> {
        MediaEngine::start_with_workers(cfg, default_workers())
    }

    /// As `start`, with `workers` worker threads (at least one).
    pub fn start_with_workers(cfg: MediaConfig, workers: usize) -> Result<MediaEngine, MediaError> {
        cfg.validate()?;
        let workers = workers.max(1);
        let identity = Identity::load(&cfg.dtls)?;
        let fingerprint = identity.fingerprint();
        let public = if cfg.single_public_port.is_some() { PortPool::empty() } else { PortPool::singles(cfg.public_ports.clone()) };
        let pools = Pools { public, internal: PortPool::pairs(cfg.internal_ports.clone()) };
        let shared = Arc::new(Shared::new(workers, cfg.max_calls, pools));
        let tap = Arc::new(RtcpTap::default());
        let mut links = Vec::new();
        let mut ends = Vec::new();
        for _ in 0..workers {
            let poll = Poll::new()?;
            let waker = waker(&poll)?;
            let (tx, rx) = sync_channel(COMMAND_QUEUE);
            let (handoff, handoffs) = sync_channel(HANDOFF_QUEUE);
            links.push(Arc::new(Link::new(tx, handoff, waker)));
            ends.push((poll, rx, handoffs));
        }
        let links: Arc<[Arc<Link>]> = links.into();
        let mut built = Vec::new();
        for (index, (poll, commands, handoffs)) in ends.into_iter().enumerate() {
            let setup = WorkerSetup { index, cfg: cfg.clone(), identity: identity.clone(), poll, commands, handoffs, peers: links.clone(), pool: shared.clone(), tap: tap.clone() };
            built.push(Worker::new(setup)?);
        }
        let mut engine = MediaEngine { links, shared, fingerprint, tap, threads: Vec::new() };
        for (index, worker) in built.into_iter().enumerate() {
            let name = if workers == 1 { "media".to_owned() } else { format!("media-{index}") };
            engine.threads.push(std::thread::Builder::new().name(name).spawn(move || worker.run())?);
        }
        Ok(engine)
    }

    /// How many worker threads carry the calls.
    pub fn workers(&self) -> usize {
        self.links.len()
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
        Ok(self.create(None).await?.media)
    }

    /// Answers a browser offer with a leg whose audio comes straight back.
    pub async fn create_echo(&self, browser_offer: &str) -> Result<(EchoCall, String), MediaError> {
        let c = self.create(Some(browser_offer.to_owned())).await?;
        Ok((EchoCall(c.media), c.answer.unwrap_or_default()))
    }

    /// Whoever asks may stop waiting (call control's reply timeout drops this future): the call
    /// must not outlive that. The worker sees the reply channel closed and creates nothing, or
    /// tears down what it created when the reply cannot be delivered; a reply delivered but
    /// never taken is a `CallMedia`, whose drop closes the call.
    async fn create(&self, echo_offer: Option<String>) -> Result<Created, MediaError> {
        let (worker, id) = self.shared.admit()?;
        let (reply, rx) = oneshot::channel();
        if let Err(e) = self.links[worker].send(Command::Create { id, echo_offer, reply }) {
            self.shared.release(worker);
            return Err(e);
        }
        // The worker releases the admission itself when the setup fails.
        rx.await.map_err(|_| MediaError::Stopped)?
    }

    /// Time bridged packets spent inside the bridge (socket read to forwarded write) since the
    /// previous call, over every worker: what the bridge adds to one-way latency, before
    /// kernel queueing.
    pub async fn take_forwarding_latency(&self) -> Result<ForwardingLatency, MediaError> {
        let mut all = Histogram::default();
        for link in self.links.iter() {
            let (reply, rx) = oneshot::channel();
            link.send(Command::TakeLatency { reply })?;
            all.merge(&rx.await.map_err(|_| MediaError::Stopped)?);
        }
        Ok(all.take())
    }

    /// Calls and free ports, once every command queued before (a close, say) is handled.
    pub async fn status(&self) -> Result<EngineStatus, MediaError> {
        let mut calls = 0;
        for link in self.links.iter() {
            let (reply, rx) = oneshot::channel();
            link.send(Command::Status { reply })?;
            calls += rx.await.map_err(|_| MediaError::Stopped)?;
        }
        let pools = self.shared.pools();
        Ok(EngineStatus {
            calls,
            public_ports_free: pools.public.available(),
            public_ports_total: pools.public.total(),
            internal_pairs_free: pools.internal.available(),
            internal_pairs_total: pools.internal.total(),
        })
    }

    /// Closes every call and stops the workers.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for link in self.links.iter() {
            // Blocking: the worker drains its queue, and it must hear this one.
            if link.tx.send(Command::Shutdown).is_ok() {
                let _ = link.waker.wake();
            }
        }
        for t in self.threads.drain(..) {
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
    worker: usize,
    link: Arc<Link>,
    events: mpsc::Receiver<MediaEvent>,
    closed: bool,
}

impl CallMedia {
    /// The handle of call `id` on `worker`, made by the worker that created the call.
    pub(super) fn new(id: u64, worker: usize, link: Arc<Link>, events: mpsc::Receiver<MediaEvent>) -> CallMedia {
        CallMedia { id, worker, link, events, closed: false }
    }

    /// Drops the handle without asking its worker to close the call: for the worker itself,
    /// which closes it in place.
    pub(super) fn forget(mut self) {
        self.closed = true;
    }

    /// The number the RTCP tap gives this call's copies.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The worker thread that carries this call (0 when there is one).
    pub fn worker(&self) -> usize {
        self.worker
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

    pub fn worker(&self) -> usize {
        self.0.worker
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
