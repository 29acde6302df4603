//! The shared public port (`single_public_port`) across media workers. Every worker binds its
//! own socket on that port with SO_REUSEPORT, so the kernel spreads the browsers over the
//! workers by a hash of their address: no worker reads for all, and one browser address always
//! reaches the same worker. That worker is not always the call's owner, so each worker keeps a
//! copy of the routing table (local ICE ufrag -> owner, learnt browser address -> owner) and
//! passes a datagram for another worker's call over that worker's bounded handoff queue. The
//! table changes only at call setup, ICE restart and teardown (broadcast to every worker as
//! commands); the packet path reads only the worker's own copy, without a lock.
//!
//! STUN carries the ufrag and is routed by it (and teaches the table its source); everything
//! else by source. A stale source entry is thus corrected by the next check from that address.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Where a call lives: its worker and its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub shard: usize,
    pub call: u64,
}

/// A change of the routing table, applied by every worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpdate {
    /// A call's (new) local ufrag; an ICE restart replaces the old one.
    Ufrag { owner: Owner, ufrag: String },
    /// The call is gone: its ufrag and every address learnt for it.
    Remove { call: u64 },
}

/// Largest datagram passed between workers (larger ones are not media; dropped).
pub const HANDOFF_MAX: usize = 2048;

/// A shared-port datagram read by one worker for a call of another, copied into a fixed
/// buffer: the bounded queue holds these by value, so nothing is allocated per packet.
pub struct Handoff {
    pub call: u64,
    /// Which public address (index into the configuration's list) it arrived on.
    pub public: usize,
    pub source: SocketAddr,
    pub len: usize,
    pub data: [u8; HANDOFF_MAX],
}

#[derive(Debug, Default)]
pub struct Routes {
    by_ufrag: HashMap<String, Owner>,
    by_source: HashMap<SocketAddr, Owner>,
    /// Per call: its ufrag and the addresses learnt for it, for removal.
    of_call: HashMap<u64, (String, Vec<SocketAddr>)>,
}

impl Routes {
    pub fn apply(&mut self, update: &RouteUpdate) {
        match update {
            RouteUpdate::Ufrag { owner, ufrag } => {
                let entry = self.of_call.entry(owner.call).or_default();
                if !entry.0.is_empty() {
                    self.by_ufrag.remove(&entry.0);
                }
                entry.0.clone_from(ufrag);
                self.by_ufrag.insert(ufrag.clone(), *owner);
            }
            RouteUpdate::Remove { call } => {
                let Some((ufrag, sources)) = self.of_call.remove(call) else { return };
                self.by_ufrag.remove(&ufrag);
                for s in sources {
                    if self.by_source.get(&s).is_some_and(|o| o.call == *call) {
                        self.by_source.remove(&s);
                    }
                }
            }
        }
    }

    /// The call a datagram from `source` belongs to, if any.
    pub fn route(&mut self, source: SocketAddr, data: &[u8]) -> Option<Owner> {
        if let Some(ufrag) = stun_local_ufrag(data) {
            let owner = *self.by_ufrag.get(ufrag)?;
            if self.by_source.insert(source, owner) != Some(owner) {
                if let Some((_, sources)) = self.of_call.get_mut(&owner.call) {
                    sources.push(source);
                }
            }
            return Some(owner);
        }
        self.by_source.get(&source).copied()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.of_call.is_empty() && self.by_source.is_empty()
    }
}

/// The local ufrag from a STUN binding request's USERNAME ("local:remote").
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    if data.len() < 20 || data[0] & 0xc0 != 0 || data[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    let mut i = 20;
    while i + 4 <= data.len() {
        let kind = u16::from_be_bytes([data[i], data[i + 1]]);
        let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
        if kind == 0x0006 {
            let user = std::str::from_utf8(data.get(i + 4..i + 4 + len)?).ok()?;
            return user.split(':').next();
        }
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun(ufrag: &str) -> Vec<u8> {
        let user = format!("{ufrag}:remote");
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[0; 12]);
        m.extend_from_slice(&[0x00, 0x06, 0x00, user.len() as u8]);
        m.extend_from_slice(user.as_bytes());
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn stun_username_gives_local_ufrag() {
        let m = stun("abc");
        assert_eq!(stun_local_ufrag(&m), Some("abc"));
        assert_eq!(stun_local_ufrag(&m[..20]), None);
        assert_eq!(stun_local_ufrag(&[0x80; 40]), None);
    }

    #[test]
    fn stun_finds_the_owner_and_teaches_the_source_for_media() {
        let mut r = Routes::default();
        let owner = Owner { shard: 1, call: 9 };
        r.apply(&RouteUpdate::Ufrag { owner, ufrag: "u9".into() });
        let browser: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let srtp = [0x80u8, 0x6f, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(r.route(browser, &srtp), None, "media before any check is nobody's");
        assert_eq!(r.route(browser, &stun("u9")), Some(owner));
        assert_eq!(r.route(browser, &srtp), Some(owner));
        assert_eq!(r.route(browser, &stun("other")), None, "an unknown ufrag is dropped");
    }

    #[test]
    fn ice_restart_replaces_the_ufrag_and_removal_forgets_everything() {
        let mut r = Routes::default();
        let owner = Owner { shard: 0, call: 3 };
        let browser: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        r.apply(&RouteUpdate::Ufrag { owner, ufrag: "old".into() });
        r.route(browser, &stun("old"));
        r.apply(&RouteUpdate::Ufrag { owner, ufrag: "new".into() });
        assert_eq!(r.route(browser, &stun("old")), None);
        assert_eq!(r.route(browser, &stun("new")), Some(owner));
        r.apply(&RouteUpdate::Remove { call: 3 });
        assert_eq!(r.route(browser, &[0x80; 12]), None);
        assert!(r.is_empty());
    }

    #[test]
    fn a_check_from_a_reused_address_moves_it_to_the_new_call() {
        let mut r = Routes::default();
        let (a, b) = (Owner { shard: 0, call: 1 }, Owner { shard: 1, call: 2 });
        let browser: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        r.apply(&RouteUpdate::Ufrag { owner: a, ufrag: "a".into() });
        r.apply(&RouteUpdate::Ufrag { owner: b, ufrag: "b".into() });
        r.route(browser, &stun("a"));
        assert_eq!(r.route(browser, &stun("b")), Some(b));
        r.apply(&RouteUpdate::Remove { call: 1 });
        assert_eq!(r.route(browser, &[0x80; 12]), Some(b), "removing the old call keeps the new owner's address");
    }
}
