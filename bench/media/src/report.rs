//! What one run measured: packets sent and received inside the measuring window per
//! direction, one-way latencies (kernel receive time minus the time right before the send
//! call), how late the client itself sent, and the CPU and memory of the bridge and of the
//! client read from /proc, so that a saturated client is visible in the figures.

/// CPU seconds (user + system) and resident KiB of a process.
pub fn proc_stat(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    ((ticks(11) + ticks(12)) / 100.0, rss)
}

/// Nanoseconds all threads of a process spent runnable but waiting for a CPU (schedstat):
/// time a busy machine, not the process, added to latency.
pub fn runqueue_wait_ns(pid: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .sum()
}

/// Busy seconds of one CPU (everything but idle and I/O wait) from /proc/stat.
pub fn cpu_busy_s(cpu: usize) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let name = format!("cpu{cpu}");
    let Some(line) = stat.lines().find(|l| l.split_whitespace().next() == Some(name.as_str())) else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: f64 = v.iter().take(8).sum();
    (total - v.get(3).unwrap_or(&0.0) - v.get(4).unwrap_or(&0.0)) / 100.0
}

/// UDP receive-buffer overflows machine-wide: loss under overload shows up here first.
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

/// The 1-minute load average, for the record next to every figure.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// One direction's counters over the measuring window.
#[derive(Default)]
pub struct Direction {
    pub sent: u64,
    pub received: u64,
    /// One-way latency per received packet, nanoseconds.
    pub latency_ns: Vec<u32>,
}

impl Direction {
    pub fn record(&mut self, sent_ns: u64, kernel_ns: u64) {
        self.received += 1;
        self.latency_ns.push(kernel_ns.saturating_sub(sent_ns).min(u64::from(u32::MAX)) as u32);
    }

    pub fn loss(&self) -> f64 {
        if self.sent == 0 { 1.0 } else { 1.0 - self.received as f64 / self.sent as f64 }
    }
}

#[derive(Default)]
pub struct Window {
    pub start_ns: u64,
    pub end_ns: u64,
    pub b2p: Direction,
    pub p2b: Direction,
    /// How late each scheduled send left the client, nanoseconds: a client that cannot keep
    /// up shows here (and in the achieved rate) before anything else.
    pub send_lag_ns: Vec<u32>,
    /// Received packets whose kernel timestamp could not be tied to them (str0m released
    /// them outside the datagram's own handling); timed at the moment they surfaced.
    pub untimed: u64,
}

impl Window {
    pub fn contains(&self, sent_ns: u64) -> bool {
        self.start_ns != 0 && sent_ns >= self.start_ns && sent_ns < self.end_ns
    }
}

/// Percentile `q` of `v` (sorted in place), in milliseconds.
pub fn percentile_ms(v: &mut [u32], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() as f64 - 1.0) * q).round() as usize] as f64 / 1e6
}
