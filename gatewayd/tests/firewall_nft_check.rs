//! The generated rulesets of the example profiles are accepted by the real nft: the script
//! (`nft -c -f`) and the JSON transaction (`nft -j -c -f`), checked inside a fresh network
//! namespace (`unshare -rn`) so the check has permission and cannot touch the host. Applying
//! both forms in separate namespaces yields the same kernel ruleset.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use gatewayd::firewall::ruleset;
use gatewayd::profile;
use std::io::Write;

fn profiles() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    ["lab.toml", "dmz-genesys.toml", "behind-nat.toml", "ha-pair-a.toml", "ha-pair-b.toml"].iter().map(|f| dir.join(f)).collect()
}

/// Runs `sh -c SCRIPT` in a new user+network namespace with `input` on stdin.
fn in_fresh_netns(script: &str, input: &str) -> std::process::Output {
    let mut child = Command::new("unshare")
        .args(["-rn", "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unshare runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `None` with a reason when this machine cannot run the check.
fn nft_unavailable() -> Option<String> {
    if Command::new("nft").arg("--version").output().is_err() {
        return Some("nft is not installed".into());
    }
    let probe = in_fresh_netns("nft list ruleset", "");
    if !probe.status.success() {
        return Some(format!("cannot run nft in a fresh network namespace: {}", String::from_utf8_lossy(&probe.stderr)));
    }
    None
}

#[test]
fn nft_accepts_the_generated_script_and_json_of_every_example_profile() {
    if let Some(why) = nft_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    for path in profiles() {
        let loaded = profile::load(&path).unwrap_or_else(|d| panic!("{d}"));
        let bans = [("198.51.100.66".parse().unwrap(), std::time::Duration::from_secs(600)), ("2001:db8::66".parse().unwrap(), std::time::Duration::from_secs(60))];
        let rules = ruleset(&loaded.profile, &bans);
        let script = rules.to_script();
        let out = in_fresh_netns("nft -c -f -", &script);
        assert!(out.status.success(), "{}: nft -c rejected the script:\n{}\n{script}", path.display(), String::from_utf8_lossy(&out.stderr));
        let json = serde_json::to_string(&rules.to_json()).unwrap();
        let out = in_fresh_netns("nft -j -c -f -", &json);
        assert!(out.status.success(), "{}: nft -j -c rejected the JSON:\n{}\n{json}", path.display(), String::from_utf8_lossy(&out.stderr));
    }
}

/// The script `firewall show` prints and the JSON the daemon applies are the same ruleset.
#[test]
fn script_and_json_yield_the_same_kernel_ruleset() {
    if let Some(why) = nft_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    for path in profiles() {
        let loaded = profile::load(&path).unwrap_or_else(|d| panic!("{d}"));
        let rules = ruleset(&loaded.profile, &[]);
        let table = &rules.table;
        let list = format!("nft -f - && nft list table inet {table}");
        let from_script = in_fresh_netns(&list, &rules.to_script());
        assert!(from_script.status.success(), "{}", String::from_utf8_lossy(&from_script.stderr));
        let list = format!("nft -j -f - && nft list table inet {table}");
        let from_json = in_fresh_netns(&list, &serde_json::to_string(&rules.to_json()).unwrap());
        assert!(from_json.status.success(), "{}", String::from_utf8_lossy(&from_json.stderr));
        let a = String::from_utf8_lossy(&from_script.stdout);
        let b = String::from_utf8_lossy(&from_json.stdout);
        assert_eq!(a, b, "{}: script and JSON differ once applied", path.display());
        assert!(a.contains("policy drop"), "{a}");
    }
}

/// `gatewayd firewall show PROFILE` prints what nft accepts, and applies nothing.
#[test]
fn firewall_show_prints_a_script_nft_accepts() {
    if let Some(why) = nft_unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let before = Command::new("nft").args(["list", "ruleset"]).output().map(|o| o.stdout).unwrap_or_default();
    for path in profiles() {
        let out = Command::new(env!("CARGO_BIN_EXE_gatewayd")).args(["firewall", "show"]).arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains("chain input {") && script.contains("policy drop;"), "{script}");
        let check = in_fresh_netns("nft -c -f -", &script);
        assert!(check.status.success(), "{}: {}", path.display(), String::from_utf8_lossy(&check.stderr));
    }
    let bad = Command::new(env!("CARGO_BIN_EXE_gatewayd")).args(["firewall", "show", "/nonexistent.toml"]).output().unwrap();
    assert!(!bad.status.success() && !bad.stderr.is_empty());
    let after = Command::new("nft").args(["list", "ruleset"]).output().map(|o| o.stdout).unwrap_or_default();
    assert_eq!(before, after, "show applies nothing");
}
