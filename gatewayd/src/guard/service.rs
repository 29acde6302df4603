//! The guard's driver: feeds the core with the wall clock, carries its actions out on the
//! firewall, tells listener drivers which sources to disconnect, persists bans, and offers the
//! functions the admin endpoint calls (list, ban, remove, counters).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

use super::engine::{Ban, BanReason, Failure, GuardAction};
use super::limiter::Limit;
use super::store::{BanStore, StoredState};
use super::{kind_name, Guard, GuardCounters, Report};
use crate::firewall::{ApplyError, Firewall, Status};
use crate::profile::{Bans, Cidr, Profile};

/// How often housekeeping checks that gatewayd's table is still in the kernel.
pub const FIREWALL_CHECK: Duration = Duration::from_secs(10);

/// Sources to disconnect, queued for slow listeners before the oldest are dropped.
const CLOSE_QUEUE: usize = 256;

/// A ban as the admin endpoint shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BanInfo {
    pub ip: IpAddr,
    /// Unix seconds.
    pub since: u64,
    pub until: u64,
    pub remaining_secs: u64,
    pub reason: BanReason,
    pub offence: u32,
}

impl BanInfo {
    fn new(b: &Ban, now: SystemTime) -> Self {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Self { ip: b.ip, since: unix(b.since), until: unix(b.until), remaining_secs: b.remaining(now).as_secs(), reason: b.reason.clone(), offence: b.offence }
    }
}

/// The profile's `[bans]` with the sources that must never be banned added to the allowlist:
/// the upstream SIP servers (a burst of SIP the parser rejects must not cut the gateway off
/// from its SIP server) and the gateway's own addresses.
pub fn ban_config(profile: &Profile) -> Bans {
    let mut bans = profile.bans.clone();
    let own = profile.public.addresses.iter().copied().chain([profile.internal.address, profile.management.address]);
    // The other node of a pair: banning it would cut VRRP and the ban sync.
    let peer = profile.ha.iter().flat_map(|ha| [ha.peer, ha.public.peer, ha.internal.peer]);
    let own = own.chain(peer);
    for ip in profile.upstream.servers.iter().map(|s| s.address.ip()).chain(own) {
        let cidr = Cidr::from(ip);
        if !bans.allowlist.iter().any(|c| c.contains(&ip)) {
            bans.allowlist.push(cidr);
        }
    }
    bans
}

/// Why an admin request about a ban failed.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    #[error("{0} is not banned")]
    NotBanned(IpAddr),
    #[error("{0} is loopback or allowlisted and is never banned")]
    Exempt(IpAddr),
    #[error("the firewall refused the change: {0}")]
    Firewall(#[from] crate::firewall::NftError),
}

/// The ban engine, the firewall and the state file, for the daemon and the admin endpoint.
pub struct BanService {
    guard: Mutex<Guard>,
    firewall: Arc<Firewall>,
    store: Option<BanStore>,
    close_tx: broadcast::Sender<IpAddr>,
    generation: AtomicU64,
    saved: Arc<Mutex<u64>>,
    /// Serialises ruleset replacement and ban set edits, so a ban committed while the table is
    /// being replaced cannot be wiped by the replacement.
    nft: tokio::sync::Mutex<()>,
    /// Bans and unbans made here, for the HA peer (none without `[ha]`).
    sync: Mutex<Option<tokio::sync::mpsc::Sender<SyncEvent>>>,
}

/// A change of bans made on this node, to be pushed to the HA peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncEvent {
    Ban(IpAddr, Duration),
    Unban(IpAddr),
}

impl BanService {
    /// Builds the service and restores persisted bans (a damaged file is reported and set
    /// aside). Apply the firewall afterwards with [`BanService::firewall_bans`].
    pub fn new(profile: &Profile, firewall: Arc<Firewall>, store: Option<BanStore>) -> Self {
        let mut guard = Guard::new(&ban_config(profile));
        if let Some(s) = &store {
            match s.load() {
                Ok(state) => {
                    let n = state.bans.len();
                    guard.restore(state, SystemTime::now());
                    if n > 0 {
                        tracing::info!(bans = guard.bans(SystemTime::now()).len(), file = %s.path().display(), "restored active bans");
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot restore bans; starting with none"),
            }
        }
        let (close_tx, _) = broadcast::channel(CLOSE_QUEUE);
        Self { guard: Mutex::new(guard), firewall, store, close_tx, generation: AtomicU64::new(0), saved: Arc::new(Mutex::new(0)), nft: tokio::sync::Mutex::new(()), sync: Mutex::new(None) }
    }

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.guard.lock().expect("guard lock")
    }

    /// Makes the firewall follow `profile` with the active bans preloaded: call it on start and
    /// on every reload. Errors are logged by the firewall; nothing is ever half-applied.
    pub async fn apply_firewall(&self, profile: &Profile) -> Result<Status, ApplyError> {
        let _serial = self.nft.lock().await;
        let bans = self.firewall_bans();
        self.firewall.apply(profile, &bans).await
    }

    /// Active bans with their time left, for [`Firewall::apply`] on start and reload.
    pub fn firewall_bans(&self) -> Vec<(IpAddr, Duration)> {
        let now = SystemTime::now();
        self.guard().bans(now).iter().map(|b| (b.ip, b.remaining(now))).collect()
    }

    /// Bans and unbans made on this node from now on are also sent to `tx` (the HA push). The
    /// queue is bounded: when the push falls behind, a change is logged and dropped, never
    /// waited for.
    pub fn sync_to(&self, tx: tokio::sync::mpsc::Sender<SyncEvent>) {
        *self.sync.lock().expect("sync lock") = Some(tx);
    }

    fn push(&self, event: SyncEvent) {
        if let Some(tx) = self.sync.lock().expect("sync lock").as_ref() {
            if let Err(e) = tx.try_send(event) {
                tracing::warn!(?event, error = %e, "ban change not pushed to the HA peer");
            }
        }
    }

    /// A ban the HA peer pushed: in force here for the time it has left there; not pushed back.
    pub async fn peer_ban(&self, ip: IpAddr, duration: Duration) -> bool {
        let actions = self.guard().peer_ban(ip, duration, SystemTime::now());
        let banned = !actions.is_empty();
        self.carry_out_from(&actions, false).await;
        banned
    }

    /// An unban the HA peer pushed; not pushed back.
    pub async fn peer_unban(&self, ip: IpAddr) -> bool {
        let Some(action) = self.guard().unban(ip) else { return false };
        self.carry_out_from(&[action], false).await;
        true
    }

    /// Takes a reloaded profile's `[bans]`; active bans stay.
    pub fn reconfigure(&self, profile: &Profile) {
        self.guard().reconfigure(&ban_config(profile));
    }

    /// Listener drivers subscribe here and close every connection from the sources they receive.
    pub fn subscribe_closures(&self) -> broadcast::Receiver<IpAddr> {
        self.close_tx.subscribe()
    }

    /// A listener's report with its detail: the detail goes to the log with the ban it causes,
    /// so an operator sees why a source was banned (as fail2ban's matched log lines do).
    pub async fn observe(&self, report: Report) -> Vec<GuardAction> {
        let actions = self.report(Failure { ip: report.ip, kind: report.kind }).await;
        if actions.iter().any(|a| matches!(a, GuardAction::Ban(_))) {
            tracing::warn!(ip = %report.ip, kind = %kind_name(report.kind), detail = %report.detail, "last failure before the ban");
        }
        actions
    }

    /// A listener saw a failure from `ip`. Returns the actions taken (a ban, sources to
    /// disconnect); the ban is in the kernel when this returns.
    pub async fn report(&self, failure: Failure) -> Vec<GuardAction> {
        let actions = self.guard().report(failure, SystemTime::now());
        tracing::debug!(ip = %failure.ip, kind = %kind_name(failure.kind), "failure reported");
        self.carry_out(&actions).await;
        actions
    }

    /// Rate limit check for a new connection or SIP request; `false`: refuse it.
    pub async fn admit(&self, ip: IpAddr, limit: Limit) -> bool {
        let (allowed, actions) = self.guard().admit(ip, limit, SystemTime::now());
        if !actions.is_empty() {
            self.carry_out(&actions).await;
        }
        allowed
    }

    /// `GET /bans`.
    pub fn list(&self) -> Vec<BanInfo> {
        let now = SystemTime::now();
        self.guard().bans(now).iter().map(|b| BanInfo::new(b, now)).collect()
    }

    /// `POST /bans`: an operator bans `ip` (for `duration`, else the first rule's ban time).
    pub async fn ban(&self, ip: IpAddr, duration: Option<Duration>) -> Result<BanInfo, RemoveError> {
        let now = SystemTime::now();
        let actions = self.guard().ban(ip, duration, now);
        let Some(GuardAction::Ban(ban)) = actions.first().cloned() else {
            return Err(RemoveError::Exempt(ip));
        };
        self.carry_out(&actions).await;
        Ok(BanInfo::new(&ban, now))
    }

    /// `DELETE /bans/{ip}`: lifts a ban.
    pub async fn remove(&self, ip: IpAddr) -> Result<(), RemoveError> {
        let action = self.guard().unban(ip).ok_or(RemoveError::NotBanned(ip))?;
        let GuardAction::Unban(ip) = action else { unreachable!("unban yields Unban") };
        tracing::info!(%ip, "ban lifted by an operator");
        {
            let _serial = self.nft.lock().await;
            self.firewall.unban(ip).await?;
        }
        self.push(SyncEvent::Unban(ip));
        self.persist();
        Ok(())
    }

    /// `GET /bans/counters` and metrics.
    pub fn counters(&self) -> GuardCounters {
        let mut c = self.guard().counters().clone();
        c.failures.retain(|_, v| *v > 0);
        c
    }

    pub fn active_bans(&self) -> usize {
        self.guard().bans(SystemTime::now()).len()
    }

    /// Housekeeping, about once a second: ends bans that are over.
    pub async fn tick(&self) {
        let actions = self.guard().tick(SystemTime::now());
        if !actions.is_empty() {
            self.carry_out(&actions).await;
        }
    }

    /// Puts gatewayd's table back when something outside removed it (`nft flush ruleset` by
    /// another service, an operator's mistake), with the active bans. Returns whether it had to.
    pub async fn restore_firewall_if_gone(&self, profile: &Profile) -> bool {
        let _serial = self.nft.lock().await;
        if self.firewall.table_present().await != Some(false) {
            return false;
        }
        tracing::warn!("gatewayd's nftables table was removed from outside; restoring it");
        let bans = self.firewall_bans();
        if let Err(e) = self.firewall.apply(profile, &bans).await {
            tracing::error!(error = %e, "cannot restore gatewayd's nftables table");
        }
        true
    }

    /// Runs [`BanService::tick`] every second until the task is dropped.
    pub async fn run_housekeeping(self: Arc<Self>) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            self.tick().await;
        }
    }

    /// Checks every [`FIREWALL_CHECK`] that gatewayd's table is still in place and restores it
    /// if not, until the task is dropped. `profile` follows reloads.
    pub async fn watch_firewall(self: Arc<Self>, profile: tokio::sync::watch::Receiver<Arc<crate::profile::LoadedProfile>>) {
        let mut every = tokio::time::interval(FIREWALL_CHECK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let current = profile.borrow().clone();
            self.restore_firewall_if_gone(&current.profile).await;
        }
    }

    async fn carry_out(&self, actions: &[GuardAction]) {
        self.carry_out_from(actions, true).await;
    }

    /// Carries actions out; `local`: made here, so bans go to the HA peer too (expiry does
    /// not: each node ends a ban at the same time by itself).
    async fn carry_out_from(&self, actions: &[GuardAction], local: bool) {
        let mut changed = false;
        for a in actions {
            match a {
                GuardAction::Ban(ban) => {
                    let seconds = ban.remaining(SystemTime::now()).as_secs();
                    let rule = match &ban.reason {
                        BanReason::Rule { rule, .. } => rule.as_str(),
                        BanReason::Manual => "manual",
                        BanReason::Peer => "peer",
                    };
                    tracing::warn!(ip = %ban.ip, rule, offence = ban.offence, seconds, "source banned");
                    let _serial = self.nft.lock().await;
                    if let Err(e) = self.firewall.ban(ban.ip, ban.remaining(SystemTime::now())).await {
                        tracing::error!(ip = %ban.ip, error = %e, "ban not applied to the firewall");
                    }
                    if local {
                        self.push(SyncEvent::Ban(ban.ip, ban.remaining(SystemTime::now())));
                    }
                    changed = true;
                }
                GuardAction::CloseConnections(ip) => {
                    // No subscriber yet is fine: nothing is open.
                    let _ = self.close_tx.send(*ip);
                }
                GuardAction::Unban(ip) => {
                    tracing::info!(%ip, "ban over");
                    let _serial = self.nft.lock().await;
                    if let Err(e) = self.firewall.unban(*ip).await {
                        tracing::error!(%ip, error = %e, "unban not applied to the firewall");
                    }
                    changed = true;
                }
            }
        }
        if changed {
            self.persist();
        }
    }

    /// Saves the current bans off the async threads; a newer snapshot always wins.
    fn persist(&self) {
        let Some(store) = self.store.clone() else { return };
        let state: StoredState = self.guard().snapshot(SystemTime::now());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let saved = self.saved.clone();
        let write = move || {
            let mut last = saved.lock().expect("save lock");
            if generation > *last {
                if let Err(e) = store.save(&state) {
                    tracing::error!(error = %e, file = %store.path().display(), "cannot save bans");
                }
                *last = generation;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }

    /// Writes the bans now (on shutdown).
    pub fn flush(&self) {
        let Some(store) = &self.store else { return };
        let state = self.guard().snapshot(SystemTime::now());
        let mut last = self.saved.lock().expect("save lock");
        if let Err(e) = store.save(&state) {
            tracing::error!(error = %e, "cannot save bans");
        }
        *last = self.generation.load(Ordering::SeqCst);
    }
}
