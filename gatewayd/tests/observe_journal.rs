//! Log shipping end to end: the gateway logs to a real systemd-journald, systemd-journal-upload
//! ships that journal with the settings `gatewayd system render` makes from the profile's
//! `system.journal_upload` (placed where the image puts them), over TLS to Debian's
//! systemd-journal-remote as the collector, and the call record of an echo call arrives there
//! with its structured fields. The uploader checks the collector's certificate against the
//! profile's CA and presents its own; Debian 12's journal-remote is built without GnuTLS
//! (`Option --trust is not available.`), so it cannot check the client's in turn.
//!
//! journald, the gateway and the uploader run in a private mount namespace (`unshare -m`) with
//! tmpfs over /run/systemd, /run/log and /var/log/journal, so the test's journal is its own and
//! the machine's is untouched; the network is shared, so the test's client reaches the gateway
//! on loopback.

mod agent_client;
mod common;
mod media_peer;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use media_peer::BrowserPeer;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use serde_json::Value;

use agent_client::{connect, echo_call, hang_up, register, DEADLINE};
use common::{eventually, free_port, lab_profile_free_ports, TempDir};

const JOURNAL_REMOTE: &str = "/usr/lib/systemd/systemd-journal-remote";
const JOURNAL_UPLOAD: &str = "/usr/lib/systemd/systemd-journal-upload";
const JOURNALD: &str = "/usr/lib/systemd/systemd-journald";

/// A CA, the collector's certificate (for 127.0.0.1) and the gateway's client certificate, as
/// PEM files in `dir`: ca.pem, collector.{crt,key}, gateway.{crt,key}.
fn certificates(dir: &Path) {
    common::write_ca_and_leaves(dir, "log collection CA", &[("collector", &["127.0.0.1", "localhost"]), ("gateway", &["gateway.invalid"])]);
}

/// Runs until killed: journald, the gateway under it, and the uploader, in a mount namespace.
const NAMESPACE_SCRIPT: &str = r#"set -eu
mkdir -p /run/log /var/log/journal
mount -t tmpfs tmpfs /run/systemd
mount -t tmpfs tmpfs /run/log
mount -t tmpfs tmpfs /var/log/journal
mkdir -p /run/systemd/journal /run/systemd/journal-upload.conf.d /run/log/journal
# Where the image's gatewayd-system puts the rendered file.
cp "$RENDERED/journal-upload.conf" /run/systemd/journal-upload.conf.d/50-gatewayd.conf
"$JOURNALD" &
i=0
while [ ! -S /run/systemd/journal/stdout ]; do
  i=$((i + 1)); [ $i -lt 400 ] || { echo "journald did not start" >&2; exit 1; }
  sleep 0.025
done
# As systemd does for a service whose stderr is the journal: JOURNAL_STREAM names the stream.
systemd-cat -t gatewayd sh -c 'JOURNAL_STREAM=$(stat -L -c %d:%i /proc/self/fd/2) exec "$GATEWAYD" run --profile "$PROFILE" --state-dir "$STATE"' &
"$JOURNAL_UPLOAD" --save-state="$WORK/upload.state" &
wait
"#;

/// A process group, ended (by its id) on drop.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pgid = self.0.id() as i32;
        // SAFETY: kill(2) on the process group this test started.
        unsafe { libc::kill(-pgid, libc::SIGTERM) };
        let _ = self.0.wait();
        // The leader's children too (the gateway writes its bans as it stops): gone before the
        // temporary directory is removed.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // SAFETY: signal 0 only asks whether the group still has members.
        while unsafe { libc::kill(-pgid, 0) } == 0 && std::time::Instant::now() < end {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

/// The collector's entries from the gateway, as journalctl reads its file.
fn collected(file: &Path) -> Vec<Value> {
    let Ok(out) = Command::new("journalctl").arg(format!("--file={}", file.display())).args(["-o", "json", "--no-pager", "SYSLOG_IDENTIFIER=gatewayd"]).output() else { return Vec::new() };
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// What the collector and the namespace's processes said, for a failure message.
fn diagnostics(work: &Path) -> String {
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
    format!("collector said:\n{}\njournald/uploader said:\n{}", read("collector.log"), read("namespace.log"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_records_reach_systemd_journal_remote_through_journal_upload_with_their_fields() {
    for tool in [JOURNAL_REMOTE, JOURNAL_UPLOAD, JOURNALD] {
        assert!(Path::new(tool).exists(), "{tool} is missing: apt-get install systemd-journal-remote (scripts/setup does)");
    }
    let dir = TempDir::new("journal");
    let work = dir.path();
    certificates(work);
    let collector_port = free_port();
    let (lab, ports) = lab_profile_free_ports();
    let profile = work.join("profile.toml");
    std::fs::write(
        &profile,
        format!(
            "{lab}\n[system]\njournal_upload = {{ url = \"https://127.0.0.1:{collector_port}\", ca = \"ca.pem\", certificate = \"gateway.crt\", key = \"gateway.key\" }}\n"
        ),
    )
    .unwrap();
    let rendered = work.join("rendered");
    let out = common::gatewayd().args(["system", "render", "--profile"]).arg(&profile).arg("--out").arg(&rendered).output().unwrap();
    assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
    let conf = std::fs::read_to_string(rendered.join("journal-upload.conf")).unwrap();
    assert!(conf.contains(&format!("URL=https://127.0.0.1:{collector_port}\n")) && conf.contains("ServerKeyFile=") && conf.contains("TrustedCertificateFile="), "{conf}");

    let remote_file = work.join("collected.journal");
    let collector = Command::new(JOURNAL_REMOTE)
        .arg(format!("--listen-https=127.0.0.1:{collector_port}"))
        .arg(format!("--key={}", work.join("collector.key").display()))
        .arg(format!("--cert={}", work.join("collector.crt").display()))
        .arg("--split-mode=none")
        .arg(format!("--output={}", remote_file.display()))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("collector.log")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let _collector = Group(collector);

    let state = work.join("state");
    let namespace = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT])
        .env("RENDERED", &rendered)
        .env("WORK", work)
        .env("PROFILE", &profile)
        .env("STATE", &state)
        .env("GATEWAYD", env!("CARGO_BIN_EXE_gatewayd"))
        .env("JOURNALD", JOURNALD)
        .env("JOURNAL_UPLOAD", JOURNAL_UPLOAD)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("namespace.log")).unwrap())
        .process_group(0)
        .spawn()
        .unwrap();
    let _namespace = Group(namespace);
    let admin = ports[&9090];
    // The admin listener comes up first; the HTTPS side once its certificate is made.
    tokio::task::block_in_place(|| {
        eventually("the gateway under journald serving HTTPS", DEADLINE, || {
            common::http_get(admin, "/health")?;
            std::net::TcpStream::connect(("127.0.0.1", ports[&8443])).ok()?;
            state.join("web.crt").exists().then_some(())
        })
    });

    let mut ws = connect(ports[&8443], &state).await;
    assert_eq!(register(&mut ws, "5001", "pass5001").await, 200);
    let peer = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm);
    let to = echo_call(&mut ws, "5001", "pass5001", &peer).await;
    hang_up(&mut ws, "5001", &to).await;

    let record = tokio::task::block_in_place(|| {
        let end = std::time::Instant::now() + DEADLINE;
        loop {
            let found = collected(&remote_file).into_iter().find(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with("call ended")) && e["AGENT_CALL_ID"] == "echo-5001");
            if let Some(record) = found {
                break record;
            }
            assert!(std::time::Instant::now() < end, "no call record at the collector within {DEADLINE:?}; {}", diagnostics(work));
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    assert_eq!(record["DN"], "5001", "{record}");
    assert_eq!(record["DIRECTION"], "Echo", "{record}");
    assert_eq!(record["STATUS"], "200", "{record}");
    assert_eq!(record["CAUSE"], "agent hung up", "{record}");
    assert_eq!(record["TARGET"], "gatewayd::cdr", "{record}");
    let media: Value = serde_json::from_str(record["MEDIA"].as_str().unwrap()).unwrap_or_else(|e| panic!("MEDIA is JSON ({e}): {record}"));
    assert!(media["browser"]["packets_received"].as_u64().is_some(), "{record}");
    // The daemon's other entries travel too, structured: the start line names the profile.
    let entries = collected(&remote_file);
    assert!(entries.iter().any(|e| e["MESSAGE"].as_str().is_some_and(|m| m.starts_with("gatewayd ready")) && e["PROFILE_SHA256"].is_string()), "{entries:?}");
    drop(peer);
}
