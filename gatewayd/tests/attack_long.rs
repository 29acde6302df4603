//! The long attack runs, behind `GATEWAYD_ATTACK=1` (`just attack` runs them one at a time and
//! keeps their `FIGURE` lines): testssl.sh against HTTPS and TURN over TLS, floods and resource
//! bounds, many agents behind one NAT address. Each runs the daemon on the DMZ-like profile in
//! the namespace lab (`tests/attack/mod.rs`), with a legitimate agent registering and calling
//! from its office throughout, and samples the daemon's memory.
//!
//! Needs root, `ip netns`, testssl.sh; without `GATEWAYD_ATTACK` each test says so and passes.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod attack;
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use attack::agent::{request, response, Agent, Tally};
use attack::*;
use futures::SinkExt;
use lab::*;
use tokio_tungstenite::tungstenite::Message;

/// The daemon's resident memory stays under this through every flood (debug build).
const RSS_BOUND_MIB: u64 = 256;

fn enabled(tools: &[&str]) -> bool {
    if std::env::var_os("GATEWAYD_ATTACK").is_none() {
        eprintln!("SKIPPED: long attack run; set GATEWAYD_ATTACK=1 (just attack)");
        return false;
    }
    if let Some(why) = unavailable().or_else(|| missing_tools(tools)) {
        eprintln!("SKIPPED: {why}");
        return false;
    }
    true
}

/// Samples the daemon's RSS every 50 ms; `peak` since the last `reset`.
struct Rss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Rss {
    fn watch(pid: u32) -> Rss {
        let peak = Arc::new(AtomicU64::new(0));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Rss { peak, task }
    }
    fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Rss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One flood's outcome, checked and reported: the memory bound held and the agent, running
/// all along, saw nothing fail.
async fn held(name: &str, site: &Site, rss: &Rss, before: &Tally, agent: &Agent, detail: String) {
    let peak = rss.take_peak();
    // The agent completes at least one more registration after the flood.
    let end = Instant::now() + Duration::from_secs(10);
    while agent.tally().registered <= before.registered + 1 {
        assert!(Instant::now() < end, "{name}: the agent did not register after the flood: {:?}", agent.tally().failures);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = agent.tally();
    let failures = &now.failures[before.failures.len()..];
    eprintln!(
        "FIGURE {name}: {detail}; daemon RSS peak {} MiB (now {} MiB, bound {RSS_BOUND_MIB}); agent {} registrations and {} echo calls during it, {} failures",
        peak / 1024,
        site.rss_kib() / 1024,
        now.registered - before.registered,
        now.calls - before.calls,
        failures.len()
    );
    assert!(peak / 1024 < RSS_BOUND_MIB, "{name}: RSS {} MiB over the bound", peak / 1024);
    assert!(failures.is_empty(), "{name}: the agent failed: {failures:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testssl_finds_nothing_high_or_critical_on_https_and_turn_over_tls() {
    if !enabled(&["testssl"]) {
        return;
    }
    let site = Site::start("l", "", "");
    let ca = site.dir.path().join("ca.crt");
    let mut high = Vec::new();
    for (name, port) in [("HTTPS", 443), ("TURN over TLS", 5349)] {
        let json = site.dir.path().join(format!("testssl-{port}.json"));
        let began = Instant::now();
        let out = tool(
            &site.scanner.ns,
            Duration::from_secs(900),
            &["testssl", "--quiet", "--color", "0", "--warnings", "off", "--add-ca", ca.to_str().unwrap(), "--ip", PUBLIC_GW, "--jsonfile", json.to_str().unwrap(), &format!("{HOST}:{port}")],
        );
        let findings: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("testssl wrote no JSON:\n{}", text(&out)))).unwrap();
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        let mut notable = Vec::new();
        for f in &findings {
            let severity = f["severity"].as_str().unwrap_or("?").to_owned();
            if matches!(severity.as_str(), "LOW" | "MEDIUM" | "HIGH" | "CRITICAL" | "WARN") {
                notable.push(format!("{} {}: {}", severity, f["id"].as_str().unwrap_or("?"), f["finding"].as_str().unwrap_or("?")));
            }
            *counts.entry(severity).or_default() += 1;
        }
        eprintln!("FIGURE testssl {name} ({HOST}:{port}) in {:?}: {counts:?}", began.elapsed());
        for n in &notable {
            eprintln!("FIGURE testssl {name}   {n}");
        }
        if counts.contains_key("HIGH") || counts.contains_key("CRITICAL") {
            high.push((name, notable));
        }
    }
    assert!(high.is_empty(), "testssl found HIGH or CRITICAL: {high:#?}");
}

/// A wrong-password REGISTER for 5001 against `challenge`, nonce count `nc`.
fn guess(challenge: &rsip::Response, nc: u32) -> String {
    use gatewayd::sip::digest::{authorize_request, ClientSecret};
    let mut r = request(&format!(
        "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS f.invalid;branch=z9hG4bKf{nc}\r\nMax-Forwards: 70\r\nTo: <sip:5001@gw.test>\r\nFrom: <sip:5001@gw.test>;tag=f\r\nCall-ID: flood\r\nCSeq: {nc} REGISTER\r\nContact: <sip:f@f.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
    ));
    authorize_request(&mut r, challenge, "5001", &ClientSecret::Password(format!("flood{nc}")), nc, "f").unwrap();
    r.to_string()
}

/// UDP datagrams from `src` in `ns` to the internal SIP port as fast as the socket takes
/// them, `count` at most, for `limit` at most; returns how many were sent and answers seen.
async fn udp_flood(ns: &str, src: &str, count: u32, limit: Duration, make: impl Fn(u32) -> Vec<u8>) -> (u32, u32) {
    let s = in_netns(ns, || std::net::UdpSocket::bind((src, 0)).unwrap());
    s.set_nonblocking(true).unwrap();
    let s = Arc::new(tokio::net::UdpSocket::from_std(s).unwrap());
    let answers = Arc::new(AtomicU64::new(0));
    let (r, a) = (s.clone(), answers.clone());
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while r.recv_from(&mut buf).await.is_ok() {
            a.fetch_add(1, Ordering::Relaxed);
        }
    });
    let end = Instant::now() + limit;
    let mut sent = 0;
    while sent < count && Instant::now() < end {
        if s.send_to(&make(sent), (INTERNAL_GW, 5060)).await.is_ok() {
            sent += 1;
        }
        if sent % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Answers still on their way.
    let quiet_for = Duration::from_millis(500);
    let mut last = answers.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(quiet_for).await;
        let now = answers.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    reader.abort();
    (sent, last as u32)
}

fn sip_request(method: &str, n: u32, src: &str, body_len: usize) -> Vec<u8> {
    let body = "v".repeat(body_len);
    format!(
        "{method} sip:5001@{INTERNAL_GW} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bKfl{n}\r\nMax-Forwards: 70\r\nTo: <sip:5001@{INTERNAL_GW}>\r\nFrom: <sip:flood@{src}>;tag=fl{n}\r\nCall-ID: flood{n}@{src}\r\nCSeq: 1 {method}\r\nContact: <sip:flood@{src}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_stay_within_the_memory_bound_while_an_agent_registers_and_calls() {
    if !enabled(&[]) {
        return;
    }
    let site = Site::start("f", "", "");
    let bots = site.lab.add_remote("b", "192.0.2").expect("bot network");
    const BOTS: u8 = 100;
    for n in 6..5 + BOTS {
        bots.add_host(n).unwrap();
    }
    let rss = Rss::watch(site.daemon.child.id());
    let agent = Agent::start(&site.office.ns, &site.office.host(5), "5001", Duration::from_millis(200), 3);
    let end = Instant::now() + Duration::from_secs(10);
    while agent.tally().registered == 0 {
        assert!(Instant::now() < end, "the agent did not register: {:?}", agent.tally());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("FIGURE floods: daemon RSS at rest {} MiB", site.rss_kib() / 1024);
    rss.take_peak();

    // 1. REGISTER flood with wrong passwords over WSS, not waiting for answers.
    let before = agent.tally();
    let mut ws = wss_from(&site.lab.inet, ATTACKER).await.unwrap();
    ws.send(Message::text(request("REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS f.invalid;branch=z9hG4bKf0\r\nMax-Forwards: 70\r\nTo: <sip:5001@gw.test>\r\nFrom: <sip:5001@gw.test>;tag=f\r\nCall-ID: flood\r\nCSeq: 1 REGISTER\r\nContact: <sip:f@f.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n").to_string())).await.unwrap();
    let (challenge, _) = response(&mut ws).await.unwrap();
    let began = Instant::now();
    let mut sent = 0;
    for nc in 1..=10_000 {
        // Once the source is dropped its send buffer fills and nothing more goes out.
        match tokio::time::timeout(Duration::from_secs(2), ws.send(Message::text(guess(&challenge, nc)))).await {
            Ok(Ok(())) => sent += 1,
            _ => break,
        }
    }
    let mut cut = false;
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && !cut {
        cut = site.dropped(&site.lab.inet, ATTACKER).await;
    }
    assert!(cut, "the flooding source was not dropped");
    held("REGISTER flood, wrong passwords over WSS", &site, &rss, &before, &agent, format!("{sent} of 10000 guesses written before the socket stalled (the source dropped), seen dropped {:?} after the first (including a 2 s send timeout)", began.elapsed())).await;
    drop(ws);

    // 2. INVITE and OPTIONS floods over UDP on the internal side from a non-upstream host:
    // the kernel drops them. Then with that host let through by hand (as on a gateway whose
    // firewall someone else manages), the daemon itself: INVITEs refused, nothing relayed.
    for method in ["INVITE", "OPTIONS"] {
        let before = agent.tally();
        let (sent, answers) = udp_flood(&site.lab.internal, OTHER_INTERNAL, 20_000, Duration::from_secs(10), |n| sip_request(method, n, OTHER_INTERNAL, 200)).await;
        assert_eq!(answers, 0, "the firewall let the non-upstream host through");
        held(&format!("{method} flood over UDP, non-upstream host, firewall managed"), &site, &rss, &before, &agent, format!("{sent} datagrams in at most 10 s, {answers} answers")).await;
    }
    let table = run(&["ip", "netns", "exec", &site.lab.gw, "nft", "-a", "list", "chain", "inet", "gwattack", "input"]).unwrap();
    assert!(table.contains("policy drop"), "{table}");
    run(&["ip", "netns", "exec", &site.lab.gw, "nft", "insert", "rule", "inet", "gwattack", "input", "ip", "saddr", OTHER_INTERNAL, "udp", "dport", "5060", "accept"]).unwrap();
    for method in ["INVITE", "OPTIONS"] {
        let before = agent.tally();
        let (sent, answers) = udp_flood(&site.lab.internal, OTHER_INTERNAL, 20_000, Duration::from_secs(10), |n| sip_request(method, n, OTHER_INTERNAL, 200)).await;
        held(&format!("{method} flood over UDP, non-upstream host let through the firewall"), &site, &rss, &before, &agent, format!("{sent} datagrams in at most 10 s, {answers} answers")).await;
    }
    // Oversized SIP: 60 KB datagrams, then one over the limit.
    let before = agent.tally();
    let (sent, answers) = udp_flood(&site.lab.internal, OTHER_INTERNAL, 2_000, Duration::from_secs(10), |n| sip_request("OPTIONS", n, OTHER_INTERNAL, 60_000)).await;
    held("oversized SIP over UDP (60 KB datagrams), non-upstream host let through", &site, &rss, &before, &agent, format!("{sent} datagrams, {answers} answers")).await;

    // 3. Many concurrent TLS handshakes that become idle WebSockets: 20 from each bot address
    // (the per-source limit), held open, then closed.
    let before = agent.tally();
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in 6..5 + BOTS {
        let (ns, src) = (bots.ns.clone(), bots.host(n));
        for _ in 0..20 {
            let (ns, src) = (ns.clone(), src.clone());
            set.spawn(async move { wss_from(&ns, &src).await });
        }
    }
    let results = set.join_all().await;
    let open: Vec<Wss> = results.into_iter().filter_map(Result::ok).collect();
    let opened_in = began.elapsed();
    let held_rss = site.rss_kib();
    // Idle for longer than a WebSocket ping interval would matter to memory.
    let idle = Instant::now() + Duration::from_secs(10);
    while Instant::now() < idle {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let count = open.len();
    drop(open);
    held(
        "concurrent TLS handshakes into idle WebSockets",
        &site,
        &rss,
        &before,
        &agent,
        format!("{count} of {} opened in {opened_in:?} from {} addresses and held 10 s idle; RSS while held {} MiB", 20 * (BOTS as usize - 1), BOTS - 1, held_rss / 1024),
    )
    .await;
    assert!(count >= 1800, "only {count} WebSockets opened");

    // 4. Slowloris on HTTPS: handshake, then a request head that never ends, a byte at a time.
    let before = agent.tally();
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for n in 6..26 {
        let (ns, src) = (bots.ns.clone(), bots.host(n));
        for _ in 0..20 {
            let (ns, src) = (ns.clone(), src.clone());
            set.spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = tls_from(&ns, &src).await else { return None };
                let _ = tls.write_all(b"GET / HTTP/1.1\r\nHost: voice.example.net\r\n").await;
                let start = Instant::now();
                let mut buf = [0u8; 512];
                loop {
                    if let Ok(Err(_)) = tokio::time::timeout(Duration::from_secs(2), tls.write_all(b"X")).await {
                        return Some(start.elapsed());
                    }
                    match tokio::time::timeout(Duration::from_secs(2), tls.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(start.elapsed()),
                        Ok(Ok(_)) => {}
                        Err(_) => {}
                    }
                    if start.elapsed() > Duration::from_secs(60) {
                        return None;
                    }
                }
            });
        }
    }
    let cut: Vec<Duration> = set.join_all().await.into_iter().flatten().collect();
    let slowest = cut.iter().max().copied().unwrap_or_default();
    held("slowloris on HTTPS", &site, &rss, &before, &agent, format!("{} of 400 slow connections cut, the last after {slowest:?} (run took {:?})", cut.len(), began.elapsed())).await;
    assert_eq!(cut.len(), 400, "some slow connections were never cut");

    // 5. Oversized WebSocket frames: 1 MiB messages close the connection.
    let before = agent.tally();
    let mut closed = 0;
    for _ in 0..20 {
        let mut ws = wss_from(&site.lab.inet, SCOUT).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(5), ws.send(Message::text("x".repeat(1 << 20)))).await;
        if response(&mut ws).await.is_err() {
            closed += 1;
        }
    }
    held("oversized WebSocket messages (1 MiB)", &site, &rss, &before, &agent, format!("{closed} of 20 connections closed by the gateway")).await;
    assert_eq!(closed, 20);

    let tally = agent.stop().await;
    eprintln!("FIGURE floods: agent over the whole run {} registrations, {} echo calls, {} failures; daemon RSS at the end {} MiB", tally.registered, tally.calls, tally.failures.len(), site.rss_kib() / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_agents_behind_one_office_address_register_within_a_minute_without_a_ban() {
    if !enabled(&[]) {
        return;
    }
    // 300 DNs, and the office sized by the reference's rule for 300 agents.
    let office = format!(
        "[[bans.rate_limits.offices]]\nname = \"hq\"\nnetworks = [\"{OFFICE_NET}.0/24\"]\nnew_connections_per_second = 10\nsip_requests_per_second = 30\nburst = 600\nmax_connections_per_source = 330\n"
    );
    let mut agents = String::new();
    for dn in 6001..=6300 {
        let dn = dn.to_string();
        let stored = gatewayd::sip::digest::StoredCredentials::from_password(&dn, "gw.test", &format!("pass{dn}"));
        agents.push_str(&format!("\n[[agents]]\ndn = \"{dn}\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n", stored.ha1_md5, stored.ha1_sha256));
    }
    let site = Site::start("n", "", &(office + &agents));
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let src = site.office.host(5);
    for (i, dn) in (6001..=6300).enumerate() {
        let (ns, src) = (site.office.ns.clone(), src.clone());
        set.spawn(async move {
            // Logins spread over 30 s, as a shift starts.
            tokio::time::sleep(Duration::from_millis(100 * i as u64)).await;
            let mut ws = wss_from(&ns, &src).await.map_err(|e| format!("{dn}: {e}"))?;
            attack::agent::register(&mut ws, &dn.to_string(), 1).await.map_err(|e| format!("{dn}: {e}"))?;
            Ok::<(Wss, Duration), String>((ws, began.elapsed()))
        });
    }
    let results = set.join_all().await;
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let last = results.iter().filter_map(|r| r.as_ref().ok()).map(|(_, at)| *at).max().unwrap_or_default();
    eprintln!("FIGURE one NAT address: {} of 300 agents registered, the last {last:?} after the first login began; {} failures", 300 - failures.len(), failures.len());
    assert!(failures.is_empty(), "{failures:?}");
    assert!(last < Duration::from_secs(60));
    assert!(!site.dropped(&site.office.ns, &src).await, "the office address was banned");
    let metrics = site.metrics();
    let limited = metrics.lines().find(|l| l.starts_with("gatewayd_failures_total{kind=\"rate-limited\"}")).and_then(|l| l.rsplit(' ').next()).unwrap_or("0");
    assert_eq!(limited, "0", "rate limited:\n{metrics}");
}
