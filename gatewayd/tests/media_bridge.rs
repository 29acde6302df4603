//! The media bridge across real sockets: a webrtc-rs peer plays the browser, a plain UDP peer
//! plays the SIP server, the bridge sits between them on loopback.

mod media_peer;

use std::net::IpAddr;
use std::time::Duration;

use gatewayd::media::{Direction, DtlsIdentity, MediaConfig, MediaEngine, MediaError, MediaEvent, PublicAddr, Side};
use media_peer::{collect_browser, contiguous, BrowserPeer, PlainPeer, BROWSER_EVENT_PT, SERVER_EVENT_PT};
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;

const WAIT: Duration = Duration::from_secs(10);

fn config(name: &str, base: u16) -> MediaConfig {
    let dir = std::env::temp_dir().join(format!("gatewayd-media-{}-{name}", std::process::id()));
    let mut cfg = MediaConfig::loopback(DtlsIdentity::Path(dir.join("dtls.pem")));
    // Internal side on another loopback address so leaks into browser SDP are visible.
    cfg.internal_bind = "127.0.0.3".parse().unwrap();
    cfg.public_ports = base..=base + 99;
    cfg.internal_ports = base + 100..=base + 199;
    cfg
}

fn browser_addresses(sdp: &str) -> Vec<String> {
    let mut v = Vec::new();
    for l in sdp.lines() {
        if let Some(c) = l.strip_prefix("a=candidate:") {
            v.push(c.split(' ').nth(4).unwrap().to_owned());
        }
        if let Some(c) = l.strip_prefix("c=IN IP4 ") {
            v.push(c.trim().to_owned());
        }
    }
    v
}

fn fingerprint_in(sdp: &str) -> String {
    sdp.lines().find_map(|l| l.strip_prefix("a=fingerprint:")).unwrap().trim().to_owned()
}

#[tokio::test]
async fn browser_offer_is_bridged_both_ways_with_pt_mapping_and_dtmf() {
    let engine = MediaEngine::start(config("offer", 41000)).unwrap();
    let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
    let mut server = PlainPeer::bind();
    let call = engine.create_call().await.unwrap();

    // Browser calls: its offer goes on as our offer to the server, the server picks PCMA.
    let offer = browser.create_offer();
    let internal_offer = call.internal_create_offer().await.unwrap();
    assert!(internal_offer.contains("c=IN IP4 127.0.0.3"), "{internal_offer}");
    assert!(internal_offer.contains("RTP/AVP 0 8 101"), "{internal_offer}");
    server.target_from(&internal_offer);
    call.internal_accept_answer(&server.sdp("PCMA", "sendrecv")).await.unwrap();
    let answer = call.browser_answer(&offer).await.unwrap();

    // Only the advertised public address, never the internal one; stable fingerprint; passive.
    assert_eq!(browser_addresses(&answer).iter().filter(|a| a.as_str() != "127.0.0.1" && a.as_str() != "0.0.0.0").count(), 0, "{answer}");
    assert!(!answer.contains("127.0.0.3"));
    assert!(answer.contains("a=ice-lite"), "{answer}");
    assert!(!answer.contains("CN/8000"), "no comfort noise toward the browser: {answer}");
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("a=rtcp-mux"));
    assert_eq!(format!("sha-256 {}", fingerprint_in(&answer).split(' ').nth(1).unwrap()), engine.fingerprint());
    let audio_line = answer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    assert!(audio_line.contains(" 8") && !audio_line.contains(" 0 ") && !audio_line.ends_with(" 0"), "only PCMA offered on: {audio_line}");

    browser.accept_answer(&answer);
    assert!(browser.wait_connected(WAIT), "DTLS-SRTP up");

    // Browser -> server: PCMA keeps PT 8, numbers continuous.
    browser.stream(Some(8));
    let got = server.collect(WAIT, |g| g.len() >= 20);
    assert!(got.len() >= 20, "server got {} packets", got.len());
    assert!(got.iter().all(|g| g.pt == 8 && g.payload.len() == 160));
    assert!(contiguous(&got));
    browser.stream(None);

    // Browser DTMF (its PT 126) reaches the server as the server's PT 96.
    browser.send(BROWSER_EVENT_PT, true, None, vec![5, 0x0a, 0, 160]);
    let got = server.collect(WAIT, |g| g.iter().any(|p| p.pt == SERVER_EVENT_PT));
    let ev = got.iter().find(|p| p.pt == SERVER_EVENT_PT).expect("telephone-event at the server");
    assert_eq!(ev.payload[0], 5);

    // Server -> browser: audio and DTMF with the browser's numbers.
    for i in 0..30 {
        server.send(8, i == 0, &[0xd5; 160]);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.send(SERVER_EVENT_PT, true, &[7, 0x0a, 0, 160]);
    let got = collect_browser(&browser, WAIT, |g| g.iter().any(|p| p.pt == BROWSER_EVENT_PT));
    let audio: Vec<_> = got.iter().filter(|g| g.pt == 8).cloned().collect();
    assert!(audio.len() >= 25, "browser got {} audio packets", audio.len());
    assert!(contiguous(&got), "seq continuous across audio and events");
    assert_eq!(got.iter().find(|p| p.pt == BROWSER_EVENT_PT).unwrap().payload[0], 7);

    let stats = call.stats().await.unwrap();
    assert!(stats.browser.packets_received >= 20 && stats.internal.packets_received >= 30, "{stats:?}");
    assert!(stats.internal.mos > 4.0, "{stats:?}");
    let lat = engine.take_forwarding_latency().await.unwrap();
    assert!(lat.packets >= 50 && lat.p50_us > 0 && lat.p50_us <= lat.p99_us, "{lat:?}");
    assert_eq!(engine.take_forwarding_latency().await.unwrap().packets, 0, "reading restarts it");
    let final_stats = call.close().await.unwrap();
    assert!(final_stats.internal.packets_sent >= 20);
    engine.shutdown();
}

#[tokio::test]
async fn gateway_offers_the_browser_with_aes_cm_and_hold_keeps_numbering() {
    let engine = MediaEngine::start(config("answer", 41200)).unwrap();
    let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80);
    let mut server = PlainPeer::bind();
    let call = engine.create_call().await.unwrap();

    // Server calls the agent: answer it with PCMU, then offer the browser only PCMU.
    let internal_answer = call.internal_answer(&server.sdp("PCMU PCMA", "sendrecv")).await.unwrap();
    assert!(internal_answer.contains("RTP/AVP 0 96"), "{internal_answer}");
    server.target_from(&internal_answer);
    let offer = call.browser_create_offer().await.unwrap();
    assert!(offer.contains("a=setup:actpass") && offer.contains("a=ice-lite"), "{offer}");
    assert!(!offer.contains("PCMA"), "only the server's codec is offered: {offer}");
    assert!(!offer.contains("CN/8000"), "no comfort noise toward the browser: {offer}");
    assert!(!offer.contains("127.0.0.3"));
    let answer = browser.answer(&offer);
    call.browser_accept_answer(&answer).await.unwrap();
    assert!(browser.wait_connected(WAIT));

    // Server audio with one SSRC, then a new SSRC with unrelated numbers: one stream for the browser.
    for _ in 0..10 {
        server.send(0, false, &[0xff; 160]);
    }
    let first = collect_browser(&browser, WAIT, |g| g.len() >= 10);
    server.ssrc = 0x1234_5678;
    server.seq = 7;
    server.ts = 1;
    for _ in 0..10 {
        server.send(0, false, &[0xff; 160]);
    }
    let second = collect_browser(&browser, WAIT, |g| g.len() >= 10);
    let all: Vec<_> = first.iter().chain(second.iter()).cloned().collect();
    assert_eq!(all.len(), 20);
    assert!(contiguous(&all), "SSRC change hidden");
    assert_eq!(all.iter().map(|g| g.ssrc).collect::<std::collections::HashSet<_>>().len(), 1);

    // Browser puts the call on hold with a re-offer; the gateway answers without touching the
    // internal leg, and drops the server's audio meanwhile.
    let hold = browser.reoffer(RTCRtpTransceiverDirection::Sendonly);
    let hold_answer = call.browser_answer(&hold).await.unwrap();
    assert!(hold_answer.contains("a=recvonly"), "{hold_answer}");
    assert_eq!(fingerprint_in(&hold_answer), fingerprint_in(&offer), "no new DTLS identity");
    browser.accept_answer(&hold_answer);
    for _ in 0..10 {
        server.send(0, false, &[0xff; 160]);
    }
    let during = collect_browser(&browser, Duration::from_millis(400), |_| false);
    assert!(during.is_empty(), "held browser got {} packets", during.len());

    let resume = browser.reoffer(RTCRtpTransceiverDirection::Sendrecv);
    let resume_answer = call.browser_answer(&resume).await.unwrap();
    assert!(resume_answer.contains("a=sendrecv"));
    browser.accept_answer(&resume_answer);
    for _ in 0..10 {
        server.send(0, false, &[0xff; 160]);
    }
    let after = collect_browser(&browser, WAIT, |g| g.len() >= 10);
    assert_eq!(after.len(), 10);
    assert_eq!(after[0].seq, all.last().unwrap().seq.wrapping_add(1), "no gap after resume");
    assert!(after.iter().all(|g| g.ssrc == all[0].ssrc), "same SSRC after hold and resume");
    assert!(contiguous(&after));

    // Browser audio reaches the server as PCMU.
    browser.stream(Some(0));
    let got = server.collect(WAIT, |g| g.len() >= 10);
    assert!(got.len() >= 10 && got.iter().all(|g| g.pt == 0));
    drop(call);
    engine.shutdown();
}

#[tokio::test]
async fn wrong_fingerprint_fails_the_browser_leg() {
    let engine = MediaEngine::start(config("finger", 41400)).unwrap();
    let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
    let mut call = engine.create_call().await.unwrap();
    let offer = browser.create_offer();
    let real = fingerprint_in(&offer);
    let (hash, hex) = real.split_once(' ').unwrap();
    let flipped: String = hex.chars().map(|c| if c == 'A' { 'B' } else if c == 'B' { 'A' } else { c }).collect();
    assert_ne!(flipped, hex);
    let forged = offer.replace(&real, &format!("{hash} {flipped}"));
    let answer = call.browser_answer(&forged).await.unwrap();
    browser.accept_answer(&answer);
    let ev = tokio::time::timeout(WAIT, async {
        loop {
            match call.next_event().await {
                Some(MediaEvent::BrowserFailed(r)) => return Some(r),
                Some(MediaEvent::BrowserConnected) => return None,
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("an outcome within the deadline");
    assert!(ev.is_some(), "a forged fingerprint must not connect");
    let connected = browser.with(|s| s.connected);
    assert!(!connected || browser.with(|s| s.failed), "the browser side gets no working session");
    engine.shutdown();
}

#[tokio::test]
async fn ports_come_back_and_exhaustion_is_a_typed_error() {
    let mut cfg = config("pool", 41600);
    cfg.public_ports = 41600..=41601;
    cfg.internal_ports = 41610..=41613; // two RTP/RTCP pairs
    let engine = MediaEngine::start(cfg).unwrap();
    let before = engine.status().await.unwrap();
    assert_eq!((before.public_ports_total, before.internal_pairs_total), (2, 2));
    let a = engine.create_call().await.unwrap();
    let b = engine.create_call().await.unwrap();
    let e = engine.create_call().await.err().expect("third call has no ports");
    assert!(matches!(e, MediaError::PortsExhausted));
    assert_eq!(e.sip_status(), 503);
    a.close().await.unwrap();
    drop(b);
    let after = engine.status().await.unwrap();
    assert_eq!(after, before, "all ports back in the pools");
    let c = engine.create_call().await.unwrap();
    c.close().await.unwrap();
    engine.shutdown();
}

#[tokio::test]
async fn echo_returns_audio_with_quality_figures() {
    let engine = MediaEngine::start(config("echo", 41800)).unwrap();
    let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
    let offer = browser.create_offer();
    let (mut echo, answer) = engine.create_echo(&offer).await.unwrap();
    browser.accept_answer(&answer);
    assert!(browser.wait_connected(WAIT));
    assert_eq!(tokio::time::timeout(WAIT, echo.next_event()).await.unwrap(), Some(MediaEvent::BrowserConnected));
    browser.stream(Some(0));
    let got = collect_browser(&browser, WAIT, |g| g.len() >= 25);
    assert!(got.len() >= 25 && got.iter().all(|g| g.pt == 0 && g.payload == vec![0x55; 160]));
    assert!(contiguous(&got));
    // Junk from a stranger at the browser port: ignored, the call goes on.
    let port: u16 = answer.lines().find_map(|l| l.strip_prefix("a=candidate:")).unwrap().split(' ').nth(5).unwrap().parse().unwrap();
    let stranger = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [&[0x16u8, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..], &[0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9, 9][..], &[1, 2, 3][..]] {
        stranger.send_to(junk, ("127.0.0.1", port)).unwrap();
    }
    let more = collect_browser(&browser, WAIT, |g| g.len() >= 10);
    assert!(more.len() >= 10, "audio continues after junk");
    let s = echo.stats().await.unwrap();
    assert!(s.browser.packets_received >= 25 && s.browser.packets_sent >= 25, "{s:?}");
    assert!(s.browser.mos > 4.0 && s.browser.loss_fraction == 0.0, "{s:?}");
    echo.close().await.unwrap();
    engine.shutdown();
}

#[tokio::test]
async fn silent_leg_is_reported_and_nat_address_is_advertised() {
    let mut cfg = config("silence", 42000);
    cfg.no_media_timeout = Duration::from_secs(1);
    // 1:1 NAT: bound on loopback, advertised as a documentation address.
    let public: IpAddr = "203.0.113.7".parse().unwrap();
    cfg.public = vec![PublicAddr { bind: "127.0.0.1".parse().unwrap(), advertise: public }];
    let engine = MediaEngine::start(cfg).unwrap();
    let server = PlainPeer::bind();
    let mut call = engine.create_call().await.unwrap();
    call.internal_answer(&server.sdp("PCMU", "sendrecv")).await.unwrap();
    let offer = call.browser_create_offer().await.unwrap();
    let addrs = browser_addresses(&offer);
    assert!(addrs.iter().any(|a| a == "203.0.113.7"), "{offer}");
    assert!(addrs.iter().all(|a| a == "203.0.113.7" || a == "0.0.0.0"), "{offer}");
    let ev = tokio::time::timeout(WAIT, call.next_event()).await.expect("reported in time");
    assert_eq!(ev, Some(MediaEvent::NoMedia(Side::Internal)));
    call.set_direction(Side::Internal, Direction::Inactive).await.unwrap();
    engine.shutdown();
}

#[tokio::test]
async fn one_shared_public_port_carries_several_calls() {
    let mut cfg = config("shared", 42200);
    cfg.single_public_port = Some(42250);
    // Two workers, each with its own socket on the port: the kernel's choice of socket is not
    // the call's worker for some browsers, whose datagrams are handed over.
    let engine = MediaEngine::start_with_workers(cfg, 2).unwrap();
    let mut legs = Vec::new();
    for _ in 0..4 {
        let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
        let offer = browser.create_offer();
        let (echo, answer) = engine.create_echo(&offer).await.unwrap();
        assert!(answer.contains(" 42250 typ host"), "{answer}");
        browser.accept_answer(&answer);
        legs.push((browser, echo));
    }
    let workers: std::collections::HashSet<usize> = legs.iter().map(|(_, e)| e.worker()).collect();
    assert_eq!(workers.len(), 2, "calls on both workers");
    for (browser, _) in &legs {
        assert!(browser.wait_connected(WAIT));
        browser.stream(Some(0));
    }
    for (browser, echo) in &legs {
        let got = collect_browser(browser, WAIT, |g| g.len() >= 10);
        assert!(got.len() >= 10 && contiguous(&got));
        let s = echo.stats().await.unwrap();
        // Each call only sees its own browser's packets.
        assert!(s.browser.packets_received >= 10 && s.browser.packets_lost == 0, "{s:?}");
    }
    // ICE restart on one call: new credentials in the answer, audio keeps flowing, numbering
    // continues.
    let (browser, echo) = &legs[0];
    let last = collect_browser(browser, WAIT, |g| !g.is_empty()).pop().unwrap();
    let restart = browser.ice_restart_offer();
    let answer = echo.browser_answer(&restart).await.unwrap();
    let ufrag = |sdp: &str| sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")).map(str::to_owned);
    assert_ne!(ufrag(&answer), None);
    assert_ne!(ufrag(&restart), None);
    browser.accept_answer(&answer);
    let after = collect_browser(browser, WAIT, |g| g.len() >= 20);
    assert!(after.len() >= 20, "audio after ICE restart");
    assert!(after[0].seq.wrapping_sub(last.seq) < 100, "numbering continues");
    engine.shutdown();
}

#[tokio::test]
async fn calls_spread_over_the_workers_and_each_carries_media_both_ways() {
    let engine = MediaEngine::start_with_workers(config("workers", 42400), 2).unwrap();
    assert_eq!(engine.workers(), 2);
    let mut calls = Vec::new();
    for _ in 0..4 {
        let mut server = PlainPeer::bind();
        let call = engine.create_call().await.unwrap();
        let internal = call.internal_answer(&server.sdp("PCMU", "sendrecv")).await.unwrap();
        server.target_from(&internal);
        let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
        let offer = call.browser_create_offer().await.unwrap();
        let answer = browser.answer(&offer);
        call.browser_accept_answer(&answer).await.unwrap();
        calls.push((call, server, browser));
    }
    let workers: std::collections::HashSet<usize> = calls.iter().map(|(c, ..)| c.worker()).collect();
    assert_eq!(workers.len(), 2, "calls land on both workers");
    assert_eq!(engine.status().await.unwrap().calls, 4);
    for (call, server, browser) in &mut calls {
        assert!(browser.wait_connected(WAIT));
        assert_eq!(tokio::time::timeout(WAIT, call.next_event()).await.unwrap(), Some(MediaEvent::BrowserConnected));
        browser.stream(Some(0));
        let to_server = server.collect(WAIT, |g| g.len() >= 10);
        assert!(to_server.len() >= 10, "browser to server on worker {}", call.worker());
        browser.stream(None);
        for _ in 0..20 {
            server.send(0, false, &[0xff; 160]);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let to_browser = collect_browser(browser, WAIT, |g| g.len() >= 10);
        assert!(to_browser.len() >= 10 && contiguous(&to_browser), "server to browser on worker {}", call.worker());
    }
    let lat = engine.take_forwarding_latency().await.unwrap();
    assert!(lat.packets >= 80, "latency readings gathered from both workers: {lat:?}");
    for (call, ..) in calls {
        call.close().await.unwrap();
    }
    let after = engine.status().await.unwrap();
    assert_eq!(after.calls, 0);
    assert_eq!((after.public_ports_free, after.internal_pairs_free), (after.public_ports_total, after.internal_pairs_total));
    engine.shutdown();
}

/// A SIP server in RTP echo mode sends the gateway's own packets back unchanged. The browser
/// must still see a stream sourced by the gateway (never its own SSRC coming back, which makes
/// a browser drop it as a loop and stop sending), continuous for as long as the call runs.
/// Both negotiation directions: str0m picks its sending SSRC in different places for each.
async fn server_echo_case(name: &str, base: u16, browser_offers: bool) {
    let engine = MediaEngine::start(config(name, base)).unwrap();
    let browser = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_256_Gcm);
    let browser_ssrc = browser.with(|s| s.ssrc);
    let mut server = PlainPeer::bind();
    let call = engine.create_call().await.unwrap();
    if browser_offers {
        let offer = browser.create_offer();
        server.target_from(&call.internal_create_offer().await.unwrap());
        call.internal_accept_answer(&server.sdp("PCMU", "sendrecv")).await.unwrap();
        browser.accept_answer(&call.browser_answer(&offer).await.unwrap());
    } else {
        server.target_from(&call.internal_answer(&server.sdp("PCMU", "sendrecv")).await.unwrap());
        let answer = browser.answer(&call.browser_create_offer().await.unwrap());
        call.browser_accept_answer(&answer).await.unwrap();
    }
    assert!(browser.wait_connected(WAIT));

    let (stop, echo) = server.echo(Duration::from_secs(20));
    browser.stream(Some(0));
    let got = collect_browser(&browser, Duration::from_secs(15), |g| g.len() >= 120);
    drop(stop);
    let (echoed, server_saw) = echo.join().unwrap();
    assert!(got.len() >= 120, "browser got {} packets back (server echoed {echoed})", got.len());
    assert_eq!(server_saw.len(), 1, "one stable SSRC toward the server: {server_saw:x?}");
    assert!(!server_saw.contains(&browser_ssrc), "the browser's SSRC passed through to the server");
    assert!(got.iter().all(|g| g.ssrc != browser_ssrc), "the browser's own SSRC came back");
    assert!(got.iter().all(|g| !server_saw.contains(&g.ssrc)), "the server leg's SSRC passed through to the browser");
    assert_eq!(got.iter().map(|g| g.ssrc).collect::<std::collections::HashSet<_>>().len(), 1, "one stable SSRC");
    assert!(contiguous(&got), "one continuous stream");
    assert!(got.iter().all(|g| g.pt == 0 && g.payload == vec![0x55; 160]));
    let stats = call.close().await.unwrap();
    assert!(stats.internal.packets_sent >= 120 && stats.internal.packets_received >= 120, "{stats:?}");
    engine.shutdown();
}

#[tokio::test]
async fn server_echo_reaches_an_offering_browser_with_the_gateways_own_ssrc() {
    server_echo_case("srvecho-a", 42400, true).await;
}

#[tokio::test]
async fn server_echo_reaches_an_answering_browser_with_the_gateways_own_ssrc() {
    server_echo_case("srvecho-b", 42600, false).await;
}
