//! Prometheus metrics, rendered at scrape time from the counters the subsystems keep: bans and
//! failures from the guard, registrations, calls and upstream health from call control, TURN's
//! figures, reloads and the served certificate. Names follow the Prometheus conventions (base
//! units in the name, `_total` on counters); `exposition` turns the OpenMetrics text this
//! renders into the 0.0.4 text format for scrapers that ask for it.

use std::sync::atomic::Ordering;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::guard::BanService;
pub use super::live::CallGauges;
use super::live::Labels;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    registry.register(name, help, gauge_of(value));
}

fn gauge_of(value: u64) -> Gauge {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

fn gauge_with_unit(registry: &mut Registry, name: &str, help: &str, unit: Unit, value: u64) {
    registry.register_with_unit(name, help, unit, gauge_of(value));
}

/// The OpenMetrics text exposition of every metric (with its `# EOF`).
pub fn render(bans: &BanService, calls: &CallGauges) -> String {
    let mut r = Registry::with_prefix("gatewayd");
    info(&mut r, calls);
    let c = bans.counters();
    let failures: Vec<(&str, u64)> = c.failures.iter().map(|(kind, n)| (kind.as_str(), *n)).collect();
    labelled(&mut r, "failures", "Failures reported to the guard, by kind", "kind", &failures);
    labelled(&mut r, "bans", "Bans imposed, by origin (a rule or an operator)", "origin", &[("rule", c.bans_by_rule), ("manual", c.bans_manual)]);
    labelled(&mut r, "bans_ended", "Bans that ended, by reason (ran out or lifted by an operator)", "reason", &[("expired", c.bans_expired), ("lifted", c.bans_lifted)]);
    counter(&mut r, "rate_limited", "Requests or connections refused by rate limits", c.rate_limited);
    gauge(&mut r, "bans_active", "Sources banned now", bans.active_bans() as u64);
    gauge(&mut r, "registrations", "Agent registrations now", calls.registrations.load(Ordering::Relaxed));
    r.register("registration_events", "Registrar events, by event (registered, unregistered, replaced)", calls.registration_events.clone());
    gauge(&mut r, "calls_active", "Calls in progress", calls.active_calls.load(Ordering::Relaxed));
    r.register("calls_ended", "Calls ended, by direction and cause", calls.calls_ended.clone());
    r.register_with_unit("call_setup", "Time from INVITE to answer of answered calls, by direction (observed when the call ends)", Unit::Seconds, calls.setup_seconds.clone());
    r.register("call_mos", "Estimated listening quality (MOS) of what each leg received over a call, by leg", calls.mos.clone());
    r.register_with_unit("call_packet_loss", "Fraction of packets lost on each leg over a call, by leg", Unit::Other("ratio".into()), calls.loss_ratio.clone());
    r.register_with_unit("call_jitter", "Interarrival jitter of each leg at the end of a call, by leg", Unit::Seconds, calls.jitter_seconds.clone());
    upstream(&mut r, calls);
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

/// Build, start, profile and certificate: what is running and since when.
fn info(r: &mut Registry, calls: &CallGauges) {
    let build = Family::<Labels, Gauge>::default();
    build.get_or_create(&vec![("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned())]).set(1);
    r.register("build_info", "The running gatewayd version (always 1)", build);
    gauge_with_unit(r, "start_time", "Unix time the daemon started", Unit::Seconds, super::live::unix_seconds(calls.started));
    gauge_with_unit(r, "profile_applied_timestamp", "Unix time the running profile was applied (start or reload)", Unit::Seconds, calls.profile_applied.load(Ordering::Relaxed));
    let reloads = calls.reloads.clone();
    for result in ["applied", "refused"] {
        // Both results from the start, so a rate over them is never missing a series.
        let _ = reloads.get_or_create(&vec![("result".to_owned(), result.to_owned())]);
    }
    r.register("reloads", "Profile reloads, by result (applied, or refused as invalid)", reloads);
    if let Some(expiry) = calls.certificate_expiry() {
        gauge_with_unit(r, "tls_certificate_expiry_timestamp", "Unix time the served HTTPS/WSS certificate (leaf) expires", Unit::Seconds, expiry.max(0) as u64);
    }
    if let Some(acme) = calls.acme.get() {
        counter(r, "acme_certificates_issued", "Certificates the ACME CA issued and the gateway installed", acme.issued.load(Ordering::Relaxed));
        counter(r, "acme_orders_failed", "ACME orders that ended without a certificate (the one in service stays)", acme.failures.load(Ordering::Relaxed));
        gauge(r, "acme_stand_in", "1 while a self-signed stand-in is served because the CA has not issued yet", u64::from(acme.stand_in.load(Ordering::Relaxed)));
    }
}

fn upstream(r: &mut Registry, calls: &CallGauges) {
    let up = Family::<Labels, Gauge>::default();
    let failures = Family::<Labels, Gauge>::default();
    for s in calls.upstream() {
        let key = vec![("server".to_owned(), s.address.to_string()), ("transport".to_owned(), transport_name(s.transport).to_owned())];
        up.get_or_create(&key).set(i64::from(s.up));
        failures.get_or_create(&key).set(i64::from(s.failures));
    }
    r.register("upstream_up", "Whether an upstream SIP server passes its health checks (1) or not (0)", up);
    r.register("upstream_consecutive_failures", "Consecutive failed health checks or requests of an upstream SIP server", failures);
}

fn transport_name(t: crate::profile::Transport) -> &'static str {
    match t {
        crate::profile::Transport::Udp => "udp",
        crate::profile::Transport::Tcp => "tcp",
    }
}

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
    labelled(r, "turn_dropped_packets", "Packets TURN did not relay, by reason", "reason", &[("bandwidth", rel.dropped), ("no_permission", t.unpermitted), ("client_busy", t.unsent)]);
}
