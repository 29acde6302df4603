//! Prometheus metrics, rendered at scrape time from the counters the subsystems keep: bans and
//! failures from the guard, registrations and calls from call control.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::guard::BanService;

/// Call control's live figures, updated by its task and read at scrape time.
#[derive(Debug, Default)]
pub struct CallGauges {
    pub registrations: AtomicU64,
    pub active_calls: AtomicU64,
    pub calls_ended: AtomicU64,
    /// The TURN server once it runs; its figures are read at scrape time.
    pub turn: std::sync::OnceLock<crate::turn::TurnHandle>,
    /// HEP capture, for its counters and the admin API's `/capture`.
    pub hep: std::sync::OnceLock<super::hep::HepCapture>,
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// The text exposition of every metric.
pub fn render(bans: &BanService, calls: &CallGauges) -> String {
    let mut r = Registry::with_prefix("gatewayd");
    let c = bans.counters();
    let failures: Vec<(&str, u64)> = c.failures.iter().map(|(kind, n)| (kind.as_str(), *n)).collect();
    labelled(&mut r, "failures", "Failures reported to the guard, by kind", "kind", &failures);
    counter(&mut r, "bans_by_rule", "Bans imposed by rules", c.bans_by_rule);
    counter(&mut r, "bans_manual", "Bans imposed by operators", c.bans_manual);
    counter(&mut r, "bans_expired", "Bans that ran out", c.bans_expired);
    counter(&mut r, "bans_lifted", "Bans lifted by operators", c.bans_lifted);
    counter(&mut r, "rate_limited", "Requests or connections refused by rate limits", c.rate_limited);
    gauge(&mut r, "bans_active", "Sources banned now", bans.active_bans() as u64);
    gauge(&mut r, "registrations", "Agent registrations now", calls.registrations.load(Ordering::Relaxed));
    gauge(&mut r, "calls_active", "Calls in progress", calls.active_calls.load(Ordering::Relaxed));
    counter(&mut r, "calls_ended", "Calls ended", calls.calls_ended.load(Ordering::Relaxed));
    if let Some(turn) = calls.turn.get() {
        turn_metrics(&mut r, &turn.metrics());
    }
    if let Some(hep) = calls.hep.get() {
        let h = hep.snapshot();
        counter(&mut r, "hep_packets_sent", "HEP packets sent to the collector", h.sent);
        labelled(&mut r, "hep_packets_dropped", "HEP captures not delivered, by reason", "reason", &[("queue_full", h.queue_full), ("send_error", h.send_errors), ("too_large", h.too_large)]);
    }
    let mut out = String::new();
    encode(&mut out, &r).expect("text encoding into a String cannot fail");
    out
}

type Labels = Vec<(String, String)>;

fn labelled(registry: &mut Registry, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
    let family = Family::<Labels, Counter<u64>>::default();
    for (value, n) in values {
        family.get_or_create(&vec![(label.to_owned(), (*value).to_owned())]).inc_by(*n);
    }
    registry.register(name, help, family);
}

/// TURN figures; never labelled by username (ephemeral names would make unbounded series).
fn turn_metrics(r: &mut Registry, t: &crate::turn::metrics::Snapshot) {
    gauge(r, "turn_allocations", "TURN allocations in place", t.active);
    counter(r, "turn_allocations_created", "TURN allocations made", t.created);
    labelled(r, "turn_allocations_refused", "TURN Allocate requests refused, by reason", "reason", &t.refused);
    labelled(r, "turn_allocations_ended", "TURN allocations ended, by reason", "reason", &t.ended);
    counter(r, "turn_auth_failures", "TURN requests with wrong or expired credentials", t.auth_failures);
    labelled(r, "turn_peers_refused", "TURN permissions, channels and sends refused by the peer policy, by reason", "reason", &t.peers_refused);
    let rel = &t.relayed;
    labelled(r, "turn_relayed_packets", "Packets relayed by TURN, by direction", "direction", &[("to_peer", rel.packets_to_peer), ("from_peer", rel.packets_from_peer)]);
    labelled(r, "turn_relayed_bytes", "Payload bytes relayed by TURN, by direction", "direction", &[("to_peer", rel.bytes_to_peer), ("from_peer", rel.bytes_from_peer)]);
    labelled(r, "turn_dropped_packets", "Packets TURN did not relay, by reason", "reason", &[("bandwidth", rel.dropped), ("no_permission", t.unpermitted)]);
}
