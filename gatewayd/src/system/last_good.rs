//! The last known good profile: a copy of the last profile the daemon reached READY with (at
//! start or by reload), and the count of starts of the operator's profile that have not reached
//! READY yet. When a new profile validates but keeps failing to start (a port it cannot bind, a
//! certificate it cannot use, a crash), the start after `FAILED_STARTS_BEFORE_FALLBACK` such
//! starts runs the last good profile instead and says so in the log, systemd's status and
//! `/health`, so the box stays in service until the operator fixes the profile.
//!
//! Owns `<state>/last-good-profile.toml` and `<state>/profile-starts.json`. The choice itself is
//! a pure function of what those files hold; this module must not start or stop anything.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Starts of one profile without READY after which the next start falls back.
pub const FAILED_STARTS_BEFORE_FALLBACK: u32 = 3;

const LAST_GOOD: &str = "last-good-profile.toml";
const STARTS: &str = "profile-starts.json";

/// Starts of the operator's profile (by SHA-256) that have not reached READY.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    pub sha256: String,
    pub starts_without_ready: u32,
}

/// What this start runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The operator's profile, recording this start as one more not yet READY.
    Current { record: StartRecord },
    /// The last good profile: the operator's failed to reach READY this many times.
    LastGood { failed_sha256: String, failed_starts: u32 },
}

/// Decides from the record of earlier starts, the operator's profile and the last good one.
pub fn choose(record: Option<&StartRecord>, current_sha256: &str, last_good_sha256: Option<&str>) -> Choice {
    let earlier = record.filter(|r| r.sha256 == current_sha256).map_or(0, |r| r.starts_without_ready);
    let other_good = last_good_sha256.is_some_and(|good| good != current_sha256);
    if earlier >= FAILED_STARTS_BEFORE_FALLBACK && other_good {
        return Choice::LastGood { failed_sha256: current_sha256.to_owned(), failed_starts: earlier };
    }
    Choice::Current { record: StartRecord { sha256: current_sha256.to_owned(), starts_without_ready: earlier + 1 } }
}

/// The two files in a state directory.
pub struct LastGoodStore {
    dir: PathBuf,
}

impl LastGoodStore {
    pub fn in_dir(state_dir: &Path) -> Self {
        LastGoodStore { dir: state_dir.to_owned() }
    }

    /// The record of earlier starts; none when absent or unreadable (a fresh start).
    pub fn record(&self) -> Option<StartRecord> {
        let text = std::fs::read(self.dir.join(STARTS)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn set_record(&self, record: &StartRecord) -> std::io::Result<()> {
        let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
        super::write_private_file(&self.dir.join(STARTS), &json)
    }

    /// The last good profile's text.
    pub fn last_good(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join(LAST_GOOD)).ok()
    }

    /// The profile in `text` reached READY: it becomes the last good one, and no start is
    /// pending any more.
    pub fn reached_ready(&self, text: &str) -> std::io::Result<()> {
        super::write_private_file(&self.dir.join(LAST_GOOD), text.as_bytes())?;
        match std::fs::remove_file(self.dir.join(STARTS)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(sha: &str, n: u32) -> StartRecord {
        StartRecord { sha256: sha.into(), starts_without_ready: n }
    }

    #[test]
    fn a_first_start_runs_the_profile_and_counts_it() {
        assert_eq!(choose(None, "new", Some("good")), Choice::Current { record: record("new", 1) });
    }

    #[test]
    fn the_start_after_three_failed_ones_falls_back() {
        assert_eq!(choose(Some(&record("new", 2)), "new", Some("good")), Choice::Current { record: record("new", 3) });
        assert_eq!(choose(Some(&record("new", 3)), "new", Some("good")), Choice::LastGood { failed_sha256: "new".into(), failed_starts: 3 });
        // And stays on it while the operator's profile is the same one.
        assert_eq!(choose(Some(&record("new", 3)), "new", Some("good")), Choice::LastGood { failed_sha256: "new".into(), failed_starts: 3 });
    }

    #[test]
    fn a_changed_profile_gets_its_own_tries() {
        assert_eq!(choose(Some(&record("new", 3)), "fixed", Some("good")), Choice::Current { record: record("fixed", 1) });
    }

    #[test]
    fn without_another_good_profile_the_operators_keeps_being_tried() {
        assert_eq!(choose(Some(&record("new", 7)), "new", None), Choice::Current { record: record("new", 8) });
        // The last good one is this very profile: falling back would change nothing.
        assert_eq!(choose(Some(&record("same", 7)), "same", Some("same")), Choice::Current { record: record("same", 8) });
    }

    #[test]
    fn the_store_keeps_the_record_until_ready() {
        let dir = std::env::temp_dir().join(format!("gatewayd-last-good-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = LastGoodStore::in_dir(&dir);
        assert_eq!(store.record(), None);
        store.set_record(&record("new", 2)).unwrap();
        assert_eq!(store.record(), Some(record("new", 2)));
        store.reached_ready("[site]\n").unwrap();
        assert_eq!(store.record(), None);
        assert_eq!(store.last_good().as_deref(), Some("[site]\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
