//! nftables ruleset generation from the profile and its atomic application, plus the ban sets.
//! It touches only the table gatewayd owns (`firewall.table`, family inet): every change is one
//! transaction that replaces that table or edits its ban sets, never anything outside it.
//!
//! - [`generate`]: profile -> [`Ruleset`] (pure): input policy drop; loopback, replies and the
//!   ICMP that path MTU and diagnostics need; per side only what the enabled services need,
//!   matched by destination address (and input interface when the profile names one); internal
//!   services only from the upstream servers, management services only from `allow_from`;
//!   nothing routed from the public side to the internal networks; banned sources dropped on
//!   every port.
//! - [`Ruleset`] renders as nftables JSON (what is applied) and as an nft script (`show`).
//! - [`Firewall`] applies it, and bans/unbans sources, or only logs when it may not.

mod apply;
pub mod generate;
mod nft;
mod ruleset;

use std::path::Path;
use std::process::ExitCode;

pub use apply::{ApplyError, Firewall, Status};
pub use generate::{openings, ruleset, Opening, BAN_SET_V4, BAN_SET_V6, FORWARD_CHAIN, INPUT_CHAIN};
pub use nft::{has_net_admin, Nft, NftError};
pub use ruleset::{Chain, Cond, Family, Hook, Policy, Rule, Ruleset, Stmt, TimeoutSet};

/// `gatewayd firewall show PROFILE`: prints the ruleset the profile yields as an nft script,
/// without applying it (`nft -c -f FILE` checks it, `nft -f FILE` would apply it).
pub fn cli_show(profile_path: &Path) -> ExitCode {
    match crate::profile::load(profile_path) {
        Ok(loaded) => {
            let p = &loaded.profile;
            if !p.firewall.manage {
                println!("# firewall.manage is false: gatewayd does not apply this ruleset.");
            }
            print!("{}", ruleset(p, &[]).to_script());
            ExitCode::SUCCESS
        }
        Err(diagnostics) => {
            eprintln!("{diagnostics}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
