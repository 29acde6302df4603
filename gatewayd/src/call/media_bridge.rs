//! Call control's media commands on the real media bridge: the profile mapped into the bridge's
//! settings, and per call one small task (a lane) that owns the call's media handle, carries
//! the call's commands out in order and watches its media events. Replies, deaths and final
//! figures come back to call control's loop as `MediaNote`s over one bounded channel; the loop
//! never waits on the bridge, so a stalled media worker cannot hold up SIP.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::media_port::{CallRef, MediaCommand, MediaDone, MediaFailure, MediaOp, MediaReply};
use crate::media::{AudioCodec, CallMedia, CallStats, DtlsIdentity, EchoCall, LegStats, MediaConfig, MediaEngine, MediaError, MediaEvent, PublicAddr, RtcpSeen, RtcpTap, Side};
use crate::profile::{AgentCodec, Codec, LoadedProfile};

/// The bridge's settings from the profile; the DTLS identity lives in the state directory so
/// browsers see the same fingerprint across restarts.
pub fn media_config(loaded: &LoadedProfile, state_dir: &Path) -> MediaConfig {
    let p = &loaded.profile;
    MediaConfig {
        public: p.public.addresses.iter().map(|a| PublicAddr { bind: *a, advertise: p.public.advertised(*a) }).collect(),
        internal_bind: p.internal.address,
        public_ports: p.media.public_ports.first..=p.media.public_ports.last,
        internal_ports: p.media.internal_ports.first..=p.media.internal_ports.last,
        single_public_port: p.media.single_port,
        codecs: p
            .media
            .codecs
            .iter()
            .map(|c| match c {
                Codec::PCMU => AudioCodec::Pcmu,
                Codec::PCMA => AudioCodec::Pcma,
            })
            .collect(),
        agent_codecs: p
            .media
            .agent_codecs
            .iter()
            .map(|c| match c {
                AgentCodec::Opus => AudioCodec::Opus,
                AgentCodec::PCMU => AudioCodec::Pcmu,
                AgentCodec::PCMA => AudioCodec::Pcma,
            })
            .collect(),
        telephone_event: p.media.telephone_event,
        dscp: (p.media.dscp != 0).then_some(p.media.dscp),
        no_media_timeout: p.media.no_media_timeout.0,
        max_calls: p.media.max_calls as usize,
        dtls: DtlsIdentity::Path(state_dir.join("dtls.pem")),
    }
}

/// What the media side tells call control's loop.
#[derive(Debug)]
pub enum MediaNote {
    /// A command's reply, for call control (a `Closed` one also completes the call's record).
    Reply(MediaReply),
    /// The call's media died (the browser leg failed or went silent), with why.
    Died(CallRef, String),
    /// The call's media exists, numbered `u64` in the RTCP tap's copies.
    Opened(CallRef, u64),
}

/// How the call-control driver reaches media: commands go out without waiting, and what they
/// give comes back as notes on the channel the runner was made with.
pub trait MediaRunner: Send + 'static {
    /// Starts `command`. A note returned is its reply at once (no media for the call, a full queue).
    fn submit(&mut self, command: MediaCommand) -> Option<MediaNote>;
    /// The call's figures so far, answered later; `None` when the call has no media.
    fn stats(&mut self, call: CallRef) -> Option<oneshot::Receiver<Option<serde_json::Value>>>;
    /// Switches copies of the calls' RTCP on (HEP capture wants them) or off.
    fn tap_rtcp(&mut self, _on: bool) {}
    /// The RTCP copied since the last look, by call, and how many copies were dropped.
    fn take_rtcp(&mut self) -> (Vec<(CallRef, RtcpSeen)>, u64) {
        (Vec::new(), 0)
    }
    /// A note is about to reach call control: what the runner keeps of it.
    fn noted(&mut self, _note: &MediaNote) {}
}

/// Commands queued toward one call's lane.
const LANE_QUEUE: usize = 32;
/// How long a lane waits for one operation of the bridge; call control gives up sooner
/// (`MEDIA_REPLY_TIMEOUT`), this only keeps a lane from hanging on a stalled worker.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

enum Handle {
    Bridge(CallMedia),
    Echo(EchoCall),
}

enum LaneWork {
    Run(u64, MediaOp),
    Stats(oneshot::Sender<Option<serde_json::Value>>),
}

/// `MediaRunner` over the media bridge.
pub struct BridgeMedia {
    engine: Arc<MediaEngine>,
    tap: Arc<RtcpTap>,
    lanes: HashMap<CallRef, mpsc::Sender<LaneWork>>,
    by_media: HashMap<u64, CallRef>,
    media_of: HashMap<CallRef, u64>,
    notes: mpsc::Sender<MediaNote>,
}

impl BridgeMedia {
    pub fn new(engine: Arc<MediaEngine>, notes: mpsc::Sender<MediaNote>) -> Self {
        let tap = engine.rtcp_tap();
        BridgeMedia { engine, tap, lanes: HashMap::new(), by_media: HashMap::new(), media_of: HashMap::new(), notes }
    }
}

fn reply(call: CallRef, id: u64, result: Result<MediaDone, MediaFailure>) -> MediaNote {
    MediaNote::Reply(MediaReply { call, id, result })
}

impl MediaRunner for BridgeMedia {
    fn submit(&mut self, command: MediaCommand) -> Option<MediaNote> {
        let MediaCommand { call, id, op } = command;
        let close = op == MediaOp::Close;
        if !self.lanes.contains_key(&call) {
            if close {
                return Some(reply(call, id, Ok(MediaDone::Closed(None))));
            }
            if !op.opens() {
                return Some(reply(call, id, Err(MediaFailure::new(500, "No Media For Call"))));
            }
            let (tx, rx) = mpsc::channel(LANE_QUEUE);
            tokio::spawn(lane(call, self.engine.clone(), rx, self.notes.clone()));
            self.lanes.insert(call, tx);
        }
        // Close is the lane's last command: with its sender gone the lane ends after it.
        let lane = if close { self.lanes.remove(&call) } else { self.lanes.get(&call).cloned() }?;
        match lane.try_send(LaneWork::Run(id, op)) {
            Ok(()) => None,
            Err(_) if close => Some(reply(call, id, Ok(MediaDone::Closed(None)))),
            Err(_) => Some(reply(call, id, Err(MediaFailure::new(503, "Media Queue Full")))),
        }
    }

    fn stats(&mut self, call: CallRef) -> Option<oneshot::Receiver<Option<serde_json::Value>>> {
        let (tx, rx) = oneshot::channel();
        self.lanes.get(&call)?.try_send(LaneWork::Stats(tx)).ok()?;
        Some(rx)
    }

    fn tap_rtcp(&mut self, on: bool) {
        self.tap.set_on(on);
    }

    fn take_rtcp(&mut self) -> (Vec<(CallRef, RtcpSeen)>, u64) {
        let dropped = self.tap.take_dropped();
        let seen = self.tap.drain();
        // Copies of a call already closed have nobody to be tied to: left out.
        (seen.into_iter().filter_map(|s| self.by_media.get(&s.call).map(|c| (*c, s))).collect(), dropped)
    }

    fn noted(&mut self, note: &MediaNote) {
        match note {
            MediaNote::Opened(call, media) => {
                self.by_media.insert(*media, *call);
                self.media_of.insert(*call, *media);
            }
            MediaNote::Reply(MediaReply { call, result: Ok(MediaDone::Closed(_)), .. }) => {
                if let Some(media) = self.media_of.remove(call) {
                    self.by_media.remove(&media);
                }
            }
            _ => {}
        }
    }
}

enum Step {
    Work(Option<LaneWork>),
    Event(Option<MediaEvent>),
}

/// One call's media: its commands in order, its events while nothing else runs.
async fn lane(call: CallRef, engine: Arc<MediaEngine>, mut work: mpsc::Receiver<LaneWork>, notes: mpsc::Sender<MediaNote>) {
    let mut handle: Option<Handle> = None;
    // Until the media died or the engine stopped: one report of it is enough.
    let mut watching = true;
    loop {
        let step = {
            let events = async {
                match handle.as_mut() {
                    Some(Handle::Bridge(m)) if watching => m.next_event().await,
                    Some(Handle::Echo(e)) if watching => e.next_event().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                w = work.recv() => Step::Work(w),
                e = events => Step::Event(e),
            }
        };
        match step {
            // Call control is gone: dropping the handle releases the media.
            Step::Work(None) => return,
            Step::Work(Some(LaneWork::Stats(answer))) => {
                let stats = match &handle {
                    Some(Handle::Bridge(m)) => tokio::time::timeout(OPERATION_TIMEOUT, m.stats()).await,
                    Some(Handle::Echo(e)) => tokio::time::timeout(OPERATION_TIMEOUT, e.stats()).await,
                    None => Ok(Err(MediaError::Stopped)),
                };
                let _ = answer.send(stats.ok().and_then(|s| s.ok()).map(|s| stats_json(&s)));
            }
            Step::Work(Some(LaneWork::Run(id, MediaOp::Close))) => {
                let stats = match handle.take() {
                    Some(Handle::Bridge(m)) => tokio::time::timeout(OPERATION_TIMEOUT, m.close()).await.ok().and_then(|s| s.ok()),
                    Some(Handle::Echo(e)) => tokio::time::timeout(OPERATION_TIMEOUT, e.close()).await.ok().and_then(|s| s.ok()),
                    None => None,
                };
                let _ = notes.send(reply(call, id, Ok(MediaDone::Closed(stats.map(|s| stats_json(&s)))))).await;
                return;
            }
            Step::Work(Some(LaneWork::Run(id, op))) => {
                let result = match tokio::time::timeout(OPERATION_TIMEOUT, run(&engine, &mut handle, op)).await {
                    Ok((result, opened)) => {
                        if let Some(media) = opened {
                            let _ = notes.send(MediaNote::Opened(call, media)).await;
                        }
                        result
                    }
                    Err(_) => Err(MediaFailure::new(503, "Media Not Answering")),
                };
                let _ = notes.send(reply(call, id, result)).await;
            }
            Step::Event(event) => {
                if let Some(reason) = death(call, event) {
                    watching = false;
                    let _ = notes.send(MediaNote::Died(call, reason)).await;
                }
            }
        }
    }
}

/// Why a media event ends the call, if it does.
fn death(call: CallRef, event: Option<MediaEvent>) -> Option<String> {
    match event {
        None => Some("media engine stopped".to_owned()),
        Some(MediaEvent::BrowserFailed(why)) => Some(format!("browser media failed: {why}")),
        Some(MediaEvent::BrowserDisconnected) => Some("browser stopped answering ICE consent checks".to_owned()),
        Some(MediaEvent::NoMedia(Side::Browser)) => Some("no media from the browser".to_owned()),
        // Silence from the SIP server is normal while it holds the call: logged only.
        Some(MediaEvent::NoMedia(side)) => {
            tracing::info!(call = call.0, side = ?side, "no media from the SIP server side");
            None
        }
        Some(MediaEvent::BrowserConnected) => None,
    }
}

fn failure(e: MediaError) -> MediaFailure {
    MediaFailure::new(e.sip_status(), e.to_string())
}

fn bridge(handle: &Option<Handle>) -> Result<&CallMedia, MediaFailure> {
    match handle {
        Some(Handle::Bridge(m)) => Ok(m),
        _ => Err(MediaFailure::new(500, "No Media For Call")),
    }
}

/// One operation on the bridge; with the tap's number of the media it created, if it did.
async fn run(engine: &MediaEngine, handle: &mut Option<Handle>, op: MediaOp) -> (Result<MediaDone, MediaFailure>, Option<u64>) {
    match op {
        MediaOp::Echo { offer } => {
            if let Some(Handle::Echo(e)) = handle {
                return (e.browser_answer(&offer).await.map(MediaDone::Sdp).map_err(failure), None);
            }
            match engine.create_echo(&offer).await {
                Ok((echo, answer)) => {
                    let id = echo.id();
                    *handle = Some(Handle::Echo(echo));
                    (Ok(MediaDone::Sdp(answer)), Some(id))
                }
                Err(e) => (Err(failure(e)), None),
            }
        }
        MediaOp::OpenOutbound { browser_offer } => {
            let media = match engine.create_call().await {
                Ok(m) => m,
                Err(e) => return (Err(failure(e)), None),
            };
            let id = media.id();
            let result = async {
                let browser_answer = media.browser_answer(&browser_offer).await?;
                let internal_offer = media.internal_create_offer().await?;
                Ok(MediaDone::Outbound { browser_answer, internal_offer })
            }
            .await
            .map_err(failure);
            *handle = Some(Handle::Bridge(media));
            (result, Some(id))
        }
        MediaOp::OpenInbound { internal_offer } => {
            let media = match engine.create_call().await {
                Ok(m) => m,
                Err(e) => return (Err(failure(e)), None),
            };
            let id = media.id();
            let result = async {
                let internal_answer = match &internal_offer {
                    Some(o) => Some(media.internal_answer(o).await?),
                    None => None,
                };
                Ok(MediaDone::Inbound { browser_offer: media.browser_create_offer().await?, internal_answer })
            }
            .await
            .map_err(failure);
            *handle = Some(Handle::Bridge(media));
            (result, Some(id))
        }
        op => (on_bridge(handle, op).await, None),
    }
}

async fn on_bridge(handle: &Option<Handle>, op: MediaOp) -> Result<MediaDone, MediaFailure> {
    let m = bridge(handle)?;
    let done = match op {
        MediaOp::BrowserAnswer { offer } => MediaDone::Sdp(m.browser_answer(&offer).await.map_err(failure)?),
        MediaOp::BrowserAccept { answer } => m.browser_accept_answer(&answer).await.map(|()| MediaDone::Done).map_err(failure)?,
        MediaOp::InternalOffer => MediaDone::Sdp(m.internal_create_offer().await.map_err(failure)?),
        MediaOp::InternalAnswer { offer } => MediaDone::Sdp(m.internal_answer(&offer).await.map_err(failure)?),
        MediaOp::InternalAccept { answer } => m.internal_accept_answer(&answer).await.map(|()| MediaDone::Done).map_err(failure)?,
        other => return Err(MediaFailure::new(500, format!("not a call operation: {other:?}"))),
    };
    Ok(done)
}

fn leg_json(l: &LegStats) -> serde_json::Value {
    serde_json::json!({
        "packets_received": l.packets_received,
        "bytes_received": l.bytes_received,
        "packets_sent": l.packets_sent,
        "bytes_sent": l.bytes_sent,
        "packets_lost": l.packets_lost,
        "loss": l.loss_fraction,
        "jitter_ms": l.jitter_ms,
        "rtt_ms": l.rtt_ms,
        "mos": l.mos,
        "codec": l.codec,
        "fec_recovered": l.fec_recovered,
    })
}

/// The call record's media figures.
pub fn stats_json(s: &CallStats) -> serde_json::Value {
    serde_json::json!({
        "duration_ms": s.duration.as_millis() as u64,
        "browser": leg_json(&s.browser),
        "internal": leg_json(&s.internal),
    })
}
