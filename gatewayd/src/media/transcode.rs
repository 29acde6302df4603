//! Opus (browser leg, 48 kHz RTP clock) <-> G.711 (SIP server leg, 8 kHz) for one call, both
//! ways, as sans-IO state: RTP payloads and numbers in, RTP payloads and numbers out.
//! libopus runs at 8 kHz itself (no resampler); the RTP clock stays 48 kHz as RFC 7587 says.
//! Toward G.711 a lost Opus packet is rebuilt from the next packet's in-band FEC, or concealed;
//! toward Opus losses are left for the browser to conceal. RFC 4733 events keep their place in
//! the stream with timestamps and durations rescaled. It must not touch sockets or SDP.

use opus::{Application, Bitrate, Channels, Decoder, Encoder};

use super::config::AudioCodec;
use super::g711;

/// libopus works at the G.711 rate; one RTP tick at 48 kHz is this many at 8 kHz.
const PCM_RATE: u32 = 8000;
const RATIO: u32 = 6;
/// The frame toward the browser: 20 ms.
const FRAME: usize = 160;
/// Most samples one Opus packet may carry at 8 kHz (120 ms).
const MAX_PACKET_SAMPLES: usize = 960;
/// Gaps longer than this are a new talkspurt, not loss worth concealing.
const MAX_CONCEALED: u16 = 5;
/// Complexity 5 costs about a third of the default 10 and is transparent for narrowband voice.
const COMPLEXITY: i32 = 5;
const BITRATE: i32 = 24_000;
/// Loss the encoder plans its in-band FEC for until the browser reports its own.
const DEFAULT_LOSS_PERCENT: i32 = 10;

/// One RTP packet's worth leaving the transcoder, numbered for the leg it goes to (the
/// rewriter toward that leg still makes numbering continuous across sources).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u16,
    pub ts: u32,
    pub marker: bool,
    pub event: bool,
    pub payload: Vec<u8>,
}

/// Counters of the decoding side, for the browser leg's quality figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeCounts {
    pub decoded: u64,
    /// Lost packets rebuilt from the following packet's in-band FEC.
    pub recovered: u64,
    /// Lost packets replaced by packet-loss concealment.
    pub concealed: u64,
    /// Packets libopus refused.
    pub corrupt: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct CodecError(#[from] opus::Error);

/// Sequence numbers of one input stream mapped onto one output stream: a gap in the input
/// stays a gap in the output unless frames are made up for it.
#[derive(Debug, Clone, Default)]
struct SeqMap {
    last_in: Option<u16>,
    out: u16,
}

impl SeqMap {
    /// How far `seq` moves the stream on (1 = next packet), None for a late or repeated one.
    fn advance(&mut self, seq: u16) -> Option<u16> {
        let step = match self.last_in {
            None => 1,
            Some(last) => {
                let d = seq.wrapping_sub(last) as i16;
                if d <= 0 {
                    return None;
                }
                d as u16
            }
        };
        self.last_in = Some(seq);
        Some(step)
    }

    fn skip(&mut self, n: u16) {
        self.out = self.out.wrapping_add(n);
    }

    fn next(&mut self) -> u16 {
        self.out = self.out.wrapping_add(1);
        self.out
    }
}

/// RTP timestamps of one clock mapped onto another (×6 or ÷6), kept extended so wrap-around
/// and reordering do not jump.
#[derive(Debug, Clone)]
struct TsMap {
    up: bool,
    last_in: Option<u32>,
    ext: i64,
}

impl TsMap {
    fn new(up: bool) -> TsMap {
        TsMap { up, last_in: None, ext: 0 }
    }

    /// The extended input timestamp of `ts`.
    fn extend(&mut self, ts: u32) -> i64 {
        match self.last_in {
            None => {
                self.last_in = Some(ts);
                self.ext = i64::from(ts);
                self.ext
            }
            Some(last) => {
                let d = i64::from(ts.wrapping_sub(last) as i32);
                let e = self.ext + d;
                if d > 0 {
                    self.last_in = Some(ts);
                    self.ext = e;
                }
                e
            }
        }
    }

    fn out(&self, ext: i64) -> u32 {
        let v = if self.up { ext * i64::from(RATIO) } else { ext.div_euclid(i64::from(RATIO)) };
        v.rem_euclid(1 << 32) as u32
    }

    fn map(&mut self, ts: u32) -> u32 {
        let e = self.extend(ts);
        self.out(e)
    }
}

/// Rescales the duration field of each RFC 4733 event block (4 bytes each).
fn rescale_events(payload: &[u8], up: bool) -> Vec<u8> {
    let mut out = payload.to_vec();
    for block in out.chunks_exact_mut(4) {
        let d = u32::from(u16::from_be_bytes([block[2], block[3]]));
        // An 8 kHz event longer than 1.36 s does not fit at 48 kHz: it stays at the maximum.
        let d = if up { (d * RATIO).min(0xffff) } else { d / RATIO };
        block[2..4].copy_from_slice(&(d as u16).to_be_bytes());
    }
    out
}

/// Browser Opus in, G.711 out (toward the SIP server).
pub struct OpusToG711 {
    decoder: Decoder,
    law: AudioCodec,
    seq: SeqMap,
    ts: TsMap,
    last_ts: Option<u32>,
    pcm: Vec<i16>,
    pub counts: DecodeCounts,
}

impl OpusToG711 {
    pub fn new(law: AudioCodec) -> Result<OpusToG711, CodecError> {
        Ok(OpusToG711 {
            decoder: Decoder::new(PCM_RATE, Channels::Mono)?,
            law,
            seq: SeqMap::default(),
            ts: TsMap::new(false),
            last_ts: None,
            pcm: vec![0; MAX_PACKET_SAMPLES],
            counts: DecodeCounts::default(),
        })
    }

    pub fn law(&self) -> AudioCodec {
        self.law
    }

    fn frame(&self, seq: u16, ts: u32, marker: bool, samples: usize) -> Frame {
        let mut payload = Vec::with_capacity(samples);
        g711::encode(self.law, &self.pcm[..samples], &mut payload);
        Frame { seq, ts, marker, event: false, payload }
    }

    /// One Opus packet: frames for the packets lost just before it (FEC, then concealment),
    /// then its own.
    pub fn audio(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        let Some(step) = self.seq.advance(seq) else { return };
        let out_ts = self.ts.map(ts);
        let samples = opus::packet::get_nb_samples(payload, PCM_RATE).unwrap_or(FRAME).min(MAX_PACKET_SAMPLES);
        let missing = step - 1;
        let rebuild = if (1..=MAX_CONCEALED).contains(&missing) { missing } else { 0 };
        // The lost packets' length: the timestamp gap shared out, else this packet's.
        let lost_len = match self.last_ts {
            Some(last) => {
                let gap = (ts.wrapping_sub(last) / RATIO) as usize / usize::from(step);
                if gap > 0 && gap <= MAX_PACKET_SAMPLES && gap % 20 == 0 { gap } else { samples }
            }
            None => samples,
        };
        self.last_ts = Some(ts);
        self.seq.skip(missing - rebuild);
        for k in (1..=rebuild).rev() {
            // The packet right before this one is in this one's FEC; older ones are concealed.
            let fec = k == 1;
            let n = match self.decoder.decode(if fec { payload } else { &[] }, &mut self.pcm[..lost_len], fec) {
                Ok(n) => n,
                Err(_) => continue,
            };
            if fec {
                self.counts.recovered += 1;
            } else {
                self.counts.concealed += 1;
            }
            let at = out_ts.wrapping_sub((lost_len * usize::from(k)) as u32);
            let seq = self.seq.next();
            out.push(self.frame(seq, at, false, n));
        }
        match self.decoder.decode(payload, &mut self.pcm, false) {
            Ok(n) => {
                self.counts.decoded += 1;
                let seq = self.seq.next();
                out.push(self.frame(seq, out_ts, marker, n));
            }
            Err(_) => {
                // A broken packet is a lost one: its number stays a gap.
                self.counts.corrupt += 1;
                self.seq.skip(1);
            }
        }
    }

    /// An RFC 4733 event packet at 48 kHz, passed on at 8 kHz in its place in the stream.
    pub fn event(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        let Some(step) = self.seq.advance(seq) else { return };
        self.seq.skip(step - 1);
        let ts = self.ts.map(ts);
        out.push(Frame { seq: self.seq.next(), ts, marker, event: true, payload: rescale_events(payload, false) });
    }
}

/// G.711 in (from the SIP server), Opus out toward the browser, in 20 ms frames whatever the
/// server's packet time.
pub struct G711ToOpus {
    encoder: Encoder,
    seq: SeqMap,
    ts: TsMap,
    /// Samples not yet encoded and the 8 kHz (extended) timestamp of the first of them.
    fifo: Vec<i16>,
    fifo_ts: i64,
    marker: bool,
    buf: Vec<u8>,
    pub encoded: u64,
}

impl G711ToOpus {
    pub fn new() -> Result<G711ToOpus, CodecError> {
        let mut encoder = Encoder::new(PCM_RATE, Channels::Mono, Application::Voip)?;
        encoder.set_complexity(COMPLEXITY)?;
        encoder.set_bitrate(Bitrate::Bits(BITRATE))?;
        encoder.set_inband_fec(true)?;
        encoder.set_packet_loss_perc(DEFAULT_LOSS_PERCENT)?;
        encoder.set_dtx(false)?;
        Ok(G711ToOpus { encoder, seq: SeqMap::default(), ts: TsMap::new(true), fifo: Vec::with_capacity(FRAME * 4), fifo_ts: 0, marker: false, buf: vec![0; 1500], encoded: 0 })
    }

    /// The loss the browser reports, so in-band FEC carries as much as it needs.
    pub fn set_expected_loss(&mut self, fraction: f32) {
        let pct = ((fraction * 100.0).round() as i32).clamp(1, 50);
        let _ = self.encoder.set_packet_loss_perc(pct);
    }

    pub fn audio(&mut self, law: AudioCodec, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        let Some(step) = self.seq.advance(seq) else { return };
        let ext = self.ts.extend(ts);
        if step > 1 || ext != self.fifo_ts + self.fifo.len() as i64 {
            // Loss or a new timeline: the unencoded tail is dropped and the gap left to the
            // browser's concealment, so the timeline stays true.
            self.fifo.clear();
            self.fifo_ts = ext;
        }
        if self.fifo.is_empty() {
            self.fifo_ts = ext;
        }
        self.seq.skip(step - 1);
        self.marker |= marker;
        g711::decode(law, payload, &mut self.fifo);
        let mut used = 0;
        while self.fifo.len() - used >= FRAME {
            let Ok(n) = self.encoder.encode(&self.fifo[used..used + FRAME], &mut self.buf) else {
                used += FRAME;
                self.fifo_ts += FRAME as i64;
                self.seq.skip(1);
                continue;
            };
            self.encoded += 1;
            out.push(Frame { seq: self.seq.next(), ts: self.ts.out(self.fifo_ts), marker: std::mem::take(&mut self.marker), event: false, payload: self.buf[..n].to_vec() });
            used += FRAME;
            self.fifo_ts += FRAME as i64;
        }
        self.fifo.drain(..used);
    }

    /// An RFC 4733 event packet at 8 kHz, passed on at 48 kHz in its place in the stream.
    pub fn event(&mut self, seq: u16, ts: u32, marker: bool, payload: &[u8], out: &mut Vec<Frame>) {
        let Some(step) = self.seq.advance(seq) else { return };
        self.seq.skip(step - 1);
        let ext = self.ts.extend(ts);
        out.push(Frame { seq: self.seq.next(), ts: self.ts.out(ext), marker, event: true, payload: rescale_events(payload, true) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f32, from: usize, n: usize) -> Vec<i16> {
        (from..from + n).map(|i| ((2.0 * std::f32::consts::PI * freq * i as f32 / 8000.0).sin() * 12000.0) as i16).collect()
    }

    fn ulaw(pcm: &[i16]) -> Vec<u8> {
        let mut v = Vec::new();
        g711::encode(AudioCodec::Pcmu, pcm, &mut v);
        v
    }

    /// The strongest frequency in `pcm` (8 kHz), by a plain DFT over 10 Hz steps.
    fn peak_hz(pcm: &[i16]) -> f32 {
        let mut best = (0.0, 0.0);
        for f in (100..3500).step_by(10) {
            let w = 2.0 * std::f64::consts::PI * f64::from(f) / 8000.0;
            let (mut re, mut im) = (0.0, 0.0);
            for (i, &s) in pcm.iter().enumerate() {
                re += f64::from(s) * (w * i as f64).cos();
                im += f64::from(s) * (w * i as f64).sin();
            }
            let p = re * re + im * im;
            if p > best.1 {
                best = (f as f32, p);
            }
        }
        best.0
    }

    fn decode_ulaw(frames: &[Frame]) -> Vec<i16> {
        let mut pcm = Vec::new();
        for f in frames.iter().filter(|f| !f.event) {
            g711::decode(AudioCodec::Pcmu, &f.payload, &mut pcm);
        }
        pcm
    }

    /// A tone through both directions: G.711 -> Opus -> G.711, 50 packets of 20 ms.
    fn round_trip(lose: impl Fn(usize) -> bool) -> (Vec<Frame>, Vec<Frame>, DecodeCounts) {
        let mut enc = G711ToOpus::new().unwrap();
        let mut dec = OpusToG711::new(AudioCodec::Pcmu).unwrap();
        let (mut opus, mut back) = (Vec::new(), Vec::new());
        for i in 0..50usize {
            enc.audio(AudioCodec::Pcmu, 1000 + i as u16, 5000 + (i * 160) as u32, i == 0, &ulaw(&tone(440.0, i * 160, 160)), &mut opus);
        }
        for (i, f) in opus.iter().enumerate() {
            if !lose(i) {
                dec.audio(f.seq, f.ts, f.marker, &f.payload, &mut back);
            }
        }
        (opus, back, dec.counts)
    }

    #[test]
    fn a_tone_survives_both_directions_with_numbers_on_each_clock() {
        let (opus, back, counts) = round_trip(|_| false);
        assert_eq!(opus.len(), 50);
        assert!(opus[0].marker && !opus[1].marker);
        for w in opus.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 960, "48 kHz clock: 20 ms is 960 ticks");
            assert!(w[1].payload.len() < 160, "Opus is smaller than G.711: {}", w[1].payload.len());
        }
        assert_eq!(back.len(), 50);
        for w in back.windows(2) {
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160, "8 kHz clock again");
            assert_eq!(w[1].payload.len(), 160);
        }
        assert_eq!(counts, DecodeCounts { decoded: 50, ..Default::default() });
        // Skip the codec's start-up, then the tone must be there, at its frequency.
        let pcm = decode_ulaw(&back[10..]);
        let hz = peak_hz(&pcm);
        assert!((430.0..=450.0).contains(&hz), "peak at {hz} Hz");
        let rms = (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        assert!(rms > 4000.0, "energy kept: rms {rms}");
    }

    #[test]
    fn a_lost_packet_is_rebuilt_from_fec_and_longer_gaps_concealed() {
        let (_, back, counts) = round_trip(|i| i == 20 || (30..33).contains(&i));
        assert_eq!(counts.recovered, 2, "{counts:?}");
        assert_eq!(counts.concealed, 2, "{counts:?}");
        assert_eq!(back.len(), 50, "every 20 ms has a G.711 packet");
        for w in back.windows(2) {
            assert_eq!(w[1].seq, w[0].seq.wrapping_add(1));
            assert_eq!(w[1].ts.wrapping_sub(w[0].ts), 160);
        }
        let hz = peak_hz(&decode_ulaw(&back[18..24]));
        assert!((430.0..=450.0).contains(&hz), "the rebuilt frame still carries the tone: {hz} Hz");
    }

    #[test]
    fn long_gaps_stay_gaps_and_late_packets_are_dropped() {
        let (opus, _, _) = round_trip(|_| false);
        let mut dec = OpusToG711::new(AudioCodec::Pcma).unwrap();
        let mut back = Vec::new();
        dec.audio(opus[0].seq, opus[0].ts, false, &opus[0].payload, &mut back);
        dec.audio(opus[20].seq, opus[20].ts, false, &opus[20].payload, &mut back);
        dec.audio(opus[10].seq, opus[10].ts, false, &opus[10].payload, &mut back);
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].seq.wrapping_sub(back[0].seq), 20, "the gap shows as loss");
        assert_eq!(back[1].ts.wrapping_sub(back[0].ts), 20 * 160);
        assert_eq!(dec.counts.concealed + dec.counts.recovered, 0);
        assert_eq!(dec.law(), AudioCodec::Pcma);
    }

    #[test]
    fn thirty_ms_packets_become_twenty_ms_frames_on_one_timeline() {
        let mut enc = G711ToOpus::new().unwrap();
        let mut opus = Vec::new();
        for i in 0..4usize {
            enc.audio(AudioCodec::Pcmu, i as u16, (i * 240) as u32, false, &ulaw(&tone(440.0, i * 240, 240)), &mut opus);
        }
        assert_eq!(opus.len(), 6, "960 samples make six 20 ms frames");
        for (k, f) in opus.iter().enumerate() {
            assert_eq!(f.ts, (k * 960) as u32);
            assert_eq!(f.seq, (k + 1) as u16);
        }
    }

    #[test]
    fn events_keep_their_place_with_rescaled_numbers() {
        let mut enc = G711ToOpus::new().unwrap();
        let mut out = Vec::new();
        enc.audio(AudioCodec::Pcmu, 7, 1600, false, &ulaw(&tone(440.0, 0, 160)), &mut out);
        // Digit 5, end bit, volume 10, duration 800 (100 ms at 8 kHz).
        enc.event(8, 1760, true, &[5, 0x8a, 0x03, 0x20], &mut out);
        enc.audio(AudioCodec::Pcmu, 10, 2080, false, &ulaw(&tone(440.0, 0, 160)), &mut out);
        assert_eq!(out.len(), 3);
        assert!(out[1].event && out[1].marker);
        assert_eq!(out[1].payload, vec![5, 0x8a, 0x12, 0xc0], "4800 ticks at 48 kHz");
        assert_eq!(out[1].ts.wrapping_sub(out[0].ts), 960);
        assert_eq!((out[1].seq.wrapping_sub(out[0].seq), out[2].seq.wrapping_sub(out[1].seq)), (1, 2), "the lost packet is still a gap");

        let mut dec = OpusToG711::new(AudioCodec::Pcmu).unwrap();
        let mut back = Vec::new();
        dec.event(100, 96_000, true, &out[1].payload, &mut back);
        dec.event(101, 96_000, false, &[5, 0x8a, 0xff, 0xff], &mut back);
        assert_eq!(back[0].payload, vec![5, 0x8a, 0x03, 0x20]);
        assert_eq!(back[0].ts, 16_000);
        assert_eq!(back[1].payload[2..], 10922u16.to_be_bytes());
        assert_eq!(back[1].ts, back[0].ts, "one event, one timestamp");
    }

    #[test]
    fn timestamps_map_across_wrap_around() {
        let mut up = TsMap::new(true);
        let a = up.map(u32::MAX - 159);
        let b = up.map(0);
        assert_eq!(b.wrapping_sub(a), 960);
        let mut down = TsMap::new(false);
        let a = down.map(u32::MAX - 959);
        let b = down.map(0);
        assert_eq!(b.wrapping_sub(a), 160);
        assert_eq!(down.map(u32::MAX - 1919).wrapping_sub(a) as i32, -160, "a late packet maps back");
    }

    #[test]
    fn expected_loss_is_bounded() {
        let mut enc = G711ToOpus::new().unwrap();
        enc.set_expected_loss(0.0);
        assert_eq!(enc.encoder.get_packet_loss_perc().unwrap(), 1);
        enc.set_expected_loss(0.9);
        assert_eq!(enc.encoder.get_packet_loss_perc().unwrap(), 50);
    }
}
