//! Scale-out for real: two active gateways in register mode in front of one SIP server, each
//! with its own agents. Namespaces internet, gw1, gw2 and internal; the public and internal
//! sides are bridges (in the internet and internal namespaces) both gateways sit on; each
//! gateway has its own addresses (as `profiles/scale-out-{1,2}.toml`); a management link joins
//! them, over which they exchange nothing. sipp in the internal namespace is the SIP server:
//! its registrar answers both gateways' REGISTERs and records them; its calls go, per DN, to the
//! Contact that DN's REGISTER gave, so the registrar's bindings are the only shared state.
//!
//! - each gateway registers its own agents' DNs upstream (two each), with its own internal
//!   address as Contact, and none of the other's;
//! - an inbound call for each DN reaches the agent on the gateway that registered it (answered,
//!   DTLS-SRTP up, the agent hangs up, its call record on that gateway and not on the other);
//! - the other gateway knows nothing of that DN: a call aimed at it gets 480.
//!
//! Needs root, `ip netns`, nft and sipp; skips with a message otherwise.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod agent_client;
mod common;
mod media_peer;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{root, Gateway};
use lab::{in_netns, run};

const SIP_SERVER: &str = "192.168.210.81";
/// Gateway `n`'s public and internal addresses, its agents' DNs and where each agent is.
fn public(n: u8) -> String {
    format!("203.0.113.{}", 20 + n)
}
fn internal(n: u8) -> String {
    format!("192.168.210.{}", 60 + n)
}
fn dns(n: u8) -> [String; 2] {
    [1, 2].map(|i| format!("{}00{i}", 4 + n))
}
/// Agent `i` (0 or 1) of gateway `n`: its own address in the internet namespace.
fn agent_addr(n: u8, i: usize) -> String {
    format!("203.0.113.{}", 100 + 10 * usize::from(n) + i)
}

/// Gateway `n`'s profile: `profiles/scale-out-{n}.toml` in lab form (inline passwords,
/// self-signed certificate, test-sized port ranges), agents `{4+n}001` and `{4+n}002`.
fn profile(n: u8) -> String {
    let (pubaddr, int) = (public(n), internal(n));
    let agents: String = (1..=2)
        .map(|i| {
            let dn = format!("{}00{i}", 4 + n);
            format!("[[agents]]\ndn = \"{dn}\"\npassword = \"pass{dn}\"\nupstream_password = \"up{dn}\"\n\n")
        })
        .collect();
    format!(
        r#"
[site]
name = "scale-out-test"
sip_domain = "gw{n}.agents.example.com"
lab_mode = true

[public]
interface = "pub0"
addresses = ["{pubaddr}"]

[internal]
interface = "int0"
address = "{int}"
networks = ["192.168.210.0/24"]

[management]
interface = "mgmt0"
address = "10.20.0.{m}"
allow_from = ["10.20.0.0/24"]

[tls]
source = "self-signed"

[web]
https = ["{pubaddr}:443"]
allowed_origins = ["https://{pubaddr}"]

[sip]
listen = [{{ address = "{int}:5060", transport = "udp" }}]
echo_number = "600"

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
admin = "10.20.0.{m}:9090"
cdr_file = "cdr.jsonl"

{agents}"#,
        m = 20 + n
    )
}


fn sh(c: &str) {
    let args: Vec<&str> = c.split_whitespace().collect();
    run(&args).unwrap_or_else(|e| panic!("{e}"));
}

/// The namespaces, the processes in them and their files; all removed on drop.
struct ScaleOut {
    inet: String,
    gws: [String; 2],
    internal: String,
    dir: PathBuf,
    gateways: Vec<Gateway>,
    registrar: Option<Child>,
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        if let Some(s) = &mut self.registrar {
            let _ = s.kill();
            let _ = s.wait();
        }
        self.gateways.clear();
        for ns in [&self.inet, &self.gws[0], &self.gws[1], &self.internal] {
            let _ = run(&["ip", "netns", "del", ns]);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn unavailable() -> Option<String> {
    if let Some(why) = lab::unavailable() {
        return Some(why);
    }
    if Command::new("sh").args(["-c", "command -v sipp"]).output().map_or(true, |o| !o.status.success()) {
        return Some("sipp is not installed".into());
    }
    None
}

impl ScaleOut {
    fn create() -> ScaleOut {
        let id = std::process::id() % 100_000;
        let dir = std::env::temp_dir().join(format!("gatewayd-scale-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = ScaleOut {
            inet: format!("gws-inet-{id}"),
            gws: [format!("gws-1-{id}"), format!("gws-2-{id}")],
            internal: format!("gws-int-{id}"),
            dir,
            gateways: Vec::new(),
            registrar: None,
        };
        for ns in [&s.inet, &s.gws[0], &s.gws[1], &s.internal] {
            sh(&format!("ip netns add {ns}"));
            sh(&format!("ip -n {ns} link set lo up"));
        }
        for (ns, side) in [(&s.inet, "pub"), (&s.internal, "int")] {
            sh(&format!("ip -n {ns} link add br0 type bridge"));
            sh(&format!("ip -n {ns} link set br0 up"));
            for (gw, n) in s.gws.iter().zip(1..) {
                sh(&format!("ip -n {gw} link add {side}0 type veth peer name {side}{n} netns {ns}"));
                sh(&format!("ip -n {ns} link set {side}{n} master br0"));
                sh(&format!("ip -n {ns} link set {side}{n} up"));
            }
        }
        for (n, i) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
            sh(&format!("ip -n {} addr add {}/24 dev br0", s.inet, agent_addr(n, i)));
        }
        sh(&format!("ip -n {} addr add {SIP_SERVER}/24 dev br0", s.internal));
        // The management network: one link both gateways sit on (they exchange nothing over it).
        sh(&format!("ip -n {} link add mgmt0 type veth peer name mgmt0 netns {}", s.gws[0], s.gws[1]));
        for (gw, n) in s.gws.iter().zip(1u8..) {
            sh(&format!("ip -n {gw} addr add {}/24 dev pub0", public(n)));
            sh(&format!("ip -n {gw} addr add {}/24 dev int0", internal(n)));
            sh(&format!("ip -n {gw} addr add 10.20.0.{}/24 dev mgmt0", 20 + n));
            for l in ["pub0", "int0", "mgmt0"] {
                sh(&format!("ip -n {gw} link set {l} up"));
            }
        }
        s
    }

    fn node_dir(&self, n: u8) -> PathBuf {
        self.dir.join(format!("gw{n}"))
    }

    fn start_gateway(&mut self, n: u8) {
        let dir = self.node_dir(n);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("profile.toml");
        std::fs::write(&path, profile(n)).unwrap();
        let mut gw = Gateway::start_in_netns(&self.gws[usize::from(n) - 1], &path, &dir.join("state"));
        gw.wait_for_log("gatewayd ready", Duration::from_secs(60));
        self.gateways.push(gw);
    }

    fn gateway(&mut self, n: u8) -> &mut Gateway {
        &mut self.gateways[usize::from(n) - 1]
    }

    fn start_registrar(&mut self) {
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
        self.registrar = Some(child);
    }

    /// Every binding REGISTER sipp received, in order: (DN, Contact `host:port`).
    fn bindings(&self) -> Vec<(String, String)> {
        let log = std::fs::read_to_string(self.dir.join("registrar.log")).unwrap_or_default();
        log.split("\nREGISTER sip:")
            .skip(1)
            .filter_map(|m| {
                let head = m.replace('\r', "");
                let head = head.split("\n\n").next().unwrap_or_default();
                if head.lines().any(|l| l.trim() == "Expires: 0") {
                    return None;
                }
                let uri = |name: &str| head.lines().find(|l| l.starts_with(name))?.split("<sip:").nth(1)?.split(['>', ';']).next().map(str::to_owned);
                let (to, contact) = (uri("To:")?, uri("Contact:")?);
                let dn = to.split('@').next()?.to_owned();
                Some((dn, contact.split_once('@').map_or(contact.clone(), |(_, hp)| hp.to_owned())))
            })
            .collect()
    }

    /// Where the registrar's last REGISTER for `dn` says it is.
    fn registered_contact(&self, dn: &str) -> Option<String> {
        self.bindings().into_iter().filter(|(d, _)| d == dn).map(|(_, c)| c).last()
    }

    /// sipp as the SIP server calling `dn` at `to` (`host:port`) with `scenario` from tests/sipp,
    /// from its own address (another port than the registrar's).
    fn call(&self, scenario: &str, dn: &str, to: &str, port: u16) -> Child {
        Command::new("ip")
            .current_dir(root().join("tests/sipp"))
            .args(["netns", "exec", &self.internal, "sipp", "-sf", scenario, "-s", dn, "-m", "1", "-i", SIP_SERVER, "-mi", SIP_SERVER])
            .args(["-p", &port.to_string(), "-mp", &(port + 1000).to_string(), "-timeout", "20s", "-timeout_error", "-nostdin", "-trace_err"])
            .arg("-error_file")
            .arg(self.dir.join(format!("sipp-{dn}-{port}.err")))
            .arg(to)
            // To files, not pipes: sipp's screen would fill a pipe nobody reads while it runs.
            .stdout(Stdio::from(std::fs::File::create(self.dir.join(format!("sipp-{dn}-{port}.out"))).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(self.dir.join(format!("sipp-{dn}-{port}.stderr"))).unwrap()))
            .spawn()
            .expect("sipp runs")
    }

    /// The call records gateway `n` wrote (`observe.cdr_file`, relative to its profile).
    fn records(&self, n: u8) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.node_dir(n).join("cdr.jsonl")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }
}

/// Waits (without blocking the runtime) for sipp to exit; asserts it passed. `out` is the file
/// its screen went to.
async fn passed(mut sipp: Child, out: &Path, what: &str, deadline: Duration) {
    let start = Instant::now();
    let status = loop {
        if let Some(status) = sipp.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > deadline {
            let _ = sipp.kill();
            let _ = sipp.wait();
            panic!("{what}: sipp still running after {deadline:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let screen = std::fs::read_to_string(out).unwrap_or_default();
    let errors = std::fs::read_to_string(out.with_extension("err")).unwrap_or_default();
    assert!(status.success(), "{what}: sipp exit {:?}\n{}\nerrors: {errors}", status.code(), screen.lines().rev().take(25).collect::<Vec<_>>().join("\n"));
}

/// Agent `i` of gateway `n` from its own address: WSS, then REGISTER with digest.
async fn register_agent(s: &ScaleOut, n: u8, i: usize) -> agent_client::Ws {
    let socket = in_netns(&s.inet, || {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(agent_addr(n, i).parse().unwrap(), 0)).unwrap();
        sock
    });
    let tcp = tokio::time::timeout(Duration::from_secs(5), socket.connect(SocketAddr::new(public(n).parse().unwrap(), 443))).await.expect("connect within 5 s").unwrap();
    let state: &Path = &s.node_dir(n).join("state");
    let mut ws = agent_client::over(tcp, "localhost", &public(n), state).await.unwrap();
    let d = &dns(n)[i];
    assert_eq!(agent_client::register(&mut ws, d, &format!("pass{d}")).await, 200);
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_active_gateways_register_their_own_agents_and_inbound_calls_reach_both() {
    if let Some(why) = unavailable() {
        eprintln!("SKIPPED: {why}");
        return;
    }
    let mut s = ScaleOut::create();
    s.start_registrar();
    s.start_gateway(1);
    s.start_gateway(2);
    let agents_of = [(1u8, 0usize), (1, 1), (2, 0), (2, 1)];

    let start = Instant::now();
    let mut agents = Vec::new();
    for (n, i) in agents_of {
        agents.push(register_agent(&s, n, i).await);
    }
    // Each gateway registers its own agents' DNs, and only those, with its internal address.
    let mut contacts = Vec::new();
    for (n, i) in agents_of {
        let d = &dns(n)[i];
        let contact = common::eventually(&format!("sipp saw {d}'s REGISTER"), Duration::from_secs(5), || s.registered_contact(d));
        assert_eq!(contact, format!("{}:5060", internal(n)), "{d}'s binding at the registrar is gateway {n}");
        contacts.push(contact);
    }
    let bindings = s.bindings();
    eprintln!("FIGURE scale-out: 4 DNs registered upstream by their own gateways {} ms after the agents started connecting: {bindings:?}", start.elapsed().as_millis());
    assert!(
        bindings.iter().all(|(d, c)| (1..=2).any(|n| dns(n).contains(d) && c == &format!("{}:5060", internal(n)))),
        "each gateway registered only its own agents: {bindings:?}"
    );
    for n in 1..=2 {
        s.gateway(n).wait_for_log("DN registered with the SIP server", Duration::from_secs(5));
    }

    // The SIP server calls each DN where its registrar says it is.
    for (k, ((n, i), contact)) in agents_of.into_iter().zip(&contacts).enumerate() {
        let d = &dns(n)[i];
        let port = 5070 + k as u16;
        let call_start = Instant::now();
        let sipp = s.call("inbound-agent-hangs-up.xml", d, contact, port);
        let peer = in_netns(&s.inet, || media_peer::BrowserPeer::spawn_at(rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm, SocketAddr::new(agent_addr(n, i).parse().unwrap(), 0)));
        let ws = &mut agents[k];
        let answered = agent_client::answer_inbound(ws, d, &peer).await;
        eprintln!("FIGURE scale-out: call for {d} answered on gateway {n} with DTLS-SRTP up {} ms after sipp sent it", call_start.elapsed().as_millis());
        agent_client::hang_up_inbound(ws, &answered).await;
        let out = s.dir.join(format!("sipp-{d}-{port}.out"));
        passed(sipp, &out, &format!("inbound call for {d} via gateway {n}"), Duration::from_secs(20)).await;
    }
    for n in 1..=2u8 {
        let records = common::eventually(&format!("gateway {n}'s call records"), Duration::from_secs(5), || Some(s.records(n)).filter(|r| r.len() >= 2));
        assert_eq!(records.len(), 2, "gateway {n}: {records:?}");
        let mut seen: Vec<&str> = records.iter().map(|r| r["dn"].as_str().unwrap()).collect();
        seen.sort();
        assert_eq!(seen, dns(n).iter().map(String::as_str).collect::<Vec<_>>(), "gateway {n} carried its own agents' calls");
        for r in &records {
            assert_eq!(r["direction"], "inbound", "{r}");
            assert!(r["answered_ms"].as_u64().is_some_and(|t| t > 0), "answered: {r}");
        }
    }

    // Neither gateway holds the other's agents: a call aimed at the wrong one gets 480.
    for n in 1..=2u8 {
        let other_dn = &dns(3 - n)[0];
        let port = 5080 + u16::from(n);
        let sipp = s.call("invite-unregistered.xml", other_dn, &format!("{}:5060", internal(n)), port);
        let out = s.dir.join(format!("sipp-{other_dn}-{port}.out"));
        passed(sipp, &out, &format!("call for {other_dn} aimed at gateway {n}"), Duration::from_secs(20)).await;
    }
}
