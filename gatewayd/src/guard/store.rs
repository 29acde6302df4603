//! Active bans and offence history in the state directory, so they survive a restart.
//! Written atomically and durably; a damaged file is set aside, never silently lost.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::engine::{Ban, Offences};
use crate::system::write_private_file;

/// File name of the ban state inside the state directory.
pub const STORE_FILE: &str = "bans.json";

/// What is persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredState {
    pub bans: Vec<Ban>,
    #[serde(default)]
    pub offences: Vec<(IpAddr, Offences)>,
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(flatten)]
    state: StoredState,
}

/// The ban state file.
#[derive(Debug, Clone)]
pub struct BanStore {
    path: PathBuf,
}

impl BanStore {
    pub fn in_dir(state_dir: &Path) -> Self {
        Self { path: state_dir.join(STORE_FILE) }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the saved state; a missing file is an empty state. A file that does not parse is
    /// renamed to `bans.json.damaged` and reported, so the next save does not destroy it.
    pub fn load(&self) -> Result<StoredState, String> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(StoredState::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", self.path.display())),
        };
        match serde_json::from_slice::<File>(&bytes) {
            Ok(f) => Ok(f.state),
            Err(e) => {
                let aside = self.path.with_extension("json.damaged");
                let _ = std::fs::rename(&self.path, &aside);
                Err(format!("{} is damaged ({e}); moved to {}", self.path.display(), aside.display()))
            }
        }
    }

    pub fn save(&self, state: &StoredState) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&File { version: 1, state: state.clone() }).map_err(std::io::Error::other)?;
        write_private_file(&self.path, &text)
    }
}
