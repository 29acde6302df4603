//! Helpers shared by the integration tests: paths, free ports, a running gateway process.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The workspace root (tests run from the crate directory).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

pub fn gatewayd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gatewayd"));
    c.current_dir(root());
    c
}

/// A port free for both TCP and UDP on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let n: u64 = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
        let p = std::env::temp_dir().join(format!("gatewayd-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The lab profile with every `127.0.0.1:PORT` moved to a free port, so tests run side by side.
/// Returns the text and the port mapping (lab port -> test port).
pub fn lab_profile_free_ports() -> (String, HashMap<u16, u16>) {
    let text = std::fs::read_to_string(root().join("profiles/lab.toml")).unwrap();
    let mut map = HashMap::new();
    let re = "127.0.0.1:";
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find(re) {
        out.push_str(&rest[..i + re.len()]);
        rest = &rest[i + re.len()..];
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let port: u16 = digits.parse().unwrap();
        let new = match map.get(&port) {
            Some(new) => *new,
            None => {
                // Distinct within the profile: free_port alone may hand the same port out twice.
                let new = std::iter::repeat_with(free_port).find(|p| !map.values().any(|v| v == p)).unwrap();
                map.insert(port, new);
                new
            }
        };
        out.push_str(&new.to_string());
        rest = &rest[digits.len()..];
    }
    out.push_str(rest);
    (out, map)
}

/// A running `gatewayd run`, killed on drop. Its stderr lines are collected.
pub struct Gateway {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    pub seen: Vec<String>,
}

impl Gateway {
    pub fn start(profile: &Path, state_dir: &Path, env: &[(&str, &str)]) -> Self {
        let mut cmd = gatewayd();
        cmd.args(["run", "--profile"]).arg(profile).arg("--state-dir").arg(state_dir);
        for (k, v) in env {
            cmd.env(k, v);
        }
        Self::spawn(cmd)
    }

    /// `gatewayd run` inside network namespace `ns` (as root).
    pub fn start_in_netns(ns: &str, profile: &Path, state_dir: &Path) -> Self {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_gatewayd"), "run", "--profile"]).arg(profile).arg("--state-dir").arg(state_dir);
        Self::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Self {
        cmd.env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM").env("RUST_LOG", "info");
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Gateway { child, lines, seen: Vec::new() }
    }

    /// Waits until a stderr line contains `needle`; panics with the log after `deadline`.
    pub fn wait_for_log(&mut self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no log line containing {needle:?} within {deadline:?}; log so far:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Every stderr line so far (what has arrived is taken without waiting).
    pub fn drain_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").arg(format!("-{sig}")).arg(self.child.id().to_string()).status().unwrap().success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(mut self) {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(10));
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let end = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < end, "gatewayd did not exit within {deadline:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.0 GET on loopback; returns the body on 200.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let (head, body) = resp.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}

/// Polls `f` until it returns Some, or panics after `deadline`.
pub fn eventually<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A TLS client configuration that trusts exactly the certificates in `pem` (the lab's own).
pub fn tls_trusting(pem: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    std::sync::Arc::new(config)
}

/// A throwaway CA (`dir/ca.pem`, common name `ca_name`) and, for each `(name, names)`, a leaf it
/// signs for those names: `dir/<name>.crt` and `dir/<name>.key`.
pub fn write_ca_and_leaves(dir: &Path, ca_name: &str, leaves: &[(&str, &[&str])]) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    for (name, names) in leaves {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, *name);
        std::fs::write(dir.join(format!("{name}.crt")), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
