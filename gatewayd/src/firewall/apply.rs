//! The applier: puts the profile's ruleset in place in one transaction, adds and removes ban
//! set elements, and, when it may not or must not touch nftables, says so and only logs.

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use nftables::schema::{self, NfCmd, NfListObject, NfObject, Nftables};
use nftables::types::NfFamily;

use super::generate::{ruleset, BAN_SET_V4, BAN_SET_V6};
use super::nft::{has_net_admin, Nft, NftError};
use super::ruleset::timed_element;
use crate::profile::Profile;

/// What the firewall is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing applied yet.
    Idle,
    /// The table is in place and bans go to its sets.
    Enforcing { table: String },
    /// `firewall.manage = false`: nftables is left alone; bans are only logged.
    Disabled,
    /// Not permitted (no CAP_NET_ADMIN, or nft missing); bans are only logged.
    LogOnly { reason: String },
}

impl Status {
    pub fn is_enforcing(&self) -> bool {
        matches!(self, Status::Enforcing { .. })
    }
}

/// The ruleset was not applied; whatever was in place before still is.
#[derive(Debug, thiserror::Error)]
#[error("firewall not applied, the previous ruleset stays in place: {0}")]
pub struct ApplyError(#[from] pub NftError);

/// The firewall applier. One per daemon; safe to share.
#[derive(Debug)]
pub struct Firewall {
    nft: Nft,
    /// Whether to check CAP_NET_ADMIN before running nft (not when nft runs through a
    /// privileged wrapper such as `ip netns exec`).
    check_capability: bool,
    status: Mutex<Status>,
}

impl Firewall {
    /// Uses `nft` from PATH in this process's network namespace.
    pub fn new() -> Self {
        Self::with_nft(Nft::default(), true)
    }

    pub fn with_nft(nft: Nft, check_capability: bool) -> Self {
        Self { nft, check_capability, status: Mutex::new(Status::Idle) }
    }

    pub fn status(&self) -> Status {
        self.status.lock().expect("status lock").clone()
    }

    fn set_status(&self, s: Status) {
        *self.status.lock().expect("status lock") = s;
    }

    /// Makes nftables follow `profile` (start and reload): replaces gatewayd's table in one
    /// transaction with `bans` (source, time left) already in the ban sets. With
    /// `firewall.manage = false` a table gatewayd put in place earlier is removed. On error
    /// nothing changed.
    pub async fn apply(&self, profile: &Profile, bans: &[(IpAddr, Duration)]) -> Result<Status, ApplyError> {
        let previous = self.status();
        if !profile.firewall.manage {
            if let Status::Enforcing { table } = &previous {
                self.nft.json(&remove_table(table), false).await?;
                tracing::info!(table = %table, "firewall.manage is off: removed gatewayd's nftables table");
            }
            tracing::warn!("firewall.manage is off: gatewayd leaves nftables alone; bans are logged but not enforced");
            self.set_status(Status::Disabled);
            return Ok(Status::Disabled);
        }
        if self.check_capability && !has_net_admin() {
            return Ok(self.log_only("no CAP_NET_ADMIN: run as root or grant the capability (AmbientCapabilities=CAP_NET_ADMIN)".into()));
        }
        let rules = ruleset(profile, bans);
        let mut tx = rules.to_json();
        if let Status::Enforcing { table } = &previous {
            if *table != rules.table {
                // A renamed table: drop the old one in the same transaction.
                let mut objects = remove_table(table).objects.into_owned();
                objects.extend(tx.objects.iter().cloned());
                tx = Nftables { objects: objects.into() };
            }
        }
        match self.nft.json(&tx, false).await {
            Ok(_) => {
                let status = Status::Enforcing { table: rules.table.clone() };
                tracing::info!(table = %rules.table, bans = bans.len(), "firewall applied");
                self.set_status(status.clone());
                Ok(status)
            }
            Err(NftError::NotPermitted { stderr }) => Ok(self.log_only(format!("nft is not permitted: {stderr}"))),
            Err(e @ NftError::Spawn { .. }) if !previous.is_enforcing() => Ok(self.log_only(e.to_string())),
            Err(e) => {
                tracing::error!(error = %e, "firewall not applied; the previous ruleset stays in place");
                Err(ApplyError(e))
            }
        }
    }

    fn log_only(&self, reason: String) -> Status {
        tracing::warn!(reason = %reason, "firewall NOT enforced: gatewayd runs on without touching nftables; bans are logged only");
        let s = Status::LogOnly { reason };
        self.set_status(s.clone());
        s
    }

    /// Drops everything from `ip` for `duration` (replacing an existing ban's timeout).
    pub async fn ban(&self, ip: IpAddr, duration: Duration) -> Result<(), NftError> {
        let Status::Enforcing { table } = self.status() else {
            tracing::warn!(%ip, seconds = duration.as_secs(), "ban not enforced (firewall not managed)");
            return Ok(());
        };
        // Add-then-delete makes the delete safe whether or not the element exists; the final
        // add sets the new timeout. One transaction: there is no moment without the ban.
        let cmds = vec![element(NfCmd::Add, &table, ip, Duration::from_secs(1)), element(NfCmd::Delete, &table, ip, Duration::from_secs(1)), element(NfCmd::Add, &table, ip, duration)];
        self.nft.json(&Nftables { objects: cmds.into() }, false).await.map(|_| ())
    }

    /// Lets `ip` in again; fine when it is not banned (any more).
    pub async fn unban(&self, ip: IpAddr) -> Result<(), NftError> {
        let Status::Enforcing { table } = self.status() else {
            return Ok(());
        };
        let cmds = vec![element(NfCmd::Add, &table, ip, Duration::from_secs(1)), element(NfCmd::Delete, &table, ip, Duration::from_secs(1))];
        self.nft.json(&Nftables { objects: cmds.into() }, false).await.map(|_| ())
    }

    /// Removes gatewayd's table (tests, or an operator turning management off).
    pub async fn remove(&self) -> Result<(), NftError> {
        if let Status::Enforcing { table } = self.status() {
            self.nft.json(&remove_table(&table), false).await?;
            self.set_status(Status::Idle);
        }
        Ok(())
    }
}

impl Default for Firewall {
    fn default() -> Self {
        Self::new()
    }
}

fn element(cmd: fn(NfListObject<'static>) -> NfCmd<'static>, table: &str, ip: IpAddr, timeout: Duration) -> NfObject<'static> {
    let set = if ip.is_ipv4() { BAN_SET_V4 } else { BAN_SET_V6 };
    NfObject::CmdObject(cmd(NfListObject::Element(schema::Element {
        family: NfFamily::INet,
        table: table.to_owned().into(),
        name: set.into(),
        elem: vec![timed_element(ip, timeout)].into(),
    })))
}

/// Deletes `table` whether or not it exists.
fn remove_table(table: &str) -> Nftables<'static> {
    let t = || NfListObject::Table(schema::Table { family: NfFamily::INet, name: table.to_owned().into(), handle: None });
    Nftables { objects: vec![NfObject::CmdObject(NfCmd::Add(t())), NfObject::CmdObject(NfCmd::Delete(t()))].into() }
}
