//! Fuzz targets: one function over `&[u8]` per attack surface, each checking invariants
//! (never a panic, plus what the surface must never do) with `assert!`.
//!
//! The same functions run two ways: as bolero property tests under `cargo test` (bounded, seeded
//! from `fuzz/seeds/<target>/`, mutated around those seeds), and as libFuzzer targets in the
//! `fuzz/` crate (`just fuzz SECONDS`). Only compiled for tests and with the `fuzz` feature.
//!
//! | target | surface |
//! |---|---|
//! | `sip_datagram` | a UDP datagram or WebSocket frame: keepalive, `message::parse`, the 400 for what fails, then the B2BUA as if from the SIP server |
//! | `sip_stream` | SIP over TCP: the stream framer, fed in arbitrary chunks, against the same bytes at once |
//! | `sdp` | offer/answer on both legs of a call's media (str0m for the browser, ours for the SIP server), then packets on each leg |
//! | `turn` | STUN/TURN messages and ChannelData into the TURN core from the lab profile, signed or not, and peer data back |
//! | `ws_session` | frames on agents' WebSockets into the agent edge (digest, registrar) and call control |
//! | `digest` | `Authorization` values against the digest server |
//! | `profile` | `profile::load_str` on arbitrary text and environment, then what the daemon derives from a valid profile |
//! | `guard` | failure reports, rate checks, bans and time (also backwards) into the guard |

mod digest;
mod guard;
mod profile;
mod sdp;
mod session;
mod sip;
mod turn;

pub use digest::digest;
pub use guard::guard;
pub use profile::profile;
pub use sdp::sdp;
pub use session::ws_session;
pub use sip::{sip_datagram, sip_stream};
pub use turn::turn;

use std::path::Path;
use std::sync::OnceLock;

use crate::profile::LoadedProfile;

/// Every target by name, as the `fuzz/` crate and the seed directories name them.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("sip_datagram", sip_datagram),
    ("sip_stream", sip_stream),
    ("sdp", sdp),
    ("turn", turn),
    ("ws_session", ws_session),
    ("digest", digest),
    ("profile", profile),
    ("guard", guard),
];

/// The lab profile, loaded once.
pub(crate) fn lab() -> &'static LoadedProfile {
    static LAB: OnceLock<LoadedProfile> = OnceLock::new();
    LAB.get_or_init(|| {
        crate::profile::load_str(Path::new("lab.toml"), include_str!("../../profiles/lab.toml"), [])
            .expect("the lab profile loads")
    })
}

/// Reads fuzz input as a sequence of small decisions and byte strings. Past the end every read
/// gives zero / empty, so any input is a complete program.
pub(crate) struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub(crate) fn new(data: &'a [u8]) -> Self {
        Input { data }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub(crate) fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    pub(crate) fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    pub(crate) fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.byte(), self.byte(), self.byte(), self.byte()])
    }

    pub(crate) fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[usize::from(self.byte()) % from.len()]
    }

    /// The rest of the input.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Splits at `sep`, dropping empty parts.
pub(crate) fn parts(data: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    data.split(move |b| *b == sep).filter(|p| !p.is_empty())
}

/// Mutates one of `seeds` as `mutations` says: how the bolero tests explore around the repo's
/// test messages (libFuzzer does this itself from the corpus).
pub fn mutate(seeds: &[Vec<u8>], mutations: &[u8]) -> Vec<u8> {
    let mut m = Input::new(mutations);
    let mut out = if seeds.is_empty() { Vec::new() } else { seeds[usize::from(m.u16()) % seeds.len()].clone() };
    let rounds = m.byte() % 8;
    for _ in 0..rounds {
        let at = if out.is_empty() { 0 } else { usize::from(m.u16()) % (out.len() + 1) };
        match m.byte() % 7 {
            0 if at < out.len() => out[at] ^= 1 << (m.byte() % 8),
            1 if at < out.len() => out[at] = m.byte(),
            2 => {
                let n = usize::from(m.byte() % 16).min(out.len() - at);
                out.drain(at..at + n);
            }
            3 => {
                let b = m.byte();
                let n = usize::from(m.byte() % 8) + 1;
                out.splice(at..at, std::iter::repeat_n(b, n));
            }
            4 => out.truncate(at),
            5 if !seeds.is_empty() => {
                // Splice in a piece of another seed.
                let other = &seeds[usize::from(m.u16()) % seeds.len()];
                let from = usize::from(m.u16()) % (other.len() + 1);
                let n = usize::from(m.byte()).min(other.len() - from);
                out.splice(at..at, other[from..from + n].iter().copied());
            }
            6 => {
                // Duplicate a line (a header, an SDP attribute).
                let start = out[..at].iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                let end = out[at..].iter().position(|b| *b == b'\n').map_or(out.len(), |p| at + p + 1);
                let line = out[start..end].to_vec();
                out.splice(start..start, line);
            }
            _ => {}
        }
    }
    out
}

/// The input files of a target in `fuzz/<kind>/<target>/`: `seeds` (collected from the tests by
/// `fuzz/collect-seeds`) or `regressions` (inputs that once failed, kept by hand).
pub fn inputs(kind: &str, target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz").join(kind).join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// Seeds and regressions of a target.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let mut all = inputs("seeds", target);
    all.extend(inputs("regressions", target));
    all
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Each target, as a property test: every seed as it is, then bolero's inputs both raw and
    /// as mutations of the seeds. Bounded so the whole set stays within a few seconds; longer
    /// runs are `just fuzz`.
    fn run(name: &str) {
        let target = TARGETS.iter().find(|(n, _)| *n == name).expect("a known target").1;
        let seeds = seeds(name);
        assert!(!seeds.is_empty(), "fuzz/seeds/{name} has seeds");
        for seed in &seeds {
            target(seed);
        }
        let iterations = std::env::var("GATEWAYD_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
        bolero::check!()
            .with_iterations(iterations)
            .with_max_len(4096)
            .with_test_time(Duration::from_secs(2))
            .for_each(|input: &[u8]| match input.split_first() {
                Some((b, rest)) if b % 4 != 0 => target(&mutate(&seeds, rest)),
                _ => target(input),
            });
    }

    #[test]
    fn fuzz_sip_datagram() {
        run("sip_datagram");
    }

    #[test]
    fn fuzz_sip_stream() {
        run("sip_stream");
    }

    #[test]
    fn fuzz_sdp() {
        run("sdp");
    }

    #[test]
    fn fuzz_turn() {
        run("turn");
    }

    #[test]
    fn fuzz_ws_session() {
        run("ws_session");
    }

    #[test]
    fn fuzz_digest() {
        run("digest");
    }

    #[test]
    fn fuzz_profile() {
        run("profile");
    }

    #[test]
    fn fuzz_guard() {
        run("guard");
    }

    /// Found by `sip_datagram` (fuzz/regressions/sip_datagram/status-000): `parse` accepts a
    /// response whose status code is not three digits in 100-699 and rsip prints it back as
    /// `SIP/2.0 0 ...`. RFC 3261 7.2 wants 3DIGIT; now refused.
    #[test]
    fn a_status_code_outside_100_to_699_is_refused() {
        let with = |code: &str| format!("SIP/2.0 {code} X\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
        for bad in ["000", "001", "099", "700", "0100", "1000", "20"] {
            assert!(crate::sip::message::parse(with(bad).as_bytes()).is_err(), "status {bad} accepted");
        }
        for good in ["100", "200", "699"] {
            assert!(crate::sip::message::parse(with(good).as_bytes()).is_ok(), "status {good} refused");
        }
    }

    #[test]
    fn input_reads_past_the_end_as_zero() {
        let mut i = Input::new(b"cd");
        assert_eq!(i.byte(), b'c');
        assert_eq!(i.rest(), b"d");
        assert_eq!((i.byte(), i.u16(), i.rest()), (0, 0, &b""[..]));
        assert!(i.is_empty());
    }
}
