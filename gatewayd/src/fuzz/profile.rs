//! The profile loader on arbitrary text, then what the daemon derives from a profile that
//! passes: nothing `validate` accepts may make a later stage panic at start or reload.
//!
//! Input: TOML text, then optionally a NUL and `NAME=VALUE` lines given as the environment
//! (`GATEWAYD_...` overrides). The profile's directory does not exist, so relative paths name
//! nothing. Texts naming device, proc or run files, or using TOML unicode escapes (which could
//! spell such paths), are skipped: reading `/dev/zero` as a certificate would only hang the
//! fuzzer, and a profile is the operator's, not an attacker's.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::profile::{load_str, Diagnostics};

const SKIPPED: [&str; 6] = ["/dev", "/proc", "/sys", "/run", "\\u", "\\U"];

pub fn profile(data: &[u8]) {
    let Ok(all) = std::str::from_utf8(data) else { return };
    if SKIPPED.iter().any(|s| all.contains(s)) {
        return;
    }
    let (text, env) = all.split_once('\0').unwrap_or((all, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .take(16)
        .collect();
    let path = Path::new("/nonexistent-gatewayd-fuzz/profile.toml");
    match load_str(path, text, env) {
        Err(diagnostics) => check_diagnostics(text, &diagnostics),
        Ok(loaded) => derive(&loaded),
    }
}

/// Each problem is reported with a position inside the text and prints on one line.
fn check_diagnostics(text: &str, diagnostics: &Diagnostics) {
    let lines = text.split('\n').count();
    assert!(!diagnostics.0.is_empty(), "a refusal without a reason");
    for d in &diagnostics.0 {
        if let Some((line, _col)) = d.position {
            assert!(line >= 1 && line <= lines + 1, "line {line} of {lines}: {d:?}");
        }
    }
    let _ = diagnostics.to_string();
}

/// What start and reload compute from a valid profile.
fn derive(loaded: &crate::profile::LoadedProfile) {
    let p = &loaded.profile;
    let _ = crate::call::agents::EdgeConfig::from_profile(loaded);
    let _ = crate::call::config::CallConfig::from_profile(loaded);
    let _ = crate::call::upstream::Upstreams::from_profile(&p.upstream);
    let _ = crate::turn::server::Config::from_profile(p, Some(b"secret".to_vec()));
    let _ = crate::turn::credentials::uris(p);
    let _ = crate::firewall::ruleset(p, &[]).to_script();
    let _ = crate::firewall::openings(p);
    let _ = crate::system::render::render(p, &loaded.dir);
    let _ = crate::profile::diff(&super::lab().profile, p);
    let _ = serde_json::to_string(p);
    // The guard on this profile's rules, under a short burst of failures from one source.
    let bans = crate::guard::ban_config(p);
    let mut guard = crate::guard::Guard::new(&bans);
    let mut now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ip = "198.51.100.9".parse().expect("address");
    for kind in [crate::profile::FailureKind::DigestFailure, crate::profile::FailureKind::TurnAuth, crate::profile::FailureKind::RateLimited].repeat(8) {
        let _ = guard.report(crate::guard::Failure { ip, kind }, now);
        let _ = guard.admit(ip, crate::guard::Limit::SipRequest, now);
        now += Duration::from_secs(1);
        let _ = guard.tick(now);
    }
}
