//! The attack lab: the daemon on a DMZ-like profile (not lab mode, certificate from files,
//! `firewall.manage = true`) in the gateway namespace, attackers in the internet namespace,
//! a legitimate agent in an office network of its own, the SIP server's network behind the
//! internal side. Helpers to open WSS connections from any of them, to read the daemon's
//! memory, and to run the Debian attack tools inside a namespace.
#![allow(dead_code)]

pub mod agent;
pub mod flood;
pub mod load;
pub mod office;
pub mod shim;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::common::{self, Gateway, TempDir};
use crate::lab::*;

/// The certificate's name (tests/profiles/tls/gateway.crt, self-signed).
pub const HOST: &str = "voice.example.net";
/// The brute-force rule of the attack profile: this many digest failures ban the source.
pub const AUTH_RETRY: u32 = 5;
/// A second attacker address in the internet namespace (svwar, scans).
pub const SCOUT: &str = "198.51.100.4";
/// An allowlisted scanner's network, a namespace of its own (testssl.sh makes hundreds of
/// deliberately failing handshakes, from whatever address the namespace gives it).
pub const SCANNER_NET: &str = "100.64.1";
pub const SCANNER: &str = "100.64.1.5";
/// The legitimate agent's office network.
pub const OFFICE_NET: &str = "203.0.113";

pub type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// The DMZ-like profile: ten agents 5001-5010 with password `pass<DN>` (stored as HA1 values), echo number 600, one
/// brute-force rule (AUTH_RETRY digest failures or failed handshakes in a minute ban for ten
/// minutes) and an abuse rule as in the defaults. `extra` is appended (more `[bans]` keys go
/// in `bans_extra`).
pub fn profile(dir: &Path, bans_extra: &str, extra: &str) -> String {
    write_certificates(dir);
    std::fs::write(dir.join("turn.secret"), "attack-turn-secret\n").unwrap();
    let rules = format!(
        "allowlist = [\"{SCANNER}/32\"]\n{bans_extra}\nrules = [\
         {{ name = \"auth\", events = [\"digest-failure\", \"tls-handshake\", \"origin-rejected\", \"turn-auth\"], max_retry = {AUTH_RETRY}, find_time = \"1m\", ban_time = \"10m\" }}, \
         {{ name = \"abuse\", events = [\"malformed-sip\", \"http4xx\", \"rate-limited\"], max_retry = 20, find_time = \"1m\", ban_time = \"10m\" }}]"
    );
    let mut text = profile_text("gwattack")
        .replace("lab_mode = true", "lab_mode = false")
        .replace(
            "[tls]\nsource = \"self-signed\"",
            &format!("[tls]\nsource = \"files\"\ncertificate = \"{}\"\nkey = \"{}\"", dir.join("gateway.crt").display(), dir.join("gateway.key").display()),
        )
        .replace("relay_ports = \"43000-43010\"", "relay_ports = \"43000-43199\"")
        .replace("shared_secret = \"s\"", &format!("shared_secret_file = \"{}\"", dir.join("turn.secret").display()))
        .replace(r#"rules = [{ name = "auth", events = ["digest-failure"], max_retry = 3, find_time = "1m", ban_time = "2s" }]"#, &rules)
        .replace("[sip]\n", "[sip]\necho_number = \"600\"\n");
    for dn in 5001..=5010 {
        let dn = dn.to_string();
        let stored = gatewayd::sip::digest::StoredCredentials::from_password(&dn, "gw.test", &format!("pass{dn}"));
        text.push_str(&format!("\n[[agents]]\ndn = \"{dn}\"\nha1_md5 = \"{}\"\nha1_sha256 = \"{}\"\n", stored.ha1_md5, stored.ha1_sha256));
    }
    text.push_str(extra);
    text
}

/// A CA (`ca.crt`, what clients trust) and the gateway's certificate for HOST signed by it
/// (`gateway.crt` with the chain, `gateway.key`), as a public CA would issue them: valid for
/// 90 days from yesterday, with a CRL distribution point.
pub fn write_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CrlDistributionPoint, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "gatewayd attack lab CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec![HOST.to_owned()]).unwrap();
    leaf.distinguished_name.push(DnType::CommonName, HOST);
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    leaf.not_before = rcgen::date_time_ymd(1970, 1, 1) + (since_epoch - Duration::from_secs(86_400));
    leaf.not_after = leaf.not_before + Duration::from_secs(90 * 86_400);
    leaf.crl_distribution_points = vec![CrlDistributionPoint { uris: vec!["http://ca.example.net/lab.crl".into()] }];
    let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key)).unwrap();
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("gateway.crt"), cert.pem() + &ca_cert.pem()).unwrap();
    std::fs::write(dir.join("gateway.key"), key.serialize_pem()).unwrap();
}

/// Namespaces, the office, a running daemon.
pub struct Site {
    pub daemon: Gateway,
    pub office: Remote,
    pub scanner: Remote,
    pub lab: Lab,
    pub dir: TempDir,
}

impl Site {
    /// Builds the lab (`tag` keeps namespace names apart), writes the profile, starts the daemon
    /// and waits until it is ready.
    pub fn start(tag: &str, bans_extra: &str, extra: &str) -> Site {
        let lab = Lab::create(tag).expect("namespaces");
        run(&["ip", "-n", &lab.inet, "addr", "add", &format!("{SCOUT}/24"), "dev", "eth0"]).unwrap();
        let office = lab.add_remote(&format!("o{tag}"), OFFICE_NET).expect("office network");
        let scanner = lab.add_remote(&format!("s{tag}"), SCANNER_NET).expect("scanner network");
        let dir = TempDir::new(&format!("attack-{tag}"));
        let path = dir.path().join("profile.toml");
        std::fs::write(&path, profile(dir.path(), bans_extra, extra)).unwrap();
        CA.lock().unwrap().extend(std::fs::read(dir.path().join("ca.crt")).unwrap());
        let check = common::gatewayd().args(["validate"]).arg(&path).output().unwrap();
        assert!(check.status.success(), "the attack profile is valid: {}", text(&check));
        let mut daemon = Gateway::start_in_netns(&lab.gw, &path, &dir.path().join("state"));
        daemon.wait_for_log("gatewayd ready", Duration::from_secs(60));
        Site { daemon, office, scanner, lab, dir }
    }

    /// The daemon's resident memory in KiB (`ip netns exec` execs the daemon in place).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.daemon.child.id())
    }

    /// The daemon's CPU time so far (user + system), from /proc.
    pub fn cpu_time(&self) -> Duration {
        load::cpu_time(self.daemon.child.id())
    }

    /// The metrics text, fetched from the management source.
    pub fn metrics(&self) -> String {
        self.admin("/metrics")
    }

    /// `GET path` on the admin listener, from the management source ("" when it fails).
    pub fn admin(&self, path: &str) -> String {
        run(&["ip", "netns", "exec", &self.lab.internal, "curl", "-s", "--max-time", "5", "--interface", OTHER_INTERNAL, &format!("http://{INTERNAL_GW}:9090{path}")]).unwrap_or_default()
    }

    /// A counter or gauge from the metrics, by its whole series name (`name{labels}`); 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        self.metrics().lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).and_then(|l| l.rsplit(' ').next()?.parse().ok()).unwrap_or(0.0)
    }

    /// `kill -9`, then the daemon started again on the same profile and state directory, as
    /// systemd's `Restart=` does (without its `RestartSec`); returns when the restart began.
    pub fn kill_and_restart(&mut self) -> std::time::Instant {
        let _ = self.daemon.child.kill();
        let _ = self.daemon.child.wait();
        let restarted = std::time::Instant::now();
        self.daemon = Gateway::start_in_netns(&self.lab.gw, &self.dir.path().join("profile.toml"), &self.state());
        restarted
    }

    /// Whether the kernel currently drops `src`'s connections to the HTTPS port.
    pub async fn dropped(&self, ns: &str, src: &str) -> bool {
        !connects(ns, src, SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)).await
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs a command inside namespace `ns`, bounded by `limit` (coreutils `timeout`).
pub fn tool(ns: &str, limit: Duration, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns, "timeout", &limit.as_secs().to_string()])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// Whether the Debian tools this lab runs are installed (scripts/setup installs them).
pub fn missing_tools(tools: &[&str]) -> Option<String> {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| Command::new("sh").args(["-c", &format!("command -v {t}")]).output().map(|o| !o.status.success()).unwrap_or(true)).collect();
    (!missing.is_empty()).then(|| format!("not installed: {} (run scripts/setup)", missing.join(", ")))
}

/// A TCP connection from `src` in `ns` within the probe timeout.
pub async fn connects(ns: &str, src: &str, dst: SocketAddr) -> bool {
    let socket = bound_socket(ns, src);
    matches!(tokio::time::timeout(PROBE_TIMEOUT, socket.connect(dst)).await, Ok(Ok(_)))
}

pub fn bound_socket(ns: &str, src: &str) -> TcpSocket {
    let src: IpAddr = src.parse().unwrap();
    in_netns(ns, || {
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(src, 0)).unwrap();
        s
    })
}

/// The TLS client configuration trusting the lab CA (the one `Site::start` wrote last).
pub fn tls() -> tokio_rustls::TlsConnector {
    let pem = CA.lock().unwrap().clone();
    tokio_rustls::TlsConnector::from(common::tls_trusting(&pem))
}

/// The lab CA's certificate, what clients trust.
pub static CA: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// A TLS connection to the HTTPS listener from `src` in `ns`.
pub async fn tls_from(ns: &str, src: &str) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), bound_socket(ns, src).connect(SocketAddr::new(PUBLIC_GW.parse().unwrap(), 443)))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls::pki_types::ServerName::try_from(HOST).unwrap();
    tokio::time::timeout(Duration::from_secs(5), tls().connect(name, tcp)).await.map_err(|_| "TLS timed out".to_owned())?.map_err(|e| format!("TLS: {e}"))
}

/// A SIP WebSocket from `src` in `ns`, with the gateway's own origin.
pub async fn wss_from(ns: &str, src: &str) -> Result<Wss, String> {
    let tls = tls_from(ns, src).await?;
    let mut request = format!("wss://{HOST}/ws").into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("https://{HOST}").parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    let upgrade = tokio_tungstenite::client_async(request, tls);
    match tokio::time::timeout(Duration::from_secs(5), upgrade).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => Err(format!("upgrade: {e}")),
        Err(_) => Err("upgrade timed out".into()),
    }
}
