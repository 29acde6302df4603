//! The ban sync wire format and its checks, sans IO: one UDP datagram per ban or unban,
//! authenticated with HMAC-SHA256 under the profile's key, and replay-safe: a datagram older or
//! newer than [`WINDOW_MS`] is refused, and within the window each (sender epoch, sequence) is
//! accepted once. The epoch is random per process start, so a restarted sender never collides
//! with what the receiver remembers.
//!
//! Layout (big endian): `GWB1` | epoch u64 | sequence u64 | unix ms u64 | op u8 (1 ban, 2 unban)
//! | seconds u32 | family u8 (4 or 6) | address (4 or 16 bytes) | HMAC-SHA256 of all before (32).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

const MAGIC: &[u8; 4] = b"GWB1";
const TAG: usize = 32;
/// How far a datagram's timestamp may be from the receiver's clock (both nodes run NTP).
pub const WINDOW_MS: u64 = 5_000;
/// Sender epochs remembered; a fifth start within the window pushes out the oldest.
const EPOCHS: usize = 4;
/// Sequence numbers below the highest seen that are still tracked per epoch.
const REPLAY_BITS: u64 = 64;
/// The longest datagram (IPv6).
pub const MAX_DATAGRAM: usize = 4 + 8 + 8 + 8 + 1 + 4 + 1 + 16 + TAG;

/// What a datagram says: the ban service's own record of a change, carried as it is.
pub use crate::guard::SyncEvent as Change;

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("not a ban sync datagram")]
    Malformed,
    #[error("bad authentication tag (wrong key, or forged)")]
    BadTag,
    #[error("timestamp {0} ms off the local clock, outside the window")]
    Stale(i64),
    #[error("already seen (replayed or duplicated)")]
    Replay,
}

/// The sending half: numbers and signs datagrams.
#[derive(Debug)]
pub struct Sender {
    key: Vec<u8>,
    epoch: u64,
    next: u64,
}

impl Sender {
    /// `epoch`: random, chosen at start.
    pub fn new(key: &[u8], epoch: u64) -> Self {
        Self { key: key.to_vec(), epoch, next: 1 }
    }

    pub fn encode(&mut self, change: Change, now_unix_ms: u64) -> Vec<u8> {
        let seq = self.next;
        self.next += 1;
        let (op, ip, secs) = match change {
            // Rounded up, so a ban never ends earlier on the peer.
            Change::Ban(ip, d) => (1u8, ip, u32::try_from(d.as_millis().div_ceil(1000)).unwrap_or(u32::MAX)),
            Change::Unban(ip) => (2u8, ip, 0),
        };
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.epoch.to_be_bytes());
        out.extend_from_slice(&seq.to_be_bytes());
        out.extend_from_slice(&now_unix_ms.to_be_bytes());
        out.push(op);
        out.extend_from_slice(&secs.to_be_bytes());
        match ip {
            IpAddr::V4(a) => {
                out.push(4);
                out.extend_from_slice(&a.octets());
            }
            IpAddr::V6(a) => {
                out.push(6);
                out.extend_from_slice(&a.octets());
            }
        }
        let tag = mac(&self.key, &out);
        out.extend_from_slice(&tag);
        out
    }
}

fn mac(key: &[u8], data: &[u8]) -> [u8; TAG] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Replay state of one sender epoch.
#[derive(Debug, Clone, Copy)]
struct Seen {
    epoch: u64,
    highest: u64,
    /// Bit i: `highest - i` was seen.
    bits: u64,
}

/// The receiving half: checks and remembers what it accepted.
#[derive(Debug)]
pub struct Receiver {
    key: Vec<u8>,
    epochs: VecDeque<Seen>,
}

impl Receiver {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec(), epochs: VecDeque::with_capacity(EPOCHS) }
    }

    pub fn decode(&mut self, datagram: &[u8], now_unix_ms: u64) -> Result<Change, Refused> {
        if datagram.len() < 4 + 8 + 8 + 8 + 1 + 4 + 1 + 4 + TAG || &datagram[..4] != MAGIC {
            return Err(Refused::Malformed);
        }
        let (body, tag) = datagram.split_at(datagram.len() - TAG);
        // Constant-time comparison through the MAC's own verify.
        let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(body);
        m.verify_slice(tag).map_err(|_| Refused::BadTag)?;
        let u64_at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
        let (epoch, seq, ts) = (u64_at(4), u64_at(12), u64_at(20));
        let op = body[28];
        let secs = u32::from_be_bytes(body[29..33].try_into().expect("4 bytes"));
        let ip = match (body[33], &body[34..]) {
            (4, a) if a.len() == 4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(a).expect("4 bytes"))),
            (6, a) if a.len() == 16 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(a).expect("16 bytes"))),
            _ => return Err(Refused::Malformed),
        };
        let change = match op {
            1 => Change::Ban(ip, Duration::from_secs(u64::from(secs))),
            2 => Change::Unban(ip),
            _ => return Err(Refused::Malformed),
        };
        let skew = now_unix_ms as i64 - ts as i64;
        if skew.unsigned_abs() > WINDOW_MS {
            return Err(Refused::Stale(skew));
        }
        self.remember(epoch, seq)?;
        Ok(change)
    }

    fn remember(&mut self, epoch: u64, seq: u64) -> Result<(), Refused> {
        let Some(pos) = self.epochs.iter().position(|s| s.epoch == epoch) else {
            if self.epochs.len() == EPOCHS {
                self.epochs.pop_front();
            }
            self.epochs.push_back(Seen { epoch, highest: seq, bits: 1 });
            return Ok(());
        };
        let s = &mut self.epochs[pos];
        if seq > s.highest {
            let shift = seq - s.highest;
            s.bits = if shift >= REPLAY_BITS { 1 } else { (s.bits << shift) | 1 };
            s.highest = seq;
        } else {
            let back = s.highest - seq;
            if back >= REPLAY_BITS || s.bits & (1 << back) != 0 {
                return Err(Refused::Replay);
            }
            s.bits |= 1 << back;
        }
        // Most recently used last, so the stalest epoch is the one pushed out.
        let seen = self.epochs.remove(pos).expect("present");
        self.epochs.push_back(seen);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123";
    const T: u64 = 1_800_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_ban_and_an_unban_round_trip_for_both_families() {
        let mut tx = Sender::new(KEY, 7);
        let mut rx = Receiver::new(KEY);
        for change in [Change::Ban(ip("198.51.100.7"), Duration::from_secs(600)), Change::Unban(ip("2001:db8::7")), Change::Ban(ip("2001:db8::8"), Duration::from_millis(1500))] {
            let d = tx.encode(change, T);
            assert!(d.len() <= MAX_DATAGRAM);
            let want = match change {
                Change::Ban(a, d) => Change::Ban(a, Duration::from_secs(d.as_millis().div_ceil(1000) as u64)),
                other => other,
            };
            assert_eq!(rx.decode(&d, T + 10), Ok(want));
        }
    }

    #[test]
    fn a_wrong_key_or_a_flipped_bit_is_refused() {
        let d = Sender::new(KEY, 7).encode(Change::Unban(ip("198.51.100.7")), T);
        assert_eq!(Receiver::new(b"another-key-of-enough-length").decode(&d, T), Err(Refused::BadTag));
        for i in [5, 30, 34, d.len() - 1] {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert_eq!(Receiver::new(KEY).decode(&bad, T), Err(Refused::BadTag), "byte {i}");
        }
        assert_eq!(Receiver::new(KEY).decode(&d[..20], T), Err(Refused::Malformed));
    }

    #[test]
    fn a_replay_is_refused_and_reordering_within_the_window_is_not() {
        let mut tx = Sender::new(KEY, 7);
        let mut rx = Receiver::new(KEY);
        let first = tx.encode(Change::Unban(ip("198.51.100.1")), T);
        let second = tx.encode(Change::Unban(ip("198.51.100.2")), T);
        assert!(rx.decode(&second, T).is_ok());
        assert!(rx.decode(&first, T).is_ok(), "late but unseen");
        assert_eq!(rx.decode(&first, T), Err(Refused::Replay));
        assert_eq!(rx.decode(&second, T), Err(Refused::Replay));
        let far: Vec<_> = (0..70).map(|_| tx.encode(Change::Unban(ip("198.51.100.3")), T)).collect();
        assert!(rx.decode(&far[69], T).is_ok());
        assert_eq!(rx.decode(&far[0], T), Err(Refused::Replay), "too far behind to tell: refused");
    }

    #[test]
    fn old_or_future_datagrams_are_refused() {
        let mut tx = Sender::new(KEY, 7);
        let d = tx.encode(Change::Unban(ip("198.51.100.1")), T);
        assert!(matches!(Receiver::new(KEY).decode(&d, T + WINDOW_MS + 1), Err(Refused::Stale(_))));
        assert!(matches!(Receiver::new(KEY).decode(&d, T - WINDOW_MS - 1), Err(Refused::Stale(_))));
        assert!(Receiver::new(KEY).decode(&d, T + WINDOW_MS).is_ok());
    }

    #[test]
    fn a_restarted_sender_starts_a_new_epoch() {
        let mut rx = Receiver::new(KEY);
        let a = Sender::new(KEY, 1).encode(Change::Unban(ip("198.51.100.1")), T);
        let b = Sender::new(KEY, 2).encode(Change::Unban(ip("198.51.100.1")), T);
        assert!(rx.decode(&a, T).is_ok());
        assert!(rx.decode(&b, T).is_ok(), "same sequence number, new epoch");
        assert_eq!(rx.decode(&a, T), Err(Refused::Replay));
    }
}
