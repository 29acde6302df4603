//! The daemon's life cycle across a real process: start, refuse a broken profile on SIGHUP and
//! keep running the old one, apply a valid change, stop cleanly on SIGTERM.

mod common;

use std::time::Duration;

use common::{eventually, http_get, lab_profile_free_ports, sha256_hex, Gateway, TempDir};

const DEADLINE: Duration = Duration::from_secs(20);

fn health_sha(admin_port: u16) -> Option<String> {
    let body = http_get(admin_port, "/health")?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    v["profile_sha256"].as_str().map(str::to_owned)
}

#[test]
fn sighup_refuses_a_broken_profile_then_applies_a_valid_one_and_sigterm_exits_zero() {
    let dir = TempDir::new("reload");
    let (text, ports) = lab_profile_free_ports();
    let admin = ports[&9090];
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let state = dir.path().join("state");

    let mut gw = Gateway::start(&profile, &state, &[]);
    let first = sha256_hex(text.as_bytes());
    assert_eq!(eventually("health answers", DEADLINE, || health_sha(admin)), first);

    // A broken edit: refused, still serving the first profile.
    std::fs::write(&profile, text.replace("max_calls = 100", "max_calls = \"many\"")).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reload refused", DEADLINE);
    let line = gw.wait_for_log("media.max_calls", DEADLINE);
    assert!(line.contains("invalid type"), "{line}");
    assert_eq!(health_sha(admin).as_deref(), Some(first.as_str()), "the running profile must stay");

    // A valid edit: applied.
    let changed = text.replace("log_level = \"info\"", "log_level = \"debug\"");
    std::fs::write(&profile, &changed).unwrap();
    gw.signal("HUP");
    let second = sha256_hex(changed.as_bytes());
    eventually("new profile in effect", DEADLINE, || (health_sha(admin)? == second).then_some(()));
    gw.wait_for_log("profile reloaded", DEADLINE);

    gw.signal("TERM");
    assert_eq!(gw.wait_exit(DEADLINE), Some(0));
}

#[test]
fn an_invalid_profile_stops_the_start_with_its_diagnostics() {
    let dir = TempDir::new("badstart");
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, "[site]\nname = 1\n").unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    let line = gw.wait_for_log("site.name", DEADLINE);
    assert!(line.contains("profile.toml:2:8: site.name: invalid type: integer `1`, expected a string"), "{line}");
    assert_eq!(gw.wait_exit(DEADLINE), Some(1));
}

#[test]
fn bans_are_listed_and_lifted_through_the_admin_endpoint() {
    let dir = TempDir::new("bans");
    let (text, ports) = lab_profile_free_ports();
    let admin = ports[&9090];
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let _gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    eventually("health answers", DEADLINE, || http_get(admin, "/health"));

    let list = common::gatewayd().args(["bans", "list", "--admin", &format!("127.0.0.1:{admin}")]).output().unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    let remove = common::gatewayd().args(["bans", "remove", "198.51.100.9", "--profile"]).arg(&profile).output().unwrap();
    assert_eq!(remove.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&remove.stderr).contains("198.51.100.9 is not banned"), "{}", String::from_utf8_lossy(&remove.stderr));
}

/// The systemd notification protocol on a real datagram socket, as systemd would read it.
#[test]
fn readiness_reload_watchdog_and_stop_are_notified() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("notify");
    let (text, _) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut received = Vec::new();
    let wait_for = |what: &str, received: &mut Vec<String>| {
        let mut buf = [0u8; 4096];
        loop {
            if received.iter().any(|m: &String| m.lines().any(|l| l == what)) {
                return;
            }
            let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("no {what} within {DEADLINE:?} ({e}); got {received:?}"));
            received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let mut cmd = common::gatewayd();
    cmd.args(["run", "--profile"]).arg(&profile).arg("--state-dir").arg(dir.path().join("state"));
    cmd.env("NOTIFY_SOCKET", &socket_path).env("WATCHDOG_USEC", "200000").env_remove("WATCHDOG_PID").env_remove("JOURNAL_STREAM");
    cmd.stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    wait_for("READY=1", &mut received);
    assert!(received.iter().any(|m| m.contains("STATUS=running profile")), "{received:?}");
    received.clear();
    wait_for("WATCHDOG=1", &mut received);
    assert!(std::process::Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    received.clear();
    wait_for("RELOADING=1", &mut received);
    assert!(received.iter().any(|m| m.contains("MONOTONIC_USEC=")), "Type=notify-reload needs MONOTONIC_USEC: {received:?}");
    wait_for("READY=1", &mut received);
    assert!(std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    wait_for("STOPPING=1", &mut received);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_separate_metrics_listener_serves_metrics_and_nothing_else() {
    let dir = TempDir::new("metrics");
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let metrics = common::free_port();
    let listen = format!("127.0.0.1:{metrics}");
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[("GATEWAYD_OBSERVE__METRICS", &listen)]);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    assert!(http_get(metrics, "/metrics").is_some_and(|m| m.contains("gatewayd_bans_active")));
    assert!(http_get(metrics, "/health").is_none(), "admin routes stay on the admin listener");
    assert!(http_get(metrics, "/bans").is_none());
    assert!(http_get(metrics, "/calls").is_none());
    assert!(http_get(ports[&9090], "/health").is_some());
    assert_eq!(http_get(ports[&9090], "/calls").as_deref().map(str::trim), Some("[]"), "no calls in progress");
}

/// A self-signed pair for `localhost`, as PEM (certificate, key).
fn pair() -> (String, String) {
    let g = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    (g.cert.pem(), g.signing_key.serialize_pem())
}

/// The leaf the HTTPS listener shows a client that trusts `pem`, if the handshake verifies.
fn served_leaf(port: u16, pem: &str) -> Option<Vec<u8>> {
    let config = common::tls_trusting(pem.as_bytes());
    let mut conn = rustls::ClientConnection::new(config, rustls::pki_types::ServerName::try_from("localhost").unwrap()).ok()?;
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(DEADLINE)).ok()?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).ok()?;
    }
    conn.peer_certificates().and_then(|c| c.first()).map(|c| c.as_ref().to_vec())
}

#[test]
fn certificate_files_swap_on_reload_and_a_mismatched_pair_keeps_the_old_one() {
    let dir = TempDir::new("reload-files");
    let (text, ports) = lab_profile_free_ports();
    let text = text.replace("[tls]\nsource = \"self-signed\"\nnames = [\"127.0.0.1\", \"localhost\"]", "[tls]\nsource = \"files\"\ncertificate = \"web.crt\"\nkey = \"web.key\"");
    assert!(text.contains("source = \"files\""), "the lab profile's [tls] table moved");
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, &text).unwrap();
    let (first_crt, first_key) = pair();
    std::fs::write(dir.path().join("web.crt"), &first_crt).unwrap();
    std::fs::write(dir.path().join("web.key"), &first_key).unwrap();
    let https = ports[&8443];
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    let first = eventually("the first certificate served", DEADLINE, || served_leaf(https, &first_crt));

    // A new certificate with the old key: refused, the old pair keeps serving.
    let (second_crt, second_key) = pair();
    std::fs::write(dir.path().join("web.crt"), &second_crt).unwrap();
    gw.signal("HUP");
    gw.wait_for_log("reload refused", DEADLINE);
    let line = gw.wait_for_log("tls.key", DEADLINE);
    assert!(line.contains("does not match"), "{line}");
    assert_eq!(served_leaf(https, &first_crt).as_deref(), Some(first.as_slice()), "the old pair stays in service");

    // The matching key follows: the new pair serves new handshakes.
    std::fs::write(dir.path().join("web.key"), &second_key).unwrap();
    gw.signal("HUP");
    let second = eventually("the new certificate served", DEADLINE, || served_leaf(https, &second_crt));
    assert_ne!(second, first);
}
