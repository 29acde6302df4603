//! Plain RTP packets and the rewriter that keeps SSRC, sequence number and timestamp continuous
//! toward one receiver while the sender side changes SSRC, pauses for hold or renegotiates.

use std::time::{Duration, Instant};

/// The fields of an RTP packet the bridge needs; the payload is borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtpView<'a> {
    pub marker: bool,
    pub pt: u8,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Parses an RTP packet (RFC 3550 §5.1), skipping CSRCs, header extension and padding.
pub fn parse(buf: &[u8]) -> Option<RtpView<'_>> {
    if buf.len() < 12 || buf[0] >> 6 != 2 {
        return None;
    }
    let cc = (buf[0] & 0x0f) as usize;
    let mut off = 12 + cc * 4;
    if buf[0] & 0x10 != 0 {
        let ext = buf.get(off + 2..off + 4)?;
        off += 4 + u16::from_be_bytes([ext[0], ext[1]]) as usize * 4;
    }
    let mut end = buf.len();
    if buf[0] & 0x20 != 0 {
        let pad = *buf.last()? as usize;
        end = end.checked_sub(pad)?;
    }
    if off > end {
        return None;
    }
    Some(RtpView {
        marker: buf[1] & 0x80 != 0,
        pt: buf[1] & 0x7f,
        seq: u16::from_be_bytes([buf[2], buf[3]]),
        ts: u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]),
        ssrc: u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]),
        payload: &buf[off..end],
    })
}

/// RTCP packet types occupy 200..=207 in the second byte (RFC 5761 §4): tells RTCP from RTP
/// on a multiplexed port.
pub fn is_rtcp(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf[0] >> 6 == 2 && (200..=207).contains(&buf[1])
}

/// Writes a 12-byte header and the payload into `out`.
pub fn build(out: &mut Vec<u8>, marker: bool, pt: u8, seq: u16, ts: u32, ssrc: u32, payload: &[u8]) {
    out.clear();
    out.push(0x80);
    out.push(pt & 0x7f | if marker { 0x80 } else { 0 });
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&ts.to_be_bytes());
    out.extend_from_slice(&ssrc.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Sequence/timestamp numbering of one outgoing stream, fed with the packets of whatever
/// source currently feeds it.
#[derive(Debug, Clone)]
pub struct Rewriter {
    clock_rate: u32,
    /// Extended sequence number of the last packet sent (the next fresh one is +1).
    out_seq: u64,
    out_ts: u32,
    last_sent: Option<Instant>,
    src: Option<Source>,
    rebase: bool,
}

#[derive(Debug, Clone, Copy)]
struct Source {
    ssrc: u32,
    /// Extended input sequence number of the highest packet seen.
    in_seq: u64,
    /// out = in + seq_offset (extended numbers).
    seq_offset: i64,
    ts_offset: u32,
}

/// Numbers for one outgoing packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    pub seq: u64,
    pub ts: u32,
    /// Set on the first packet after a source change or pause: a new talkspurt for the receiver.
    pub marker: bool,
}

/// A jump larger than this is a restarted sender, not loss.
const MAX_SEQ_JUMP: i64 = 1000;

impl Rewriter {
    /// `initial_seq` and `initial_ts` come from the randomness the caller provides.
    pub fn new(clock_rate: u32, initial_seq: u16, initial_ts: u32) -> Rewriter {
        Rewriter {
            clock_rate,
            out_seq: u64::from(initial_seq),
            out_ts: initial_ts,
            last_sent: None,
            src: None,
            rebase: false,
        }
    }

    /// The RTP clock of what is sent from now on (8 kHz for G.711, 48 kHz for Opus).
    pub fn set_clock_rate(&mut self, clock_rate: u32) {
        self.clock_rate = clock_rate;
    }

    /// The next packet will continue from the last sent one, whatever its input numbers
    /// (after packets were dropped on purpose: hold, inactive direction).
    pub fn pause(&mut self) {
        self.rebase = true;
    }

    pub fn rewrite(&mut self, now: Instant, ssrc: u32, seq: u16, ts: u32, marker: bool) -> Option<Rewritten> {
        let fresh = match self.src {
            Some(s) if s.ssrc == ssrc && !self.rebase => {
                let delta = i64::from(seq.wrapping_sub(s.in_seq as u16) as i16);
                if delta.abs() > MAX_SEQ_JUMP {
                    true
                } else {
                    let in_seq = (s.in_seq as i64 + delta).max(0) as u64;
                    let out = in_seq as i64 + s.seq_offset;
                    if out <= 0 {
                        return None;
                    }
                    let src = self.src.as_mut().expect("source present");
                    if delta > 0 {
                        src.in_seq = in_seq;
                    }
                    let out_ts = ts.wrapping_add(s.ts_offset);
                    if out as u64 > self.out_seq {
                        self.out_seq = out as u64;
                        self.out_ts = out_ts;
                        self.last_sent = Some(now);
                    }
                    return Some(Rewritten { seq: out as u64, ts: out_ts, marker });
                }
            }
            _ => true,
        };
        debug_assert!(fresh);
        let out_seq = self.out_seq + 1;
        let out_ts = match self.last_sent {
            // Continue the timeline by the wall-clock time that passed, at least one frame.
            Some(t) => {
                let samples = elapsed_samples(now.saturating_duration_since(t), self.clock_rate).max(self.clock_rate / 50);
                self.out_ts.wrapping_add(samples)
            }
            None => self.out_ts,
        };
        let ext_in = u64::from(seq) + (1 << 16);
        self.src = Some(Source {
            ssrc,
            in_seq: ext_in,
            seq_offset: out_seq as i64 - ext_in as i64,
            ts_offset: out_ts.wrapping_sub(ts),
        });
        self.rebase = false;
        self.out_seq = out_seq;
        self.out_ts = out_ts;
        self.last_sent = Some(now);
        Some(Rewritten { seq: out_seq, ts: out_ts, marker: true })
    }
}

fn elapsed_samples(d: Duration, clock_rate: u32) -> u32 {
    (d.as_micros() as u64 * u64::from(clock_rate) / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_build_round_trip() {
        let mut b = Vec::new();
        build(&mut b, true, 8, 65535, 0xdead_beef, 42, &[1, 2, 3]);
        let v = parse(&b).unwrap();
        assert_eq!((v.marker, v.pt, v.seq, v.ts, v.ssrc, v.payload), (true, 8, 65535, 0xdead_beef, 42, &[1u8, 2, 3][..]));
        assert!(!is_rtcp(&b));
        assert!(parse(&b[..11]).is_none());
    }

    #[test]
    fn parse_skips_csrc_extension_and_padding() {
        let mut b = vec![0xb1, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        b.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
        b.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // extension, one word
        b.extend_from_slice(&[5, 6, 0, 2]); // payload 5,6 then two bytes of padding
        assert_eq!(parse(&b).unwrap().payload, &[5, 6]);
    }

    #[test]
    fn ssrc_change_and_pause_keep_numbers_continuous() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(8000, 100, 1000);
        let a = r.rewrite(t0, 1, 5000, 7, false).unwrap();
        assert_eq!((a.seq, a.ts), (101, 1000));
        let b = r.rewrite(t0 + Duration::from_millis(20), 1, 5001, 167, false).unwrap();
        assert_eq!((b.seq, b.ts, b.marker), (102, 1160, false));
        // Gap of one lost packet is kept so the receiver sees the loss.
        let c = r.rewrite(t0 + Duration::from_millis(60), 1, 5003, 487, false).unwrap();
        assert_eq!((c.seq, c.ts), (104, 1480));
        // New SSRC with unrelated numbers: continues at +1, timestamp by wall clock.
        let d = r.rewrite(t0 + Duration::from_millis(80), 2, 9, 999_999, false).unwrap();
        assert_eq!((d.seq, d.ts, d.marker), (105, 1640, true));
        // Hold drops packets; resume continues without a gap.
        r.pause();
        let e = r.rewrite(t0 + Duration::from_millis(1080), 2, 60, 999_999 + 51 * 160, false).unwrap();
        assert_eq!((e.seq, e.ts), (106, 1640 + 8000));
    }

    #[test]
    fn sequence_wraps_and_reordering_maps_back() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(8000, 65534, 0);
        let a = r.rewrite(t0, 7, 65535, 0, false).unwrap();
        let b = r.rewrite(t0, 7, 1, 320, false).unwrap();
        assert_eq!(b.seq, a.seq + 2);
        let late = r.rewrite(t0, 7, 0, 160, false).unwrap();
        assert_eq!(late.seq, a.seq + 1);
        assert_eq!(late.seq as u16, (a.seq + 1) as u16);
    }

    #[test]
    fn a_new_source_continues_on_the_streams_own_clock() {
        let t0 = Instant::now();
        let mut r = Rewriter::new(8000, 1, 0);
        r.set_clock_rate(48_000);
        r.rewrite(t0, 1, 10, 0, false).unwrap();
        let b = r.rewrite(t0, 2, 500, 77, false).unwrap();
        assert_eq!(b.ts, 960, "at least one 20 ms frame at 48 kHz");
    }
}
