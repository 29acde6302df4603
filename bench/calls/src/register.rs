//! Load client for the REGISTER benchmark: N agents, each on its own WSS connection, register
//! with digest auth once, then re-register at a fixed total rate for a fixed time.
//!
//! `--mode reuse`: after the first challenge every REGISTER carries credentials for the same
//! nonce with the next nonce-count (RFC 7616 section 3.4.5); a server that refuses the reuse
//! answers 401 and the agent answers that challenge (counted as `rechallenged`, still one
//! REGISTER). `--mode fresh`: every REGISTER starts without credentials, takes the 401 and
//! answers it (two requests per REGISTER).
//!
//! The server's CPU (utime + stime of `--server-pids` from /proc) is read at the start and the
//! end of the measured window, so the figure is per REGISTER completed in that window. The
//! client's own CPU and its late ticks are reported so that a client that cannot keep up shows.
//!
//! register-load --url wss://127.0.0.1:18443/ws --dns 6000-6199 --mode reuse|fresh \
//!   --rate 2000 --seconds 30 --server-pids 1234,1235 [--origin ...] [--domain 127.0.0.1]
//!   [--password-prefix pass] [--clk-tck 100]
//!
//! Prints `ready N` once every agent has registered, then one JSON line of results.

#[allow(dead_code)]
mod sip;
mod wss;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use gatewayd::sip::digest::{authorization_value, Challenge, ClientSecret};
use tokio::sync::watch;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use wss::{connect, next_response, tls_connector, Ws};

#[derive(Clone)]
struct Config {
    url: String,
    origin: String,
    domain: String,
    password_prefix: String,
    reuse: bool,
}

/// What one agent did inside the measured window.
#[derive(Default)]
struct Outcome {
    ok: u64,
    /// Reused nonces the server refused with a new challenge (reuse mode).
    rechallenged: u64,
    /// 401s received in the window.
    challenges: u64,
    errors: u64,
    /// Ticks skipped because the previous REGISTER had not finished.
    late: u64,
    latencies_us: Vec<u32>,
}

/// One agent's registration state: its dialog (Call-ID is fixed, CSeq rises) and the challenge
/// it answers with the next nonce-count.
struct Agent {
    dn: String,
    contact: String,
    secret: ClientSecret,
    uri: String,
    cseq: u32,
    challenge: Option<Challenge>,
    nc: u32,
}

impl Agent {
    fn request(&mut self, cfg: &Config, authorized: bool) -> Result<String, String> {
        self.cseq += 1;
        let auth = match (&self.challenge, authorized) {
            (Some(challenge), true) => {
                self.nc += 1;
                Some(authorization_value(challenge, &self.dn, &self.secret, "REGISTER", &self.uri, self.nc, &sip::token()).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        let reg = sip::Register { dn: &self.dn, domain: &cfg.domain, cseq: self.cseq, contact: &self.contact, expires: 3600, authorization: auth.as_deref() };
        Ok(sip::register(&reg))
    }

    /// Takes the challenge of a 401; the nonce-count starts again.
    fn challenged(&mut self, text: &str) -> Result<(), String> {
        let resp = sip::parse(text).ok_or("unparsable 401")?;
        let challenge = resp.all("WWW-Authenticate").find_map(|v| Challenge::parse(v, false).ok()).ok_or("no usable challenge")?;
        self.challenge = Some(challenge);
        self.nc = 0;
        Ok(())
    }

    /// One REGISTER to 200: with the stored challenge (reuse) or without credentials first
    /// (fresh, and the first registration). 401s are counted in `out` when `counting`.
    async fn register(&mut self, ws: &mut Ws, cfg: &Config, out: &mut Outcome, counting: bool) -> Result<(), String> {
        let try_reuse = cfg.reuse && self.challenge.is_some();
        let mut text = self.request(cfg, try_reuse)?;
        // At most two challenges: the first (fresh or refused reuse), and none after credentials.
        for attempt in 0..2 {
            ws.send(WsMessage::text(text)).await.map_err(|e| e.to_string())?;
            let reply = next_response(ws).await?;
            match status(&reply) {
                Some(200) => return Ok(()),
                Some(401) if attempt == 0 => {
                    if counting {
                        out.challenges += 1;
                        if try_reuse {
                            out.rechallenged += 1;
                        }
                    }
                    self.challenged(&reply)?;
                    text = self.request(cfg, true)?;
                }
                _ => return Err(format!("REGISTER: {}", reply.lines().next().unwrap_or(""))),
            }
        }
        Err("challenged again after credentials".into())
    }
}

fn status(text: &str) -> Option<u16> {
    text.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The measured window, sent to every agent once all have registered.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
    period: Duration,
}

async fn run_agent(cfg: Arc<Config>, tls: TlsConnector, dn: String, index: u32, gate: Arc<tokio::sync::Semaphore>, ready: tokio::sync::mpsc::Sender<bool>, mut window: watch::Receiver<Option<Window>>) -> Outcome {
    let mut out = Outcome::default();
    let permit = gate.acquire().await.expect("never closed");
    let mut agent = Agent {
        contact: format!("<sip:{dn}@agent{dn}.invalid;transport=ws>"),
        secret: ClientSecret::Password(format!("{}{dn}", cfg.password_prefix)),
        uri: format!("sip:{}", cfg.domain),
        dn,
        cseq: 0,
        challenge: None,
        nc: 0,
    };
    let mut ws = match connect(&cfg.url, &cfg.origin, &tls).await {
        Ok(ws) => ws,
        Err(e) => {
            eprintln!("agent {}: {e}", agent.dn);
            let _ = ready.send(false).await;
            return out;
        }
    };
    if let Err(e) = agent.register(&mut ws, &cfg, &mut out, false).await {
        eprintln!("agent {}: first REGISTER: {e}", agent.dn);
        let _ = ready.send(false).await;
        return out;
    }
    drop(permit);
    let _ = ready.send(true).await;
    let Ok(w) = window.wait_for(Option::is_some).await.map(|w| w.expect("some")) else { return out };
    // Agents spread evenly over one period: the server sees a steady rate, not bursts.
    let offset = w.period.mul_f64(f64::from(index) / 1e6).min(w.period);
    let mut tick = tokio::time::interval_at((w.start + offset).into(), w.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut expected = w.start + offset;
    loop {
        let at = tick.tick().await.into_std();
        if at >= w.end {
            break;
        }
        // Skipped ticks: the previous REGISTER outlasted a period.
        while expected + w.period <= at {
            expected += w.period;
            out.late += 1;
        }
        expected = at + w.period;
        let sent = Instant::now();
        match agent.register(&mut ws, &cfg, &mut out, true).await {
            Ok(()) if Instant::now() <= w.end => {
                out.ok += 1;
                out.latencies_us.push(sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(()) => {}
            Err(e) => {
                out.errors += 1;
                eprintln!("agent {}: {e}", agent.dn);
                if e.contains("closed") || e.contains("no response") {
                    break;
                }
            }
        }
    }
    out
}

/// utime + stime of the processes, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .filter_map(|s| {
            let rest = &s[s.rfind(") ")? + 2..];
            let mut f = rest.split_whitespace().skip(11);
            Some(f.next()?.parse::<u64>().ok()? + f.next()?.parse::<u64>().ok()?)
        })
        .sum()
}

fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

fn dn_range(spec: &str) -> Result<Vec<String>, String> {
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    let (a, b): (u64, u64) = (a.parse().map_err(|_| "bad --dns")?, b.parse().map_err(|_| "bad --dns")?);
    Ok((a..=b).map(|d| d.to_string()).collect())
}

fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let (mut url, mut origin, mut dns, mut domain, mut mode) = (None, None, None, "127.0.0.1".to_owned(), "reuse".to_owned());
    let (mut prefix, mut rate, mut seconds, mut pids, mut clk_tck) = ("pass".to_owned(), 2000.0f64, 30.0f64, Vec::new(), 100u64);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => url = Some(value),
            "--origin" => origin = Some(value),
            "--dns" => dns = Some(value),
            "--domain" => domain = value,
            "--mode" => mode = value,
            "--password-prefix" => prefix = value,
            "--rate" => rate = value.parse().map_err(|_| "bad --rate")?,
            "--seconds" => seconds = value.parse().map_err(|_| "bad --seconds")?,
            "--server-pids" => pids = value.split(',').filter(|p| !p.is_empty()).map(|p| p.parse().map_err(|_| "bad --server-pids")).collect::<Result<_, _>>()?,
            "--clk-tck" => clk_tck = value.parse().map_err(|_| "bad --clk-tck")?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    let url = url.ok_or("--url is required")?;
    let reuse = match mode.as_str() {
        "reuse" => true,
        "fresh" => false,
        other => return Err(format!("unknown mode {other}")),
    };
    let cfg = Arc::new(Config {
        origin: origin.unwrap_or_else(|| url.replacen("wss://", "https://", 1).split("/ws").next().unwrap_or("").to_owned()),
        url,
        domain,
        password_prefix: prefix,
        reuse,
    });
    let dns = dn_range(&dns.ok_or("--dns is required")?)?;
    let agents = dns.len();
    if rate <= 0.0 || seconds <= 0.0 || agents == 0 {
        return Err("--rate, --seconds and --dns must be positive".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let tls = tls_connector();
        let gate = Arc::new(tokio::sync::Semaphore::new(32));
        let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(agents);
        let (window_tx, window_rx) = watch::channel(None);
        let mut handles = Vec::with_capacity(agents);
        for (i, dn) in dns.into_iter().enumerate() {
            // Where in the period the agent's REGISTERs fall, in millionths.
            let index = (i as u64 * 1_000_000 / agents as u64) as u32;
            handles.push(tokio::spawn(run_agent(cfg.clone(), tls.clone(), dn, index, gate.clone(), ready_tx.clone(), window_rx.clone())));
        }
        drop(ready_tx);
        let mut registered = 0;
        for _ in 0..agents {
            match tokio::time::timeout(Duration::from_secs(120), ready_rx.recv()).await {
                Ok(Some(true)) => registered += 1,
                Ok(Some(false)) => {}
                _ => break,
            }
        }
        println!("ready {registered}");
        if registered == 0 {
            return Err("no agent registered".to_owned());
        }
        let period = Duration::from_secs_f64(agents as f64 / rate);
        let start = Instant::now() + Duration::from_millis(200);
        let end = start + Duration::from_secs_f64(seconds);
        window_tx.send(Some(Window { start, end, period })).map_err(|_| "agents gone")?;
        tokio::time::sleep_until(start.into()).await;
        let (server0, client0) = (cpu_ticks(&pids), cpu_ticks(&[std::process::id()]));
        tokio::time::sleep_until(end.into()).await;
        let (server1, client1) = (cpu_ticks(&pids), cpu_ticks(&[std::process::id()]));
        let wall = start.elapsed().as_secs_f64();
        let mut total = Outcome::default();
        for h in handles {
            let Ok(o) = tokio::time::timeout(Duration::from_secs(25), h).await else { continue };
            let Ok(o) = o else { continue };
            total.ok += o.ok;
            total.rechallenged += o.rechallenged;
            total.challenges += o.challenges;
            total.errors += o.errors;
            total.late += o.late;
            total.latencies_us.extend(o.latencies_us);
        }
        total.latencies_us.sort_unstable();
        let server_cpu = (server1 - server0) as f64 / clk_tck as f64;
        let client_cpu = (client1 - client0) as f64 / clk_tck as f64;
        let per = if total.ok > 0 { server_cpu * 1e6 / total.ok as f64 } else { 0.0 };
        let l = &total.latencies_us;
        println!(
            "{{\"mode\":\"{mode}\",\"agents\":{agents},\"registered\":{registered},\"rate\":{rate},\"seconds\":{seconds},\"ok\":{},\"registers_per_s\":{:.1},\"rechallenged\":{},\"challenges\":{},\"errors\":{},\"late\":{},\"p50_us\":{},\"p99_us\":{},\"max_us\":{},\"server_cpu_s\":{server_cpu:.2},\"server_us_per_register\":{per:.1},\"client_cpu_s\":{client_cpu:.2}}}",
            total.ok,
            total.ok as f64 / wall,
            total.rechallenged,
            total.challenges,
            total.errors,
            total.late,
            percentile(l, 50.0),
            percentile(l, 99.0),
            l.last().copied().unwrap_or(0),
        );
        Ok(())
    })
}
