//! An active/standby pair for real: namespaces internet, gw-a, gw-b and internal; the public
//! and internal sides are bridges (in the internet and internal namespaces) that both gateways
//! sit on; the two gateways also share a management link. Each gateway namespace runs the real
//! daemon and Debian's keepalived on the configuration `gatewayd system render` wrote. sipp in
//! the internal namespace is the SIP server's registrar (register mode).
//!
//! - kill -9 of the active gatewayd, and separately its public link going down: both virtual
//!   addresses are on the standby within 3 s; an agent in the internet namespace (WSS, digest)
//!   is registered again within 10 s and an echo call is answered; sipp sees the new REGISTER.
//! - a ban made on A is in force on B within 1 s (and the unban too).
//!
//! Needs root, `ip netns`, nft, keepalived and sipp; skips with a message otherwise.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod agent_client;
mod common;
mod media_peer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Gateway;
use lab::{in_netns, run};

const VIP_PUBLIC: &str = "203.0.113.10";
const VIP_INTERNAL: &str = "192.168.210.54";
const AGENT: &str = "203.0.113.100";
const ATTACKER: &str = "203.0.113.66";
const SIP_SERVER: &str = "192.168.210.81";
const KEY: &str = "ha-netns-test-key-0123456789";

pub fn node_profile(me: u8, peer: u8, priority: u8) -> String {
    format!(
        r#"
[site]
name = "ha-test"
sip_domain = "127.0.0.1"
lab_mode = true

[public]
interface = "pub0"
addresses = ["{VIP_PUBLIC}"]

[internal]
interface = "int0"
address = "{VIP_INTERNAL}"
networks = ["192.168.210.0/24"]

[management]
interface = "mgmt0"
address = "10.20.0.{me}"
allow_from = ["10.20.0.0/24"]

[ha]
priority = {priority}
peer = "10.20.0.{peer}"
bans_key = "{KEY}"

[ha.public]
virtual_address = "{VIP_PUBLIC}/24"
virtual_router_id = 51
peer = "203.0.113.{peer}"

[ha.internal]
virtual_address = "{VIP_INTERNAL}/24"
virtual_router_id = 52
peer = "192.168.210.{peer}"

[tls]
source = "self-signed"

[web]
https = ["{VIP_PUBLIC}:443"]
allowed_origins = ["https://{VIP_PUBLIC}"]

[sip]
listen = [{{ address = "{VIP_INTERNAL}:5060", transport = "udp" }}]
echo_number = "600"

[[agents]]
dn = "5001"
password = "pass5001"
upstream_password = "up5001"

[upstream]
registration = "register"
servers = [{{ address = "{SIP_SERVER}:5060", transport = "udp" }}]

[media]
public_ports = "40000-40010"
internal_ports = "41000-41020"
max_calls = 5

[firewall]
manage = true

[observe]
admin = "10.20.0.{me}:9090"
cdr_file = "cdr.jsonl"
"#
    )
}


fn sh(c: &str) {
    let args: Vec<&str> = c.split_whitespace().collect();
    run(&args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, the processes in them and their files; all removed on drop.
pub struct Pair {
    pub inet: String,
    pub a: String,
    pub b: String,
    pub internal: String,
    pub dir: PathBuf,
    pub gw_a: Option<Gateway>,
    pub gw_b: Option<Gateway>,
    keepalived: Vec<Child>,
    sipp: Option<Child>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for k in &mut self.keepalived {
            let _ = k.kill();
            let _ = k.wait();
        }
        if let Some(s) = &mut self.sipp {
            let _ = s.kill();
            let _ = s.wait();
        }
        self.gw_a.take();
        self.gw_b.take();
        // keepalived's children (scripts) die with their namespace's processes.
        for ns in [&self.inet, &self.a, &self.b, &self.internal] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Why this machine cannot run the test, if it cannot.
pub fn unavailable() -> Option<String> {
    if let Some(why) = lab::unavailable() {
        return Some(why);
    }
    for tool in ["keepalived", "sipp"] {
        if Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().map_or(true, |o| !o.status.success()) {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

impl Pair {
    pub fn create(tag: &str) -> Pair {
        let id = format!("{}{tag}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("gatewayd-ha-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = Pair {
            inet: format!("gwh-inet-{id}"),
            a: format!("gwh-a-{id}"),
            b: format!("gwh-b-{id}"),
            internal: format!("gwh-int-{id}"),
            dir,
            gw_a: None,
            gw_b: None,
            keepalived: Vec::new(),
            sipp: None,
        };
        for ns in [&p.inet, &p.a, &p.b, &p.internal] {
            sh(&format!("ip netns add {ns}"));
            sh(&format!("ip -n {ns} link set lo up"));
        }
        let (inet, a, b, internal) = (&p.inet, &p.a, &p.b, &p.internal);
        for (ns, side) in [(inet, "pub"), (internal, "int")] {
            sh(&format!("ip -n {ns} link add br0 type bridge"));
            sh(&format!("ip -n {ns} link set br0 up"));
            for (gw, n) in [(a, "a"), (b, "b")] {
                sh(&format!("ip -n {gw} link add {side}0 type veth peer name {side}{n} netns {ns}"));
                sh(&format!("ip -n {ns} link set {side}{n} master br0"));
                sh(&format!("ip -n {ns} link set {side}{n} up"));
            }
        }
        sh(&format!("ip -n {inet} addr add {AGENT}/24 dev br0"));
        sh(&format!("ip -n {inet} addr add {ATTACKER}/24 dev br0"));
        sh(&format!("ip -n {internal} addr add {SIP_SERVER}/24 dev br0"));
        sh(&format!("ip -n {a} link add mgmt0 type veth peer name mgmt0 netns {b}"));
        for (gw, me) in [(a, 11), (b, 12)] {
            sh(&format!("ip -n {gw} addr add 203.0.113.{me}/24 dev pub0"));
            sh(&format!("ip -n {gw} addr add 192.168.210.{me}/24 dev int0"));
            sh(&format!("ip -n {gw} addr add 10.20.0.{me}/24 dev mgmt0"));
            for l in ["pub0", "int0", "mgmt0"] {
                sh(&format!("ip -n {gw} link set {l} up"));
            }
            // Listeners bind the virtual addresses whether or not this node holds them (the
            // appliance image sets the same in its sysctl.d).
            sh(&format!("ip netns exec {gw} sysctl -qw net.ipv4.ip_nonlocal_bind=1"));
        }
        p
    }

    pub fn ns(&self, node: char) -> &str {
        if node == 'a' {
            &self.a
        } else {
            &self.b
        }
    }

    /// Writes node `node`'s profile (with `edit` applied), renders its keepalived.conf with
    /// `gatewayd system render`, and starts the daemon; returns the profile path.
    pub fn start_gateway(&mut self, node: char, edit: &dyn Fn(String) -> String) {
        let (me, peer, priority) = if node == 'a' { (11, 12, 150) } else { (12, 11, 100) };
        let dir = self.dir.join(node.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let profile = dir.join("profile.toml");
        std::fs::write(&profile, edit(node_profile(me, peer, priority))).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_gatewayd")).args(["system", "render", "--profile"]).arg(&profile).arg("--out").arg(dir.join("rendered")).output().unwrap();
        assert!(out.status.success(), "render: {}", String::from_utf8_lossy(&out.stderr));
        let mut gw = Gateway::start_in_netns(self.ns(node), &profile, &dir.join("state"));
        gw.wait_for_log("gatewayd ready", Duration::from_secs(60));
        if node == 'a' {
            self.gw_a = Some(gw);
        } else {
            self.gw_b = Some(gw);
        }
    }

    /// Debian's keepalived on the rendered configuration, in the node's namespace.
    pub fn start_keepalived(&mut self, node: char) {
        let dir = self.dir.join(node.to_string());
        let conf = dir.join("rendered/keepalived.conf");
        let pid = |n: &str| dir.join(n).to_string_lossy().into_owned();
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns(node), "keepalived", "--dont-fork", "--log-console", "--vrrp", "-f"])
            .arg(&conf)
            .args(["-p", &pid("keepalived.pid"), "-r", &pid("vrrp.pid"), "-c", &pid("checkers.pid")])
            .stdout(Stdio::from(std::fs::File::create(dir.join("keepalived.log")).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(dir.join("keepalived.err")).unwrap()))
            .spawn()
            .expect("keepalived runs");
        self.keepalived.push(child);
    }

    pub fn start_registrar(&mut self) {
        // In the foreground (no -bg): a daemonised sipp would outlive the test and its namespace.
        let child = Command::new("ip")
            .args(["netns", "exec", &self.internal, "sipp", "-sf"])
            .arg(common::root().join("tests/sipp/registrar.xml"))
            .args(["-i", SIP_SERVER, "-p", "5060", "-nostdin", "-trace_msg", "-message_file"])
            .arg(self.dir.join("registrar.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp runs");
        self.sipp = Some(child);
    }

    /// REGISTER requests sipp received for `dn`.
    pub fn registrations(&self, dn: &str) -> usize {
        let log = std::fs::read_to_string(self.dir.join("registrar.log")).unwrap_or_default();
        // Each received request starts with its request line and ends at the blank line.
        log.split("\nREGISTER sip:").skip(1).filter(|m| m.split("\n\n").next().is_some_and(|head| head.contains(&format!("sip:{dn}@")))).count()
    }

    pub fn holds(&self, node: char, address: &str) -> bool {
        let dev = if address == VIP_PUBLIC { "pub0" } else { "int0" };
        run(&["ip", "-n", self.ns(node), "-o", "addr", "show", "dev", dev]).is_ok_and(|o| o.contains(&format!(" {address}/")))
    }

    /// Waits until `node` holds both virtual addresses and the other node none.
    pub fn wait_active(&self, node: char, deadline: Duration) -> Duration {
        let other = if node == 'a' { 'b' } else { 'a' };
        let start = Instant::now();
        loop {
            let ok = [VIP_PUBLIC, VIP_INTERNAL].iter().all(|v| self.holds(node, v) && !self.holds(other, v));
            if ok {
                return start.elapsed();
            }
            assert!(start.elapsed() < deadline, "node {node} not active within {deadline:?}; keepalived logs:\n{}", self.keepalived_logs());
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn keepalived_logs(&self) -> String {
        ['a', 'b'].iter().map(|n| format!("--- {n}\n{}", std::fs::read_to_string(self.dir.join(format!("{n}/keepalived.log"))).unwrap_or_default())).collect()
    }

    /// The call records `node` wrote (`observe.cdr_file`, next to its profile).
    pub fn records(&self, node: char) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.dir.join(format!("{node}/cdr.jsonl"))).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    pub fn state(&self, node: char) -> PathBuf {
        self.dir.join(format!("{node}/state"))
    }

    /// Runs the gatewayd CLI inside `node`'s namespace against its admin endpoint.
    pub fn cli(&self, node: char, args: &[&str]) -> Result<String, String> {
        let admin = if node == 'a' { "10.20.0.11:9090" } else { "10.20.0.12:9090" };
        let mut all = vec!["ip", "netns", "exec", self.ns(node), env!("CARGO_BIN_EXE_gatewayd")];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--admin", admin]);
        run(&all)
    }
}

/// A WSS connection from the agent's address to the public virtual address, trusting `state`'s
/// certificate (each lab node made its own).
async fn agent_connect(pair: &Pair, state: &Path) -> Result<agent_client::Ws, String> {
    let socket = in_netns(&pair.inet, || {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(AGENT.parse().unwrap(), 0)).unwrap();
        s
    });
    let addr = SocketAddr::new(VIP_PUBLIC.parse().unwrap(), 443);
    let tcp = tokio::time::timeout(Duration::from_millis(500), socket.connect(addr)).await.map_err(|_| "connect timed out".to_owned())?.map_err(|e| e.to_string())?;
    tokio::time::timeout(Duration::from_secs(2), agent_client::over(tcp, "localhost", VIP_PUBLIC, state)).await.map_err(|_| "handshake timed out".to_owned())?
}

/// What a reconnecting softphone does: connect again until it works, then REGISTER.
async fn reregister(pair: &Pair, state: &Path, deadline: Duration) -> (agent_client::Ws, Duration) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match agent_connect(pair, state).await {
            Ok(mut ws) => {
                let status = tokio::time::timeout(Duration::from_secs(3), agent_client::register(&mut ws, "5001", "pass5001")).await;
                if status == Ok(200) {
                    return (ws, start.elapsed());
                }
                last = format!("REGISTER answered {status:?}");
            }
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("not registered again within {deadline:?}: {last}");
}

/// An echo call from the agent's namespace: its WebRTC peer (sockets in the internet
/// namespace) gets DTLS-SRTP up with the node now holding the address.
async fn echo_call(pair: &Pair, ws: &mut agent_client::Ws) {
    let peer = in_netns(&pair.inet, || media_peer::BrowserPeer::spawn_at(rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SocketAddr::new(AGENT.parse().unwrap(), 0)));
    let to = agent_client::echo_call(ws, "5001", "pass5001", &peer).await;
    agent_client::hang_up(ws, "5001", &to).await;
}

fn wait_registrations(pair: &Pair, at_least: usize, deadline: Duration) -> Duration {
    let start = Instant::now();
    while pair.registrations("5001") < at_least {
        assert!(start.elapsed() < deadline, "sipp saw {} REGISTERs for 5001, wanted {at_least}", pair.registrations("5001"));
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

async fn failover(tag: &str, fail: impl FnOnce(&mut Pair)) {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut pair = Pair::create(tag);
    pair.start_registrar();
    pair.start_gateway('a', &|t| t);
    pair.start_gateway('b', &|t| t);
    pair.start_keepalived('a');
    pair.start_keepalived('b');
    let up = pair.wait_active('a', Duration::from_secs(15));
    eprintln!("node a active {up:?} after keepalived started");

    let state_a = pair.state('a');
    let (mut ws, _) = reregister(&pair, &state_a, Duration::from_secs(10)).await;
    wait_registrations(&pair, 1, Duration::from_secs(5));
    let before = pair.registrations("5001");
    // A call in progress on a when it fails; its media peer lives until the test ends.
    let in_progress = in_netns(&pair.inet, || media_peer::BrowserPeer::spawn_at(rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SocketAddr::new(AGENT.parse().unwrap(), 0)));
    agent_client::echo_call(&mut ws, "5001", "pass5001", &in_progress).await;

    let failed = Instant::now();
    let failed_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    fail(&mut pair);
    let takeover = pair.wait_active('b', Duration::from_secs(3));
    eprintln!("FIGURE ha {tag}: virtual addresses on b {} ms after the failure", takeover.as_millis());
    drop(ws);
    let state_b = pair.state('b');
    let (ws_b, _) = reregister(&pair, &state_b, Duration::from_secs(10).saturating_sub(failed.elapsed())).await;
    ws = ws_b;
    let registered = failed.elapsed();
    eprintln!("FIGURE ha {tag}: agent registered on b {} ms after the failure", registered.as_millis());
    assert!(registered < Duration::from_secs(10));
    wait_registrations(&pair, before + 1, Duration::from_secs(10).saturating_sub(failed.elapsed()));
    eprintln!("FIGURE ha {tag}: sipp saw b's REGISTER {} ms after the failure", failed.elapsed().as_millis());
    echo_call(&pair, &mut ws).await;
    eprintln!("FIGURE ha {tag}: echo call through b with DTLS-SRTP up {} ms after the failure", failed.elapsed().as_millis());
    // A node that is still running hands over: keepalived's notify ran `gatewayd ha standby`,
    // which ended the call in progress with a record saying why. A killed node writes none.
    let gw = pair.gw_a.as_mut().unwrap();
    if gw.child.try_wait().unwrap().is_none() {
        // keepalived also ran it when the node started as backup, with no call yet.
        gw.wait_for_log("calls in progress ended calls=1", Duration::from_secs(5));
        let records = common::eventually("a's call record", Duration::from_secs(5), || Some(pair.records('a')).filter(|r| !r.is_empty()));
        assert_eq!(records.len(), 1, "{records:?}");
        assert_eq!(records[0]["cause"], gatewayd::ha::FAILOVER_CAUSE, "{}", records[0]);
        assert_eq!(records[0]["dn"], "5001");
        let ended = records[0]["ended_ms"].as_u64().unwrap().saturating_sub(failed_ms);
        eprintln!("FIGURE ha {tag}: a's call ended with cause {} {ended} ms after the failure", records[0]["cause"]);
    } else {
        assert!(pair.records('a').is_empty(), "a killed node wrote a record: {:?}", pair.records('a'));
    }
    // b's own call ended normally: only the node that lost the addresses says ha-failover.
    let b = common::eventually("b's call record", Duration::from_secs(5), || Some(pair.records('b')).filter(|r| !r.is_empty()));
    assert!(b.iter().all(|r| r["cause"] != gatewayd::ha::FAILOVER_CAUSE), "{b:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_active_gatewayd_moves_the_addresses_and_the_agent_re_registers() {
    failover("k", |pair| {
        let gw = pair.gw_a.as_mut().unwrap();
        gw.child.kill().unwrap();
        let _ = gw.child.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_nodes_link_going_down_moves_the_addresses_and_the_agent_re_registers() {
    failover("l", |pair| sh(&format!("ip -n {} link set pub0 down", pair.a))).await;
}

/// Whether nft on `node` holds `ip` in its ban set.
fn banned_on(pair: &Pair, node: char, ip: &str) -> bool {
    run(&["ip", "netns", "exec", pair.ns(node), "nft", "get", "element", "inet", "gatewayd", "banned4", &format!("{{ {ip} }}")]).is_ok()
}

/// Whether a TCP connection from `from` in the internet namespace reaches the public virtual
/// address's HTTPS port.
async fn connects(pair: &Pair, from: &str) -> bool {
    let socket = in_netns(&pair.inet, || {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
        s
    });
    let to = SocketAddr::new(VIP_PUBLIC.parse().unwrap(), 443);
    matches!(tokio::time::timeout(lab::PROBE_TIMEOUT, socket.connect(to)).await, Ok(Ok(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ban_on_a_is_in_force_on_b_within_a_second_and_so_is_the_unban() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut pair = Pair::create("s");
    pair.start_gateway('a', &|t| t);
    pair.start_gateway('b', &|t| t);
    // B is the active node here (no keepalived in this test: the address is put on B by hand).
    sh(&format!("ip -n {} addr add {VIP_PUBLIC}/24 dev pub0", pair.b));
    assert!(connects(&pair, ATTACKER).await, "b answers the attacker before the ban");
    assert!(connects(&pair, AGENT).await);

    let start = Instant::now();
    pair.cli('a', &["bans", "add", ATTACKER, "--seconds", "600"]).unwrap();
    while !banned_on(&pair, 'b', ATTACKER) {
        assert!(start.elapsed() < Duration::from_secs(1), "not banned on b within 1 s; b's log:\n{}", pair.gw_b.as_ref().unwrap().seen.join("\n"));
        std::thread::sleep(Duration::from_millis(5));
    }
    let propagated = start.elapsed();
    eprintln!("FIGURE ha ban: in force on b {} ms after the ban on a", propagated.as_millis());
    assert!(!connects(&pair, ATTACKER).await, "the attacker cannot reach b");
    assert!(connects(&pair, AGENT).await, "its neighbour still can");
    let listed = pair.cli('b', &["bans", "list"]).unwrap();
    assert!(listed.contains(ATTACKER) && listed.contains("peer"), "{listed}");

    let start = Instant::now();
    pair.cli('a', &["bans", "remove", ATTACKER]).unwrap();
    while banned_on(&pair, 'b', ATTACKER) {
        assert!(start.elapsed() < Duration::from_secs(1), "not unbanned on b within 1 s");
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!("FIGURE ha unban: lifted on b {} ms after the unban on a", start.elapsed().as_millis());
    assert!(connects(&pair, ATTACKER).await, "b lets the attacker in again");

    // A forged or replayed datagram from elsewhere changes nothing: the port admits the peer
    // only, and a wrong key is refused even from the peer's address.
    let forged = {
        let mut s = gatewayd::ha::sync::Sender::new(b"not-the-key-of-this-pair", 9);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        s.encode(gatewayd::ha::sync::Change::Ban(AGENT.parse().unwrap(), Duration::from_secs(60)), now)
    };
    in_netns(&pair.a, || {
        let s = std::net::UdpSocket::bind("10.20.0.11:0").unwrap();
        s.send_to(&forged, "10.20.0.12:7960").unwrap();
    });
    pair.gw_b.as_mut().unwrap().wait_for_log("ban sync datagram refused", Duration::from_secs(2));
    assert!(!banned_on(&pair, 'b', AGENT));
}
