//! Turns one run's results (gatewayd's and rtpengine's JSON lines from media-load) into a
//! markdown table row for bench/media/RESULTS.md, with the commit, the machine's load average
//! and gatewayd's ratio to rtpengine, so a recorded figure always says under what conditions
//! it was taken.
//!
//! media-row COMMIT GATEWAYD_JSON [RTPENGINE_JSON]   (prints the row)
//! media-row --header                                (prints the table header)
//! media-row --header-transcode                      (the transcoding mode's header)
//!
//! A transcoding run's JSON (`"transcode":true`) gets the transcoding table's row: no latency
//! (not measured in that mode), but what arrived on each side: the payload type and size
//! check, and the decoded audio's RMS level.

use serde_json::Value;

const HEADER: &str = "| commit | calls × s | 1-min load avg g / r (start → end) | CPU ms per call-s: gatewayd / rtpengine (ratio) | latency p50 / p99 ms: gatewayd | rtpengine | loss b→p / p→b: gatewayd | rtpengine | RSS KiB per call g / r | client rate % g / r (client CPU %) | other work on the bridge's CPU, ms/s g / r | RcvbufErrors |\n|---|---|---|---|---|---|---|---|---|---|---|---|";

const HEADER_TRANSCODE: &str = "| commit | calls × s | 1-min load avg g / r (start → end) | CPU ms per transcoded call-s: gatewayd / rtpengine (ratio) | loss b→p / p→b: gatewayd | rtpengine | wrong-codec packets b / p: gatewayd | rtpengine | decoded RMS b / p: gatewayd | rtpengine | RSS KiB per call g / r | client rate % g / r (client CPU %) | other work on the bridge's CPU, ms/s g / r | RcvbufErrors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// One side's check in a transcoding run's JSON (`rx_browser`, `rx_plain`).
fn rx(v: Option<&Value>, side: &str, k: &str) -> f64 {
    v.and_then(|v| v.get(side)?.get(k)?.as_f64()).unwrap_or(f64::NAN)
}

/// What the browser (b) and the plain (p) side received, both ways, for one engine.
fn received(v: Option<&Value>, k: &str) -> String {
    v.map_or("—".into(), |v| format!("{} / {}", rx(Some(v), "rx_browser", k), rx(Some(v), "rx_plain", k)))
}

fn read(path: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.lines().rfind(|l| l.starts_with('{'))?).ok()
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("?").to_owned()
}

fn latency(v: Option<&Value>) -> String {
    v.map_or("—".into(), |v| format!("{:.2} / {:.2}", f(v, "latency_ms_p50"), f(v, "latency_ms_p99")))
}

fn loss(v: Option<&Value>) -> String {
    v.map_or("—".into(), |v| format!("{} / {}", f(v, "loss_browser_to_plain"), f(v, "loss_plain_to_browser")))
}

/// Achieved share of the nominal 50 packets/s per direction (the lower of the two).
fn rate(v: &Value) -> String {
    format!("{:.1}", 100.0 * f(v, "client_rate_b2p").min(f(v, "client_rate_p2b")))
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("--header") => return println!("{HEADER}"),
        Some("--header-transcode") => return println!("{HEADER_TRANSCODE}"),
        _ => {}
    }
    let (Some(commit), Some(g)) = (a.get(1), a.get(2).and_then(|p| read(p))) else {
        eprintln!("usage: media-row COMMIT GATEWAYD_JSON [RTPENGINE_JSON] | media-row --header");
        std::process::exit(2);
    };
    let r = a.get(3).and_then(|p| read(p));
    let (gc, rc) = (f(&g, "cpu_ms_per_call_second"), r.as_ref().map(|r| f(r, "cpu_ms_per_call_second")));
    let cpu = match rc {
        Some(rc) => format!("{gc:.3} / {rc:.3} ({:.2})", gc / rc),
        None => format!("{gc:.3} / — "),
    };
    // 1-minute load average at the start and end of each engine's run.
    let one = |v: &Value, k: &str| s(v, k).split(' ').next().unwrap_or("?").to_owned();
    let loads = std::iter::once(&g).chain(r.as_ref()).map(|v| format!("{} → {}", one(v, "load_before"), one(v, "load_after"))).collect::<Vec<_>>().join(" / ");
    let rss = format!("{:.0} / {}", f(&g, "rss_kib_per_call"), r.as_ref().map_or("—".into(), |r| format!("{:.0}", f(r, "rss_kib_per_call"))));
    let client = format!(
        "{} / {} ({:.0} / {})",
        rate(&g),
        r.as_ref().map_or("—".into(), rate),
        f(&g, "client_cpu_pct"),
        r.as_ref().map_or("—".into(), |r| format!("{:.0}", f(r, "client_cpu_pct")))
    );
    // CPU time others took on the bridge's CPU during the window: a busy machine shows here.
    let waited = format!("{:.0} / {}", f(&g, "others_on_bridge_cpu_ms_per_s"), r.as_ref().map_or("—".into(), |r| format!("{:.0}", f(r, "others_on_bridge_cpu_ms_per_s"))));
    let rcvbuf = format!("{} / {}", f(&g, "rcvbuf_errors"), r.as_ref().map_or("—".into(), |r| format!("{}", f(r, "rcvbuf_errors"))));
    if g.get("transcode").and_then(Value::as_bool) == Some(true) {
        let rms = |v: Option<&Value>| v.map_or("—".into(), |v| format!("{:.0} / {:.0}", rx(Some(v), "rx_browser", "rms"), rx(Some(v), "rx_plain", "rms")));
        println!(
            "| `{commit}` | {} × {:.0} | {loads} | {cpu} | {} | {} | {} | {} | {} | {} | {rss} | {client} | {waited} | {rcvbuf} |",
            f(&g, "calls"),
            f(&g, "seconds"),
            loss(Some(&g)),
            loss(r.as_ref()),
            received(Some(&g), "wrong"),
            received(r.as_ref(), "wrong"),
            rms(Some(&g)),
            rms(r.as_ref()),
        );
        return;
    }
    println!(
        "| `{commit}` | {} × {:.0} | {loads} | {cpu} | {} | {} | {} | {} | {rss} | {client} | {waited} | {rcvbuf} |",
        f(&g, "calls"),
        f(&g, "seconds"),
        latency(Some(&g)),
        latency(r.as_ref()),
        loss(Some(&g)),
        loss(r.as_ref()),
    );
}
