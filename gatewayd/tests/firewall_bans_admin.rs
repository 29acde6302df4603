//! Bans through the admin endpoint over a real socket, with the `gatewayd bans` command as the
//! client. The firewall is not managed here (bans are logged only), so no privileges are needed.

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;

use gatewayd::firewall::Firewall;
use gatewayd::guard::{BanService, BanStore, Failure};
use gatewayd::observe;
use gatewayd::profile::{self, FailureKind};

const PROFILE: &str = include_str!("../../profiles/lab.toml");

fn gatewayd(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gatewayd")).args(args).output().expect("gatewayd runs");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bans_are_listed_and_lifted_through_the_admin_endpoint() {
    let loaded = profile::load_str(std::path::Path::new("lab.toml"), PROFILE, std::iter::empty()).unwrap();
    let state = std::env::temp_dir().join(format!("gatewayd-admin-bans-{}", std::process::id()));
    let bans = Arc::new(BanService::new(&loaded.profile, Arc::new(Firewall::new()), Some(BanStore::in_dir(&state))));
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(loaded));
    let (addr, serve) = observe::admin::bind("127.0.0.1:0".parse().unwrap(), observe::admin::Serves::Admin, rx, bans.clone(), Default::default(), None).await.unwrap();
    tokio::spawn(serve);
    let admin = addr.to_string();

    // Five digest failures trip the default "auth" rule.
    let attacker: IpAddr = "198.51.100.7".parse().unwrap();
    for _ in 0..5 {
        bans.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await;
    }
    assert_eq!(bans.counters().bans_by_rule, 1);

    let (ok, out, err) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || gatewayd(&["bans", "list", "--admin", &admin])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("198.51.100.7") && out.contains("auth"), "{out}");

    let (ok, _, err) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || gatewayd(&["bans", "remove", "198.51.100.7", "--admin", &admin])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(bans.list().is_empty());
    assert_eq!(bans.counters().bans_lifted, 1);

    let (ok, _, err) = tokio::task::spawn_blocking(move || gatewayd(&["bans", "remove", "198.51.100.7", "--admin", &admin])).await.unwrap();
    assert!(!ok, "lifting a ban that is not there fails");
    assert!(err.contains("not banned"), "{err}");
    let _ = std::fs::remove_dir_all(&state);
}
