//! The operator commands `gatewayd status`, `agents`, `calls` and `upstream`: clients of the
//! running daemon's admin endpoint that print its JSON as tables for people, or as it is
//! (pretty-printed) with `--json` for scripts. They only read.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use comfy_table::{presets, Table};
use serde_json::Value;

/// Which view to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Status,
    Agents,
    Calls,
    Upstream,
}

impl View {
    fn path(self) -> &'static str {
        match self {
            View::Status => "/status",
            View::Agents => "/agents",
            View::Calls => "/calls",
            View::Upstream => "/upstream",
        }
    }
}

/// Fetches `view` from the admin endpoint at `admin` (HOST:PORT) and prints it.
pub fn run(view: View, admin: &str, json: bool) -> ExitCode {
    let value = match fetch(admin, view.path()) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&value).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    let now = SystemTime::now();
    let text = match view {
        View::Status => status(&value),
        View::Agents => agents(&value, now),
        View::Calls => calls(&value, now),
        View::Upstream => upstream(&value),
    };
    print!("{text}");
    ExitCode::SUCCESS
}

fn fetch(admin: &str, path: &str) -> Result<Value, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(10))).build().into();
    let mut response = agent.get(format!("http://{admin}{path}")).call().map_err(|e| format!("cannot reach the admin endpoint at {admin}: {e}"))?;
    let status = response.status();
    let body = response.body_mut().read_to_string().map_err(|e| format!("cannot read the answer of {admin}{path}: {e}"))?;
    if !status.is_success() {
        return Err(format!("{admin}{path} answered {status}: {}", body.trim()));
    }
    serde_json::from_str(&body).map_err(|e| format!("{admin}{path} did not answer JSON: {e}"))
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING);
    if !header.is_empty() {
        t.set_header(header.iter().copied());
    }
    t
}

/// A table's lines without the padding after the last column.
fn lines(t: &Table) -> String {
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) if s.is_empty() => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A Unix time in milliseconds as an RFC 3339 UTC time to the second.
fn time_ms(v: &Value) -> String {
    match v.as_u64() {
        Some(ms) if ms > 0 => humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string(),
        _ => "-".into(),
    }
}

fn time_s(v: &Value) -> String {
    time_ms(&Value::from(v.as_u64().map(|s| s * 1000).unwrap_or(0)))
}

/// A duration, to the second.
fn span(seconds: u64) -> String {
    humantime::format_duration(Duration::from_secs(seconds)).to_string()
}

fn since(now: SystemTime, ms: &Value) -> String {
    let Some(ms) = ms.as_u64() else { return "-".into() };
    let now_ms = now.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    span(now_ms.saturating_sub(ms) / 1000)
}

fn status(s: &Value) -> String {
    let mut out = String::new();
    let lab = if s["lab_mode"].as_bool() == Some(true) { " (lab mode)" } else { "" };
    let cert = match (s["certificate_not_after"].as_i64(), s["certificate_days_left"].as_i64()) {
        (Some(t), Some(days)) => format!("expires {} ({days} days left)", time_s(&Value::from(t.max(0)))),
        _ => "-".into(),
    };
    let turn = s["turn_allocations"].as_u64().map_or("off".to_owned(), |n| n.to_string());
    let mut facts = table(&[]);
    for (k, v) in [
        ("site", format!("{}{lab}", text(&s["site"]))),
        ("version", text(&s["version"])),
        ("profile", text(&s["profile_path"])),
        ("profile sha256", text(&s["profile_sha256"])),
        ("profile applied", time_s(&s["profile_applied_at"])),
        ("started", time_s(&s["started_at"])),
        ("uptime", s["uptime_seconds"].as_u64().map_or("-".into(), span)),
        ("certificate", cert),
        ("registrations", text(&s["registrations"])),
        ("calls active", text(&s["calls_active"])),
        ("bans active", text(&s["bans_active"])),
        ("TURN allocations", turn),
    ] {
        facts.add_row([k.to_owned(), v]);
    }
    out.push_str(&lines(&facts));
    out.push('\n');
    let mut listeners = table(&["LISTENER", "ADDRESS"]);
    for l in s["listeners"].as_array().into_iter().flatten() {
        listeners.add_row([text(&l["service"]), text(&l["address"])]);
    }
    out.push_str(&lines(&listeners));
    out.push('\n');
    out.push_str(&upstream(&s["upstream"]));
    out
}

fn upstream(list: &Value) -> String {
    let mut t = table(&["UPSTREAM", "TRANSPORT", "PRIORITY", "WEIGHT", "STATE", "FAILURES"]);
    for u in list.as_array().into_iter().flatten() {
        let state = if u["up"].as_bool() == Some(true) { "up" } else { "down" };
        t.add_row([text(&u["address"]), text(&u["transport"]), text(&u["priority"]), text(&u["weight"]), state.to_owned(), text(&u["failures"])]);
    }
    lines(&t)
}

fn agents(list: &Value, now: SystemTime) -> String {
    let mut t = table(&["DN", "STATE", "CONTACT", "SOURCE", "USER AGENT", "SINCE", "EXPIRES IN", "LAST FAILURE", "FAILURES"]);
    for a in list.as_array().into_iter().flatten() {
        let state = if a["registered"].as_bool() == Some(true) { "registered" } else { "not registered" };
        let failures = a["failures"].as_array().cloned().unwrap_or_default();
        let last = failures.last().map_or("-".to_owned(), |f| format!("{} from {} at {}", text(&f["reason"]), text(&f["source"]), time_ms(&f["at_ms"])));
        let expires = a["expires_in_s"].as_u64().map_or("-".into(), span);
        t.add_row([text(&a["dn"]), state.to_owned(), text(&a["contact"]), text(&a["source"]), text(&a["user_agent"]), since(now, &a["since_ms"]), expires, last, failures.len().to_string()]);
    }
    lines(&t)
}

/// A leg's quality so far: MOS, loss and jitter.
fn quality(leg: &Value) -> String {
    if leg.is_null() {
        return "-".into();
    }
    let mos = leg["mos"].as_f64().unwrap_or(0.0);
    let loss = leg["loss"].as_f64().unwrap_or(0.0) * 100.0;
    let jitter = leg["jitter_ms"].as_f64().unwrap_or(0.0);
    format!("MOS {mos:.2} loss {loss:.1}% jitter {jitter:.1} ms ({} pkts)", leg["packets_received"].as_u64().unwrap_or(0))
}

fn calls(list: &Value, now: SystemTime) -> String {
    let mut t = table(&["CALL", "DN", "DIRECTION", "PEER", "STARTED", "ANSWERED", "DURATION", "BROWSER LEG", "INTERNAL LEG"]);
    for c in list.as_array().into_iter().flatten() {
        let media = &c["media"];
        t.add_row([text(&c["call"]), text(&c["dn"]), text(&c["direction"]), text(&c["peer"]), time_ms(&c["started_ms"]), time_ms(&c["answered_ms"]), since(now, &c["started_ms"]), quality(&media["browser"]), quality(&media["internal"])]);
    }
    lines(&t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_show_each_legs_quality() {
        let v: Value = serde_json::from_str(
            r#"[{"call":3,"dn":"5001","direction":"echo","peer":"600","started_ms":1000,"answered_ms":1500,
                "media":{"browser":{"mos":4.41,"loss":0.01,"jitter_ms":2.5,"packets_received":100},"internal":null}}]"#,
        )
        .unwrap();
        let out = calls(&v, UNIX_EPOCH + Duration::from_secs(61));
        assert!(out.contains("MOS 4.41 loss 1.0% jitter 2.5 ms (100 pkts)"), "{out}");
        assert!(out.contains("1970-01-01T00:00:01Z") && out.contains("1m"), "{out}");
    }

    #[test]
    fn agents_show_the_last_failure() {
        let v: Value = serde_json::from_str(
            r#"[{"dn":"5002","registered":false,"failures":[{"at_ms":2000,"reason":"digest: wrong password","source":"192.0.2.9"}]}]"#,
        )
        .unwrap();
        let out = agents(&v, UNIX_EPOCH);
        assert!(out.contains("not registered") && out.contains("digest: wrong password from 192.0.2.9 at 1970-01-01T00:00:02Z"), "{out}");
    }
}
