//! End to end in network namespaces this test creates: an "internet" namespace, the "gateway"
//! with the generated ruleset applied, and an "internal" namespace with the SIP server's
//! addresses. Stand-in TCP/UDP echo listeners in the gateway listen on every address, so
//! before the ruleset everything answers from everywhere and afterwards only what the profile
//! opens does. Then bans go through the ban service: the banned source is dropped on every port
//! (established connections included) while its neighbour keeps working, and comes back after
//! the ban time.
//!
//! Needs root and `ip netns`; skips with a message otherwise. Namespaces are unique per run and
//! deleted even when an assertion fails; the host ruleset is compared before and after.
//!
//! `cargo test --test firewall_netns -- --ignored --nocapture ban_latency` measures the time
//! from the failure that trips a rule to the first dropped packet (bench/bans).

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gatewayd::firewall::{Firewall, Nft, Status};
use gatewayd::guard::{BanService, BanStore, Failure, GuardAction};
use gatewayd::profile::{self, FailureKind, Profile};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

const PUBLIC_GW: &str = "198.51.100.1";
const ATTACKER: &str = "198.51.100.2";
const NEIGHBOUR: &str = "198.51.100.3";
const INTERNAL_GW: &str = "192.168.77.1";
const UPSTREAM: &str = "192.168.77.10";
const OTHER_INTERNAL: &str = "192.168.77.11";
/// How long a probe waits before calling a port dropped.
const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

const TCP_PORTS: [u16; 7] = [443, 80, 3478, 5349, 5060, 9090, 7777];
const UDP_PORTS: [u16; 6] = [3478, 40000, 43000, 5060, 41000, 7777];

fn profile_text(table: &str) -> String {
    format!(
        r#"
[site]
name = "netns-test"
sip_domain = "gw.test"
lab_mode = true

[public]
interface = "pub0"
addresses = ["{PUBLIC_GW}"]

[internal]
interface = "int0"
address = "{INTERNAL_GW}"
networks = ["192.168.77.0/24"]

[management]
interface = "int0"
address = "{INTERNAL_GW}"
allow_from = ["{OTHER_INTERNAL}/32"]

[tls]
source = "self-signed"

[web]
https = ["{PUBLIC_GW}:443"]
http_redirect = ["{PUBLIC_GW}:80"]

[sip]
listen = [{{ address = "{INTERNAL_GW}:5060", transport = "udp" }}, {{ address = "{INTERNAL_GW}:5060", transport = "tcp" }}]

[upstream]
servers = [{{ address = "{UPSTREAM}:5060", transport = "udp" }}]

[media]
public_ports = "40000-40010"
internal_ports = "41000-41010"
max_calls = 5

[turn]
listen_udp = ["{PUBLIC_GW}:3478"]
listen_tcp = ["{PUBLIC_GW}:3478"]
listen_tls = ["{PUBLIC_GW}:5349"]
realm = "gw.test"
shared_secret = "s"
relay_ports = "43000-43010"

[firewall]
manage = true
table = "{table}"

[bans]
rules = [{{ name = "auth", events = ["digest-failure"], max_retry = 3, find_time = "1m", ban_time = "2s" }}]

[observe]
admin = "{INTERNAL_GW}:9090"
"#
    )
}

fn load(table: &str) -> Profile {
    let path = std::path::Path::new("/nonexistent/netns-test.toml");
    profile::load_str(path, &profile_text(table), std::iter::empty()).unwrap_or_else(|d| panic!("{d}")).profile
}

fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn sh(cmd: &str) {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    run(&args).unwrap();
}

/// The three namespaces, deleted on drop (also when the test panics).
struct Lab {
    inet: String,
    gw: String,
    internal: String,
}

impl Lab {
    fn create(tag: &str) -> Result<Self, String> {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let lab = Lab { inet: format!("gwt-inet-{id}"), gw: format!("gwt-gw-{id}"), internal: format!("gwt-int-{id}") };
        for ns in [&lab.inet, &lab.gw, &lab.internal] {
            run(&["ip", "netns", "add", ns])?;
            run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        let (inet, gw, internal) = (&lab.inet, &lab.gw, &lab.internal);
        for c in [
            format!("ip -n {gw} link add pub0 type veth peer name eth0 netns {inet}"),
            format!("ip -n {gw} link add int0 type veth peer name eth0 netns {internal}"),
            format!("ip -n {gw} addr add {PUBLIC_GW}/24 dev pub0"),
            format!("ip -n {gw} addr add {INTERNAL_GW}/24 dev int0"),
            format!("ip -n {inet} addr add {ATTACKER}/24 dev eth0"),
            format!("ip -n {inet} addr add {NEIGHBOUR}/24 dev eth0"),
            format!("ip -n {internal} addr add {UPSTREAM}/24 dev eth0"),
            format!("ip -n {internal} addr add {OTHER_INTERNAL}/24 dev eth0"),
            format!("ip -n {gw} link set pub0 up"),
            format!("ip -n {gw} link set int0 up"),
            format!("ip -n {inet} link set eth0 up"),
            format!("ip -n {internal} link set eth0 up"),
            format!("ip -n {inet} route add 192.168.77.0/24 via {PUBLIC_GW}"),
            format!("ip -n {internal} route add default via {INTERNAL_GW}"),
            format!("ip netns exec {gw} sysctl -qw net.ipv4.ip_forward=1"),
        ] {
            let args: Vec<&str> = c.split_whitespace().collect();
            run(&args)?;
        }
        Ok(lab)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in [&self.inet, &self.gw, &self.internal] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay there.
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/run/netns/{ns}")).expect("netns exists");
            // SAFETY: setns on this thread only, with a valid namespace file descriptor.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("netns thread")
    })
}

/// Echo listeners on every address of `ns`: TCP echoes lines, UDP echoes datagrams.
fn serve_echo(ns: &str, tcp: &[u16], udp: &[u16]) {
    let (tl, ul) = in_netns(ns, || {
        let tl: Vec<std::net::TcpListener> = tcp.iter().map(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).unwrap()).collect();
        let ul: Vec<std::net::UdpSocket> = udp.iter().map(|p| std::net::UdpSocket::bind(("0.0.0.0", *p)).unwrap()).collect();
        (tl, ul)
    });
    for l in tl {
        l.set_nonblocking(true).unwrap();
        let l = tokio::net::TcpListener::from_std(l).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (r, mut w) = s.into_split();
                    let mut lines = BufReader::new(r).lines();
                    while let Ok(Some(line)) = lines.next_line().await {
                        if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
    }
    for u in ul {
        u.set_nonblocking(true).unwrap();
        let u = UdpSocket::from_std(u).unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok((n, from)) = u.recv_from(&mut buf).await {
                let _ = u.send_to(&buf[..n], from).await;
            }
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Tcp,
    Udp,
}

/// A connection from `src` (in `ns`) to `dst` that echoes within the timeout.
async fn tcp_connect(ns: &str, src: &str, dst: SocketAddr) -> Option<BufReader<TcpStream>> {
    let src: IpAddr = src.parse().unwrap();
    let socket = in_netns(ns, || {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        s
    });
    let stream = tokio::time::timeout(PROBE_TIMEOUT, socket.connect(dst)).await.ok()?.ok()?;
    let mut stream = BufReader::new(stream);
    echoes(&mut stream).await.then_some(stream)
}

async fn echoes(stream: &mut BufReader<TcpStream>) -> bool {
    if stream.get_mut().write_all(b"ping\n").await.is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(tokio::time::timeout(PROBE_TIMEOUT, stream.read_line(&mut line)).await, Ok(Ok(5)))
}

async fn answers(ns: &str, src: &str, proto: Proto, dst: &str, port: u16) -> bool {
    let dst = SocketAddr::new(dst.parse().unwrap(), port);
    match proto {
        Proto::Tcp => tcp_connect(ns, src, dst).await.is_some(),
        Proto::Udp => {
            let src: IpAddr = src.parse().unwrap();
            let s = in_netns(ns, || std::net::UdpSocket::bind(SocketAddr::new(src, 0)).unwrap());
            s.set_nonblocking(true).unwrap();
            let s = UdpSocket::from_std(s).unwrap();
            let mut buf = [0u8; 64];
            s.send_to(b"ping", dst).await.unwrap();
            matches!(tokio::time::timeout(PROBE_TIMEOUT, s.recv_from(&mut buf)).await, Ok(Ok((4, _))))
        }
    }
}

/// Probes every stand-in port from `src` to `dst` concurrently; returns the ones that answer.
async fn open_ports(ns: &str, src: &str, dst: &str) -> Vec<(Proto, u16)> {
    let mut set = tokio::task::JoinSet::new();
    let probes = TCP_PORTS.iter().map(|p| (Proto::Tcp, *p)).chain(UDP_PORTS.iter().map(|p| (Proto::Udp, *p)));
    for (proto, port) in probes {
        let (ns, src, dst) = (ns.to_owned(), src.to_owned(), dst.to_owned());
        set.spawn(async move { answers(&ns, &src, proto, &dst, port).await.then_some((proto, port)) });
    }
    let mut open: Vec<(Proto, u16)> = set.join_all().await.into_iter().flatten().collect();
    open.sort_by_key(|(p, port)| (*p == Proto::Udp, *port));
    open
}

fn host_ruleset() -> String {
    run(&["nft", "list", "ruleset"]).unwrap_or_default()
}

fn unavailable() -> Option<String> {
    if !std::fs::read_to_string("/proc/self/status").unwrap_or_default().lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")) {
        return Some("needs root for ip netns".into());
    }
    if run(&["nft", "--version"]).is_err() {
        return Some("nft is not installed".into());
    }
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let probe = format!("gwt-probe-{}-{}", std::process::id(), PROBES.fetch_add(1, std::sync::atomic::Ordering::SeqCst));
    match run(&["ip", "netns", "add", &probe]) {
        Ok(_) => {
            let _ = run(&["ip", "netns", "del", &probe]);
            None
        }
        Err(e) => Some(format!("no network namespace support: {e}")),
    }
}

fn all(tcp: &[u16], udp: &[u16]) -> Vec<(Proto, u16)> {
    let mut v: Vec<(Proto, u16)> = tcp.iter().map(|p| (Proto::Tcp, *p)).chain(udp.iter().map(|p| (Proto::Udp, *p))).collect();
    v.sort_by_key(|(p, port)| (*p == Proto::Udp, *port));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_profiles_openings_answer_and_bans_drop_one_source_everywhere() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let host_before = host_ruleset();
    let lab = Lab::create("a").expect("namespaces");
    serve_echo(&lab.gw, &TCP_PORTS, &UDP_PORTS);
    serve_echo(&lab.internal, &[7000], &[]);
    let everything = all(&TCP_PORTS, &UDP_PORTS);

    // Without the ruleset every stand-in answers from everywhere (so a drop below is the firewall's).
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, everything);
    assert_eq!(open_ports(&lab.internal, OTHER_INTERNAL, INTERNAL_GW).await, everything);
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, UPSTREAM, 7000).await, "routed before the ruleset");

    let profile = load("gatewayd");
    let firewall = Arc::new(Firewall::with_nft(Nft::in_netns(&lab.gw), false));
    let status = firewall.apply(&profile, &[]).await.expect("ruleset applies");
    assert_eq!(status, Status::Enforcing { table: "gatewayd".into() });

    // Internet side: web, TURN and the public media/relay ranges only.
    let public = all(&[80, 443, 3478, 5349], &[3478, 40000, 43000]);
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, public);
    assert_eq!(open_ports(&lab.inet, ATTACKER, INTERNAL_GW).await, vec![], "internal and management addresses are not reachable from the public side");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, UPSTREAM, 7000).await, "nothing routed from the public side to the internal network");
    // Internal side: SIP and RTP only from the upstream server; admin only from management sources.
    assert_eq!(open_ports(&lab.internal, UPSTREAM, INTERNAL_GW).await, all(&[5060], &[5060, 41000]));
    assert_eq!(open_ports(&lab.internal, OTHER_INTERNAL, INTERNAL_GW).await, all(&[9090], &[]));
    assert_eq!(open_ports(&lab.internal, UPSTREAM, PUBLIC_GW).await, vec![], "public services only on the public interface");

    // A ban through the ban service, fed by failures like a listener would.
    let state = std::env::temp_dir().join(format!("gatewayd-netns-{}", std::process::id()));
    let service = BanService::new(&profile, firewall.clone(), Some(BanStore::in_dir(&state)));
    let mut closures = service.subscribe_closures();
    let attacker: IpAddr = ATTACKER.parse().unwrap();
    let mut established = tcp_connect(&lab.inet, ATTACKER, SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)).await.expect("connects");
    for _ in 0..2 {
        assert!(service.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await.is_empty());
    }
    let tripped = Instant::now();
    let actions = service.report(Failure { ip: attacker, kind: FailureKind::DigestFailure }).await;
    let in_effect = tripped.elapsed();
    assert!(matches!(actions.first(), Some(GuardAction::Ban(b)) if b.ip == attacker), "{actions:?}");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Udp, PUBLIC_GW, 40000).await, "dropped as soon as report() returns");
    assert!(in_effect < Duration::from_secs(1), "ban took {in_effect:?}");
    eprintln!("ban in the kernel {in_effect:?} after the tripping failure");
    assert_eq!(closures.try_recv().ok(), Some(attacker), "listeners are told to close the source's connections");
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, vec![], "banned on every port");
    assert!(!echoes(&mut established).await, "established connections are cut too");
    assert_eq!(open_ports(&lab.inet, NEIGHBOUR, PUBLIC_GW).await, public, "the neighbour keeps working");
    assert_eq!(service.list().len(), 1);
    assert!(state.join("bans.json").exists(), "bans are persisted");

    // After the ban time (2 s) the source works again, without anyone lifting it.
    let deadline = Instant::now() + Duration::from_secs(6);
    while !answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await {
        assert!(Instant::now() < deadline, "still banned after its ban time");
    }
    assert!(tripped.elapsed() >= Duration::from_millis(1900), "ban ended early: {:?}", tripped.elapsed());
    service.tick().await;
    assert!(service.list().is_empty());

    // An operator's ban survives a reload and a restart, and is lifted through the same API.
    service.ban(attacker, Some(Duration::from_secs(60))).await.expect("bans");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await);
    firewall.apply(&profile, &service.firewall_bans()).await.expect("reload applies");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "ban survives a reload");
    service.flush();
    drop(service);
    let restarted = BanService::new(&profile, firewall.clone(), Some(BanStore::in_dir(&state)));
    let carried = restarted.firewall_bans();
    assert_eq!(carried.len(), 1);
    assert!(carried[0].1 > Duration::from_secs(50), "{carried:?}");
    // A fresh table (as after a reboot) gets the persisted ban preloaded.
    firewall.remove().await.unwrap();
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "no table, no ban");
    firewall.apply(&profile, &restarted.firewall_bans()).await.expect("applies");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "ban survives a restart");
    restarted.remove(attacker).await.expect("lifted");
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "lifted ban lets the source in at once");
    assert!(restarted.remove(attacker).await.is_err(), "not banned any more");

    // Turning management off removes gatewayd's table; bans are then only logged.
    let mut off = profile.clone();
    off.firewall.manage = false;
    assert_eq!(firewall.apply(&off, &[]).await.unwrap(), Status::Disabled);
    assert_eq!(open_ports(&lab.inet, ATTACKER, PUBLIC_GW).await, everything);
    assert!(restarted.ban(attacker, None).await.is_ok());
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "not enforced when not managed");

    let _ = std::fs::remove_dir_all(&state);
    drop(lab);
    assert_eq!(host_ruleset(), host_before, "the host ruleset is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_permission_the_firewall_only_logs_and_a_bad_ruleset_changes_nothing() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("b").expect("namespaces");
    serve_echo(&lab.gw, &[443], &[]);
    let profile = load("gatewayd");

    // nft in a user namespace without mapped root: not permitted, nothing applied, log-only.
    let unprivileged = Firewall::with_nft(Nft::with_command(vec!["ip".into(), "netns".into(), "exec".into(), lab.gw.clone(), "unshare".into(), "-U".into(), "nft".into()]), false);
    let status = unprivileged.apply(&profile, &[]).await.expect("runs on");
    assert!(matches!(&status, Status::LogOnly { reason } if reason.contains("not permitted")), "{status:?}");
    unprivileged.ban(ATTACKER.parse().unwrap(), Duration::from_secs(60)).await.expect("logged only");
    assert!(answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 443).await, "nothing was applied");

    // A ruleset nft refuses (a table name the kernel rejects) leaves the previous one in place.
    let firewall = Firewall::with_nft(Nft::in_netns(&lab.gw), false);
    firewall.apply(&profile, &[]).await.expect("applies");
    let mut bad = profile.clone();
    bad.firewall.table = "x".repeat(300);
    assert!(firewall.apply(&bad, &[]).await.is_err());
    assert_eq!(firewall.status(), Status::Enforcing { table: "gatewayd".into() });
    let listed = run(&["ip", "netns", "exec", &lab.gw, "nft", "list", "tables"]).unwrap();
    assert_eq!(listed.trim(), "table inet gatewayd", "exactly gatewayd's table, unchanged");
    assert!(!answers(&lab.inet, ATTACKER, Proto::Tcp, PUBLIC_GW, 9090).await);
}

/// bench/bans: time from the failure that trips the rule to the first dropped packet, with a
/// UDP stream from the attacker every 200 µs. Run with `--ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; run explicitly"]
async fn ban_latency() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let lab = Lab::create("c").expect("namespaces");
    serve_echo(&lab.gw, &[], &[40000]);
    let profile = load("gatewayd");
    let firewall = Arc::new(Firewall::with_nft(Nft::in_netns(&lab.gw), false));
    firewall.apply(&profile, &[]).await.expect("applies");
    let runs: usize = std::env::var("BAN_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let mut report_times = Vec::new();
    let mut drop_times = Vec::new();
    for i in 0..runs {
        let service = BanService::new(&profile, firewall.clone(), None);
        let src: IpAddr = ATTACKER.parse().unwrap();
        let s = in_netns(&lab.inet, || std::net::UdpSocket::bind(SocketAddr::new(src, 0)).unwrap());
        s.set_nonblocking(true).unwrap();
        let s = Arc::new(UdpSocket::from_std(s).unwrap());
        let dst: SocketAddr = format!("{PUBLIC_GW}:40000").parse().unwrap();
        // Sender: sequence number + send time; receiver: last echoed sequence.
        let start = Instant::now();
        let sender = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut seq: u64 = 0;
                let mut every = tokio::time::interval(Duration::from_micros(200));
                loop {
                    every.tick().await;
                    let at = start.elapsed().as_nanos() as u64;
                    let mut msg = [0u8; 16];
                    msg[..8].copy_from_slice(&seq.to_be_bytes());
                    msg[8..].copy_from_slice(&at.to_be_bytes());
                    let _ = s.send_to(&msg, dst).await;
                    seq += 1;
                }
            })
        };
        let receiver = {
            let s = s.clone();
            tokio::spawn(async move {
                let mut last_sent_at = 0u64;
                let mut buf = [0u8; 64];
                while let Ok(Ok((16, _))) = tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await {
                    last_sent_at = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                }
                last_sent_at
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..2 {
            service.report(Failure { ip: src, kind: FailureKind::DigestFailure }).await;
        }
        let tripped_at = start.elapsed();
        service.report(Failure { ip: src, kind: FailureKind::DigestFailure }).await;
        let reported = start.elapsed() - tripped_at;
        let last_answered = Duration::from_nanos(receiver.await.unwrap());
        sender.abort();
        // The first dropped packet is the one after the last answered.
        let dropped_after = last_answered.saturating_sub(tripped_at) + Duration::from_micros(200);
        report_times.push(reported);
        drop_times.push(dropped_after);
        service.remove(src).await.unwrap();
        eprintln!("run {i}: report returned after {reported:?}, first dropped packet {dropped_after:?} after the tripping failure");
    }
    report_times.sort();
    drop_times.sort();
    let pct = |v: &[Duration], p: usize| v[(v.len() - 1) * p / 100];
    println!(
        "ban latency over {runs} runs: report() median {:?} p95 {:?}; first dropped packet median {:?} p95 {:?} max {:?}",
        pct(&report_times, 50),
        pct(&report_times, 95),
        pct(&drop_times, 50),
        pct(&drop_times, 95),
        drop_times.last().unwrap()
    );
}
