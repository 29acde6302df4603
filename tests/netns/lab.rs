//! A small network lab for tests: namespaces joined by veth pairs ("internet", "gateway",
//! "internal"), sockets opened inside a namespace, echo listeners standing in for services,
//! and probes that tell an answering port from a dropped one. Shared by the firewall tests and
//! the ban benchmark; other end-to-end tests can include it with
//! `#[path = "../../tests/netns/lab.rs"] mod lab;`.
//!
//! Namespace names are unique per process and tag; `Lab` deletes them on drop, panics included.
#![allow(dead_code)]

use std::fs::File;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

use gatewayd::profile::{self, Profile};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

pub const PUBLIC_GW: &str = "198.51.100.1";
pub const ATTACKER: &str = "198.51.100.2";
pub const NEIGHBOUR: &str = "198.51.100.3";
pub const INTERNAL_GW: &str = "192.168.77.1";
pub const UPSTREAM: &str = "192.168.77.10";
pub const OTHER_INTERNAL: &str = "192.168.77.11";
/// How long a probe waits before calling a port dropped.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(300);

pub const TCP_PORTS: [u16; 7] = [443, 80, 3478, 5349, 5060, 9090, 7777];
pub const UDP_PORTS: [u16; 6] = [3478, 40000, 43000, 5060, 41000, 7777];

pub fn profile_text(table: &str) -> String {
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

pub fn load(table: &str) -> Profile {
    let path = std::path::Path::new("/nonexistent/netns-test.toml");
    profile::load_str(path, &profile_text(table), std::iter::empty()).unwrap_or_else(|d| panic!("{d}")).profile
}

pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0]).args(&args[1..]).output().map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// The three namespaces, deleted on drop (also when the test panics).
pub struct Lab {
    pub inet: String,
    pub gw: String,
    pub internal: String,
}

impl Lab {
    pub fn create(tag: &str) -> Result<Self, String> {
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

/// Another network on the internet (an office, an agent's ISP): a namespace behind the
/// internet namespace, which routes for it. Its hosts are `{net}.5`, `{net}.6`, ...; deleted on drop.
pub struct Remote {
    pub ns: String,
    pub net: String,
}

impl Remote {
    /// Host `n` of the network (`n` from 5 up; `.1` is the router in the internet namespace).
    pub fn host(&self, n: u8) -> String {
        format!("{}.{n}", self.net)
    }

    /// Adds address `host(n)` to the network's interface (several hosts in one namespace).
    pub fn add_host(&self, n: u8) -> Result<(), String> {
        run(&["ip", "-n", &self.ns, "addr", "add", &format!("{}/24", self.host(n)), "dev", "eth0"]).map(|_| ())
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

impl Lab {
    /// A remote network `net` (three octets, e.g. "203.0.113") with host `.5`, routed through the
    /// internet namespace to the gateway's public side.
    pub fn add_remote(&self, tag: &str, net: &str) -> Result<Remote, String> {
        let id = self.inet.trim_start_matches("gwt-inet-");
        let remote = Remote { ns: format!("gwt-{tag}-{id}"), net: net.to_owned() };
        run(&["ip", "netns", "add", &remote.ns])?;
        let (inet, ns, gw) = (&self.inet, &remote.ns, &self.gw);
        let link = format!("r{tag}");
        for c in [
            format!("ip -n {ns} link set lo up"),
            format!("ip -n {inet} link add {link} type veth peer name eth0 netns {ns}"),
            format!("ip -n {inet} addr add {net}.1/24 dev {link}"),
            format!("ip -n {ns} addr add {net}.5/24 dev eth0"),
            format!("ip -n {inet} link set {link} up"),
            format!("ip -n {ns} link set eth0 up"),
            format!("ip -n {ns} route add default via {net}.1"),
            format!("ip -n {gw} route add {net}.0/24 via {NEIGHBOUR}"),
            format!("ip netns exec {inet} sysctl -qw net.ipv4.ip_forward=1"),
        ] {
            let args: Vec<&str> = c.split_whitespace().collect();
            run(&args)?;
        }
        Ok(remote)
    }
}

/// Runs `f` on a thread that has entered network namespace `ns`; sockets it creates stay there.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
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
pub fn serve_echo(ns: &str, tcp: &[u16], udp: &[u16]) {
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
pub enum Proto {
    Tcp,
    Udp,
}

/// A connection from `src` (in `ns`) to `dst` that echoes within the timeout.
pub async fn tcp_connect(ns: &str, src: &str, dst: SocketAddr) -> Option<BufReader<TcpStream>> {
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

pub async fn echoes(stream: &mut BufReader<TcpStream>) -> bool {
    if stream.get_mut().write_all(b"ping\n").await.is_err() {
        return false;
    }
    let mut line = String::new();
    matches!(tokio::time::timeout(PROBE_TIMEOUT, stream.read_line(&mut line)).await, Ok(Ok(5)))
}

pub async fn answers(ns: &str, src: &str, proto: Proto, dst: &str, port: u16) -> bool {
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
pub async fn open_ports(ns: &str, src: &str, dst: &str) -> Vec<(Proto, u16)> {
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

pub fn host_ruleset() -> String {
    run(&["nft", "list", "ruleset"]).unwrap_or_default()
}

pub fn unavailable() -> Option<String> {
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

pub fn all(tcp: &[u16], udp: &[u16]) -> Vec<(Proto, u16)> {
    let mut v: Vec<(Proto, u16)> = tcp.iter().map(|p| (Proto::Tcp, *p)).chain(udp.iter().map(|p| (Proto::Udp, *p))).collect();
    v.sort_by_key(|(p, port)| (*p == Proto::Udp, *port));
    v
}

/// How long a [`UdpStream`] runs at most.
pub const STREAM_LIMIT: Duration = Duration::from_secs(15);

/// A UDP stream from `src` (in `ns`) to an echo port, one datagram every `interval`, each
/// carrying its send time: tells when a source stopped getting through, to the interval.
pub struct UdpStream {
    start: std::time::Instant,
    interval: Duration,
    sender: tokio::task::JoinHandle<()>,
    receiver: tokio::task::JoinHandle<(u64, Duration)>,
}

impl UdpStream {
    pub fn start(ns: &str, src: &str, dst: SocketAddr, interval: Duration) -> Self {
        let src: IpAddr = src.parse().unwrap();
        let s = in_netns(ns, || std::net::UdpSocket::bind(SocketAddr::new(src, 0)).unwrap());
        s.set_nonblocking(true).unwrap();
        let s = std::sync::Arc::new(UdpSocket::from_std(s).unwrap());
        let start = std::time::Instant::now();
        let tx = s.clone();
        let sender = tokio::spawn(async move {
            let mut every = tokio::time::interval(interval);
            loop {
                every.tick().await;
                let at = start.elapsed().as_nanos() as u64;
                let _ = tx.send_to(&at.to_be_bytes(), dst).await;
            }
        });
        // Stops after 500 ms without an answer, or at STREAM_LIMIT; returns (answers, send time
        // of the last one).
        let receiver = tokio::spawn(async move {
            let (mut answered, mut last) = (0u64, Duration::ZERO);
            let mut buf = [0u8; 64];
            while start.elapsed() < STREAM_LIMIT {
                match tokio::time::timeout(Duration::from_millis(500), s.recv_from(&mut buf)).await {
                    Ok(Ok((8, _))) => {
                        answered += 1;
                        last = Duration::from_nanos(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                    }
                    _ => break,
                }
            }
            (answered, last)
        });
        Self { start, interval, sender, receiver }
    }

    /// Time since the stream started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Waits until the stream stops getting answers; returns how long after `since` (time since
    /// start) the first unanswered datagram was sent. `None` if nothing was ever answered or
    /// answers never stopped within `STREAM_LIMIT`.
    pub async fn first_dropped_after(self, since: Duration) -> Option<Duration> {
        let (answered, last) = self.receiver.await.unwrap();
        self.sender.abort();
        let stopped = last + Duration::from_millis(400) < STREAM_LIMIT;
        (answered > 0 && stopped).then(|| (last + self.interval).saturating_sub(since))
    }
}
