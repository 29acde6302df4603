//! What an operator sees of a running gateway, across real sockets: `/metrics` negotiated by
//! `Accept` and accepted by Prometheus' own `promtool check metrics`; the operator commands
//! (`status`, `agents`, `calls`, `upstream`, tables and `--json`) against a daemon with a
//! registered agent (a TLS WebSocket SIP client) and a live echo call (a webrtc-rs peer as the
//! browser); and the Grafana dashboard, whose every query must name metrics the daemon exports.

mod agent_client;
mod common;
mod media_peer;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use media_peer::BrowserPeer;
use rtc::dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use serde_json::Value;

use common::{eventually, lab_profile_free_ports, Gateway, TempDir};

use agent_client::{connect, echo_call, hang_up, register, Ws, DEADLINE, USER_AGENT};

struct Lab {
    dir: TempDir,
    gw: Gateway,
    https: u16,
    admin: u16,
    upstream: u16,
}

fn lab(tag: &str) -> Lab {
    let dir = TempDir::new(tag);
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, text).unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    gw.wait_for_log("gatewayd ready", DEADLINE);
    Lab { https: ports[&8443], admin: ports[&9090], upstream: ports[&5080], gw, dir }
}

/// `GET /metrics` with an optional Accept header: (content type, body).
fn scrape(port: u16, accept: Option<&str>) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n{accept}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head.lines().find_map(|l| l.strip_prefix("content-type: ")).unwrap_or_default().to_owned();
    (content_type, body.to_owned())
}

/// `promtool check metrics` on `body`: (passed, what it said).
fn promtool(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian package prometheus, installed by scripts/setup)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// `gatewayd ARGS --admin 127.0.0.1:PORT`: (success, stdout, stderr).
fn cli(lab: &Lab, args: &[&str]) -> (bool, String, String) {
    let admin = format!("127.0.0.1:{}", lab.admin);
    let out = common::gatewayd().args(args).args(["--admin", &admin]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn cli_json(lab: &Lab, command: &str) -> Value {
    let (ok, out, err) = cli(lab, &[command, "--json"]);
    assert!(ok, "gatewayd {command} --json: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("gatewayd {command} --json is not JSON ({e}): {out}"))
}

fn cli_table(lab: &Lab, command: &str) -> String {
    let (ok, out, err) = cli(lab, &[command]);
    assert!(ok, "gatewayd {command}: {err}");
    out
}

/// A gateway with what the dashboard shows exercised: an agent registered, a failed login, an
/// echo call that carried audio and ended, and a reload.
struct Exercised {
    lab: Lab,
    ws: Ws,
    peer: BrowserPeer,
    to: String,
}

async fn exercised(tag: &str) -> Exercised {
    let lab = lab(tag);
    let mut failing = connect(lab.https, &lab.dir.path().join("state")).await;
    assert_eq!(register(&mut failing, "5002", "not-the-password").await, 403);
    let mut ws = connect(lab.https, &lab.dir.path().join("state")).await;
    assert_eq!(register(&mut ws, "5001", "pass5001").await, 200);
    let peer = BrowserPeer::spawn(SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm);
    let to = echo_call(&mut ws, "5001", "pass5001", &peer).await;
    // Audio through the echo: the browser leg has received packets.
    tokio::task::block_in_place(|| {
        eventually("the live call's media figures", DEADLINE, || {
            let calls = common::http_get(lab.admin, "/calls")?;
            let calls: Value = serde_json::from_str(&calls).ok()?;
            (calls[0]["media"]["browser"]["packets_received"].as_u64()? >= 25).then_some(())
        })
    });
    Exercised { lab, ws, peer, to }
}

#[test]
fn metrics_are_negotiated_by_accept_and_promtool_accepts_the_text_format() {
    let lab = lab("metrics");
    // client_golang's default: no Accept, or */*, gets text 0.0.4.
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (content_type, body) = scrape(lab.admin, accept);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8", "Accept {accept:?}");
        assert!(!body.contains("# EOF") && !body.contains("# UNIT"), "{body}");
        assert!(body.contains("# HELP gatewayd_bans_total ") && body.contains("# TYPE gatewayd_bans_total counter"), "{body}");
        let (ok, said) = promtool(&body);
        assert!(ok && said.trim().is_empty(), "promtool check metrics on Accept {accept:?}:\n{said}\n{body}");
    }
    // What Prometheus 2.42 sends: OpenMetrics first.
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, body) = scrape(lab.admin, Some(prometheus));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE gatewayd_bans counter") && body.contains("# UNIT gatewayd_start_time_seconds seconds"), "{body}");
    // The reason for negotiating: read as 0.0.4, OpenMetrics text has counters without help.
    let (_, said) = promtool(&body);
    assert!(said.contains("no help text"), "{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_show_the_daemon_its_agents_calls_and_upstream_in_both_forms() {
    let mut x = exercised("operator").await;
    let lab = &x.lab;
    let sha = common::sha256_hex(&std::fs::read(lab.dir.path().join("profile.toml")).unwrap());
    let pem_not_after = {
        let status = tokio::task::block_in_place(|| cli_json(lab, "status"));
        assert_eq!(status["profile_sha256"], sha.as_str(), "{status}");
        assert!(status["uptime_seconds"].as_u64().is_some(), "{status}");
        assert_eq!(status["registrations"], 1, "{status}");
        assert_eq!(status["calls_active"], 1, "{status}");
        assert_eq!(status["bans_active"], 0, "{status}");
        let listeners = status["listeners"].as_array().unwrap();
        let https = format!("127.0.0.1:{}", lab.https);
        assert!(listeners.iter().any(|l| l["service"] == "https" && l["address"] == https.as_str()), "{status}");
        assert!(listeners.iter().any(|l| l["service"] == "admin"), "{status}");
        assert_eq!(status["upstream"][0]["transport"], "udp", "{status}");
        assert!(status["certificate_days_left"].as_i64().unwrap() > 300, "the lab certificate is new: {status}");
        status["certificate_not_after"].as_i64().unwrap()
    };
    let table = tokio::task::block_in_place(|| cli_table(lab, "status"));
    for needle in [sha.as_str(), "profile sha256", "uptime", "LISTENER", "https", "UPSTREAM", "certificate", "days left"] {
        assert!(table.contains(needle), "{needle:?} in:\n{table}");
    }
    let expiry = humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(pem_not_after as u64)).to_string();
    assert!(table.contains(&expiry), "{expiry} in:\n{table}");

    let agents = tokio::task::block_in_place(|| cli_json(lab, "agents"));
    let agent = agents.as_array().unwrap().iter().find(|a| a["dn"] == "5001").unwrap_or_else(|| panic!("{agents}"));
    assert_eq!(agent["registered"], true, "{agent}");
    assert_eq!(agent["user_agent"], USER_AGENT, "{agent}");
    assert_eq!(agent["contact"], "<sip:x5001@client.invalid;transport=ws>", "{agent}");
    assert!(agent["since_ms"].as_u64().unwrap() > 0 && agent["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{agent}");
    let failed = agents.as_array().unwrap().iter().find(|a| a["dn"] == "5002").unwrap_or_else(|| panic!("{agents}"));
    assert_eq!(failed["registered"], false, "{failed}");
    assert_eq!(failed["failures"][0]["reason"], "digest: wrong password", "{failed}");
    let table = tokio::task::block_in_place(|| cli_table(lab, "agents"));
    assert!(table.contains("5001") && table.contains(USER_AGENT) && table.contains("registered"), "{table}");
    assert!(table.contains("5002") && table.contains("not registered") && table.contains("digest: wrong password from 127.0.0.1"), "{table}");

    let calls = tokio::task::block_in_place(|| cli_json(lab, "calls"));
    let call = &calls[0];
    assert_eq!(call["dn"], "5001", "{calls}");
    assert_eq!(call["direction"], "echo", "{calls}");
    assert_eq!(call["agent_call_id"], "echo-5001", "{calls}");
    let mos = call["media"]["browser"]["mos"].as_f64().unwrap();
    assert!(mos > 4.0, "a clean loopback call: {calls}");
    let table = tokio::task::block_in_place(|| cli_table(lab, "calls"));
    assert!(table.contains("5001") && table.contains("echo") && table.contains("MOS 4."), "{table}");

    let upstream = tokio::task::block_in_place(|| cli_json(lab, "upstream"));
    assert_eq!(upstream[0]["address"], format!("127.0.0.1:{}", lab.upstream), "{upstream}");
    assert!(upstream[0]["up"].is_boolean() && upstream[0]["failures"].is_u64(), "{upstream}");
    let table = tokio::task::block_in_place(|| cli_table(lab, "upstream"));
    assert!(table.contains("UPSTREAM") && table.contains(upstream[0]["address"].as_str().unwrap()) && (table.contains(" up") || table.contains("down")), "{table}");

    hang_up(&mut x.ws, "5001", &x.to).await;
    let calls = tokio::task::block_in_place(|| eventually("the call gone from the list", DEADLINE, || {
        let v = cli_json(&x.lab, "calls");
        v.as_array().unwrap().is_empty().then_some(v)
    }));
    assert_eq!(calls, Value::Array(vec![]));

    // Without --admin the profile's observe.admin is used.
    let profile = x.lab.dir.path().join("profile.toml");
    let out = common::gatewayd().args(["upstream", "--json", "--profile"]).arg(&profile).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()[0]["address"], format!("127.0.0.1:{}", x.lab.upstream));

    // An unreachable endpoint is an error that names it, not an empty table.
    let out = common::gatewayd().args(["status", "--admin", "127.0.0.1:1"]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("cannot reach the admin endpoint at 127.0.0.1:1"));
    drop(x.peer);
}

/// Metric names a PromQL expression refers to: identifiers that start `gatewayd_`.
fn promql_metrics(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("gatewayd_") {
        let start = i + at;
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let end = start + expr[start..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(expr.len() - start);
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// Sample names in a 0.0.4 exposition.
fn exported(body: &str) -> BTreeSet<String> {
    body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).map(|l| l.split(['{', ' ']).next().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_metrics_the_daemon_exports() {
    let mut x = exercised("dashboard").await;
    hang_up(&mut x.ws, "5001", &x.to).await;
    x.lab.gw.signal("HUP");
    x.lab.gw.wait_for_log("profile reloaded", DEADLINE);
    let body = tokio::task::block_in_place(|| {
        eventually("the ended call's quality in the metrics", DEADLINE, || {
            let (_, body) = scrape(x.lab.admin, None);
            (body.contains("gatewayd_call_mos_count{leg=\"browser\"} 1") && body.contains("gatewayd_reloads_total{result=\"applied\"} 1")).then_some(body)
        })
    });
    let (ok, said) = promtool(&body);
    assert!(ok && said.trim().is_empty(), "promtool on an exercised daemon:\n{said}");
    let exported = exported(&body);

    let path = common::root().join("observe/grafana/gatewayd.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("the dashboard is JSON");
    // The structure Grafana's dashboard model needs (schemaVersion 39, as Grafana 10/11 export).
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    let inputs = dashboard["templating"]["list"].as_array().expect("templating.list");
    assert!(inputs.iter().any(|v| v["type"] == "datasource" && v["query"] == "prometheus" && v["name"] == "datasource"), "a Prometheus datasource variable");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    let mut titles = Vec::new();
    for p in panels {
        let title = p["title"].as_str().expect("every panel has a title");
        assert!(ids.insert(p["id"].as_u64().expect("every panel has a numeric id")), "panel ids are unique: {title}");
        let grid = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            assert!(grid[k].is_u64(), "{title}: gridPos.{k}");
        }
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "{title}: within the 24-column grid");
        let kind = p["type"].as_str().unwrap();
        assert!(["row", "timeseries", "stat", "gauge", "table", "bargauge", "heatmap", "text"].contains(&kind), "{title}: panel type {kind}");
        if kind == "row" || kind == "text" {
            continue;
        }
        titles.push(title.to_owned());
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}: panel datasource");
        let targets = p["targets"].as_array().unwrap_or_else(|| panic!("{title}: targets"));
        assert!(!targets.is_empty(), "{title}: at least one query");
        for t in targets {
            assert_eq!(t["datasource"]["type"], "prometheus", "{title}: target datasource");
            assert!(t["refId"].as_str().is_some(), "{title}: refId");
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("{title}: expr"));
            let names = promql_metrics(expr);
            assert!(!names.is_empty(), "{title}: {expr} names no gatewayd metric");
            for n in names {
                assert!(exported.contains(&n), "{title}: {expr} names {n}, which the daemon does not export; it exports:\n{exported:#?}");
                used.insert(n);
            }
        }
    }
    for topic in ["Registrations", "Calls by direction", "Setup time", "MOS", "Packet loss", "Jitter", "Authentication failures", "Bans", "Upstream", "TURN allocations", "Reloads", "Certificate"] {
        assert!(titles.iter().any(|t| t.contains(topic)), "a panel on {topic:?}; panels: {titles:?}");
    }
    assert!(used.len() >= 15, "{used:?}");
}
