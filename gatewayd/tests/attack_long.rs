//! The long attack runs, behind `GATEWAYD_ATTACK=1` (`just attack` runs them one at a time and
//! keeps their `FIGURE` lines): testssl.sh against HTTPS and TURN over TLS, floods and resource
//! bounds, 10,000 TLS handshakes at once and 5,000 idle WebSockets from hundreds of addresses
//! (with the daemon's CPU recovery), 10,000 register/unregister cycles then idle, and 300
//! agents behind one NAT address through a `kill -9` and restart. Each runs the daemon on the
//! DMZ-like profile in the namespace lab (`tests/attack/mod.rs`), samples the daemon's memory,
//! and where the brief is "while an agent works", runs a legitimate agent registering and
//! calling from its office throughout.
//!
//! Needs root, `ip netns`, testssl.sh; without `GATEWAYD_ATTACK` each test says so and passes.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod attack;
mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use attack::agent::{request, response, Agent, Tally};
use attack::flood::{guess, sip_request, udp_flood};
use attack::load::{by_reason, quantile, Attackers, Bots, Cpu, Crowd, Rss};
use attack::office::{self, Seen};
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

/// `[[agents]]` entries for `dns`, password `pass<DN>` (stored as HA1 values).
fn agents_toml(dns: std::ops::RangeInclusive<u32>) -> String {
    let mut agents = String::new();
    for dn in dns {
        let dn = dn.to_string();
        let stored = gatewayd::sip::digest::StoredCredentials::from_password(&dn, "gw.test", &format!("pass{dn}"));
        agents.push_str(&format!("\n[[agents]]\ndn = \"{dn}\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n", stored.ha1_md5, stored.ha1_sha256));
    }
    agents
}

/// One `kill -9` and restart under the office's agents (running in `seen`): all of them
/// registered again within 30 s, nothing unanswered, every 503 with Retry-After, no ban.
async fn restart_round(site: &mut Site, seen: &Seen, src: &str, label: &str, problems: &mut Vec<String>) {
    const AGENTS: usize = 300;
    let (limited, unanswered) = (seen.rate_limited.load(Ordering::Relaxed), seen.unanswered.load(Ordering::Relaxed));
    let restarted = site.kill_and_restart();
    let ready = tokio::task::block_in_place(|| {
        site.daemon.wait_for_log("gatewayd ready", Duration::from_secs(30));
        restarted.elapsed()
    });
    let end = restarted + Duration::from_secs(30);
    while seen.registered_since(restarted) < AGENTS && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let back = seen.registered_since(restarted);
    let last = seen.last_of(restarted).map(|at| at - restarted).unwrap_or_default();
    let limited = seen.rate_limited.load(Ordering::Relaxed) - limited;
    let unanswered = seen.unanswered.load(Ordering::Relaxed) - unanswered;
    let without = seen.without_retry_after.load(Ordering::Relaxed);
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for f in seen.failures_since(restarted) {
        *refused.entry(f).or_default() += 1;
    }
    // The registrar's gauge follows the 200s by a moment.
    let end = Instant::now() + Duration::from_secs(5);
    let mut registrations = site.metric("gatewayd_registrations");
    while registrations != AGENTS as f64 && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        registrations = site.metric("gatewayd_registrations");
    }
    let bans = site.metric("gatewayd_bans_active");
    eprintln!(
        "FIGURE restart, office {label}: kill -9 with {AGENTS} agents registered from one address; daemon ready {ready:.1?} after the restart began, {back} of {AGENTS} registered again, the last {last:.1?} after it (bound 30 s); \
         {limited} requests answered 503 with Retry-After ({without} without), {unanswered} unanswered; connection attempts that failed, by reason: {refused:?}; registrar holds {registrations}; bans {bans}; failures counted {:?}",
        failures(site)
    );
    if back != AGENTS {
        problems.push(format!("{label}: {back} of {AGENTS} agents back within 30 s"));
    }
    if unanswered != 0 || without != 0 {
        problems.push(format!("{label}: {unanswered} requests unanswered, {without} 503s without Retry-After"));
    }
    if bans != 0.0 || site.dropped(&site.office.ns, src).await {
        problems.push(format!("{label}: the office was banned"));
    }
    if registrations != AGENTS as f64 {
        problems.push(format!("{label}: the registrar holds {registrations}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_agents_behind_one_office_address_log_in_and_after_a_kill_9_are_back_within_30_s() {
    if !enabled(&[]) {
        return;
    }
    const AGENTS: usize = 300;
    // 300 DNs, and the office sized by the reference's rule for 300 agents.
    let office = format!(
        "[[bans.rate_limits.offices]]\nname = \"hq\"\nnetworks = [\"{OFFICE_NET}.0/24\"]\nnew_connections_per_second = 10\nsip_requests_per_second = 30\nburst = 600\nmax_connections_per_source = 330\n"
    );
    let mut site = Site::start("n", "", &(office + &agents_toml(6001..=6300)));
    let began = Instant::now();
    let seen = Arc::new(Seen::default());
    let src = site.office.host(5);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, dn) in (6001..=6300).enumerate() {
        // Logins spread over 30 s, as a shift starts; each agent then stays, and comes back on
        // its own when its connection goes.
        tasks.spawn(office::run(site.office.ns.clone(), src.clone(), dn.to_string(), Duration::from_millis(100 * i as u64), seen.clone()));
    }
    let end = began + Duration::from_secs(60);
    while seen.registered_since(began) < AGENTS && Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let last = seen.last_of(began).map(|at| at - began).unwrap_or_default();
    let failed = seen.failures_since(began);
    eprintln!("FIGURE one NAT address: {} of {AGENTS} agents registered, the last {last:.1?} after the first login began; {} failures", seen.registered_since(began), failed.len());
    assert_eq!(seen.registered_since(began), AGENTS, "{failed:?}");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(!site.dropped(&site.office.ns, &src).await, "the office address was banned");
    assert_eq!(site.metric("gatewayd_failures_total{kind=\"rate-limited\"}"), 0.0, "rate limited: {:?}", failures(&site));

    // kill -9 with all of them registered; the test restarts the daemon at once on the same
    // state directory (systemd's Restart=, here without RestartSec's 2 s). Then again with the
    // office given half the burst the reference's rule asks for: some requests get 503, and
    // the agents wait as Retry-After says.
    let mut problems = Vec::new();
    restart_round(&mut site, &seen, &src, "sized by the reference (burst 600)", &mut problems).await;
    let profile = site.dir.path().join("profile.toml");
    let text = std::fs::read_to_string(&profile).unwrap().replace("burst = 600", "burst = 300");
    std::fs::write(&profile, text).unwrap();
    restart_round(&mut site, &seen, &src, "half the burst (300)", &mut problems).await;
    seen.stop.store(true, Ordering::Relaxed);
    assert!(problems.is_empty(), "{problems:#?}");
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.join_all()).await;
}

/// Connections per source address: the profile's `web.max_connections_per_source`.
const PER_SOURCE: usize = 20;
/// The scale runs' RSS bound (debug build): the daemon at rest plus this much per connection held.
const RSS_PER_CONNECTION_KIB: u64 = 64;
/// CPU has recovered when a second's use is back within this of the idle level (a share of
/// one core)...
const CPU_MARGIN: f64 = 0.05;
/// ...within this after the load stopped.
const CPU_RECOVERY: Duration = Duration::from_secs(10);

/// What the agent did between two tallies, checked: it registered and completed echo calls
/// during the load, and nothing it tried failed (else a problem is noted).
fn agent_during(name: &str, before: &Tally, after: &Tally, slowest: Duration, problems: &mut Vec<String>) -> String {
    let failures = &after.failures[before.failures.len()..];
    let (registered, calls) = (after.registered - before.registered, after.calls - before.calls);
    if !failures.is_empty() {
        problems.push(format!("{name}: the agent failed: {failures:?}"));
    }
    if registered == 0 || calls == 0 {
        problems.push(format!("{name}: the agent did not register and call during it: {registered} registrations, {calls} calls"));
    }
    format!("agent {registered} registrations and {calls} echo calls during it, {} failures, slowest registration {slowest:.1?}", failures.len())
}

/// The `gatewayd_failures_total` series that are not zero.
fn failures(site: &Site) -> Vec<String> {
    site.metrics().lines().filter(|l| l.starts_with("gatewayd_failures_total{") && !l.ends_with(" 0")).map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_tls_handshakes_and_five_thousand_idle_websockets_stay_bounded_and_cpu_recovers() {
    if !enabled(&[]) {
        return;
    }
    const HANDSHAKES: usize = 10_000;
    const WEBSOCKETS: usize = 5_000;
    let site = Site::start("t", "", "");
    let bots = Bots::create(&site.lab, "t", HANDSHAKES / PER_SOURCE);
    let attackers = Attackers::new();
    let pid = site.daemon.child.id();
    let (rss, cpu) = (Rss::watch(pid), Cpu::watch(pid));
    let agent = Agent::start(&site.office.ns, &site.office.host(5), "5001", Duration::from_millis(200), 3);
    let end = Instant::now() + Duration::from_secs(10);
    while agent.tally().calls == 0 {
        assert!(Instant::now() < end, "the agent did not register and call: {:?}", agent.tally());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The idle level: five seconds with only the agent at work (a measurement interval).
    let quiet = Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = cpu.rate(quiet, Instant::now());
    let level = idle + CPU_MARGIN;
    let rest = site.rss_kib();
    eprintln!("FIGURE scale: daemon at rest {} MiB, idle CPU {:.1}% of a core (the agent registering every 200 ms, an echo call every 600 ms); {} bot addresses", rest / 1024, idle * 100.0, bots.addresses(usize::MAX).len());
    rss.take_peak();
    let mut problems = Vec::new();
    // The handshakes all at once; the WebSockets opened 500 at a time (what is measured is
    // holding them, the burst is the first run's).
    for (name, count, opening, websocket) in [("TLS handshakes at once", HANDSHAKES, usize::MAX, false), ("idle SIP WebSockets", WEBSOCKETS, 500, true)] {
        let before = agent.tally();
        agent.take_slowest();
        let own_before = attack::load::own_cpu_time();
        // The peak of this run only (the last one's memory is given back by now).
        rss.take_peak();
        let sources = bots.addresses(count / PER_SOURCE);
        let crowd = Crowd::open(&attackers, &sources, PER_SOURCE, opening, websocket, Duration::from_secs(60));
        let opened_in = crowd.settled(Duration::from_secs(180)).await;
        let open_now = crowd.open.load(Ordering::Relaxed);
        let mut detail = format!("{count} from {} addresses, {}: all settled in {opened_in:.1?}", sources.len(), if opening < count { format!("{opening} opening at a time") } else { "all at once".into() });
        if websocket {
            // Idle until the gateway has pinged every one (after 30 s of silence) and had its
            // pong, as a browser answers: a connection that is only held costs no more than that.
            let end = Instant::now() + Duration::from_secs(60);
            while crowd.pinged.load(Ordering::Relaxed) < open_now && Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let idle_from = crowd.began + opened_in;
            detail += &format!(", held {:.1?} until each was pinged ({} were), CPU while idle {:.1}% of a core", idle_from.elapsed(), crowd.pinged.load(Ordering::Relaxed), cpu.rate(idle_from, Instant::now()) * 100.0);
        }
        let held_rss = site.rss_kib();
        let load_cpu = cpu.used(crowd.began, Instant::now());
        let own_cpu = (attack::load::own_cpu_time() - own_before).as_secs_f64();
        let peak_open = crowd.peak.load(Ordering::Relaxed);
        let (during, slowest) = (agent.tally(), agent.take_slowest());
        let began = crowd.began;
        let results = crowd.release().await;
        let stopped = Instant::now();
        let ready: Vec<Duration> = results.iter().filter_map(|r| r.as_ref().ok()).map(|o| o.ready_after).collect();
        let closed_early = results.iter().filter_map(|r| r.as_ref().ok()).filter(|o| !o.held).count();
        let recovered = cpu.settles(stopped, Duration::from_secs(1), level, CPU_RECOVERY).await;
        let peak = rss.take_peak();
        let bound = rest + count as u64 * RSS_PER_CONNECTION_KIB;
        let agent_line = agent_during(name, &before, &during, slowest, &mut problems);
        // Memory given back once they are gone (the daemon trims every 10 s).
        let gone = Instant::now();
        while site.rss_kib() > rest + rest / 5 && gone.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let (given_back, given_back_in) = (site.rss_kib(), gone.elapsed());
        let failed = by_reason(&results);
        eprintln!(
            "FIGURE scale, {count} {name}: {detail}; {} succeeded (median ready {:.1?}, 99th percentile {:.1?}, last {:.1?}), failed {failed:?}; {peak_open} open at once, {closed_early} closed by the gateway before the test let go; \
             daemon CPU {load_cpu:.1} s (the attackers and agent {own_cpu:.1} s) over the {:.1?} of load; back within {:.0}% of a core of idle {:?} after the load stopped (bound {CPU_RECOVERY:?}); RSS {} MiB with them open, peak {} MiB (bound {} MiB: {} MiB at rest + {RSS_PER_CONNECTION_KIB} KiB each), {} MiB {given_back_in:.1?} after they closed; {agent_line}",
            ready.len(), quantile(&ready, 0.5), quantile(&ready, 0.99), quantile(&ready, 1.0), stopped - began, CPU_MARGIN * 100.0, recovered, held_rss / 1024, peak / 1024, bound / 1024, rest / 1024, given_back / 1024
        );
        // Checked once both runs have reported their figures. Every connection gets its
        // handshake, or is closed by the gateway (its 10 s handshake timeout, when the burst
        // is more than its CPU finishes in that time); none is left hanging. WebSockets all open.
        let hanging: usize = failed.iter().filter(|(why, _)| why.contains("timed out")).map(|(_, n)| n).sum();
        if hanging > 0 || (websocket && ready.len() != count) {
            problems.push(format!("{name}: {} of {count} opened: {failed:?}", ready.len()));
        }
        if websocket && closed_early > 0 {
            problems.push(format!("{name}: the gateway closed {closed_early} idle WebSockets that answer pings"));
        }
        if recovered.is_none() {
            problems.push(format!("{name}: CPU not back within {:.0}% of a core of idle ({:.1}%) within {CPU_RECOVERY:?}", CPU_MARGIN * 100.0, idle * 100.0));
        }
        if peak >= bound {
            problems.push(format!("{name}: RSS {} MiB over the bound {} MiB", peak / 1024, bound / 1024));
        }
        if site.metric("gatewayd_bans_active") != 0.0 {
            problems.push(format!("{name}: sources were banned; failures {:?}", failures(&site)));
        }
    }
    let tally = agent.stop().await;
    eprintln!("FIGURE scale: agent over the whole run {} registrations, {} echo calls, {} failures; failures counted by the gateway {:?}; daemon RSS at the end {} MiB", tally.registered, tally.calls, tally.failures.len(), failures(&site), site.rss_kib() / 1024);
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_register_cycles_then_idle_give_the_memory_back() {
    if !enabled(&[]) {
        return;
    }
    const AGENTS: u32 = 50;
    const CYCLES: u32 = 200;
    // Fifty agents (DNs 7001-7050), each from an address of its own in a range given room for
    // the churn's pace: the rate limits are not what this measures. Every authorised REGISTER
    // leaves its nonce-count tracked (up to 10,000 of them) until the nonce expires: 20 s here
    // instead of the default 5 minutes, so that the idle after the churn stays short.
    let office = "[[bans.rate_limits.offices]]\nname = \"churn\"\nnetworks = [\"198.18.0.0/24\"]\nnew_connections_per_second = 10\nsip_requests_per_second = 1000\nburst = 1000\nmax_connections_per_source = 20\n\n[sip.auth]\nnonce_lifetime = \"20s\"\n";
    let site = Site::start("c", "", &(office.to_owned() + &agents_toml(7001..=7000 + AGENTS)));
    let bots = Bots::create(&site.lab, "c", AGENTS as usize);
    let rss = Rss::watch(site.daemon.child.id());
    // Before: the daemon in service, its one-time allocations made (TLS, the runtime threads'
    // arenas, the tables' first growth): each agent connects, registers and unregisters once and
    // goes. Then its memory steady: no more than 1% apart over 12 s, a trim (every 10 s) included.
    let seen = Arc::new(Seen::default());
    let mut warm = tokio::task::JoinSet::new();
    for (i, (ns, src)) in bots.addresses(AGENTS as usize).into_iter().enumerate() {
        let (dn, seen) = ((7001 + i).to_string(), seen.clone());
        warm.spawn(async move {
            let mut ws = wss_from(&ns, &src).await?;
            office::churn(&mut ws, &dn, 1, &seen).await?;
            let _ = ws.close(None).await;
            Ok::<(), String>(())
        });
    }
    assert!(warm.join_all().await.iter().all(Result::is_ok), "the warm-up failed");
    let steady = Instant::now();
    let mut samples: Vec<u64> = Vec::new();
    let before = loop {
        samples.push(site.rss_kib());
        let last: &[u64] = &samples[samples.len().saturating_sub(13)..];
        let (lo, hi) = (*last.iter().min().unwrap(), *last.iter().max().unwrap());
        if last.len() == 13 && (hi - lo) * 100 <= lo {
            break *last.last().unwrap();
        }
        assert!(steady.elapsed() < Duration::from_secs(90), "RSS not steady before the churn: {samples:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    rss.take_peak();
    let began = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (i, (ns, src)) in bots.addresses(AGENTS as usize).into_iter().enumerate() {
        let (dn, seen) = ((7001 + i).to_string(), seen.clone());
        set.spawn(async move {
            let mut ws = wss_from(&ns, &src).await.map_err(|e| format!("{dn}: {e}"))?;
            office::churn(&mut ws, &dn, CYCLES, &seen).await.map_err(|e| format!("{dn}: {e}"))?;
            let _ = ws.close(None).await;
            Ok::<(), String>(())
        });
    }
    let results = set.join_all().await;
    let churned = began.elapsed();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let (peak, after_churn) = (rss.take_peak(), site.rss_kib());
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(site.metric("gatewayd_registrations"), 0.0, "bindings left after the churn");
    // Idle: memory within 10% of before once the churn's nonces have expired (20 s) and a trim
    // has run (every 10 s): the idle lasts that long, and what RSS is at its end is what counts.
    let idle = Instant::now();
    let limit = before + before / 10;
    let mut lowest = u64::MAX;
    while idle.elapsed() < Duration::from_secs(35) {
        lowest = lowest.min(site.rss_kib());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = site.rss_kib();
    let mib = |kib: u64| kib as f64 / 1024.0;
    eprintln!(
        "FIGURE churn: {} register/unregister cycles ({AGENTS} agents from {AGENTS} addresses, {CYCLES} each, every REGISTER challenged) in {churned:.1?}, {} 503s; daemon RSS {:.1} MiB before (after a warm-up cycle per agent, steady), peak {:.1} MiB, {:.1} MiB when the churn ended, {:.1} MiB after {:.0?} idle (lowest {:.1} MiB; bound {:.1} MiB, before + 10%)",
        AGENTS * CYCLES,
        seen.rate_limited.load(Ordering::Relaxed),
        mib(before),
        mib(peak),
        mib(after_churn),
        mib(now),
        idle.elapsed(),
        mib(lowest),
        mib(limit)
    );
    assert!(now <= limit, "RSS {now} KiB not back within 10% of {before} KiB after the idle");
}
