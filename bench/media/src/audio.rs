//! Real audio for the transcoding mode: an Opus stream of a speech-like signal, encoded once
//! with libopus the way a browser sends it (48 kHz, mono, 20 ms, in-band FEC) and replayed,
//! and a PCMU tone for the plain side; and on the receiving side, the checks that the bridge
//! really transcoded (payload type, packet size, decoded energy) and RTP-style loss from the
//! received sequence numbers (the bridge renumbers, so sent and received cannot be matched
//! one to one). Everything is precomputed or sampled so the load client stays cheap.

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

/// One replayed loop: 5 s of 20 ms frames.
const LOOP_FRAMES: usize = 250;
/// 20 ms at 48 kHz.
const OPUS_FRAME: usize = 960;
/// 20 ms at 8 kHz.
pub const PCMU_FRAME: usize = 160;
/// One call in this many has its received Opus stream decoded for the energy check.
pub const PROBE_EVERY_NTH_CALL: usize = 50;

/// A voice-like signal at `rate`: a few harmonics of a gliding 110–190 Hz fundamental under
/// a 4 Hz syllable envelope, so the codecs see changing spectra rather than one steady tone.
fn voice(rate: f64, n: usize) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..n)
        .map(|i| {
            let t = i as f64 / rate;
            let f0 = 150.0 + 40.0 * (2.0 * std::f64::consts::PI * 0.3 * t).sin();
            phase += 2.0 * std::f64::consts::PI * f0 / rate;
            let env = 0.55 + 0.45 * (2.0 * std::f64::consts::PI * 4.0 * t).sin();
            let s: f64 = [(1.0, 1.0), (2.0, 0.6), (3.0, 0.4), (5.0, 0.25), (8.0, 0.15)].iter().map(|(h, a)| a * (h * phase).sin()).sum();
            (s * env * 6000.0) as i16
        })
        .collect()
}

/// The browser side's Opus stream: LOOP_FRAMES packets, replayed in order.
pub fn opus_stream() -> Vec<Vec<u8>> {
    let mut enc = Encoder::new(48_000, Channels::Mono, Application::Voip).expect("opus encoder");
    enc.set_bitrate(Bitrate::Bits(32_000)).unwrap();
    enc.set_inband_fec(true).unwrap();
    enc.set_packet_loss_perc(10).unwrap();
    let pcm = voice(48_000.0, LOOP_FRAMES * OPUS_FRAME);
    let mut buf = [0u8; 1500];
    pcm.chunks_exact(OPUS_FRAME)
        .map(|f| {
            let n = enc.encode(f, &mut buf).expect("encode");
            buf[..n].to_vec()
        })
        .collect()
}

/// The plain side's PCMU: a 440 Hz tone, 50 frames (exactly 440 cycles, so the loop is seamless).
pub fn pcmu_stream() -> Vec<[u8; PCMU_FRAME]> {
    (0..50)
        .map(|f| {
            let mut frame = [0u8; PCMU_FRAME];
            for (k, b) in frame.iter_mut().enumerate() {
                let i = f * PCMU_FRAME + k;
                *b = ulaw_encode(((2.0 * std::f64::consts::PI * 440.0 * i as f64 / 8000.0).sin() * 10_000.0) as i16);
            }
            frame
        })
        .collect()
}

/// G.711 µ-law (ITU-T G.711, with the usual bias of 0x84).
pub fn ulaw_encode(pcm: i16) -> u8 {
    let sign = if pcm < 0 { 0x80 } else { 0 };
    let mag = (i32::from(pcm).abs().min(32_635) + 0x84) as u32;
    let exp = (31 - mag.leading_zeros()).saturating_sub(7).min(7);
    let mantissa = (mag >> (exp + 3)) & 0x0f;
    !(sign | (exp << 4) as u8 | mantissa as u8)
}

pub fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exp = u32::from((c >> 4) & 7);
    let mag = ((i32::from(c & 0x0f) << 3) + 0x84) << exp;
    (if c & 0x80 != 0 { 0x84 - mag } else { mag - 0x84 }) as i16
}

/// Loss of one received stream from its sequence numbers (as an RTP receiver counts it):
/// packets expected between the first and the highest number seen, less those received.
#[derive(Default, Clone, Copy)]
pub struct SeqLoss {
    first: Option<u64>,
    highest: u64,
    last16: u16,
    pub received: u64,
}

impl SeqLoss {
    /// A 16-bit sequence number, extended here.
    pub fn record16(&mut self, seq: u16) {
        let ext = match self.first {
            None => u64::from(seq) + (1 << 32),
            Some(_) => (self.highest as i64 + i64::from(seq.wrapping_sub(self.last16) as i16)) as u64,
        };
        if ext >= self.highest {
            self.last16 = seq;
        }
        self.record(ext);
    }

    /// An already extended sequence number.
    pub fn record(&mut self, ext: u64) {
        self.received += 1;
        match self.first {
            None => {
                self.first = Some(ext);
                self.highest = ext;
            }
            Some(f) => {
                self.first = Some(f.min(ext));
                self.highest = self.highest.max(ext);
            }
        }
    }

    pub fn expected(&self) -> u64 {
        self.first.map_or(0, |f| self.highest - f + 1)
    }
}

/// What arrived on one side during the window: the right payload type and size or not, and
/// the energy of the audio in it.
#[derive(Default)]
pub struct RxCheck {
    pub good: u64,
    /// Packets with another payload type or a size the expected codec cannot have.
    pub wrong: u64,
    pub expected: u64,
    pub received: u64,
    sum_sq: f64,
    samples: u64,
}

impl RxCheck {
    pub fn verdict(&mut self, ok: bool) {
        if ok {
            self.good += 1;
        } else {
            self.wrong += 1;
        }
    }

    pub fn energy(&mut self, pcm: &[i16]) {
        self.sum_sq += pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        self.samples += pcm.len() as u64;
    }

    pub fn rms(&self) -> f64 {
        if self.samples == 0 { 0.0 } else { (self.sum_sq / self.samples as f64).sqrt() }
    }

    pub fn add_loss(&mut self, s: &SeqLoss) {
        self.expected += s.expected();
        self.received += s.received;
    }

    pub fn loss(&self) -> f64 {
        if self.expected == 0 { 1.0 } else { 1.0 - self.received as f64 / self.expected as f64 }
    }

    pub fn json(&self) -> String {
        format!("{{\"good\":{},\"wrong\":{},\"expected\":{},\"received\":{},\"loss\":{:.5},\"rms\":{:.0}}}", self.good, self.wrong, self.expected, self.received, self.loss(), self.rms())
    }
}

/// Decodes one call's received Opus stream, every packet in order (so the level is true), at
/// 8 kHz: a sample of the calls is probed so the client stays cheap.
pub struct OpusProbe {
    dec: Decoder,
    pcm: Vec<i16>,
}

impl OpusProbe {
    pub fn new() -> OpusProbe {
        OpusProbe { dec: Decoder::new(8000, Channels::Mono).expect("opus decoder"), pcm: vec![0; 960] }
    }

    /// A packet libopus refuses counts as a wrong one.
    pub fn check(&mut self, payload: &[u8], check: &mut RxCheck) {
        match self.dec.decode(payload, &mut self.pcm, false) {
            Ok(n) => check.energy(&self.pcm[..n]),
            Err(_) => check.wrong += 1,
        }
    }
}

impl Default for OpusProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_round_trips_within_its_step() {
        for s in [-32000i16, -1000, -1, 0, 1, 100, 1000, 32000] {
            let d = ulaw_decode(ulaw_encode(s));
            assert!((i32::from(d) - i32::from(s)).abs() <= i32::from(s).abs() / 16 + 8, "{s} -> {d}");
        }
    }

    #[test]
    fn the_streams_carry_audio_and_look_like_their_codecs() {
        let opus = opus_stream();
        assert_eq!(opus.len(), LOOP_FRAMES);
        assert!(opus.iter().all(|p| p.len() > 20 && p.len() < 160), "20 ms Opus at 32 kbit/s is ~80 bytes");
        let mut probe = OpusProbe::new();
        let mut check = RxCheck::default();
        for p in opus.iter().cycle().take(500) {
            probe.check(p, &mut check);
        }
        assert!(check.rms() > 1000.0, "rms {}", check.rms());
        let mut pcmu = RxCheck::default();
        pcmu.energy(&pcmu_stream()[3].map(ulaw_decode));
        assert!(pcmu.rms() > 6000.0, "rms {}", pcmu.rms());
    }

    #[test]
    fn loss_counts_gaps_across_wrap_around() {
        let mut s = SeqLoss::default();
        for q in (65530u16..=65535).chain(0..10).filter(|&q| q != 3) {
            s.record16(q);
        }
        assert_eq!((s.expected(), s.received), (16, 15));
    }
}
