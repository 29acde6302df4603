//! The SIP server is down (nothing answers on its address): an agent's outbound call fails fast
//! with 503 instead of waiting out a 32 s transaction timeout, and the health checks show the
//! server down in `/metrics` and `GET /health`. Loopback only.

mod agent_client;
mod common;
mod media_peer;

use std::time::{Duration, Instant};

use futures::SinkExt;
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use media_peer::BrowserPeer;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use agent_client::{connect, final_response, in_dialog, register, request, to_header};
use common::{eventually, http_get, lab_profile_free_ports, Gateway, TempDir};

fn outbound_invite(dn: &str, to: &str, cseq: u32, sdp: &str) -> rsip::Request {
    request(&format!(
        "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}o{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{to}@127.0.0.1>\r\n\
         From: <sip:{dn}@127.0.0.1>;tag=o{dn}\r\nCall-ID: out-{dn}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:x{dn}@client.invalid;transport=ws>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sip_server_fails_calls_within_seconds_and_shows_in_metrics_and_health() {
    let dir = TempDir::new("upstream-down");
    let (text, ports) = lab_profile_free_ports();
    // Nothing listens on the upstream address; checks every second, two misses mark it down.
    let text = text.replace("[upstream.health]\ninterval = \"10s\"\nfailures = 3", "[upstream.health]\ninterval = \"1s\"\nfailures = 2");
    assert!(text.contains("interval = \"1s\""), "the lab profile's [upstream.health] moved");
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let state = dir.path().join("state");
    let (https, admin, upstream) = (ports[&8443], ports[&9090], ports[&5080]);
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));

    let mut ws = connect(https, &state).await;
    assert_eq!(register(&mut ws, "5001", "pass5001").await, 200);
    let peer = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm);
    let offer = tokio::task::block_in_place(|| peer.create_offer());
    ws.send(Message::text(outbound_invite("5001", "1234", 1, &offer).to_string())).await.unwrap();
    let challenge = final_response(&mut ws).await;
    assert!(matches!(challenge.status_code.code(), 401 | 407), "{challenge}");
    ws.send(Message::text(in_dialog("ACK", "5001", 1, "5001oa1", &to_header(&challenge)))).await.unwrap();
    let mut again = outbound_invite("5001", "1234", 2, &offer);
    authorize_request(&mut again, &challenge, "5001", &ClientSecret::Password("pass5001".into()), 1, "cn0nceo").unwrap();
    let dialled = Instant::now();
    ws.send(Message::text(again.to_string())).await.unwrap();
    let answer = final_response(&mut ws).await;
    let took = dialled.elapsed();
    eprintln!("FIGURE upstream down: {} after {:.2} s", answer.status_code, took.as_secs_f64());
    assert_eq!(answer.status_code.code(), 503, "{answer}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // The health checks agree, where an operator looks.
    let line = format!("gatewayd_upstream_up{{server=\"127.0.0.1:{upstream}\",transport=\"udp\"}} 0");
    tokio::task::block_in_place(|| {
        let mut last = String::new();
        let shown = (0..400).any(|_| {
            last = http_get(admin, "/metrics").unwrap_or_default();
            last.contains(&line) || {
                std::thread::sleep(Duration::from_millis(25));
                false
            }
        });
        assert!(shown, "{line} not in:\n{}", last.lines().filter(|l| l.contains("upstream")).collect::<Vec<_>>().join("\n"));
        let health: Value = eventually("the server shown down in /health", Duration::from_secs(5), || {
            let h: Value = serde_json::from_str(&http_get(admin, "/health")?).ok()?;
            (h["upstream_up"] == 0).then_some(h)
        });
        assert_eq!(health["upstream_servers"], 1, "{health}");
    });
}
