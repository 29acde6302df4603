//! What the media workers share, all of it touched at call setup and teardown only: the way
//! to each worker (its bounded command and handoff queues and its waker), the global call
//! limit, per-worker call counts for placement, call ids and the port pools. Nothing here is
//! on the packet path: a worker owns its calls, sockets, poll and timers outright.
//!
//! Ports come from one pool per kind behind a mutex taken only while a call binds or returns
//! its ports, so a worker never runs out while another has ports to spare, and the RTCP tap's
//! call numbers stay unique across workers.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Mutex, MutexGuard};

use mio::Waker;

use super::driver::Command;
use super::error::MediaError;
use super::held::Held;
use super::ports::PortPool;
use super::routes::Handoff;

/// The way into one worker.
pub struct Link {
    pub tx: SyncSender<Command>,
    pub handoff: SyncSender<Handoff>,
    pub waker: Waker,
    /// Changes to calls that found the queue full (see `held`).
    held: Mutex<Held>,
    /// Set while `held` has entries: the worker looks at this flag on every wake-up and takes
    /// the lock only when there is something to take, so its packet path stays lock-free.
    has_held: AtomicBool,
}

impl Link {
    pub fn new(tx: SyncSender<Command>, handoff: SyncSender<Handoff>, waker: Waker) -> Link {
        Link { tx, handoff, waker, held: Mutex::new(Held::default()), has_held: AtomicBool::new(false) }
    }

    /// Queues `cmd` for the worker. The queue is bounded and a full one means an overloaded
    /// worker: what can be refused fails fast (a new call: 503), a change to a call is held
    /// instead, never lost.
    pub fn send(&self, cmd: Command) -> Result<(), MediaError> {
        let Some(call) = cmd.call() else {
            return match self.tx.try_send(cmd) {
                Ok(()) => self.waker.wake().map_err(MediaError::Io),
                Err(TrySendError::Full(_)) => Err(MediaError::TooManyCalls),
                Err(TrySendError::Disconnected(_)) => Err(MediaError::Stopped),
            };
        };
        // Held while queueing too: a change of a call with changes held joins them, in order.
        let mut held = self.held();
        let cmd = if held.holds(call) {
            cmd
        } else {
            match self.tx.try_send(cmd) {
                Ok(()) => {
                    drop(held);
                    return self.waker.wake().map_err(MediaError::Io);
                }
                Err(TrySendError::Full(cmd)) => cmd,
                Err(TrySendError::Disconnected(_)) => return Err(MediaError::Stopped),
            }
        };
        if held.hold(cmd).is_err() {
            return Err(MediaError::State("an operation of this call is already waiting".into()));
        }
        self.has_held.store(true, Ordering::Release);
        drop(held);
        self.waker.wake().map_err(MediaError::Io)
    }

    /// The changes held, for the worker once it has drained its queue.
    pub fn take_held(&self) -> Vec<Command> {
        if !self.has_held.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut held = self.held();
        // Cleared under the lock: a sender holding a change after this sets it again.
        self.has_held.store(false, Ordering::Release);
        if held.is_empty() {
            return Vec::new();
        }
        held.take()
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // A sender that panicked while holding it left whole entries: still usable.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Pools {
    pub public: PortPool,
    pub internal: PortPool,
}

pub struct Shared {
    max_calls: usize,
    calls: AtomicUsize,
    per_worker: Vec<AtomicUsize>,
    next_worker: AtomicUsize,
    next_id: AtomicU64,
    pools: Mutex<Pools>,
}

impl Shared {
    pub fn new(workers: usize, max_calls: usize, pools: Pools) -> Shared {
        Shared {
            max_calls,
            calls: AtomicUsize::new(0),
            per_worker: (0..workers).map(|_| AtomicUsize::new(0)).collect(),
            next_worker: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
            pools: Mutex::new(pools),
        }
    }

    /// Counts a new call against the global limit and places it on the least loaded worker.
    pub fn admit(&self) -> Result<(usize, u64), MediaError> {
        if self.calls.fetch_add(1, Ordering::AcqRel) >= self.max_calls {
            self.calls.fetch_sub(1, Ordering::AcqRel);
            return Err(MediaError::TooManyCalls);
        }
        let loads: Vec<usize> = self.per_worker.iter().map(|n| n.load(Ordering::Acquire)).collect();
        let start = self.next_worker.fetch_add(1, Ordering::Relaxed);
        let worker = least_loaded(&loads, start);
        self.per_worker[worker].fetch_add(1, Ordering::AcqRel);
        Ok((worker, self.next_id.fetch_add(1, Ordering::Relaxed)))
    }

    /// A call admitted on `worker` is gone (closed, or its setup failed).
    pub fn release(&self, worker: usize) {
        self.per_worker[worker].fetch_sub(1, Ordering::AcqRel);
        self.calls.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn pools(&self) -> MutexGuard<'_, Pools> {
        // A worker that panicked while holding the pools left them consistent enough to count.
        self.pools.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The worker with the fewest calls; ties go round robin from `start` so equal workers fill
/// evenly.
pub fn least_loaded(loads: &[usize], start: usize) -> usize {
    let n = loads.len();
    (0..n).map(|k| (start + k) % n).min_by_key(|&i| loads[i]).unwrap_or(0)
}

/// Workers by default: the CPUs this process may run on (its affinity mask and cgroup quota,
/// as systemd's CPUAffinity= and CPUQuota= set them).
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_loaded_takes_the_emptiest_and_breaks_ties_round_robin() {
        assert_eq!(least_loaded(&[3, 1, 2], 0), 1);
        assert_eq!(least_loaded(&[2, 2, 2], 0), 0);
        assert_eq!(least_loaded(&[2, 2, 2], 1), 1);
        assert_eq!(least_loaded(&[2, 2, 2], 5), 2);
        assert_eq!(least_loaded(&[0], 7), 0);
    }

    #[test]
    fn admission_spreads_calls_and_holds_the_global_limit() {
        let pools = Pools { public: PortPool::empty(), internal: PortPool::empty() };
        let s = Shared::new(2, 3, pools);
        let placed: Vec<usize> = (0..3).map(|_| s.admit().unwrap().0).collect();
        assert_eq!(placed.iter().filter(|&&w| w == 0).count(), 2);
        assert_eq!(placed.iter().filter(|&&w| w == 1).count(), 1);
        assert!(matches!(s.admit(), Err(MediaError::TooManyCalls)), "the limit is global, not per worker");
        s.release(1);
        assert_eq!(s.admit().unwrap().0, 1, "the freed worker is the least loaded");
        let ids: std::collections::HashSet<u64> = (0..10).map(|_| s.next_id.fetch_add(1, Ordering::Relaxed)).collect();
        assert_eq!(ids.len(), 10);
    }
}
