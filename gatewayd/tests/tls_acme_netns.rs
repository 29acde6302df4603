//! ACME as on a real site: in a network namespace of its own, the gateway's public address
//! 203.0.113.10 carries HTTPS on 443 and the HTTP listener on 80, and Debian's Pebble validates
//! http-01 on port 80 of the address its DNS (pebble-challtestsrv) gives for the name, as a
//! public CA would. A client in the namespace then reaches https://gw.test/ and verifies the
//! chain against Pebble's root. Needs root (skips with a message otherwise); the namespace and
//! everything in it go with the test.

mod common;
#[path = "../../tests/netns/lab.rs"]
#[allow(dead_code)]
mod lab;

use std::path::Path;
use std::process::Command;

use common::TempDir;

const PUBLIC: &str = "203.0.113.10";

/// The lab profile on the public address, ports 80 and 443, with ACME from Pebble.
fn profile() -> String {
    let text = std::fs::read_to_string(common::root().join("profiles/lab.toml")).unwrap();
    let edits = [
        ("[public]\naddresses = [\"127.0.0.1\"]", format!("[public]\naddresses = [\"{PUBLIC}\"]")),
        ("https = [\"127.0.0.1:8443\"]", format!("https = [\"{PUBLIC}:443\"]")),
        ("http_redirect = [\"127.0.0.1:8080\"]", format!("http_redirect = [\"{PUBLIC}:80\"]")),
        ("allowed_origins = [\"https://127.0.0.1:8443\"]", "allowed_origins = [\"https://gw.test\"]".to_owned()),
        (
            "[tls]\nsource = \"self-signed\"\nnames = [\"127.0.0.1\", \"localhost\"]",
            "[tls]\nsource = \"acme\"\n\n[tls.acme]\ndirectory = \"https://127.0.0.1:14000/dir\"\ncontact = \"mailto:noc@gw.test\"\ndomains = [\"gw.test\"]\ndirectory_ca = \"ca.pem\"\n".to_owned(),
        ),
    ];
    edits.iter().fold(text, |t, (from, to)| {
        assert!(t.contains(from), "the lab profile changed: {from:?}");
        t.replace(from, to)
    })
}

/// Pebble's own HTTPS certificate and the CA the gateway trusts it by (ca.pem).
fn pebble_certificates(dir: &Path) {
    common::write_ca_and_leaves(dir, "ACME directory test CA", &[("pebble", &["127.0.0.1"])]);
}

/// Inside the namespace: the CA's DNS and Pebble, the gateway, then a verifying client.
const SCRIPT: &str = r#"set -eu
cd "$WORK"
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT
pebble-challtestsrv -defaultIPv4 "$PUBLIC" -defaultIPv6 "" -http01 "" -https01 "" -tlsalpn01 "" \
  -dns01 127.0.0.1:8053 -management 127.0.0.1:8055 > dns.log 2>&1 &
PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 pebble -config pebble.json -dnsserver 127.0.0.1:8053 > pebble.log 2>&1 &
i=0
until curl -sf --cacert ca.pem https://127.0.0.1:15000/roots/0 > root.pem; do
  i=$((i + 1)); [ $i -lt 400 ] || { echo "pebble did not start"; exit 1; }; sleep 0.05
done
"$GATEWAYD" run --profile gatewayd.toml --state-dir state > gateway.log 2>&1 &
i=0
until [ -s state/acme/web.crt ]; do
  i=$((i + 1)); [ $i -lt 1200 ] || { echo "no certificate within 60 s"; exit 1; }; sleep 0.05
done
# The listener rereads the certificate right after it is installed: poll until it verifies.
i=0
until code=$(curl -s -o /dev/null -w '%{http_code}' --resolve "gw.test:443:$PUBLIC" --cacert root.pem https://gw.test/); do
  i=$((i + 1)); [ $i -lt 200 ] || { echo "the served certificate never verified"; exit 1; }; sleep 0.05
done
echo "VERIFIED $code"
echo "REDIRECT $(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' --resolve "gw.test:80:$PUBLIC" http://gw.test/)"
"#;

struct Namespace(String);

impl Drop for Namespace {
    fn drop(&mut self) {
        // Whatever still runs in it first, then the namespace.
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &self.0]).output() {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &str) {
    let status = Command::new("ip").args(args.split_whitespace()).status().unwrap();
    assert!(status.success(), "ip {args}");
}

#[test]
fn http01_on_port_80_of_the_public_address_issues_a_certificate_served_on_443() {
    if let Some(why) = lab::unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let ns = Namespace(format!("gwacme{}", std::process::id() % 100_000));
    ip(&format!("netns add {}", ns.0));
    ip(&format!("-n {} link set lo up", ns.0));
    // The public side: one end of a veth pair whose other end stays in the namespace too.
    ip(&format!("-n {} link add pub0 type veth peer name pub1", ns.0));
    ip(&format!("-n {} addr add {PUBLIC}/24 dev pub0", ns.0));
    ip(&format!("-n {} link set pub0 up", ns.0));
    ip(&format!("-n {} link set pub1 up", ns.0));
    let dir = TempDir::new("acme-netns");
    pebble_certificates(dir.path());
    std::fs::write(dir.path().join("gatewayd.toml"), profile()).unwrap();
    let config = serde_json::json!({"pebble": {
        "listenAddress": "127.0.0.1:14000",
        "managementListenAddress": "127.0.0.1:15000",
        "certificate": dir.path().join("pebble.crt"),
        "privateKey": dir.path().join("pebble.key"),
        "httpPort": 80,
        "tlsPort": 443,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
    let out = Command::new("timeout")
        .args(["120", "ip", "netns", "exec", &ns.0, "sh", "-c", SCRIPT])
        .env("WORK", dir.path())
        .env("PUBLIC", PUBLIC)
        .env("GATEWAYD", env!("CARGO_BIN_EXE_gatewayd"))
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap_or_default();
    assert!(
        said.contains("VERIFIED 200"),
        "{said}{}\n--- gateway\n{}\n--- pebble\n{}",
        String::from_utf8_lossy(&out.stderr),
        log("gateway.log"),
        log("pebble.log")
    );
    // The HTTP listener on 80 answered the CA and still sends browsers to HTTPS.
    assert!(said.contains("REDIRECT 301 https://gw.test") || said.contains("REDIRECT 308 https://gw.test"), "{said}");
    assert!(log("pebble.log").contains("gw.test"), "Pebble validated the name");
}
