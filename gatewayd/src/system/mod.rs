//! Process integration: systemd notification (READY, RELOADING, STOPPING, WATCHDOG), the state
//! directory, careful file writes, handing freed memory back (`memory`), the open-file limit
//! (`limits`), the last known good profile (`last_good`), and the appliance's OS files rendered
//! from the profile (`render`). It must not know about SIP or media.

pub mod last_good;
pub mod limits;
pub mod memory;
mod notify;
pub mod render;

pub use notify::Notifier;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Picks the state directory: the command line, then systemd's `$STATE_DIRECTORY`, then the
/// profile's `site.state_dir` (relative to the profile), then a per-user default.
pub fn state_dir(flag: Option<&Path>, profile_dir: &Path, from_profile: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("STATE_DIRECTORY").filter(|v| !v.is_empty()) {
        // systemd may pass several, separated by ':'; the first is ours.
        let first = p.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return PathBuf::from(first);
    }
    if let Some(p) = from_profile {
        return profile_dir.join(p);
    }
    if is_root() {
        return PathBuf::from("/var/lib/gatewayd");
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("gatewayd")
}

fn is_root() -> bool {
    // The effective uid from /proc, which needs no unsafe call; root's line reads "Uid: r 0 ...".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// Writes a file readable only by its owner, atomically (temp file + rename) and durably
/// (fsync of the file and its directory), so a crash never leaves half a key or a lost ban.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}
