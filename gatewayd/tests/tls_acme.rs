//! ACME against a real CA: Debian's Pebble (Let's Encrypt's test CA) with pebble-challtestsrv
//! as its DNS (every name resolves to 127.0.0.1), validating http-01 against the gateway's own
//! HTTP listener. The gateway starts on a self-signed stand-in, obtains a certificate that
//! chains to Pebble's root, serves it on new handshakes and renews it before it runs out.
//! Loopback only; the CA processes end with the test.

mod common;

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
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "ACME directory test CA");
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    std::fs::write(dir.join("pebble.crt"), params.signed_by(&key, &issuer).unwrap().pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
}

struct Ca {
    _pebble: Proc,
    _dns: Proc,
    management: u16,
}

/// Pebble on `listen`, validating http-01 on `http_port` and TLS-ALPN-01 on `tls_port`,
/// issuing certificates valid for `validity_s`.
fn start_pebble(dir: &Path, listen: u16, http_port: u16, tls_port: u16, validity_s: u64) -> Ca {
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

fn acme_profile(dir: &Path, directory: &str) -> (std::path::PathBuf, u16, u16, u16) {
    let (text, ports) = lab_profile_free_ports();
    let text = text.replace(
        "[tls]\nsource = \"self-signed\"\nnames = [\"127.0.0.1\", \"localhost\"]",
        &format!(
            "[tls]\nsource = \"acme\"\n\n[tls.acme]\ndirectory = \"{directory}\"\ncontact = \"mailto:noc@gw.test\"\ndomains = [\"gw.test\"]\nchallenge = \"http-01\"\ndirectory_ca = \"ca.pem\"\n"
        ),
    );
    assert!(text.contains("source = \"acme\""), "the lab profile's [tls] table moved");
    let path = dir.join("gatewayd.toml");
    std::fs::write(&path, text).unwrap();
    (path, ports[&8443], ports[&8080], ports[&9090])
}

fn health(admin: u16) -> serde_json::Value {
    serde_json::from_str(&common::http_get(admin, "/health").unwrap_or_default()).unwrap_or_default()
}

#[test]
fn http01_issues_from_pebble_and_renews_before_expiry() {
    if !Path::new(PEBBLE).exists() {
        panic!("{PEBBLE} is missing: run scripts/setup (Debian package pebble)");
    }
    let dir = TempDir::new("acme");
    let listen = free_port();
    let (profile, https, http, admin) = acme_profile(dir.path(), &format!("https://127.0.0.1:{listen}/dir"));
    // A minute of validity: renewal is due 40 s into it.
    let ca = start_pebble(dir.path(), listen, http, https, 60);
    let state = dir.path().join("state");
    let mut gw = Gateway::start(&profile, &state, &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));

    let root = pebble_root(dir.path(), ca.management);
    gw.wait_for_log("ACME: certificate issued and installed", Duration::from_secs(60));
    let first = eventually("the HTTPS listener serves a certificate from Pebble", Duration::from_secs(10), || served_leaf(https, "gw.test", &root).ok());
    let h = health(admin);
    assert_eq!(h["acme"]["stand_in"], false, "{h}");
    assert_eq!(h["acme"]["certificates_issued"], 1, "{h}");
    let account = std::fs::metadata(state.join("acme/account.json")).expect("the account is kept");
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&account.permissions()) & 0o077, 0, "the account key is owner-only");
    let metrics = common::http_get(admin, "/metrics").unwrap_or_default();
    assert!(metrics.contains("acme_certificates_issued_total 1"), "{metrics}");

    // Renewal two thirds into the minute; new handshakes get the new certificate.
    let deadline = Duration::from_secs(90);
    let renewed = eventually("a renewed certificate is served", deadline, || served_leaf(https, "gw.test", &root).ok().filter(|leaf| *leaf != first));
    assert!(!renewed.is_empty());
    assert_eq!(health(admin)["acme"]["certificates_issued"], 2);
}
