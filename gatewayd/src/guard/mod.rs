//! The guard: failure events from every listener feed a sans-IO ban engine (fail2ban-style
//! rules, allowlist, escalation) and per-source rate limits. Bans are carried out by `firewall`.
//!
//! [`Guard`] is the synchronous core (failures, rate checks and the time in; [`GuardAction`]s
//! out). [`BanService`] is its thin async driver: it applies bans to the firewall, persists them
//! in the state directory and answers the admin endpoint. This module never opens sockets and
//! never edits nftables itself.
//!
//! How the daemon drives it:
//!
//! ```no_run
//! # async fn daemon(profile: gatewayd::profile::Profile, new_profile: gatewayd::profile::Profile, state_dir: std::path::PathBuf,
//! #     profile_rx: tokio::sync::watch::Receiver<std::sync::Arc<gatewayd::profile::LoadedProfile>>) {
//! use std::sync::Arc;
//! use gatewayd::{firewall, guard};
//! // Start: restore bans, then put the ruleset in place with them (or say why not and run on).
//! let firewall = Arc::new(firewall::Firewall::new());
//! let bans = Arc::new(guard::BanService::new(&profile, firewall.clone(), Some(guard::BanStore::in_dir(&state_dir))));
//! let _ = bans.apply_firewall(&profile).await; // errors are logged; nothing is half-applied
//! // Expiry every second; every 10 s the table is put back if something removed it.
//! tokio::spawn(bans.clone().run_housekeeping());
//! tokio::spawn(bans.clone().watch_firewall(profile_rx.clone()));
//! let mut close = bans.subscribe_closures(); // listeners close connections from these sources
//! // A listener's failure:
//! let ip = "198.51.100.7".parse().unwrap();
//! bans.report(guard::Failure { ip, kind: gatewayd::profile::FailureKind::DigestFailure }).await;
//! // A listener's rate check before accepting:
//! let admitted = bans.admit(ip, guard::Limit::NewConnection).await;
//! // Reload: new rules, same bans, ruleset follows the new profile.
//! bans.reconfigure(&new_profile);
//! let _ = bans.apply_firewall(&new_profile).await;
//! // Stop: write the bans out (the table stays: the kernel keeps enforcing them).
//! bans.flush();
//! # let _ = (close.try_recv(), admitted);
//! # }
//! ```

mod engine;
mod limiter;
mod service;
mod store;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use engine::{canonical, escalate, exempt, Ban, BanEngine, BanReason, Failure, GuardAction, Offences, MAX_TRACKED_SOURCES};
pub use limiter::{Limit, RateLimiter, Verdict, MAX_BUCKETS};
pub use service::{ban_config, BanInfo, BanService, RemoveError, SyncEvent, FIREWALL_CHECK};
pub use store::{BanStore, StoredState, STORE_FILE};

use crate::profile::{Bans, FailureKind};

/// What a listener saw: the engine counts the source and kind, the detail goes to the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub ip: IpAddr,
    pub kind: FailureKind,
    pub detail: String,
}

/// Event counters, for metrics and the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GuardCounters {
    /// Failures reported, by kind (kebab-case names as in the profile).
    pub failures: BTreeMap<String, u64>,
    /// Bans imposed by rules.
    pub bans_by_rule: u64,
    /// Bans imposed by operators.
    pub bans_manual: u64,
    /// Bans that ran out.
    pub bans_expired: u64,
    /// Bans lifted by operators.
    pub bans_lifted: u64,
    /// Requests or connections refused by the rate limits.
    pub rate_limited: u64,
}

/// The ban engine and the rate limiter, with counters.
#[derive(Debug)]
pub struct Guard {
    engine: BanEngine,
    limiter: RateLimiter,
    counters: GuardCounters,
}

impl Guard {
    pub fn new(config: &Bans) -> Self {
        Self { engine: BanEngine::new(config.clone()), limiter: RateLimiter::new(config), counters: GuardCounters::default() }
    }

    /// A new profile's `[bans]`; active bans survive.
    pub fn reconfigure(&mut self, config: &Bans) {
        self.engine.reconfigure(config.clone());
        self.limiter.reconfigure(config);
    }

    /// Counts a failure from a listener.
    pub fn report(&mut self, failure: Failure, now: SystemTime) -> Vec<GuardAction> {
        *self.counters.failures.entry(kind_name(failure.kind)).or_default() += 1;
        let actions = self.engine.report(failure, now);
        if actions.iter().any(|a| matches!(a, GuardAction::Ban(_))) {
            self.counters.bans_by_rule += 1;
        }
        actions
    }

    /// Asks whether `ip` may open a connection or send a request now. A refusal is counted, and
    /// once per second of excess it is also reported as a `rate-limited` failure, whose actions
    /// are returned with the verdict.
    pub fn admit(&mut self, ip: IpAddr, limit: Limit, now: SystemTime) -> (bool, Vec<GuardAction>) {
        if self.engine.is_exempt(ip) {
            return (true, Vec::new());
        }
        match self.limiter.check(ip, limit, now) {
            Verdict::Allow => (true, Vec::new()),
            Verdict::Deny { first, .. } => {
                self.counters.rate_limited += 1;
                let actions = if first { self.report(Failure { ip, kind: FailureKind::RateLimited }, now) } else { Vec::new() };
                (false, actions)
            }
        }
    }

    /// An operator's ban: `duration` or, when absent, the first rule's ban time.
    pub fn ban(&mut self, ip: IpAddr, duration: Option<Duration>, now: SystemTime) -> Vec<GuardAction> {
        let base = duration.unwrap_or_else(|| self.engine.config().rules.first().map_or(Duration::from_secs(3600), |r| r.ban_time.0));
        let actions = self.engine.ban(ip, base, BanReason::Manual, now);
        if !actions.is_empty() {
            self.counters.bans_manual += 1;
        }
        actions
    }

    /// A ban pushed by the HA peer, for the time it has left there.
    pub fn peer_ban(&mut self, ip: IpAddr, duration: Duration, now: SystemTime) -> Vec<GuardAction> {
        self.engine.ban_exactly(ip, duration, BanReason::Peer, now)
    }

    /// An operator lifts a ban.
    pub fn unban(&mut self, ip: IpAddr) -> Option<GuardAction> {
        let action = self.engine.unban(ip);
        if action.is_some() {
            self.counters.bans_lifted += 1;
        }
        action
    }

    /// Housekeeping: ends bans that are over. Call about once a second.
    pub fn tick(&mut self, now: SystemTime) -> Vec<GuardAction> {
        let actions = self.engine.expire(now);
        self.counters.bans_expired += actions.len() as u64;
        if self.limiter.len() > MAX_BUCKETS / 2 {
            self.limiter.prune(now);
        }
        actions
    }

    pub fn is_banned(&self, ip: IpAddr, now: SystemTime) -> bool {
        self.engine.is_banned(ip, now)
    }

    pub fn bans(&self, now: SystemTime) -> Vec<Ban> {
        self.engine.bans(now)
    }

    pub fn counters(&self) -> &GuardCounters {
        &self.counters
    }

    pub fn engine(&self) -> &BanEngine {
        &self.engine
    }

    /// What is persisted across restarts.
    pub fn snapshot(&self, now: SystemTime) -> StoredState {
        StoredState { bans: self.engine.bans(now), offences: self.engine.offences().iter().map(|(ip, o)| (*ip, *o)).collect() }
    }

    /// Restores persisted bans and offences.
    pub fn restore(&mut self, state: StoredState, now: SystemTime) {
        self.engine.restore(state.bans, state.offences.into_iter().collect(), now);
    }
}

/// The profile's name of a failure kind (`digest-failure`, ...).
pub fn kind_name(kind: FailureKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| format!("{kind:?}"))
}

#[cfg(test)]
mod tests;
