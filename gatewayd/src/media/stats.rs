//! Per-leg counters, RFC 3550 loss and jitter, and a MOS estimate from the simplified E-model
//! (ITU-T G.107) for G.711.

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

/// MOS-CQE from the E-model for G.711 with packet loss concealment (Ie = 0, Bpl = 25.1):
/// one-way delay is half the RTT plus a jitter buffer of twice the jitter plus packetization.
pub fn mos(loss_fraction: f32, jitter_ms: f32, rtt_ms: f32) -> f32 {
    let d = rtt_ms / 2.0 + 2.0 * jitter_ms + 20.0;
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let ie_eff = 95.0 * ppl / (ppl + 25.1);
    let r = (93.2 - id - ie_eff).clamp(0.0, 100.0);
    let m = 1.0 + 0.035 * r + r * (r - 60.0) * (100.0 - r) * 7.0e-6;
    m.clamp(1.0, 4.5)
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
    fn mos_orders_conditions() {
        let clean = mos(0.0, 1.0, 20.0);
        assert!(clean > 4.3 && clean <= 4.5, "{clean}");
        let lossy = mos(0.05, 10.0, 100.0);
        assert!(lossy < clean && lossy > 2.5, "{lossy}");
        assert!(mos(0.5, 50.0, 800.0) < 2.0);
    }
}
