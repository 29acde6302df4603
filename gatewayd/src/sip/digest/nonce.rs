//! Self-validating nonces and bounded nonce-count tracking.
//!
//! A nonce is `base64url(issued_ms || random || HMAC-SHA256(secret, issued_ms || random)[..16])`:
//! the server can tell its own nonces from forged ones and read their age without storing
//! anything per challenge. Only nonces that have authenticated a request are remembered, with
//! the highest nonce-count seen, in a map of bounded size.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::{BTreeSet, HashMap};

const RANDOM_LEN: usize = 8;
const TAG_LEN: usize = 16;
const NONCE_LEN: usize = 8 + RANDOM_LEN + TAG_LEN;

/// Issues and checks nonces with one server secret.
pub(crate) struct NonceKey {
    mac: Hmac<Sha256>,
}

/// What a nonce presented by a client turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NonceCheck {
    /// Ours and within its lifetime; `issued_ms` is when it was made.
    Fresh { issued_ms: u64 },
    /// Ours but too old (or from the future, e.g. after a clock step back).
    Expired,
    /// Not made with our secret (forged, mangled, or from before a secret change).
    Foreign,
}

impl NonceKey {
    pub(crate) fn new(secret: &[u8]) -> Self {
        let mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
        NonceKey { mac }
    }

    fn tag(&self, body: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = self.mac.clone();
        mac.update(b"gatewayd digest nonce v1");
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }

    pub(crate) fn issue(&self, now_ms: u64, random: [u8; RANDOM_LEN]) -> String {
        let mut raw = Vec::with_capacity(NONCE_LEN);
        raw.extend_from_slice(&now_ms.to_be_bytes());
        raw.extend_from_slice(&random);
        let tag = self.tag(&raw);
        raw.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub(crate) fn check(&self, nonce: &str, now_ms: u64, lifetime_ms: u64) -> NonceCheck {
        use subtle::ConstantTimeEq;
        // Longer input than a nonce of ours can never be one; skip decoding it.
        if nonce.len() > 64 {
            return NonceCheck::Foreign;
        }
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceCheck::Foreign;
        };
        if raw.len() != NONCE_LEN {
            return NonceCheck::Foreign;
        }
        let (body, tag) = raw.split_at(8 + RANDOM_LEN);
        if !bool::from(self.tag(body).ct_eq(tag)) {
            return NonceCheck::Foreign;
        }
        let issued_ms = u64::from_be_bytes(body[..8].try_into().expect("8 bytes"));
        // A small allowance for nonces issued "later" than now by a clock that stepped back.
        if issued_ms > now_ms.saturating_add(5_000)
            || now_ms.saturating_sub(issued_ms) > lifetime_ms
        {
            return NonceCheck::Expired;
        }
        NonceCheck::Fresh { issued_ms }
    }
}

/// Outcome of recording a nonce-count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CountCheck {
    /// Higher than any seen for this nonce: accepted and recorded.
    Accepted,
    /// Not higher than one seen before: a replay.
    Replayed,
    /// The nonce's history was evicted; we cannot rule out a replay, so a new nonce is needed.
    Forgotten,
}

/// Highest nonce-count per nonce, capacity-limited. When full, the nonce issued earliest is
/// evicted and the eviction horizon moves to its issue time: an untracked nonce issued at or
/// before the horizon may have been used already, so it is sent back for a fresh one.
pub(crate) struct NonceCounts {
    capacity: usize,
    counts: HashMap<String, (u64, u32)>,
    by_issue: BTreeSet<(u64, String)>,
    horizon_ms: Option<u64>,
}

impl NonceCounts {
    pub(crate) fn new(capacity: usize) -> Self {
        NonceCounts {
            capacity: capacity.max(1),
            counts: HashMap::new(),
            by_issue: BTreeSet::new(),
            horizon_ms: None,
        }
    }

    pub(crate) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub(crate) fn len(&self) -> usize {
        self.counts.len()
    }

    /// Records `nc` for a fresh `nonce` issued at `issued_ms`.
    pub(crate) fn record(&mut self, nonce: &str, issued_ms: u64, nc: u32) -> CountCheck {
        if let Some((_, highest)) = self.counts.get_mut(nonce) {
            if nc <= *highest {
                return CountCheck::Replayed;
            }
            *highest = nc;
            return CountCheck::Accepted;
        }
        if self.horizon_ms.is_some_and(|h| issued_ms <= h) {
            return CountCheck::Forgotten;
        }
        while self.counts.len() >= self.capacity {
            let Some(oldest) = self.by_issue.pop_first() else {
                break;
            };
            self.counts.remove(&oldest.1);
            self.horizon_ms = Some(self.horizon_ms.map_or(oldest.0, |h| h.max(oldest.0)));
        }
        if self.horizon_ms.is_some_and(|h| issued_ms <= h) {
            return CountCheck::Forgotten;
        }
        self.counts.insert(nonce.to_owned(), (issued_ms, nc));
        self.by_issue.insert((issued_ms, nonce.to_owned()));
        CountCheck::Accepted
    }

    /// Drops nonces that have expired anyway; they are refused by age, not by this map. When
    /// that leaves the map mostly empty its table shrinks too: after a burst of logins the
    /// table would otherwise keep the burst's size (a HashMap never shrinks by itself).
    pub(crate) fn purge_expired(&mut self, now_ms: u64, lifetime_ms: u64) {
        let mut purged = false;
        while let Some((issued, _)) = self.by_issue.first() {
            if now_ms.saturating_sub(*issued) <= lifetime_ms {
                break;
            }
            let (_, nonce) = self.by_issue.pop_first().expect("first exists");
            self.counts.remove(&nonce);
            purged = true;
        }
        if purged && self.counts.len() * 4 < self.counts.capacity() {
            self.counts.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_checked_by_its_key_and_age() {
        let key = NonceKey::new(b"secret-one");
        let nonce = key.issue(1_000, [1; 8]);
        assert_eq!(
            key.check(&nonce, 1_000, 300_000),
            NonceCheck::Fresh { issued_ms: 1_000 }
        );
        assert_eq!(
            key.check(&nonce, 301_000, 300_000),
            NonceCheck::Fresh { issued_ms: 1_000 }
        );
        assert_eq!(key.check(&nonce, 301_001, 300_000), NonceCheck::Expired);
        let other = NonceKey::new(b"secret-two");
        assert_eq!(other.check(&nonce, 1_000, 300_000), NonceCheck::Foreign);
    }

    #[test]
    fn tampered_or_junk_nonces_are_foreign() {
        let key = NonceKey::new(b"k");
        let nonce = key.issue(50_000, [9; 8]);
        // Change the timestamp bytes: the tag no longer fits.
        let mut raw = URL_SAFE_NO_PAD.decode(&nonce).unwrap();
        raw[7] ^= 1;
        let forged = URL_SAFE_NO_PAD.encode(raw);
        assert_eq!(key.check(&forged, 50_000, 1_000), NonceCheck::Foreign);
        for junk in ["", "abc", "!!!!", &"A".repeat(500)] {
            assert_eq!(
                key.check(junk, 50_000, 1_000),
                NonceCheck::Foreign,
                "{junk}"
            );
        }
    }

    #[test]
    fn a_nonce_from_the_future_is_expired() {
        let key = NonceKey::new(b"k");
        let nonce = key.issue(100_000, [0; 8]);
        assert_eq!(key.check(&nonce, 10_000, 300_000), NonceCheck::Expired);
    }

    #[test]
    fn counts_must_rise() {
        let mut counts = NonceCounts::new(4);
        assert_eq!(counts.record("n", 1, 1), CountCheck::Accepted);
        assert_eq!(counts.record("n", 1, 1), CountCheck::Replayed);
        assert_eq!(counts.record("n", 1, 3), CountCheck::Accepted);
        assert_eq!(counts.record("n", 1, 2), CountCheck::Replayed);
    }

    #[test]
    fn eviction_is_bounded_and_evicted_nonces_are_not_trusted_again() {
        let mut counts = NonceCounts::new(2);
        assert_eq!(counts.record("a", 10, 1), CountCheck::Accepted);
        assert_eq!(counts.record("b", 20, 1), CountCheck::Accepted);
        assert_eq!(counts.record("c", 30, 1), CountCheck::Accepted);
        assert_eq!(counts.len(), 2);
        // "a" was evicted: replaying its first request must not pass.
        assert_eq!(counts.record("a", 10, 1), CountCheck::Forgotten);
        // A nonce issued before the horizon but never seen is also refused.
        assert_eq!(counts.record("old", 5, 1), CountCheck::Forgotten);
        // Newer nonces still work.
        assert_eq!(counts.record("d", 40, 1), CountCheck::Accepted);
        assert_eq!(counts.len(), 2);
    }

    #[test]
    fn expired_entries_are_purged() {
        let mut counts = NonceCounts::new(10);
        counts.record("a", 0, 1);
        counts.record("b", 500, 1);
        counts.purge_expired(1_200, 1_000);
        assert_eq!(counts.len(), 1);
        assert_eq!(counts.record("b", 500, 1), CountCheck::Replayed);
    }

    #[test]
    fn purging_what_expired_gives_the_table_back() {
        let mut counts = NonceCounts::new(10_000);
        for n in 0..5_000u64 {
            assert_eq!(counts.record(&format!("nonce-{n}"), n, 1), CountCheck::Accepted);
        }
        let full = counts.counts.capacity();
        counts.purge_expired(5_000 + 1_000, 999);
        assert_eq!(counts.len(), 0);
        assert!(counts.counts.capacity() < full / 4, "{} of {full}", counts.counts.capacity());
        // What is still fresh stays tracked: its replay is still refused.
        assert_eq!(counts.record("late", 6_000, 1), CountCheck::Accepted);
        counts.purge_expired(6_500, 999);
        assert_eq!(counts.record("late", 6_000, 1), CountCheck::Replayed);
    }
}
