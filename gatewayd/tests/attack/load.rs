//! Load at scale for the attack lab: many source addresses on the internet (each limited to
//! `web.max_connections_per_source` connections by the profile, so ten thousand connections
//! need hundreds of them), thousands of TLS connections or WebSockets opened at once from them,
//! and the daemon's memory and CPU time sampled from /proc while that goes on.
//!
//! The attackers' side runs on a runtime of its own whose threads are niced: on this one
//! machine their CPU would otherwise be taken from the daemon and from the legitimate agent,
//! which on the internet it is not. Like a flood tool, they do not verify the certificate.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use super::{rss_kib, HOST};
use crate::lab::*;

/// Hosts per bot network: `.5` to `.254`.
const PER_NET: usize = 250;

/// `count` source addresses on the internet: /24 networks 198.18.N.0 (the benchmarking range),
/// each a namespace of its own behind the internet namespace, hosts from `.5` up. Deleted on drop.
pub struct Bots {
    pub nets: Vec<Remote>,
    count: usize,
}

impl Bots {
    pub fn create(lab: &Lab, tag: &str, count: usize) -> Bots {
        let mut nets = Vec::new();
        for i in 0..count.div_ceil(PER_NET) {
            let net = lab.add_remote(&format!("{tag}{i}"), &format!("198.18.{i}")).expect("bot network");
            let hosts = PER_NET.min(count - i * PER_NET);
            // One `ip -batch` per network: hundreds of `ip addr add` processes take seconds.
            let script: String = (6..5 + hosts).map(|n| format!("addr add {}/24 dev eth0\n", net.host(n as u8))).collect();
            let mut child = std::process::Command::new("ip").args(["-n", &net.ns, "-batch", "-"]).stdin(std::process::Stdio::piped()).spawn().unwrap();
            std::io::Write::write_all(child.stdin.as_mut().unwrap(), script.as_bytes()).unwrap();
            drop(child.stdin.take());
            assert!(child.wait().unwrap().success(), "addresses for {}", net.net);
            nets.push(net);
        }
        Bots { nets, count }
    }

    /// (namespace, address) of every bot, the first `n` of them.
    pub fn addresses(&self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, net) in self.nets.iter().enumerate() {
            for h in 0..PER_NET.min(self.count - i * PER_NET) {
                out.push((net.ns.clone(), net.host((5 + h) as u8)));
            }
        }
        out.truncate(n);
        out
    }
}

/// `n` TCP sockets bound to `src` in `ns`, made on one thread inside the namespace.
pub fn sockets(ns: &str, src: &str, n: usize) -> Vec<TcpSocket> {
    let src: SocketAddr = format!("{src}:0").parse().unwrap();
    in_netns(ns, || {
        (0..n)
            .map(|_| {
                let s = TcpSocket::new_v4().unwrap();
                s.bind(src).unwrap();
                s
            })
            .collect()
    })
}

/// The attackers' runtime: two worker threads at nice 10, shut down on drop.
pub struct Attackers(Option<tokio::runtime::Runtime>);

impl Attackers {
    pub fn new() -> Attackers {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .on_thread_start(|| {
                // SAFETY: sets this thread's own nice value (PRIO_PROCESS with a thread id is
                // per thread on Linux); no memory is passed.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
            })
            .build()
            .unwrap();
        Attackers(Some(rt))
    }

    pub fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().unwrap().handle().clone()
    }
}

impl Drop for Attackers {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Accepts any certificate: a flood tool does not check whom it floods.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn flood_tls() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        // Key exchange over P-256, which ring does in assembly: X25519 is C built without
        // optimisation in a debug build, and the attackers' CPU is not what is measured.
        let mut provider = rustls::crypto::ring::default_provider();
        provider.kx_groups = vec![rustls::crypto::ring::kx_group::SECP256R1];
        let provider = Arc::new(provider);
        let config = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Arc::new(config)
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// Connect and a full TLS handshake to the HTTPS listener, each within `limit`.
pub async fn handshake(socket: TcpSocket, limit: Duration) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let dst = SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443);
    let tcp = tokio::time::timeout(limit, socket.connect(dst)).await.map_err(|_| "connect timed out".to_owned())?.map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    tokio::time::timeout(limit, flood_tls().connect(name, tcp)).await.map_err(|_| "TLS timed out".to_owned())?.map_err(|e| format!("TLS: {e}"))
}

/// What one connection of a crowd did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Time from the crowd's start to the end of this connection's handshake (or upgrade).
    pub ready_after: Duration,
    /// Held until released (not closed by the gateway first).
    pub held: bool,
    /// WebSocket pings the gateway sent while it was held.
    pub pings: u32,
}

/// Thousands of connections opened at once, held until released, then closed.
pub struct Crowd {
    pub began: Instant,
    /// Open right now, and the most that were open at one time.
    pub open: Arc<AtomicUsize>,
    pub peak: Arc<AtomicUsize>,
    /// Finished opening (successfully or not).
    pub settled: Arc<AtomicUsize>,
    /// WebSockets the gateway has pinged at least once.
    pub pinged: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
    set: tokio::task::JoinSet<Result<Outcome, String>>,
    pub total: usize,
}

impl Crowd {
    /// `per_source` connections from each address, at most `opening` of them opening at a time
    /// (`usize::MAX`: all at once); `websocket`: upgrade each to a SIP WebSocket and keep
    /// reading it (so pings are answered, as a browser does), else TLS only.
    pub fn open(on: &Attackers, sources: &[(String, String)], per_source: usize, opening: usize, websocket: bool, limit: Duration) -> Crowd {
        let handle = on.handle();
        let gate = Arc::new(tokio::sync::Semaphore::new(opening.min(tokio::sync::Semaphore::MAX_PERMITS)));
        let began = Instant::now();
        let counter = || Arc::new(AtomicUsize::new(0));
        let (open, peak, settled, pinged) = (counter(), counter(), counter(), counter());
        let (release, released) = watch::channel(false);
        let mut set = tokio::task::JoinSet::new();
        for (ns, src) in sources {
            for socket in sockets(ns, src, per_source) {
                let (open, peak, settled, pinged, mut released) = (open.clone(), peak.clone(), settled.clone(), pinged.clone(), released.clone());
                let gate = gate.clone();
                set.spawn_on(async move {
                    let permit = gate.acquire_owned().await.expect("the gate stays open");
                    let opened = one(socket, websocket, limit).await;
                    drop(permit);
                    settled.fetch_add(1, Ordering::Relaxed);
                    let mut conn = opened?;
                    let ready_after = began.elapsed();
                    peak.fetch_max(open.fetch_add(1, Ordering::Relaxed) + 1, Ordering::Relaxed);
                    let mut pings = 0;
                    let held = loop {
                        tokio::select! {
                            _ = released.wait_for(|r| *r) => break true,
                            alive = conn.next_event() => match alive {
                                Some(true) => {
                                    if pings == 0 {
                                        pinged.fetch_add(1, Ordering::Relaxed);
                                    }
                                    pings += 1;
                                }
                                Some(false) => {}
                                None => break false,
                            },
                        }
                    };
                    open.fetch_sub(1, Ordering::Relaxed);
                    Ok(Outcome { ready_after, held, pings })
                }, &handle);
            }
        }
        Crowd { began, open, peak, settled, pinged, release, set, total: sources.len() * per_source }
    }

    /// Waits until every connection has finished opening, at most `deadline`.
    pub async fn settled(&self, deadline: Duration) -> Duration {
        let end = self.began + deadline;
        while self.settled.load(Ordering::Relaxed) < self.total && Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.began.elapsed()
    }

    /// Closes every connection still open; what each one did.
    pub async fn release(self) -> Vec<Result<Outcome, String>> {
        let _ = self.release.send(true);
        self.set.join_all().await
    }
}

enum Conn {
    Tls(tokio_rustls::client::TlsStream<tokio::net::TcpStream>),
    Ws(Box<super::Wss>),
}

impl Conn {
    /// The next thing the gateway does: `Some(true)` a ping, `Some(false)` anything else,
    /// `None` it closed the connection.
    async fn next_event(&mut self) -> Option<bool> {
        match self {
            Conn::Tls(t) => {
                let mut buf = [0u8; 512];
                match tokio::io::AsyncReadExt::read(t, &mut buf).await {
                    Ok(0) | Err(_) => None,
                    Ok(_) => Some(false),
                }
            }
            Conn::Ws(w) => match w.next().await {
                Some(Ok(Message::Ping(_))) => Some(true),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => None,
                Some(Ok(_)) => Some(false),
            },
        }
    }
}

async fn one(socket: TcpSocket, websocket: bool, limit: Duration) -> Result<Conn, String> {
    let tls = handshake(socket, limit).await?;
    if !websocket {
        return Ok(Conn::Tls(tls));
    }
    let mut request = format!("wss://{HOST}/ws").into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("https://{HOST}").parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    match tokio::time::timeout(limit, tokio_tungstenite::client_async(request, tls)).await {
        Ok(Ok((ws, _))) => Ok(Conn::Ws(Box::new(ws))),
        Ok(Err(e)) => Err(format!("upgrade: {e}")),
        Err(_) => Err("upgrade timed out".into()),
    }
}

/// The `q` quantile (0..=1) of `values`.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    let mut v = values.to_vec();
    v.sort();
    v.get(((v.len() as f64 - 1.0) * q).round() as usize).copied().unwrap_or_default()
}

/// Failures counted by their message.
pub fn by_reason<T>(results: &[Result<T, String>]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        *out.entry(e.clone()).or_default() += 1;
    }
    out
}

/// Samples the daemon's RSS every 50 ms; `peak` since the last `take_peak`.
pub struct Rss {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Rss {
    pub fn watch(pid: u32) -> Rss {
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

    pub fn take_peak(&self) -> u64 {
        self.peak.swap(0, Ordering::Relaxed)
    }
}

impl Drop for Rss {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The daemon's CPU time (user + system, from /proc/PID/stat) sampled every 100 ms, so a test
/// can read its CPU use per second over any stretch and wait for it to settle.
pub struct Cpu {
    samples: Arc<Mutex<Vec<(Instant, Duration)>>>,
    task: tokio::task::JoinHandle<()>,
}

/// The kernel's clock ticks per second for /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: u64 = 100;

pub fn cpu_time(pid: u32) -> Duration {
    process_cpu_time(&pid.to_string())
}

/// CPU time of this test process (the attackers and the agent), to tell who was busy.
pub fn own_cpu_time() -> Duration {
    process_cpu_time("self")
}

fn process_cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0) + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

impl Cpu {
    pub fn watch(pid: u32) -> Cpu {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let s = samples.clone();
        let task = tokio::spawn(async move {
            loop {
                s.lock().unwrap().push((Instant::now(), cpu_time(pid)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Cpu { samples, task }
    }

    /// CPU seconds per second (1.0: one core busy) between `from` and `to`.
    pub fn rate(&self, from: Instant, to: Instant) -> f64 {
        let s = self.samples.lock().unwrap();
        let first = s.iter().find(|(at, _)| *at >= from);
        let last = s.iter().rev().find(|(at, _)| *at <= to);
        match (first, last) {
            (Some(a), Some(b)) if b.0 > a.0 => (b.1.as_secs_f64() - a.1.as_secs_f64()) / (b.0 - a.0).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// CPU seconds used between `from` and `to`.
    pub fn used(&self, from: Instant, to: Instant) -> f64 {
        self.rate(from, to) * (to - from).as_secs_f64()
    }

    /// Waits until the CPU use over the last `window` is at most `level`; how long that took
    /// from `since`, or None when it did not happen within `deadline` of `since`.
    pub async fn settles(&self, since: Instant, window: Duration, level: f64, deadline: Duration) -> Option<Duration> {
        loop {
            let now = Instant::now();
            if now >= since + window && self.rate(now - window, now) <= level {
                return Some(now - since);
            }
            if now > since + deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cpu {
    fn drop(&mut self) {
        self.task.abort();
    }
}
