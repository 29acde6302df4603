//! Turns one run's two JSON results (turn-load against coturn and against gatewayd) into the
//! markdown entry for bench/RESULTS.md: both figures side by side and gatewayd / coturn
//! ratios. When gatewayd did not run (or did not answer) the entry says so and holds the
//! coturn baseline alone.
//!
//!   turn-row HEADING MACHINE_LINE COTURN_JSON GATEWAYD_JSON

use serde_json::Value;

fn read(path: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(text.lines().rfind(|l| l.starts_with('{'))?).ok()
}

/// A number at a JSON path ("setup.ms.p50").
fn num(v: &Value, path: &str) -> Option<f64> {
    path.split('.').try_fold(v, |v, k| v.get(k))?.as_f64()
}

fn fmt(x: Option<f64>, digits: usize) -> String {
    x.map_or("—".into(), |x| format!("{x:.digits$}"))
}

fn ratio(g: Option<f64>, c: Option<f64>) -> String {
    match (g, c) {
        (Some(g), Some(c)) if c > 0.0 => format!("{:.2}", g / c),
        (Some(g), Some(c)) if g == 0.0 && c == 0.0 => "(both 0)".into(),
        _ => "—".into(),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("—".into(), |x| if x == 0.0 { "0".into() } else { format!("{:.4} %", x * 100.0) })
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: turn-row HEADING MACHINE_LINE COTURN_JSON GATEWAYD_JSON");
        std::process::exit(2);
    }
    let ok = |v: Option<Value>| v.filter(|v| v.get("error").is_none());
    let c_raw = read(&a[3]);
    let g_raw = read(&a[4]);
    let c = ok(c_raw.clone());
    let g = ok(g_raw.clone());
    let why = |raw: &Option<Value>| raw.as_ref().and_then(|v| v.get("error")).and_then(Value::as_str).map(str::to_owned).unwrap_or_else(|| "did not run".into());
    println!("{}", a[1]);
    println!();
    if g.is_none() {
        println!("**coturn baseline only: gatewayd's TURN was not measured ({}).**", why(&g_raw));
        println!();
    }
    if c.is_none() {
        println!("**coturn was not measured ({}).**", why(&c_raw));
        println!();
    }
    println!("{}", a[2]);
    println!();
    let (gv, cv) = (g.as_ref(), c.as_ref());
    let n = |v: Option<&Value>, p: &str| v.and_then(|v| num(v, p));
    let s = |v: Option<&Value>, p: &str| v.and_then(|v| v.get(p)).map(|x| x.to_string().trim_matches('"').to_owned()).unwrap_or("—".into());
    println!("| figure | gatewayd | coturn | gatewayd / coturn |");
    println!("|---|---|---|---|");
    let row = |name: &str, gs: String, cs: String, r: String| println!("| {name} | {gs} | {cs} | {r} |");
    let both = |p: &str, digits: usize| (fmt(n(gv, p), digits), fmt(n(cv, p), digits), ratio(n(gv, p), n(cv, p)));
    let pair = |v: Option<&Value>, p: &str, q: &str, digits: usize, unit: &str| {
        if v.is_none() { "—".into() } else { format!("{} / {}{unit}", fmt(n(v, p), digits), fmt(n(v, q), digits)) }
    };

    row(
        "allocations ready / failed",
        pair(gv, "established", "failed", 0, ""),
        pair(cv, "established", "failed", 0, ""),
        String::new(),
    );
    let window = s(cv.or(gv), "setup_window");
    let (x, y, r) = both("setup.allocations_per_s", 0);
    row(&format!("setup rate, allocations/s ({window} in flight; 401, Allocate, CreatePermission, ChannelBind each)"), x, y, r);
    row(
        "setup time per allocation p50 / p99",
        pair(gv, "setup.ms.p50", "setup.ms.p99", 2, " ms"),
        pair(cv, "setup.ms.p50", "setup.ms.p99", 2, " ms"),
        format!("{} / {}", ratio(n(gv, "setup.ms.p50"), n(cv, "setup.ms.p50")), ratio(n(gv, "setup.ms.p99"), n(cv, "setup.ms.p99"))),
    );
    let (x, y, r) = both("setup.cpu_ms_per_allocation", 3);
    row("server CPU per allocation set up, ms", x, y, r);
    let (x, y, r) = both("cpu_ms_per_allocation_s", 4);
    row("**server CPU per allocation-second, ms** (utime+stime)", format!("**{x}**"), format!("**{y}**"), format!("**{r}**"));
    let (x, y, r) = both("relayed_per_cpu_s", 0);
    row("relayed packets per server CPU-second", x, y, r);
    let (x, y, r) = both("rss_per_allocation_kib", 1);
    row("**RSS per allocation, KiB** (VmRSS loaded − idle) / allocations", format!("**{x}**"), format!("**{y}**"), format!("**{r}**"));
    let rss = |v: Option<&Value>| {
        if v.is_none() {
            return "—".into();
        }
        let mib = |p: &str| fmt(n(v, p).map(|k| k / 1024.0), 1);
        format!("{} → {} → {} MiB", mib("rss_idle_kib"), mib("rss_loaded_kib"), mib("rss_after_delete_kib"))
    };
    row("VmRSS idle → loaded → after deleting all", rss(gv), rss(cv), String::new());
    let loss = |v: Option<&Value>| if v.is_none() { "—".into() } else { format!("{} / {}", pct(n(v, "c2p.loss")), pct(n(v, "p2c.loss"))) };
    row("loss client→peer / peer→client", loss(gv), loss(cv), ratio(n(gv, "round_trip.loss"), n(cv, "round_trip.loss")));
    let lat = |v: Option<&Value>, p: &str| pair(v, &format!("{p}.ms.p50"), &format!("{p}.ms.p99"), 3, " ms");
    row("**round trip through the relay p50 / p99** (both legs, without the echo's wait in the client)", lat(gv, "round_trip"), lat(cv, "round_trip"), format!("{} / **{}**", ratio(n(gv, "round_trip.ms.p50"), n(cv, "round_trip.ms.p50")), ratio(n(gv, "round_trip.ms.p99"), n(cv, "round_trip.ms.p99"))));
    row("one way client→peer p50 / p99", lat(gv, "c2p"), lat(cv, "c2p"), ratio(n(gv, "c2p.ms.p99"), n(cv, "c2p.ms.p99")));
    row("one way peer→client p50 / p99", lat(gv, "p2c"), lat(cv, "p2c"), ratio(n(gv, "p2c.ms.p99"), n(cv, "p2c.ms.p99")));
    let per_s = |v: Option<&Value>| v.and_then(|v| Some(num(v, "server_runqueue_wait_ms")? / num(v, "window_s")?));
    row("server threads runnable but waiting for CPU 0 (for each other or for other work), ms/s", fmt(per_s(gv), 1), fmt(per_s(cv), 1), String::new());
    row("other work on CPU 0 during the window, ms/s (should be ~0)", fmt(n(gv, "other_work_on_server_cpu_ms_per_s"), 1), fmt(n(cv, "other_work_on_server_cpu_ms_per_s"), 1), String::new());
    row("server idle CPU, ms/s; threads", format!("{}; {}", fmt(n(gv, "server_idle_cpu_ms_per_s"), 2), s(gv, "server_threads")), format!("{}; {}", fmt(n(cv, "server_idle_cpu_ms_per_s"), 2), s(cv, "server_threads")), String::new());
    let client = |v: Option<&Value>| if v.is_none() { "—".into() } else { format!("{} % / {} ms", fmt(n(v, "client.cpu_pct"), 0), fmt(n(v, "client.send_lag_ms.p99"), 2)) };
    row("load client CPU / send lateness p99", client(gv), client(cv), String::new());
    let churn = |v: Option<&Value>| v.and_then(|v| v.get("churn")).filter(|c| !c.is_null()).cloned();
    if churn(gv).is_some() || churn(cv).is_some() {
        let cycles = churn(cv).or(churn(gv)).and_then(|c| c.get("cycles").and_then(Value::as_u64)).unwrap_or(0);
        let (x, y, r) = both("churn.cycles_per_s", 0);
        row(&format!("{cycles} allocate/delete cycles: cycles/s"), x, y, r);
        let (x, y, r) = both("churn.cpu_ms_per_cycle", 3);
        row("server CPU per allocate/delete cycle, ms", x, y, r);
        let after = |v: Option<&Value>| if v.is_none() { "—".into() } else { format!("{} KiB", fmt(n(v, "churn.rss_over_idle_kib"), 0)) };
        row("VmRSS after the cycles over idle", after(gv), after(cv), String::new());
    }
    let errors = |v: Option<&Value>| v.and_then(|v| v.get("errors")).filter(|e| e.as_object().is_some_and(|o| !o.is_empty())).map(|e| e.to_string());
    if let Some(e) = errors(gv) {
        println!();
        println!("gatewayd errors: `{e}`");
    }
    if let Some(e) = errors(cv) {
        println!();
        println!("coturn errors: `{e}`");
    }
}
