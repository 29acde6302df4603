//! What the client reads about the server (and itself) from /proc, and percentiles.

/// CPU seconds (utime + stime, all threads, from /proc/PID/stat) and VmRSS in KiB.
pub fn proc_stat(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    ((ticks(11) + ticks(12)) / hz, rss)
}

/// Nanoseconds on CPU and waiting for one (runnable, not running), summed over the live
/// threads (/proc/PID/task/*/schedstat): nanosecond resolution for short phases such as the
/// allocation burst, where 10 ms clock ticks are too coarse.
pub fn schedstat(pid: &str) -> (u64, u64) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return (0, 0) };
    let mut run = 0;
    let mut wait = 0;
    for t in tasks.flatten() {
        if let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) {
            let v: Vec<u64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
            run += v.first().copied().unwrap_or(0);
            wait += v.get(1).copied().unwrap_or(0);
        }
    }
    (run, wait)
}

/// Busy seconds of one CPU (everything but idle and I/O wait) from /proc/stat.
pub fn cpu_busy_s(cpu: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu}");
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str())) else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    // SAFETY: plain sysconf query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (total - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)) / hz
}

pub fn threads(pid: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// UDP receive-buffer overflows machine-wide (/proc/net/snmp RcvbufErrors).
pub fn rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let vals: Vec<&str> = udp[1].split_whitespace().collect();
    names.iter().position(|n| *n == "RcvbufErrors").and_then(|i| vals.get(i)?.parse().ok()).unwrap_or(0)
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Percentile `q` (0..1) of nanosecond samples (sorted in place), in milliseconds.
pub fn percentile_ms(v: &mut [u32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let ms = v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1e6;
    (ms * 1e4).round() / 1e4
}

pub fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}
