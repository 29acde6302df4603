//! The TURN figures `/metrics` shows: the core's counters read under its lock at scrape time,
//! plus allocation ends by reason. No label carries a username (REST-scheme names are
//! ephemeral: one series per agent per day would grow without bound).

use std::sync::atomic::{AtomicU64, Ordering};

use super::allocation::Traffic;
use super::driver::Core;
use super::server::{AllocRefusal, EndReason};

#[derive(Debug, Default)]
pub struct Counters {
    ended: [AtomicU64; 3],
    /// Packets toward a client that its socket buffer or stream queue had no room for.
    unsent: AtomicU64,
}

impl Counters {
    pub fn ended(&self, reason: EndReason) {
        self.ended[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn unsent(&self) {
        self.unsent.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn read(&self, core: &Core) -> Snapshot {
        let s = core.stats();
        let mut peers_refused: Vec<(&'static str, u64)> = s.peers_refused.iter().map(|(k, v)| (*k, *v)).collect();
        peers_refused.sort();
        Snapshot {
            active: core.active() as u64,
            created: s.created,
            refused: AllocRefusal::ALL.iter().map(|r| (r.as_str(), s.refused[*r as usize])).collect(),
            ended: [EndReason::Expired, EndReason::Released, EndReason::ConnectionClosed]
                .iter()
                .map(|r| (r.as_str(), self.ended[*r as usize].load(Ordering::Relaxed)))
                .collect(),
            auth_failures: s.auth_failures,
            peers_refused,
            relayed: s.relayed,
            unpermitted: s.unpermitted,
            unsent: self.unsent.load(Ordering::Relaxed),
        }
    }
}

/// One reading of every TURN figure.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub active: u64,
    pub created: u64,
    pub refused: Vec<(&'static str, u64)>,
    pub ended: Vec<(&'static str, u64)>,
    pub auth_failures: u64,
    pub peers_refused: Vec<(&'static str, u64)>,
    pub relayed: Traffic,
    pub unpermitted: u64,
    pub unsent: u64,
}
