//! G.711 μ-law and A-law sample conversion (ITU-T G.711), for the transcoding path only:
//! passthrough calls never touch the payload. Pure functions, no state.

use super::config::AudioCodec;

const ULAW_BIAS: i32 = 0x84;
const ULAW_CLIP: i32 = 32635;

/// One 16-bit linear sample to μ-law (segment search as in the ITU reference).
pub fn ulaw_encode(sample: i16) -> u8 {
    let mut s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    if s < 0 {
        s = -s;
    }
    s = s.min(ULAW_CLIP) + ULAW_BIAS;
    let exponent = (7 - (s.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

pub fn ulaw_decode(code: u8) -> i16 {
    let c = !code;
    let exponent = i32::from((c >> 4) & 0x07);
    let mantissa = i32::from(c & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if c & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// One 16-bit linear sample to A-law (13-bit magnitude, even bits inverted).
pub fn alaw_encode(sample: i16) -> u8 {
    let s = i32::from(sample) >> 3;
    let (sign, mag) = if s >= 0 { (0x80, s) } else { (0x00, -s - 1) };
    let mag = mag.min(0x0fff);
    let code = if mag < 32 {
        mag >> 1
    } else {
        let exponent = 31 - (mag as u32).leading_zeros() as i32 - 4;
        (exponent << 4) | ((mag >> exponent) & 0x0f)
    };
    ((sign | code) ^ 0x55) as u8
}

pub fn alaw_decode(code: u8) -> i16 {
    let c = i32::from(code ^ 0x55);
    let exponent = (c >> 4) & 0x07;
    let mantissa = c & 0x0f;
    let mag = if exponent == 0 { (mantissa << 4) + 8 } else { ((mantissa << 4) + 0x108) << (exponent - 1) };
    (if c & 0x80 != 0 { mag } else { -mag }) as i16
}

/// Decodes a G.711 payload, appending the samples.
pub fn decode(law: AudioCodec, payload: &[u8], out: &mut Vec<i16>) {
    match law {
        AudioCodec::Pcma => out.extend(payload.iter().map(|&b| alaw_decode(b))),
        _ => out.extend(payload.iter().map(|&b| ulaw_decode(b))),
    }
}

/// Encodes samples as a G.711 payload, appending the bytes.
pub fn encode(law: AudioCodec, pcm: &[i16], out: &mut Vec<u8>) {
    match law {
        AudioCodec::Pcma => out.extend(pcm.iter().map(|&s| alaw_encode(s))),
        _ => out.extend(pcm.iter().map(|&s| ulaw_encode(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_code_points() {
        // Silence and full scale per G.711 tables.
        assert_eq!(ulaw_encode(0), 0xff);
        assert_eq!(ulaw_decode(0xff), 0);
        assert_eq!(ulaw_encode(i16::MAX), 0x80);
        assert_eq!(ulaw_encode(i16::MIN), 0x00);
        assert_eq!(alaw_encode(0), 0xd5);
        assert_eq!(alaw_decode(0xd5), 8);
        assert_eq!(alaw_encode(i16::MAX), 0xaa);
        assert_eq!(alaw_encode(i16::MIN), 0x2a);
    }

    #[test]
    fn every_code_round_trips() {
        for c in 0..=255u8 {
            // μ-law has two zeros (0x7f and 0xff); both decode to 0 and 0 encodes as 0xff.
            if c != 0x7f {
                assert_eq!(ulaw_encode(ulaw_decode(c)), c, "μ-law {c:#x}");
            }
            assert_eq!(alaw_encode(alaw_decode(c)), c, "A-law {c:#x}");
        }
    }

    #[test]
    fn quantisation_error_stays_within_the_segment_step() {
        for s in (-32000i32..32000).step_by(37) {
            let s = s as i16;
            let step = (i32::from(s).abs() / 16).max(16);
            let u = i32::from(ulaw_decode(ulaw_encode(s)));
            let a = i32::from(alaw_decode(alaw_encode(s)));
            assert!((u - i32::from(s)).abs() <= step, "μ-law {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= step, "A-law {s} -> {a}");
        }
    }
}
