//! The daemon's live figures for metrics and the admin endpoint: call control, the reload loop
//! and the web side write them as things happen; scrapes and admin requests read them. Only
//! counters, gauges, histograms and small snapshots live here; the state they describe stays
//! with its owner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

use crate::call::control::CallRecord;

/// Label pairs of a family.
pub type Labels = Vec<(String, String)>;
/// A histogram family; its buckets are fixed by the constructor.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// One upstream server as the health checks see it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpstreamHealth {
    pub address: std::net::SocketAddr,
    pub transport: crate::profile::Transport,
    pub priority: u16,
    pub weight: u16,
    pub up: bool,
    /// Consecutive failed checks or requests.
    pub failures: u32,
}

/// Live figures: call control's (registrations, calls, quality, upstream health), the reload
/// loop's and the web side's certificate; written as things happen, read at scrape time and by
/// the admin endpoint.
pub struct CallGauges {
    pub registrations: AtomicU64,
    pub active_calls: AtomicU64,
    /// When the daemon started.
    pub started: SystemTime,
    /// Ended calls by direction and cause.
    pub calls_ended: Family<Labels, Counter>,
    /// INVITE to answer, by direction (observed when an answered call ends).
    pub setup_seconds: HistogramFamily,
    /// Per leg (`browser`, `internal`), what that leg received, observed when a call ends.
    pub mos: HistogramFamily,
    pub loss_ratio: HistogramFamily,
    pub jitter_seconds: HistogramFamily,
    /// Registrar events by kind (registered, unregistered, replaced).
    pub registration_events: Family<Labels, Counter>,
    /// Profile reloads by result (applied, refused).
    pub reloads: Family<Labels, Counter>,
    /// Unix seconds of the last applied profile (the start counts as one).
    pub profile_applied: AtomicU64,
    pub upstream: Mutex<Vec<UpstreamHealth>>,
    /// The TURN server once it runs; its figures are read at scrape time.
    pub turn: OnceLock<crate::turn::TurnHandle>,
    /// HEP capture, for its counters and the admin API's `/capture`.
    pub hep: OnceLock<super::hep::HepCapture>,
    /// The web side's settings in effect (certificate), once it runs.
    pub web: OnceLock<tokio::sync::watch::Receiver<std::sync::Arc<crate::web::Settings>>>,
    /// The ACME client's state, once it runs.
    pub acme: OnceLock<std::sync::Arc<crate::tls::acme::AcmeStatus>>,
}

fn setup_histogram() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0])
}

fn mos_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4, 4.5])
}

fn loss_histogram() -> Histogram {
    Histogram::new([0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5])
}

fn jitter_histogram() -> Histogram {
    Histogram::new([0.001, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5])
}

impl Default for CallGauges {
    fn default() -> Self {
        let started = SystemTime::now();
        CallGauges {
            registrations: AtomicU64::new(0),
            active_calls: AtomicU64::new(0),
            started,
            calls_ended: Family::default(),
            setup_seconds: Family::new_with_constructor(setup_histogram),
            mos: Family::new_with_constructor(mos_histogram),
            loss_ratio: Family::new_with_constructor(loss_histogram),
            jitter_seconds: Family::new_with_constructor(jitter_histogram),
            registration_events: Family::default(),
            reloads: Family::default(),
            profile_applied: AtomicU64::new(unix_seconds(started)),
            upstream: Mutex::new(Vec::new()),
            turn: OnceLock::new(),
            hep: OnceLock::new(),
            web: OnceLock::new(),
            acme: OnceLock::new(),
        }
    }
}

pub fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A call record's cause as a label value from a closed set, so the series stay bounded
/// whatever text a peer or a media failure puts in the cause.
pub fn cause_label(cause: &str) -> &'static str {
    match cause {
        "agent hung up" => "agent_hangup",
        "remote party hung up" => "remote_hangup",
        "agent connection closed" => "agent_disconnected",
        "no ACK for our answer" => "no_ack",
        "call refused by the SIP server" => "upstream_refused",
        "agent did not take the call" => "agent_declined",
        "cancelled before answer" => "cancelled",
        "session timer expired" | "session refresh failed" => "session_timer",
        c if c.contains("media") || c.contains("Media") => "media",
        _ => "other",
    }
}

fn direction_label(d: crate::call::control::Direction) -> &'static str {
    use crate::call::control::Direction;
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
        Direction::Echo => "echo",
    }
}

impl CallGauges {
    /// Counts an ended call and observes its setup time and media quality.
    pub fn call_ended(&self, r: &CallRecord) {
        let direction = direction_label(r.summary.direction);
        self.calls_ended.get_or_create(&labels(&[("direction", direction), ("cause", cause_label(&r.cause))])).inc();
        if let Some(answered) = r.summary.answered_ms {
            let setup = answered.saturating_sub(r.summary.started_ms) as f64 / 1000.0;
            self.setup_seconds.get_or_create(&labels(&[("direction", direction)])).observe(setup);
        }
        let Some(media) = &r.summary.media else { return };
        for leg in ["browser", "internal"] {
            let Some(l) = media.get(leg) else { continue };
            // A leg that received nothing has no quality to speak of.
            if l.get("packets_received").and_then(|v| v.as_u64()).unwrap_or(0) == 0 {
                continue;
            }
            let key = labels(&[("leg", leg)]);
            let figure = |name: &str| l.get(name).and_then(|v| v.as_f64());
            if let Some(mos) = figure("mos") {
                self.mos.get_or_create(&key).observe(mos);
            }
            if let Some(loss) = figure("loss") {
                self.loss_ratio.get_or_create(&key).observe(loss);
            }
            if let Some(jitter) = figure("jitter_ms") {
                self.jitter_seconds.get_or_create(&key).observe(jitter / 1000.0);
            }
        }
    }

    pub fn registration_event(&self, event: &'static str) {
        self.registration_events.get_or_create(&labels(&[("event", event)])).inc();
    }

    /// A reload's result; an applied one also stamps the profile's time.
    pub fn reload(&self, applied: bool) {
        self.reloads.get_or_create(&labels(&[("result", if applied { "applied" } else { "refused" })])).inc();
        if applied {
            self.profile_applied.store(unix_seconds(SystemTime::now()), Ordering::Relaxed);
        }
    }

    /// Replaces the upstream snapshot when it changed.
    pub fn set_upstream(&self, now: Vec<UpstreamHealth>) {
        let mut held = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        if *held != now {
            *held = now;
        }
    }

    pub fn upstream(&self) -> Vec<UpstreamHealth> {
        self.upstream.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Unix seconds at which the served certificate's leaf expires, when known.
    pub fn certificate_expiry(&self) -> Option<i64> {
        self.web.get().and_then(|w| w.borrow().certificate_not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_map_to_a_closed_set() {
        assert_eq!(cause_label("agent hung up"), "agent_hangup");
        assert_eq!(cause_label("session refresh failed"), "session_timer");
        assert_eq!(cause_label("No Media For Call"), "media");
        assert_eq!(cause_label("anything a peer wrote"), "other");
    }
}
