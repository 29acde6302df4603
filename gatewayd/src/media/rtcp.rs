//! Minimal RTCP for the internal leg: our sender reports with one reception report block, and
//! reading the server's reports for round-trip time (RFC 3550 §6.4).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// NTP time (RFC 5905 era 0) as 64-bit fixed point.
pub fn ntp(wall: SystemTime) -> u64 {
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + 2_208_988_800;
    (secs << 32) | ((u64::from(d.subsec_nanos()) << 32) / 1_000_000_000)
}

/// The middle 32 bits of an NTP time, as carried in LSR.
pub fn ntp_mid(ntp: u64) -> u32 {
    (ntp >> 16) as u32
}

/// Reception figures about the stream we receive, for the report block.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReportBlock {
    pub ssrc: u32,
    pub fraction_lost: u8,
    pub cumulative_lost: u32,
    pub ext_max_seq: u32,
    pub jitter: u32,
    pub lsr: u32,
    pub dlsr: u32,
}

pub struct SenderInfo {
    pub ssrc: u32,
    pub ntp: u64,
    pub rtp_ts: u32,
    pub packets: u32,
    pub octets: u32,
}

pub fn build_sr(out: &mut Vec<u8>, s: &SenderInfo, block: Option<&ReportBlock>) {
    out.clear();
    let words = 6 + if block.is_some() { 6 } else { 0 };
    out.push(0x80 | u8::from(block.is_some()));
    out.push(200);
    out.extend_from_slice(&(words as u16).to_be_bytes());
    for v in [s.ssrc, (s.ntp >> 32) as u32, s.ntp as u32, s.rtp_ts, s.packets, s.octets] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    if let Some(b) = block {
        out.extend_from_slice(&b.ssrc.to_be_bytes());
        let lost = b.cumulative_lost.min(0x7f_ffff);
        out.extend_from_slice(&(u32::from(b.fraction_lost) << 24 | lost).to_be_bytes());
        for v in [b.ext_max_seq, b.jitter, b.lsr, b.dlsr] {
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// What an incoming compound packet told us.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Middle bits of the peer's last SR timestamp, to echo as LSR.
    pub peer_sr: Option<u32>,
    /// (LSR, DLSR) of a report block about our stream.
    pub about_us: Option<(u32, u32)>,
    pub bye: bool,
}

pub fn parse(buf: &[u8], our_ssrc: u32) -> Received {
    let mut r = Received::default();
    let mut off = 0;
    while off + 8 <= buf.len() {
        let h = &buf[off..];
        if h[0] >> 6 != 2 {
            break;
        }
        let len = (usize::from(u16::from_be_bytes([h[2], h[3]])) + 1) * 4;
        if len > h.len() {
            break;
        }
        let rc = usize::from(h[0] & 0x1f);
        // Our own report coming back (a server in RTP echo mode on a multiplexed port) says
        // nothing about the peer: taking it would fake the LSR we echo and the round trip.
        if len >= 8 && matches!(h[1], 200 | 201) && u32::from_be_bytes([h[4], h[5], h[6], h[7]]) == our_ssrc {
            off += len;
            continue;
        }
        let blocks_at = match h[1] {
            200 if len >= 28 => {
                r.peer_sr = Some(u32::from_be_bytes([h[10], h[11], h[12], h[13]]));
                Some(28)
            }
            201 => Some(8),
            203 => {
                r.bye = true;
                None
            }
            _ => None,
        };
        if let Some(start) = blocks_at {
            for i in 0..rc {
                let b = start + i * 24;
                if b + 24 > len {
                    break;
                }
                let word = |k: usize| u32::from_be_bytes([h[b + k], h[b + k + 1], h[b + k + 2], h[b + k + 3]]);
                if word(0) == our_ssrc {
                    r.about_us = Some((word(16), word(20)));
                }
            }
        }
        off += len;
    }
    r
}

/// Round trip from a report about us: arrival minus our SR's send time minus the peer's delay,
/// all in 1/65536 s units.
pub fn rtt(arrival_mid: u32, lsr: u32, dlsr: u32) -> Option<Duration> {
    if lsr == 0 {
        return None;
    }
    let units = arrival_mid.wrapping_sub(lsr).wrapping_sub(dlsr);
    (units < 0x8000_0000).then(|| Duration::from_micros(u64::from(units) * 1_000_000 / 65536))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sr_round_trip_and_rtt() {
        let mut b = Vec::new();
        let sent = ntp(SystemTime::now());
        let block = ReportBlock { ssrc: 9, lsr: 0x1234, dlsr: 0x10000, ..Default::default() };
        build_sr(&mut b, &SenderInfo { ssrc: 5, ntp: sent, rtp_ts: 1, packets: 2, octets: 3 }, Some(&block));
        assert_eq!(b.len(), 52);
        let r = parse(&b, 9);
        assert_eq!(r.peer_sr, Some(ntp_mid(sent)));
        assert_eq!(r.about_us, Some((0x1234, 0x10000)));
        // Sent at LSR, peer held it 1 s, arrived 1.5 s after LSR: 0.5 s round trip.
        assert_eq!(rtt(0x1234 + 0x18000, 0x1234, 0x10000), Some(Duration::from_millis(500)));
        assert_eq!(rtt(5, 0, 0), None);
    }

    #[test]
    fn our_own_report_echoed_back_is_ignored() {
        let mut b = Vec::new();
        let block = ReportBlock { ssrc: 5, lsr: 0x1234, dlsr: 0x10000, ..Default::default() };
        build_sr(&mut b, &SenderInfo { ssrc: 5, ntp: ntp(SystemTime::now()), rtp_ts: 1, packets: 2, octets: 3 }, Some(&block));
        assert_eq!(parse(&b, 5), Received::default());
        assert!(parse(&b, 6).peer_sr.is_some(), "someone else's report still counts");
    }
}
