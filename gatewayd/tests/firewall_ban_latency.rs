//! bench/bans: time from the failure that trips a rule (the Nth) to the first dropped packet,
//! for gatewayd's guard + firewall and, as the anchor, fail2ban doing the same job (a log line
//! per failure, nftables-allports action) in the same namespaces. Benchmarks, not tests: run
//! them with `bench/bans/run.sh` (or `--ignored --nocapture`). `BAN_RUNS` sets the runs.

#[path = "../../tests/netns/lab.rs"]
mod lab;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewayd::firewall::{Firewall, Nft};
use gatewayd::guard::{BanService, Failure};
use gatewayd::profile::FailureKind;
use lab::*;

const INTERVAL: Duration = Duration::from_micros(200);

fn runs() -> usize {
    std::env::var("BAN_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

fn summary(name: &str, mut v: Vec<Duration>) -> String {
    v.sort();
    let pct = |p: usize| v[(v.len() - 1) * p / 100];
    format!("{name}: n={} min {:?} median {:?} p95 {:?} max {:?}", v.len(), v[0], pct(50), pct(95), v[v.len() - 1])
}

fn dst() -> SocketAddr {
    format!("{PUBLIC_GW}:40000").parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; bench/bans/run.sh"]
async fn gatewayd_ban_latency() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("l").expect("namespaces");
    serve_echo(&lab.gw, &[], &[40000]);
    let profile = load("gatewayd");
    let firewall = Arc::new(Firewall::with_nft(Nft::in_netns(&lab.gw), false));
    firewall.apply(&profile, &[]).await.expect("applies");
    let src: IpAddr = ATTACKER.parse().unwrap();
    let (mut returned, mut dropped) = (Vec::new(), Vec::new());
    for i in 0..runs() {
        let service = BanService::new(&profile, firewall.clone(), None);
        let stream = UdpStream::start(&lab.inet, ATTACKER, dst(), INTERVAL);
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..2 {
            service.report(Failure { ip: src, kind: FailureKind::DigestFailure }).await;
        }
        let tripped = stream.elapsed();
        let t = Instant::now();
        service.report(Failure { ip: src, kind: FailureKind::DigestFailure }).await;
        let r = t.elapsed();
        let d = stream.first_dropped_after(tripped).await.expect("answered before the ban, dropped after");
        eprintln!("run {i}: report() returned after {r:?}; first dropped packet {d:?} after the tripping failure");
        returned.push(r);
        dropped.push(d);
        service.remove(src).await.unwrap();
    }
    println!("{}", summary("gatewayd first dropped packet", dropped));
    println!("{}", summary("gatewayd report() returned", returned));
}

/// fail2ban-server inside the gateway namespace with its own configuration directory.
struct Fail2ban {
    dir: std::path::PathBuf,
    server: Child,
}

impl Fail2ban {
    fn start(ns: &str, backend: &str) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("gwt-f2b-{}-{backend}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        run(&["cp", "-r", "/etc/fail2ban", dir.join("conf").to_str().unwrap()])?;
        // Only our jail: drop the distribution's jail.d (it enables sshd).
        let _ = std::fs::remove_dir_all(dir.join("conf/jail.d"));
        std::fs::create_dir_all(dir.join("conf/jail.d")).unwrap();
        let d = dir.display();
        std::fs::write(dir.join("conf/fail2ban.local"), format!("[Definition]\nlogtarget = {d}/f2b.log\nsocket = {d}/f2b.sock\npidfile = {d}/f2b.pid\ndbfile = :memory:\n")).unwrap();
        std::fs::write(dir.join("conf/filter.d/gatewayd-auth.conf"), "[Definition]\nfailregex = ^auth failure from <HOST>$\ndatepattern = {NONE}\n").unwrap();
        std::fs::write(
            dir.join("conf/jail.local"),
            format!(
                "[gatewayd-auth]\nenabled = true\nfilter = gatewayd-auth\nlogpath = {d}/auth.log\nbackend = {backend}\nmaxretry = 3\nfindtime = 60\nbantime = 600\naction = nftables-allports[name=gwauth, blocktype=drop, protocol=\"tcp,udp\"]\n"
            ),
        )
        .unwrap();
        std::fs::write(dir.join("auth.log"), "").unwrap();
        let server = Command::new("ip")
            .args(["netns", "exec", ns, "fail2ban-server", "-f", "-x", "-c"])
            .arg(dir.join("conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("fail2ban-server: {e}"))?;
        let f = Fail2ban { dir, server };
        let deadline = Instant::now() + Duration::from_secs(20);
        while f.client(&["ping"]).is_err() {
            if Instant::now() > deadline {
                return Err("fail2ban-server did not answer within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(f)
    }

    fn client(&self, args: &[&str]) -> Result<String, String> {
        let conf = self.dir.join("conf");
        let mut all = vec!["fail2ban-client", "-c", conf.to_str().unwrap()];
        all.extend(args);
        run(&all)
    }

    fn fail(&self, ip: &str) {
        let mut log = std::fs::OpenOptions::new().append(true).open(self.dir.join("auth.log")).unwrap();
        writeln!(log, "auth failure from {ip}").unwrap();
        log.flush().unwrap();
    }
}

impl Drop for Fail2ban {
    fn drop(&mut self) {
        let _ = self.client(&["stop"]);
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn fail2ban_latency(backend: &str) {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    if run(&["fail2ban-server", "--version"]).is_err() {
        eprintln!("SKIPPED: fail2ban is not installed (apt-get install fail2ban python3-pyinotify)");
        return;
    }
    let lab = Lab::create(&format!("f{}", &backend[..1])).expect("namespaces");
    serve_echo(&lab.gw, &[], &[40000]);
    let f2b = Fail2ban::start(&lab.gw, backend).expect("fail2ban starts");
    let mut dropped = Vec::new();
    // Run 0 warms up (the action creates its table on the first ban) and is not counted.
    for i in 0..=runs() {
        let stream = UdpStream::start(&lab.inet, ATTACKER, dst(), INTERVAL);
        tokio::time::sleep(Duration::from_millis(20)).await;
        f2b.fail(ATTACKER);
        f2b.fail(ATTACKER);
        let tripped = stream.elapsed();
        f2b.fail(ATTACKER);
        let d = stream.first_dropped_after(tripped).await.expect("answered before the ban, dropped after");
        eprintln!("run {i}: first dropped packet {d:?} after the tripping failure");
        if i > 0 {
            dropped.push(d);
        }
        f2b.client(&["set", "gatewayd-auth", "unbanip", ATTACKER]).expect("unban");
    }
    println!("{}", summary(&format!("fail2ban 1.0.2 ({backend}) first dropped packet"), dropped));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark anchor; bench/bans/run.sh"]
async fn fail2ban_pyinotify_ban_latency() {
    fail2ban_latency("pyinotify").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark anchor; bench/bans/run.sh"]
async fn fail2ban_polling_ban_latency() {
    fail2ban_latency("polling").await;
}
