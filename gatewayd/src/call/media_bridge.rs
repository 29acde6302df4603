//! Call control's media port on the real media bridge: the profile mapped into the bridge's
//! settings, and each call's media handle kept by call reference.
//!
//! The bridge's handles are async (its worker thread answers over oneshot channels, in
//! microseconds); the call core is synchronous, so each operation waits in place on the
//! multi-threaded runtime rather than making the core async.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use super::media_port::{CallRef, MediaControl, MediaFailure};
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

enum Handle {
    Bridge(CallMedia),
    Echo(EchoCall),
}

/// `MediaControl` over the media bridge.
pub struct BridgeMedia {
    engine: Arc<MediaEngine>,
    calls: HashMap<CallRef, Handle>,
    tap: Arc<RtcpTap>,
}

impl BridgeMedia {
    pub fn new(engine: Arc<MediaEngine>) -> Self {
        let tap = engine.rtcp_tap();
        BridgeMedia { engine, calls: HashMap::new(), tap }
    }

    fn bridge(&self, call: CallRef) -> Result<&CallMedia, MediaFailure> {
        match self.calls.get(&call) {
            Some(Handle::Bridge(m)) => Ok(m),
            _ => Err(MediaFailure::new(500, "No Media For Call")),
        }
    }
}

/// Waits for a bridge operation without making the caller async.
fn wait<F: Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn failure(e: MediaError) -> MediaFailure {
    MediaFailure::new(e.sip_status(), e.to_string())
}

impl MediaControl for BridgeMedia {
    fn echo(&mut self, call: CallRef, browser_offer: &str) -> Result<String, MediaFailure> {
        if let Some(Handle::Echo(e)) = self.calls.get(&call) {
            return wait(e.browser_answer(browser_offer)).map_err(failure);
        }
        let (echo, answer) = wait(self.engine.create_echo(browser_offer)).map_err(failure)?;
        self.calls.insert(call, Handle::Echo(echo));
        Ok(answer)
    }

    fn open(&mut self, call: CallRef) -> Result<(), MediaFailure> {
        let media = wait(self.engine.create_call()).map_err(failure)?;
        self.calls.insert(call, Handle::Bridge(media));
        Ok(())
    }

    fn browser_offer(&mut self, call: CallRef) -> Result<String, MediaFailure> {
        wait(self.bridge(call)?.browser_create_offer()).map_err(failure)
    }

    fn browser_answer(&mut self, call: CallRef, offer: &str) -> Result<String, MediaFailure> {
        wait(self.bridge(call)?.browser_answer(offer)).map_err(failure)
    }

    fn browser_accept(&mut self, call: CallRef, answer: &str) -> Result<(), MediaFailure> {
        wait(self.bridge(call)?.browser_accept_answer(answer)).map_err(failure)
    }

    fn internal_offer(&mut self, call: CallRef) -> Result<String, MediaFailure> {
        wait(self.bridge(call)?.internal_create_offer()).map_err(failure)
    }

    fn internal_answer(&mut self, call: CallRef, offer: &str) -> Result<String, MediaFailure> {
        wait(self.bridge(call)?.internal_answer(offer)).map_err(failure)
    }

    fn internal_accept(&mut self, call: CallRef, answer: &str) -> Result<(), MediaFailure> {
        wait(self.bridge(call)?.internal_accept_answer(answer)).map_err(failure)
    }

    fn tap_rtcp(&mut self, on: bool) {
        self.tap.set_on(on);
    }

    fn take_rtcp(&mut self) -> (Vec<(CallRef, RtcpSeen)>, u64) {
        let dropped = self.tap.take_dropped();
        let seen = self.tap.drain();
        if seen.is_empty() {
            return (Vec::new(), dropped);
        }
        let by_media: HashMap<u64, CallRef> = self
            .calls
            .iter()
            .map(|(call, h)| {
                let id = match h {
                    Handle::Bridge(m) => m.id(),
                    Handle::Echo(e) => e.id(),
                };
                (id, *call)
            })
            .collect();
        // Copies of a call already closed have nobody to be tied to: left out.
        (seen.into_iter().filter_map(|s| by_media.get(&s.call).map(|c| (*c, s))).collect(), dropped)
    }

    fn poll_dead(&mut self) -> Vec<(CallRef, String)> {
        use futures::FutureExt;
        let mut dead = Vec::new();
        for (call, handle) in self.calls.iter_mut() {
            loop {
                let event = match handle {
                    Handle::Bridge(m) => m.next_event().now_or_never(),
                    Handle::Echo(e) => e.next_event().now_or_never(),
                };
                let reason = match event {
                    None => break,
                    Some(None) => Some("media engine stopped".to_owned()),
                    Some(Some(MediaEvent::BrowserFailed(why))) => Some(format!("browser media failed: {why}")),
                    Some(Some(MediaEvent::BrowserDisconnected)) => Some("browser stopped answering ICE consent checks".to_owned()),
                    Some(Some(MediaEvent::NoMedia(Side::Browser))) => Some("no media from the browser".to_owned()),
                    // Silence from the SIP server is normal while it holds the call: logged only.
                    Some(Some(MediaEvent::NoMedia(side))) => {
                        tracing::info!(call = call.0, side = ?side, "no media from the SIP server side");
                        None
                    }
                    Some(Some(MediaEvent::BrowserConnected)) => None,
                };
                if let Some(reason) = reason {
                    dead.push((*call, reason));
                    break;
                }
            }
        }
        dead
    }

    fn stats(&mut self, call: CallRef) -> Option<serde_json::Value> {
        let stats = match self.calls.get(&call)? {
            Handle::Bridge(m) => wait(m.stats()),
            Handle::Echo(e) => wait(e.stats()),
        };
        stats.ok().map(|s| stats_json(&s))
    }

    fn close(&mut self, call: CallRef) -> Option<serde_json::Value> {
        let stats = match self.calls.remove(&call)? {
            Handle::Bridge(m) => wait(m.close()),
            Handle::Echo(e) => wait(e.close()),
        };
        stats.ok().map(|s| stats_json(&s))
    }
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
