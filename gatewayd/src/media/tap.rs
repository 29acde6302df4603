//! The RTCP tap: copies of the RTCP the worker receives and sends on both legs (the browser's
//! decrypted out of SRTCP, the SIP server's as it travels), for capture outside the worker.
//!
//! The worker only pushes into a bounded lock-free queue that call control drains on its own
//! schedule: no lock, no wakeup and no system call on the packet path, and when the queue is
//! full (or nobody drains it) the copy is dropped and counted. While the tap is off the worker
//! copies nothing. It must not know who reads the copies (HEP is `observe`'s business).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::SystemTime;

use crossbeam_queue::ArrayQueue;

use super::call::Side;

/// Copies waiting to be drained; beyond this they are dropped.
pub const TAP_QUEUE: usize = 4096;

/// One RTCP compound packet as it crossed one leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtcpSeen {
    /// The media call it belongs to (`CallMedia::id`).
    pub call: u64,
    pub side: Side,
    /// Sent by the gateway (else received).
    pub sent: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub at: SystemTime,
    /// The plain RTCP compound packet (RFC 3550 §6.1).
    pub data: Vec<u8>,
}

pub struct RtcpTap {
    on: AtomicBool,
    queue: ArrayQueue<RtcpSeen>,
    dropped: AtomicU64,
}

impl Default for RtcpTap {
    fn default() -> Self {
        RtcpTap { on: AtomicBool::new(false), queue: ArrayQueue::new(TAP_QUEUE), dropped: AtomicU64::new(0) }
    }
}

impl RtcpTap {
    /// Whether copies are wanted; the worker looks before copying anything.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn set_on(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Queues a copy, or counts it dropped when the queue is full.
    pub fn push(&self, seen: RtcpSeen) {
        if self.queue.push(seen).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Everything queued so far, oldest first.
    pub fn drain(&self) -> Vec<RtcpSeen> {
        let mut out = Vec::with_capacity(self.queue.len());
        while let Some(s) = self.queue.pop() {
            out.push(s);
        }
        out
    }

    /// Copies dropped since the last call.
    pub fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(n: u8) -> RtcpSeen {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        RtcpSeen { call: 1, side: Side::Internal, sent: false, src: a, dst: a, at: SystemTime::UNIX_EPOCH, data: vec![n] }
    }

    #[test]
    fn a_full_tap_drops_and_counts_and_drains_in_order() {
        let tap = RtcpTap::default();
        assert!(!tap.is_on());
        for i in 0..TAP_QUEUE + 3 {
            tap.push(seen(i as u8));
        }
        assert_eq!(tap.take_dropped(), 3);
        assert_eq!(tap.take_dropped(), 0);
        let all = tap.drain();
        assert_eq!(all.len(), TAP_QUEUE);
        assert_eq!(all[0].data, [0]);
        assert_eq!(all[1].data, [1]);
        assert!(tap.drain().is_empty());
    }
}
