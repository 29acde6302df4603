//! `kill -9` under 50 calls, with the test as the supervisor (systemd's `Restart=` in the
//! image): the daemon comes back on the same state directory, the ban made before the crash is
//! still in force, every agent is registered again within 10 s of the restart (reconnecting as
//! JsSIP does), and each killed call has a record with cause `gateway-restart` instead of
//! vanishing from the CDRs. Loopback only.

mod agent_client;
mod common;
mod media_peer;

use std::time::{Duration, Instant};

use media_peer::BrowserPeer;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use serde_json::Value;

use agent_client::{connect, echo_call, register, Ws};
use common::{eventually, http_get, lab_profile_free_ports, Gateway, TempDir};

const CALLS: u16 = 50;
const BANNED: &str = "198.51.100.66";

fn post(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "POST {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn calls(admin: u16) -> Option<Vec<Value>> {
    serde_json::from_str::<Value>(&http_get(admin, "/calls")?).ok()?.as_array().cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_50_calls_loses_no_record_keeps_bans_and_agents_come_back() {
    let dir = TempDir::new("crash");
    let (text, ports) = lab_profile_free_ports();
    let last = 5000 + CALLS;
    let text = text.replace("dn = \"5001-5010\"", &format!("dn = \"5001-{last}\""))
        .replace("[observe]\n", "[observe]\ncdr_file = \"cdr.jsonl\"\n")
        .replace("max_calls = 100", "max_calls = 200")
        // Fifty agents from one address: an office's limits, not a home agent's.
        + "\n[[bans.rate_limits.offices]]\nname = \"test\"\nnetworks = [\"127.0.0.0/8\"]\nnew_connections_per_second = 200\nsip_requests_per_second = 2000\nburst = 400\nmax_connections_per_source = 200\n";
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let state = dir.path().join("state");
    let (https, admin) = (ports[&8443], ports[&9090]);
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    assert!(post(admin, &format!("/bans/{BANNED}?seconds=600")).contains("200 OK"));

    let mut agents: Vec<(String, Ws)> = Vec::new();
    let mut peers = Vec::new();
    for n in 1..=CALLS {
        let dn = (5000 + n).to_string();
        let mut ws = connect(https, &state).await;
        assert_eq!(register(&mut ws, &dn, &format!("pass{dn}")).await, 200, "{dn}");
        let peer = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm);
        echo_call(&mut ws, &dn, &format!("pass{dn}"), &peer).await;
        peers.push(peer);
        agents.push((dn, ws));
    }
    tokio::task::block_in_place(|| {
        eventually("fifty calls up", Duration::from_secs(20), || (calls(admin)?.len() == usize::from(CALLS)).then_some(()));
        // Kept on disk within the second.
        eventually("the calls in progress on disk", Duration::from_secs(5), || {
            let kept: Vec<Value> = serde_json::from_slice(&std::fs::read(state.join("calls-in-progress.json")).ok()?).ok()?;
            (kept.len() == usize::from(CALLS)).then_some(())
        });
    });

    // kill -9, then the supervisor's restart.
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    let restarted = Instant::now();
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    let line = gw.wait_for_log("calls were in progress when the gateway last stopped", Duration::from_secs(5));
    assert!(line.contains(&format!("calls={CALLS}")), "{line}");

    // Agents notice their WebSocket is gone and come back, as JsSIP does on its own.
    for (dn, ws) in &mut agents {
        let _ = ws.close(None).await;
        *ws = loop {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https)).await;
            if let Ok(tcp) = tcp {
                if let Ok(ws) = agent_client::over(tcp, "127.0.0.1", &format!("127.0.0.1:{https}"), &state).await {
                    break ws;
                }
            }
            assert!(restarted.elapsed() < Duration::from_secs(10), "agent {dn} cannot reconnect");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(register(ws, dn, &format!("pass{dn}")).await, 200, "{dn}");
    }
    let back = restarted.elapsed();
    eprintln!("FIGURE crash: {CALLS} agents registered again {:.2} s after the restart began", back.as_secs_f64());
    assert!(back < Duration::from_secs(10), "{back:?}");
    tokio::task::block_in_place(|| {
        eventually("every agent in the registrar", Duration::from_secs(5), || {
            let status: Value = serde_json::from_str(&http_get(admin, "/status")?).ok()?;
            (status["registrations"] == u64::from(CALLS)).then_some(())
        })
    });

    // The ban survived the crash.
    let bans = http_get(admin, "/bans").unwrap_or_default();
    assert!(bans.contains(BANNED), "{bans}");

    // Every killed call has its record, once.
    let cdr = std::fs::read_to_string(state.join("cdr.jsonl")).or_else(|_| std::fs::read_to_string(dir.path().join("cdr.jsonl"))).unwrap_or_default();
    let restarts: Vec<Value> = cdr.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|r| r["cause"] == "gateway-restart").collect();
    assert_eq!(restarts.len(), usize::from(CALLS), "{cdr}");
    assert!(restarts.iter().all(|r| r["ended_ms"].as_u64() >= r["started_ms"].as_u64() && r["dn"].as_str().is_some_and(|d| d.starts_with("50"))));
    assert!(calls(admin).is_some_and(|c| c.is_empty()), "no call survives its media");
    drop(peers);
}
