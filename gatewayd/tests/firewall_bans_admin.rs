//! The ban routes of the admin endpoint over a real socket, and the `bans` command as their
//! client. The firewall is not managed here (bans are logged only), so no privileges are needed.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use gatewayd::firewall::Firewall;
use gatewayd::guard::admin::{self, BansCommand};
use gatewayd::guard::{BanService, BanStore, Failure};
use gatewayd::profile::{self, FailureKind};

const PROFILE: &str = include_str!("../../profiles/lab.toml");

async fn serve(service: Arc<BanService>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, admin::routes(service)).await.unwrap() });
    addr
}

#[tokio::test]
async fn bans_are_listed_added_lifted_and_counted_through_the_admin_routes() {
    let profile = profile::load_str(std::path::Path::new("lab.toml"), PROFILE, std::iter::empty()).unwrap().profile;
    let state = std::env::temp_dir().join(format!("gatewayd-admin-bans-{}", std::process::id()));
    let service = Arc::new(BanService::new(&profile, Arc::new(Firewall::new()), Some(BanStore::in_dir(&state))));
    let addr = serve(service.clone()).await;

    let (status, body) = admin::request(addr, "GET", "/bans", None).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "[]"));

    // Five digest failures trip the default "auth" rule.
    let attacker: IpAddr = "198.51.100.7".parse().unwrap();
    for _ in 0..5 {
        service.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await;
    }
    let (status, body) = admin::request(addr, "GET", "/bans", None).await.unwrap();
    assert_eq!(status, 200);
    let bans: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(bans[0]["ip"], "198.51.100.7");
    assert_eq!(bans[0]["reason"]["by"], "rule");
    assert_eq!(bans[0]["reason"]["rule"], "auth");
    assert!(bans[0]["remaining_secs"].as_u64().unwrap() > 3500, "{body}");

    let (status, body) = admin::request(addr, "POST", "/bans", Some(r#"{"ip":"2001:db8::7","seconds":90}"#.into())).await.unwrap();
    assert_eq!(status, 201, "{body}");
    let (status, _) = admin::request(addr, "POST", "/bans", Some(r#"{"ip":"127.0.0.1"}"#.into())).await.unwrap();
    assert_eq!(status, 409, "loopback is never banned");
    let (status, _) = admin::request(addr, "POST", "/bans", Some(r#"{"ip":"not-an-ip"}"#.into())).await.unwrap();
    assert_eq!(status, 422);

    let (status, _) = admin::request(addr, "DELETE", "/bans/198.51.100.7", None).await.unwrap();
    assert_eq!(status, 204);
    let (status, _) = admin::request(addr, "DELETE", "/bans/198.51.100.7", None).await.unwrap();
    assert_eq!(status, 404);
    let (status, _) = admin::request(addr, "DELETE", "/bans/nonsense", None).await.unwrap();
    assert_eq!(status, 400);

    let (status, body) = admin::request(addr, "GET", "/bans/counters", None).await.unwrap();
    assert_eq!(status, 200);
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["failures"]["digest-failure"], 5);
    assert_eq!((c["bans_by_rule"].as_u64(), c["bans_manual"].as_u64(), c["bans_lifted"].as_u64()), (Some(1), Some(1), Some(1)));

    // The command line is a client of the same routes.
    let dir = state.clone();
    let text = PROFILE.replace("admin = \"127.0.0.1:9090\"", &format!("admin = \"{addr}\""));
    let exits = tokio::task::spawn_blocking(move || {
        let path = dir.join("profile.toml");
        std::fs::write(&path, text).unwrap();
        let ip: IpAddr = "203.0.113.77".parse().unwrap();
        [
            admin::cli(&path, BansCommand::Add { ip, seconds: Some(60) }),
            admin::cli(&path, BansCommand::List),
            admin::cli(&path, BansCommand::Remove { ip }),
            admin::cli(&path, BansCommand::Remove { ip }),
        ]
    })
    .await
    .unwrap();
    assert_eq!(exits, [ExitCode::SUCCESS, ExitCode::SUCCESS, ExitCode::SUCCESS, ExitCode::FAILURE]);
    assert_eq!(service.list().len(), 1, "only the IPv6 ban is left");
    let _ = std::fs::remove_dir_all(&state);
}
