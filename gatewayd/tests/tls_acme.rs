//! ACME against a real CA: Debian's Pebble (Let's Encrypt's test CA) with pebble-challtestsrv
//! as its DNS (every name resolves to 127.0.0.1), validating http-01 against the gateway's own
//! HTTP listener. The gateway starts on a self-signed stand-in, obtains a certificate that
//! chains to Pebble's root, serves it on new handshakes and renews it before it runs out;
//! with TLS-ALPN-01 too, and with the CA gone at renewal time (the old certificate stays).
//! Loopback only; the CA processes end with the test.

mod agent_client;
mod common;
mod media_peer;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{eventually, free_port, lab_profile_free_ports, Gateway, TempDir};

const PEBBLE: &str = "/usr/bin/pebble";
const CHALLTESTSRV: &str = "/usr/bin/pebble-challtestsrv";

/// A child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A CA for Pebble's own HTTPS (ca.pem) and the certificate Pebble serves (pebble.{crt,key}).
fn pebble_certificates(dir: &Path) {
    common::write_ca_and_leaves(dir, "ACME directory test CA", &[("pebble", &["127.0.0.1", "localhost"])]);
}

struct Ca {
    _pebble: Proc,
    _dns: Proc,
    management: u16,
}

/// Pebble on `listen`, validating http-01 on `http_port` and TLS-ALPN-01 on `tls_port`,
/// issuing certificates valid for `validity_s`.
fn start_pebble(dir: &Path, listen: u16, http_port: u16, tls_port: u16, validity_s: u64, binding: Option<(&str, &str)>) -> Ca {
    pebble_certificates(dir);
    let (dns_port, dns_management) = (free_port(), free_port());
    let management = free_port();
    let config = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{listen}"),
        "managementListenAddress": format!("127.0.0.1:{management}"),
        "certificate": dir.join("pebble.crt"),
        "privateKey": dir.join("pebble.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
        "certificateValidityPeriod": validity_s,
    }});
    let config = match binding {
        // Accounts only with an external account binding, as ZeroSSL and others require.
        Some((kid, key)) => {
            let mut c = config;
            c["pebble"]["externalAccountBindingRequired"] = true.into();
            c["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
            c
        }
        None => config,
    };
    // Certificates name an OCSP responder, as a public CA's do (none answers here).
    let config = { let mut c = config; c["pebble"]["ocspResponderURL"] = serde_json::json!(format!("http://127.0.0.1:{}/", free_port())); c };
    std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
    let quiet = || Stdio::from(std::fs::File::create(dir.join(format!("ca-{}.log", free_port()))).unwrap());
    let dns = Command::new(CHALLTESTSRV)
        .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-http01", "", "-https01", "", "-tlsalpn01", ""])
        .arg("-dns01")
        .arg(format!("127.0.0.1:{dns_port}"))
        .arg("-management")
        .arg(format!("127.0.0.1:{dns_management}"))
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .expect("pebble-challtestsrv (Debian package pebble; scripts/setup installs it)");
    let mut dns = Proc(dns);
    eventually("pebble-challtestsrv runs", Duration::from_secs(10), || {
        assert!(dns.0.try_wait().unwrap().is_none(), "pebble-challtestsrv exited: see {}", dir.display());
        TcpStream::connect(("127.0.0.1", dns_management)).ok()
    });
    let pebble = Command::new(PEBBLE)
        .arg("-config")
        .arg(dir.join("pebble.json"))
        .arg("-dnsserver")
        .arg(format!("127.0.0.1:{dns_port}"))
        // No random waits before validating, and no nonces refused on purpose: the test is
        // about the gateway, not about Pebble's chaos.
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(quiet())
        .stderr(quiet())
        .spawn()
        .expect("pebble");
    let pebble = Proc(pebble);
    eventually("pebble listens", Duration::from_secs(20), || TcpStream::connect(("127.0.0.1", listen)).ok());
    Ca { _pebble: pebble, _dns: dns, management }
}

/// Pebble's issuing root, from its management interface.
fn pebble_root(dir: &Path, management: u16) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sf", "--cacert"])
        .arg(dir.join("ca.pem"))
        .arg(format!("https://127.0.0.1:{management}/roots/0"))
        .output()
        .expect("curl");
    assert!(out.status.success(), "cannot fetch Pebble's root: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// The leaf the HTTPS listener serves for `name`, when the handshake verifies against `roots`.
fn served_leaf(port: u16, name: &str, roots: &[u8]) -> Result<Vec<u8>, String> {
    let config = common::tls_trusting(roots);
    let server_name = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(config, server_name).map_err(|e| e.to_string())?;
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    Ok(conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec()).unwrap_or_default())
}

fn acme_profile(dir: &Path, directory: &str, challenge: &str, binding: Option<(&str, &str)>) -> (std::path::PathBuf, u16, u16, u16) {
    let (text, ports) = lab_profile_free_ports();
    let text = text.replace(
        "[tls]\nsource = \"self-signed\"\nnames = [\"127.0.0.1\", \"localhost\"]",
        &format!(
            "[tls]\nsource = \"acme\"\n\n[tls.acme]\ndirectory = \"{directory}\"\ncontact = \"mailto:noc@gw.test\"\ndomains = [\"gw.test\"]\nchallenge = \"{challenge}\"\ndirectory_ca = \"ca.pem\"\n"
        ),
    );
    assert!(text.contains("source = \"acme\""), "the lab profile's [tls] table moved");
    // Twenty agents, and the test's own connections from 127.0.0.1 (the CA's validations
    // included) within an office's limits rather than one home agent's.
    let eab = match binding {
        Some((kid, key)) => {
            std::fs::write(dir.join("eab.key"), format!("{key}\n")).unwrap();
            format!("\n[tls.acme.external_account]\nkey_id = \"{kid}\"\nhmac_key_file = \"eab.key\"\n")
        }
        None => String::new(),
    };
    let text = text.replace("directory_ca = \"ca.pem\"\n", &format!("directory_ca = \"ca.pem\"\n{eab}"));
    let text = text.replace("dn = \"5001-5010\"", "dn = \"5001-5020\"")
        + "\n[[bans.rate_limits.offices]]\nname = \"test\"\nnetworks = [\"127.0.0.0/8\"]\nnew_connections_per_second = 200\nsip_requests_per_second = 1000\nburst = 400\nmax_connections_per_source = 200\n";
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, text).unwrap();
    (path, ports[&8443], ports[&8080], ports[&9090])
}

fn health(admin: u16) -> serde_json::Value {
    serde_json::from_str(&common::http_get(admin, "/health").unwrap_or_default()).unwrap_or_default()
}

/// A gateway on the lab profile with ACME from a fresh Pebble issuing `validity_s` certificates,
/// once its first certificate is served.
struct Issued {
    gw: Gateway,
    ca: Option<Ca>,
    https: u16,
    admin: u16,
    root: Vec<u8>,
    first: Vec<u8>,
    state: std::path::PathBuf,
    _dir: TempDir,
}

/// An external account binding's key id and MAC key (base64url), as a CA hands them out.
const BINDING: (&str, &str) = ("kid-gw-test", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W");

fn issue(challenge: &str, validity_s: u64, binding: Option<(&str, &str)>) -> Issued {
    assert!(Path::new(PEBBLE).exists(), "{PEBBLE} is missing: run scripts/setup (Debian package pebble)");
    let dir = TempDir::new("acme");
    let listen = free_port();
    let (profile, https, http, admin) = acme_profile(dir.path(), &format!("https://127.0.0.1:{listen}/dir"), challenge, binding);
    let ca = start_pebble(dir.path(), listen, http, https, validity_s, binding);
    let state = dir.path().join("state");
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    let stand_in = health(admin);
    let root = pebble_root(dir.path(), ca.management);
    gw.wait_for_log("ACME: certificate issued and installed", Duration::from_secs(60));
    let first = eventually("the HTTPS listener serves a certificate from Pebble", Duration::from_secs(10), || served_leaf(https, "gw.test", &root).ok());
    // Before the CA answered (or right after), /health told the stand-in apart.
    assert!(stand_in["acme"].is_object(), "{stand_in}");
    Issued { gw, ca: Some(ca), https, admin, root, first, state, _dir: dir }
}

#[test]
fn http01_issues_from_pebble_and_renews_before_expiry() {
    // A minute of validity: renewal is due 40 s into it.
    let mut t = issue("http-01", 60, None);
    let h = health(t.admin);
    assert_eq!(h["acme"]["stand_in"], false, "{h}");
    assert_eq!(h["acme"]["certificates_issued"], 1, "{h}");
    let account = std::fs::metadata(t.state.join("acme/account.json")).expect("the account is kept");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&account.permissions()) & 0o077, 0, "the account key is owner-only");
    let metrics = common::http_get(t.admin, "/metrics").unwrap_or_default();
    assert!(metrics.contains("acme_certificates_issued_total 1"), "{metrics}");

    // Renewal two thirds into the minute; new handshakes get the new certificate.
    let renewed = eventually("a renewed certificate is served", Duration::from_secs(90), || served_leaf(t.https, "gw.test", &t.root).ok().filter(|leaf| *leaf != t.first));
    assert!(!renewed.is_empty());
    assert_eq!(health(t.admin)["acme"]["certificates_issued"], 2);
    t.gw.wait_for_log("web: the certificate changed; rereading it", Duration::from_secs(1));
}

#[test]
fn tls_alpn01_with_an_account_binding_issues_and_a_ca_down_at_renewal_keeps_the_old_certificate() {
    let mut t = issue("tls-alpn-01", 60, Some(BINDING));
    assert!(!t.state.join("acme/tls-alpn-01/gw.test.pem").exists(), "the validation certificate is removed after the order");
    // The CA goes away before renewal is due.
    drop(t.ca.take());
    let failed = eventually("the renewal attempt fails and is counted", Duration::from_secs(90), || {
        let h = health(t.admin);
        (h["acme"]["orders_failed"].as_u64().unwrap_or(0) >= 1).then_some(h)
    });
    assert!(failed["acme"]["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{failed}");
    assert_eq!(failed["acme"]["stand_in"], false, "{failed}");
    // Still the CA's certificate on new handshakes, and a retry is planned, not spun.
    assert_eq!(served_leaf(t.https, "gw.test", &t.root).expect("still served and still valid"), t.first);
    let line = t.gw.wait_for_log("ACME: no certificate this time", Duration::from_secs(1));
    assert!(line.contains("retry_in_s="), "{line}");
    let metrics = common::http_get(t.admin, "/metrics").unwrap_or_default();
    assert!(metrics.contains("acme_orders_failed_total 1") || metrics.contains("acme_orders_failed_total 2"), "{metrics}");
}

/// An agent connection that trusts Pebble's root for `gw.test`.
async fn agent(https: u16, trust: &Path) -> agent_client::Ws {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https)).await.unwrap();
    agent_client::over(tcp, "gw.test", &format!("127.0.0.1:{https}"), trust).await.expect("TLS with the CA's certificate and the WebSocket upgrade")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_drops_no_registered_agent_and_no_call() {
    use futures::SinkExt;
    let t = tokio::task::block_in_place(|| issue("http-01", 60, None));
    let trust = TempDir::new("acme-trust");
    std::fs::write(trust.path().join("web.crt"), &t.root).unwrap();
    let mut agents = Vec::new();
    for dn in 5002..=5020 {
        let mut ws = agent(t.https, trust.path()).await;
        assert_eq!(agent_client::register(&mut ws, &dn.to_string(), &format!("pass{dn}")).await, 200, "agent {dn}");
        agents.push((dn, ws));
    }
    let mut caller = agent(t.https, trust.path()).await;
    assert_eq!(agent_client::register(&mut caller, "5001", "pass5001").await, 200);
    let peer = media_peer::BrowserPeer::spawn(rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm);
    let to = agent_client::echo_call(&mut caller, "5001", "pass5001", &peer).await;
    let echoed = |at_least: u64| {
        eventually("echoed audio on the call", Duration::from_secs(10), || {
            let calls: serde_json::Value = serde_json::from_str(&common::http_get(t.admin, "/calls")?).ok()?;
            let got = calls[0]["media"]["browser"]["packets_received"].as_u64()?;
            (got >= at_least).then_some(got)
        })
    };
    let before = tokio::task::block_in_place(|| echoed(25));

    let renewed = tokio::task::block_in_place(|| {
        eventually("a renewed certificate on new handshakes", Duration::from_secs(90), || served_leaf(t.https, "gw.test", &t.root).ok().filter(|leaf| *leaf != t.first))
    });
    assert!(!renewed.is_empty());
    // Every agent's WebSocket outlived the swap: each answers on the connection it had.
    for (dn, ws) in &mut agents {
        ws.send(tokio_tungstenite::tungstenite::Message::text(agent_client::register_request(&dn.to_string(), 3).to_string())).await.unwrap();
        let r = agent_client::response(ws).await;
        assert!(matches!(r.status_code.code(), 200 | 401), "agent {dn} after the renewal: {r}");
    }
    // The call kept its media through the swap, and is still the one call.
    let after = tokio::task::block_in_place(|| echoed(before + 50));
    assert!(after > before);
    let calls: serde_json::Value = serde_json::from_str(&common::http_get(t.admin, "/calls").unwrap()).unwrap();
    assert_eq!(calls.as_array().map(|c| c.len()), Some(1), "{calls}");
    let status: serde_json::Value = serde_json::from_str(&common::http_get(t.admin, "/status").unwrap()).unwrap();
    assert_eq!(status["registrations"], 20, "{status}");
    agent_client::hang_up(&mut caller, "5001", &to).await;
}

/// testssl.sh against the HTTPS listener serving Pebble's certificate: no HIGH or CRITICAL
/// finding, TLS 1.2 and 1.3 only (under a minute here; figures in docs/security.md).
#[test]
fn testssl_finds_nothing_high_on_the_acme_certificate() {
    let t = issue("http-01", 90 * 86_400, None);
    let trust = TempDir::new("acme-testssl");
    let ca = trust.path().join("pebble-root.pem");
    std::fs::write(&ca, &t.root).unwrap();
    let json = trust.path().join("testssl.json");
    let began = std::time::Instant::now();
    let out = Command::new("testssl")
        .args(["--quiet", "--color", "0", "--warnings", "off", "--add-ca"])
        .arg(&ca)
        .args(["--ip", "127.0.0.1", "--jsonfile"])
        .arg(&json)
        .arg(format!("gw.test:{}", t.https))
        .output()
        .expect("testssl (Debian testssl.sh; scripts/setup installs it)");
    let findings: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(&json).unwrap_or_else(|_| panic!("testssl wrote no JSON:\n{}", String::from_utf8_lossy(&out.stdout)))).unwrap();
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    let mut notable = Vec::new();
    for f in &findings {
        let severity = f["severity"].as_str().unwrap_or("?").to_owned();
        if matches!(severity.as_str(), "LOW" | "MEDIUM" | "HIGH" | "CRITICAL" | "WARN") {
            notable.push(format!("{severity} {}: {}", f["id"].as_str().unwrap_or("?"), f["finding"].as_str().unwrap_or("?")));
        }
        if f["id"].as_str().is_some_and(|id| matches!(id, "SSLv2" | "SSLv3" | "TLS1" | "TLS1_1")) {
            assert!(f["finding"].as_str().is_some_and(|x| x.starts_with("not offered")), "{f}");
        }
        *counts.entry(severity).or_default() += 1;
    }
    eprintln!("FIGURE testssl HTTPS with the ACME certificate in {:?}: {counts:?}", began.elapsed());
    for n in &notable {
        eprintln!("FIGURE testssl   {n}");
    }
    assert!(!counts.contains_key("HIGH") && !counts.contains_key("CRITICAL"), "{notable:#?}");
}
