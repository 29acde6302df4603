//! Per-leg counters, RFC 3550 loss and jitter, and a MOS estimate from the simplified E-model
//! (ITU-T G.107) with the impairment factors of the leg's codec (G.711 or Opus).

use std::time::{Duration, Instant};

/// Figures of one leg, as call control and CDRs see them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LegStats {
    pub packets_received: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub bytes_sent: u64,
    /// Cumulative packets lost (expected minus received, RFC 3550 A.3).
    pub packets_lost: u64,
    /// packets_lost / expected, 0..=1.
    pub loss_fraction: f32,
    /// Interarrival jitter (RFC 3550 A.8) in milliseconds.
    pub jitter_ms: f32,
    /// Round-trip time from RTCP, when the peer reported it.
    pub rtt_ms: Option<f32>,
    /// Estimated listening quality of what this leg received, 1..=4.5.
    pub mos: f32,
    /// The audio codec this leg received ("PCMU", "PCMA", "opus"), once known.
    pub codec: Option<&'static str>,
    /// Lost packets the bridge rebuilt from Opus in-band FEC before passing audio on.
    pub fec_recovered: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CallStats {
    pub browser: LegStats,
    pub internal: LegStats,
    pub duration: Duration,
}

/// Receive-side bookkeeping for one incoming stream.
#[derive(Debug, Clone, Default)]
pub struct ReceiveStats {
    pub packets: u64,
    pub bytes: u64,
    base_seq: u64,
    max_seq: u64,
    started: bool,
    /// Jitter in timestamp units, scaled by 16 as in RFC 3550 A.8.
    jitter_q4: u64,
    last_transit: Option<i64>,
    pub last_arrival: Option<Instant>,
    // Snapshot at the previous report, for the fraction-lost field.
    prior_expected: u64,
    prior_received: u64,
}

impl ReceiveStats {
    /// `arrival_units` is the arrival time in the stream's clock units, from any fixed origin.
    pub fn on_packet(&mut self, now: Instant, seq: u16, ts: u32, arrival_units: u64, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
        self.last_arrival = Some(now);
        if !self.started {
            self.started = true;
            self.base_seq = u64::from(seq) + (1 << 16);
            self.max_seq = self.base_seq;
        } else {
            let delta = i64::from(seq.wrapping_sub(self.max_seq as u16) as i16);
            if delta > 0 {
                self.max_seq += delta as u64;
            } else if delta < -3000 {
                // Restarted sender: start counting afresh rather than report bogus loss.
                self.base_seq = u64::from(seq) + (1 << 16);
                self.max_seq = self.base_seq;
                self.prior_expected = 0;
                self.prior_received = 0;
                self.packets = 1;
            }
        }
        let transit = arrival_units as i64 - i64::from(ts);
        if let Some(last) = self.last_transit {
            let d = (transit - last).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter_q4 = self.jitter_q4 + d - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
    }

    /// Restart jitter tracking (new source: its timestamps have another origin).
    pub fn new_source(&mut self) {
        self.last_transit = None;
    }

    pub fn expected(&self) -> u64 {
        if self.started { self.max_seq - self.base_seq + 1 } else { 0 }
    }

    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.packets)
    }

    pub fn jitter_units(&self) -> u32 {
        (self.jitter_q4 >> 4) as u32
    }

    pub fn extended_max_seq(&self) -> u32 {
        self.max_seq.saturating_sub(1 << 16) as u32
    }

    /// Fraction lost since the previous call, as the 8-bit RTCP field.
    pub fn take_fraction_lost(&mut self) -> u8 {
        let expected = self.expected() - self.prior_expected;
        let received = self.packets.saturating_sub(self.prior_received);
        self.prior_expected = self.expected();
        self.prior_received = self.packets;
        if expected == 0 || received >= expected {
            0
        } else {
            (((expected - received) << 8) / expected).min(255) as u8
        }
    }

    pub fn fill(&self, leg: &mut LegStats, clock_rate: u32) {
        leg.packets_received = self.packets;
        leg.bytes_received = self.bytes;
        leg.packets_lost = self.lost();
        let expected = self.expected();
        leg.loss_fraction = if expected == 0 { 0.0 } else { self.lost() as f32 / expected as f32 };
        leg.jitter_ms = self.jitter_units() as f32 * 1000.0 / clock_rate as f32;
        leg.mos = mos(leg.loss_fraction, leg.jitter_ms, leg.rtt_ms.unwrap_or(0.0));
    }
}

/// A codec's E-model figures: equipment impairment Ie, packet-loss robustness Bpl, and the
/// delay the codec itself adds (frame plus look-ahead).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Impairment {
    pub ie: f32,
    pub bpl: f32,
    pub codec_delay_ms: f32,
}

/// G.711 with packet loss concealment (ITU-T G.113 Appendix I: Ie 0, Bpl 25.1), 20 ms frames.
pub const G711: Impairment = Impairment { ie: 0.0, bpl: 25.1, codec_delay_ms: 20.0 };

/// Narrowband Opus at 24 kbit/s as the bridge encodes it. G.113 publishes no narrowband Opus
/// values; these are those of the comparable G.729A (Ie 11, Bpl 19), applied to the loss left
/// after in-band FEC. Delay: 20 ms frames plus 6.5 ms look-ahead.
pub const OPUS: Impairment = Impairment { ie: 11.0, bpl: 19.0, codec_delay_ms: 26.5 };

/// MOS-CQE from the E-model for G.711 with packet loss concealment (Ie = 0, Bpl = 25.1):
/// one-way delay is half the RTT plus a jitter buffer of twice the jitter plus packetization.
pub fn mos(loss_fraction: f32, jitter_ms: f32, rtt_ms: f32) -> f32 {
    mos_with(G711, loss_fraction, jitter_ms, rtt_ms)
}

/// MOS-CQE from the E-model with a codec's figures (ITU-T G.107 Ie,eff = Ie + (95 - Ie) ·
/// Ppl / (Ppl + Bpl)).
pub fn mos_with(codec: Impairment, loss_fraction: f32, jitter_ms: f32, rtt_ms: f32) -> f32 {
    let d = rtt_ms / 2.0 + 2.0 * jitter_ms + codec.codec_delay_ms;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let ie_eff = codec.ie + (95.0 - codec.ie) * ppl / (ppl + codec.bpl);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    let m = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6;
    m.clamp(1.0, 4.5)
}

/// How long the bridge held forwarded packets (socket read to socket write), in 10 µs steps up
/// to 10 ms plus one overflow bucket.
#[derive(Debug, Clone)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

/// Percentiles of forwarding time since the previous reading.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardingLatency {
    pub packets: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

const BUCKET_US: u64 = 10;
const BUCKETS: usize = 1000;

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: vec![0; BUCKETS + 1], count: 0, max_us: 0 }
    }
}

impl Histogram {
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros() as u64;
        self.buckets[((us / BUCKET_US) as usize).min(BUCKETS)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    /// Upper bound of the bucket holding the q-quantile.
    pub fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((self.count as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return if i == BUCKETS { self.max_us } else { (i as u64 + 1) * BUCKET_US };
            }
        }
        self.max_us
    }

    /// Adds another worker's readings.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Reads and restarts the histogram.
    pub fn take(&mut self) -> ForwardingLatency {
        let r = ForwardingLatency { packets: self.count, p50_us: self.quantile_us(0.5), p99_us: self.quantile_us(0.99), max_us: self.max_us };
        *self = Histogram::default();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_and_jitter_follow_rfc3550() {
        let t = Instant::now();
        let mut s = ReceiveStats::default();
        for (i, seq) in [10u16, 11, 13, 14].iter().enumerate() {
            let ts = u32::from(*seq) * 160;
            // Arrivals jitter by 8 units on every other packet.
            let arrival = u64::from(ts) + 1000 + (i as u64 % 2) * 8;
            s.on_packet(t, *seq, ts, arrival, 172);
        }
        assert_eq!(s.expected(), 5);
        assert_eq!(s.lost(), 1);
        assert!(s.jitter_units() > 0 && s.jitter_units() < 8);
        assert_eq!(s.take_fraction_lost(), 51);
        assert_eq!(s.take_fraction_lost(), 0);
    }

    #[test]
    fn sequence_wrap_is_not_loss() {
        let t = Instant::now();
        let mut s = ReceiveStats::default();
        for seq in [65534u16, 65535, 0, 1] {
            s.on_packet(t, seq, 0, 0, 10);
        }
        assert_eq!((s.expected(), s.lost(), s.extended_max_seq()), (4, 0, 65536 + 1));
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for us in 1..=100u64 {
            h.record(Duration::from_micros(us * 10 - 5));
        }
        h.record(Duration::from_millis(50));
        assert_eq!(h.quantile_us(0.5), 510);
        assert_eq!(h.quantile_us(1.0), 50_000);
        let r = h.take();
        assert_eq!((r.packets, r.max_us), (101, 50_000));
        assert_eq!(h.take().packets, 0);
    }

    #[test]
    fn mos_orders_conditions() {
        let clean = mos(0.0, 1.0, 20.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let lossy = mos(0.05, 10.0, 100.0);
        assert!(lossy < clean && lossy > 2.5, "{lossy}");
        assert!(mos(0.5, 50.0, 800.0) < 2.0);
    }

    #[test]
    fn opus_costs_a_little_when_clean_and_matches_g711_formula_for_g711() {
        assert_eq!(mos_with(G711, 0.03, 5.0, 40.0), mos(0.03, 5.0, 40.0));
        let (g, o) = (mos_with(G711, 0.0, 1.0, 20.0), mos_with(OPUS, 0.0, 1.0, 20.0));
        assert!(o < g && o > 3.9, "clean narrowband Opus {o} vs G.711 {g}");
        // 10 % raw loss: G.711 conceals all of it; Opus with FEC leaves about 1 % of it.
        assert!(mos_with(OPUS, 0.01, 5.0, 40.0) > mos_with(G711, 0.10, 5.0, 40.0));
    }
}
