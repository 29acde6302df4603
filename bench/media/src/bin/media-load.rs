//! Load client for the media bridge: N calls, each a DTLS-SRTP browser side (str0m, full ICE)
//! and a plain RTP side, 50 packets/s each way. Reports the bridge's CPU per call-second, RSS
//! per call, added latency and loss, and the client's own achieved rate and CPU so that a
//! saturated client cannot pass for a slow bridge. Speaks to gatewayd's bench bridge (TCP
//! line protocol) or to rtpengine's ng control protocol. Loopback only, bounded.
//!
//! media-load gatewayd|rtpengine CONTROL_ADDR SERVER_PID CALLS SECONDS
//!
//! With MEDIA_LOAD_CODEC=opus (transcoding mode) the browser sides negotiate Opus and replay
//! a real Opus stream, the plain sides send a PCMU tone, and the bridge must transcode both
//! ways: every received packet is checked for the other codec's payload type and size, a
//! sample is decoded for its energy, and loss comes from the received sequence numbers.
//! Latency is not measured in that mode (the payload is audio, it carries no send time).
//!
//! All browser sides share one socket and all plain sides another (calls are told apart by
//! the bridge's address they come from), so datagrams are read and written in batches, and
//! the client wakes on a fixed tick (MEDIA_LOAD_TICK_US, default 250 µs) to do all that is due.
//! Latency is one-way: the kernel's receive timestamp minus the wall-clock time taken right
//! before the send call, so neither the client's scheduling nor its read backlog counts.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use media_bench::audio::{self, OpusProbe, RxCheck, SeqLoss, PCMU_FRAME};
use media_bench::control::{plain_ssrc, Control};
use media_bench::net::{self, wall_ns, TxBatch, BATCH};
use media_bench::report::{cpu_busy_s, load_average, percentile_ms, proc_stat, rcvbuf_errors, runqueue_wait_ns, Window};
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

/// Outside the kernel's ephemeral range, so the bridge's own port binds never collide.
const BROWSER_ADDR: &str = "127.0.0.1:61000";
const PLAIN_ADDR: &str = "127.0.0.1:61002";
const PERIOD_NS: u64 = 20_000_000;
/// Send times of recent browser-side packets kept per call, by sequence number (5 s worth,
/// so even a long stall of the client does not lose track of packets in flight).
const RING: usize = 256;
/// Tag of queued datagrams that are not browser-side media (STUN, DTLS, RTCP).
const NO_TAG: u32 = u32::MAX;

struct Call {
    rtc: Rtc,
    mid: Option<Mid>,
    bridge_internal: SocketAddr,
    seq_b: u64,
    seq_p: u16,
    deadline: Option<Instant>,
    /// (sequence number, wall-clock ns right before the send call) of browser-side packets.
    sent_at: [(u16, u64); RING],
    /// Payload type the browser side sends: PCMU, or Opus as negotiated in transcoding mode.
    pt: u8,
    /// Transcoding mode: loss of the streams received on the browser and the plain side.
    rx_browser: SeqLoss,
    rx_plain: SeqLoss,
    /// The SSRC the bridge's browser-side media comes with, once seen (rtpengine does not
    /// announce the one its transcoder picks, and str0m drops media from unknown SSRCs).
    rx_ssrc: Option<u32>,
    /// Decoder of the received Opus, for a sample of the calls (transcoding mode).
    probe: Option<OpusProbe>,
}

/// Transcoding mode's checks of what arrives on each side.
#[derive(Default)]
struct Transcoded {
    on: bool,
    browser: RxCheck,
    plain: RxCheck,
}

/// Where received payloads are accounted, and the kernel time of the datagram being handled.
struct Rx<'a> {
    window: &'a mut Window,
    kernel_ns: Option<u64>,
    tc: &'a mut Transcoded,
}

fn browser_rtc(local: SocketAddr, opus: bool) -> Rtc {
    let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs().clear_extension_map();
    if opus {
        cfg.codec_config().enable_opus(true, false);
    } else {
        cfg.codec_config().enable_pcmu(true, false);
    }
    cfg.codec_config().add_config(Pt::from(101), None, Codec::Tele, Frequency::EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    rtc
}

/// Drains str0m's output (str0m's contract after every input); a packet str0m queued for
/// "now" is released at once rather than on the next timer pass.
fn pump(c: &mut Call, i: usize, heap: &mut BinaryHeap<Reverse<(Instant, usize)>>, tx: &mut TxBatch, rx: &mut Rx<'_>) {
    for _ in 0..2 {
        loop {
            match c.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    if c.deadline != Some(t) {
                        c.deadline = Some(t);
                        heap.push(Reverse((t, i)));
                    }
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    let media = t.contents.len() > 12 && t.contents[0] >> 6 == 2 && t.contents[1] & 0x7f == c.pt;
                    tx.queue(t.destination, if media { i as u32 } else { NO_TAG }, |b| b.extend_from_slice(&t.contents));
                }
                Ok(Output::Event(Event::MediaAdded(m))) => c.mid = Some(m.mid),
                Ok(Output::Event(Event::RtpPacket(p))) if rx.tc.on => {
                    // Transcoded toward the browser: Opus with the negotiated type, never a
                    // G.711-sized payload passed through.
                    let at = rx.kernel_ns.unwrap_or_else(wall_ns);
                    if rx.window.contains(at) {
                        let ok = *p.header.payload_type == c.pt && !p.payload.is_empty() && p.payload.len() < PCMU_FRAME;
                        rx.tc.browser.verdict(ok);
                        c.rx_browser.record(*p.seq_no);
                        if let (true, Some(probe)) = (ok, c.probe.as_mut()) {
                            probe.check(&p.payload, &mut rx.tc.browser);
                        }
                    }
                }
                Ok(Output::Event(Event::RtpPacket(p))) => {
                    if *p.header.payload_type == 0 && p.payload.len() >= 8 {
                        let sent = u64::from_be_bytes(p.payload[..8].try_into().unwrap());
                        if rx.window.contains(sent) {
                            let at = rx.kernel_ns.unwrap_or_else(|| {
                                rx.window.untimed += 1;
                                wall_ns()
                            });
                            rx.window.p2b.record(sent, at);
                        }
                    }
                }
                Ok(Output::Event(_)) => {}
                Err(e) => {
                    eprintln!("call {i}: {e}");
                    return;
                }
            }
        }
        let now = Instant::now();
        if c.deadline.is_some_and(|d| d <= now) {
            c.deadline = None;
            let _ = c.rtc.handle_input(Input::Timeout(now));
        } else {
            return;
        }
    }
}

/// Tells str0m to expect the SSRC of an (S)RTP datagram from the bridge if it is new. The
/// header is in the clear in SRTP; RTCP (types 200–207 after rtcp-mux) is left alone.
fn learn_rx_ssrc(c: &mut Call, b: &[u8]) {
    if b.len() < 12 || b[0] >> 6 != 2 || (200..=207).contains(&b[1]) {
        return;
    }
    let ssrc = u32::from_be_bytes([b[8], b[9], b[10], b[11]]);
    if c.rx_ssrc != Some(ssrc) {
        if let Some(m) = c.mid {
            c.rtc.direct_api().expect_stream_rx(str0m::rtp::Ssrc::from(ssrc), None, m, None);
            c.rx_ssrc = Some(ssrc);
        }
    }
}

/// Start of the RTP payload (after CSRCs and header extension); None for RTCP or garbage.
fn payload_offset(b: &[u8]) -> Option<usize> {
    if b.len() < 12 || b[0] >> 6 != 2 || (200..=207).contains(&b[1]) {
        return None;
    }
    let mut off = 12 + usize::from(b[0] & 0x0f) * 4;
    if b[0] & 0x10 != 0 {
        let words = u16::from_be_bytes([*b.get(off + 2)?, *b.get(off + 3)?]);
        off += 4 + usize::from(words) * 4;
    }
    (off + 8 <= b.len()).then_some(off)
}

/// Where the client's time went at worst: one loop pass of work (the client's own backlog),
/// or a sleep that ended late (the client was not scheduled: a busy machine).
#[derive(Default)]
struct Stalls {
    work_max: Duration,
    oversleep_max: Duration,
}

/// Call index by the bridge's port its datagrams come from (all on 127.0.0.1).
struct PortMap(Vec<u32>);

impl PortMap {
    fn get(&self, a: SocketAddr) -> Option<usize> {
        let i = self.0[usize::from(a.port())];
        (i != u32::MAX).then_some(i as usize)
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: media-load gatewayd|rtpengine CONTROL_ADDR SERVER_PID CALLS SECONDS");
        std::process::exit(2);
    }
    let (mode, pid) = (a[1].as_str(), a[3].clone());
    let n: usize = a[4].parse().unwrap();
    let secs: u64 = a[5].parse().unwrap();
    assert!(n > 0 && n <= 2000 && secs <= 600, "bounded load");
    let load_before = load_average();
    let (_, rss_before) = proc_stat(&pid);
    let browser_local: SocketAddr = BROWSER_ADDR.parse().unwrap();
    let plain_local: SocketAddr = PLAIN_ADDR.parse().unwrap();
    let transcode = std::env::var("MEDIA_LOAD_CODEC").is_ok_and(|c| c == "opus");
    let mut tc = Transcoded { on: transcode, ..Default::default() };
    let (opus_frames, pcmu_frames) = if transcode { (audio::opus_stream(), audio::pcmu_stream()) } else { (Vec::new(), Vec::new()) };
    let learn_ssrc = transcode && mode == "rtpengine";
    let (mut brx, mut btx) = net::bind(browser_local);
    let (mut prx, mut ptx) = net::bind(plain_local);

    // --- set up calls ------------------------------------------------------------------
    let mut control = Control::connect(mode, &a[2], transcode);
    let mut calls = Vec::with_capacity(n);
    let (mut by_public, mut by_internal) = (PortMap(vec![u32::MAX; 65536]), PortMap(vec![u32::MAX; 65536]));
    let setup_start = Instant::now();
    for i in 0..n {
        let mut rtc = browser_rtc(browser_local, transcode);
        let s = control.setup(i, plain_local.port(), &mut rtc);
        let pt = if transcode { s.opus_pt.expect("the browser offer has Opus") } else { 0 };
        by_public.0[usize::from(s.bridge_public.port())] = i as u32;
        by_internal.0[usize::from(s.bridge_internal.port())] = i as u32;
        calls.push(Call { rtc, mid: s.mid, bridge_internal: s.bridge_internal, seq_b: 1, seq_p: 1, deadline: None, sent_at: [(0, 0); RING], pt, rx_browser: SeqLoss::default(), rx_plain: SeqLoss::default(), rx_ssrc: None, probe: (transcode && i % audio::PROBE_EVERY_NTH_CALL == 0).then(OpusProbe::new) });
    }
    eprintln!("{n} calls set up in {:.1}s", setup_start.elapsed().as_secs_f64());

    // --- run -----------------------------------------------------------------------------
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    let mut w = Window::default();
    for (i, c) in calls.iter_mut().enumerate() {
        pump(c, i, &mut heap, &mut btx, &mut Rx { window: &mut w, kernel_ns: None, tc: &mut tc });
    }
    // Call k % n sends its k / n-th packet at origin + (k / n) periods + its stagger offset.
    let origin = Instant::now();
    let scheduled = |k: u64| origin + Duration::from_nanos((k / n as u64) * PERIOD_NS + (k % n as u64) * PERIOD_NS / n as u64);
    let mut k: u64 = 0;
    let mut next_tick = origin;
    let connect_deadline = origin + Duration::from_secs(30);
    let mut phase = 0; // 0 connecting, 1 warmup, 2 measuring, 3 draining
    let mut phase_end = connect_deadline;
    let (mut cpu0, mut own0, mut snmp0, mut t0) = (0.0, 0.0, 0, origin);
    let (mut wait0, mut own_wait0) = (0, 0);
    // The bridge runs pinned to CPU 0 (run.sh): whatever else kept that CPU busy competed
    // with it.
    let bridge_cpu = std::env::var("MEDIA_BRIDGE_CPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut busy0 = 0.0;
    let mut result = None;
    let mut inside = None;
    let own = std::process::id().to_string();
    let payload_fill = [0xffu8; 152];
    let tick = Duration::from_micros(std::env::var("MEDIA_LOAD_TICK_US").ok().and_then(|v| v.parse().ok()).unwrap_or(250));
    let mut wake = origin;
    let mut woke = origin;
    let mut stalls = Stalls::default();
    loop {
        // Incoming: a bounded number of batches per side, so sends are never starved.
        for _ in 0..8 {
            let now = Instant::now();
            let got = brx.recv_batch(|d| {
                let Some(i) = by_public.get(d.source) else { return };
                let c = &mut calls[i];
                if learn_ssrc {
                    learn_rx_ssrc(c, d.data);
                }
                let Ok(contents) = d.data.try_into() else { return };
                let _ = c.rtc.handle_input(Input::Receive(now, Receive { proto: Protocol::Udp, source: d.source, destination: browser_local, contents }));
                pump(c, i, &mut heap, &mut btx, &mut Rx { window: &mut w, kernel_ns: Some(d.kernel_ns), tc: &mut tc });
            });
            if got < BATCH {
                break;
            }
        }
        for _ in 0..8 {
            let got = prx.recv_batch(|d| {
                let (Some(i), Some(off)) = (by_internal.get(d.source), payload_offset(d.data)) else { return };
                if transcode {
                    // Transcoded toward the SIP side: PCMU, 20 ms.
                    if w.contains(d.kernel_ns) {
                        let ok = d.data[1] & 0x7f == 0 && d.data.len() - off == PCMU_FRAME;
                        tc.plain.verdict(ok);
                        let seq = u16::from_be_bytes([d.data[2], d.data[3]]);
                        calls[i].rx_plain.record16(seq);
                        if ok && i % audio::PROBE_EVERY_NTH_CALL == 0 {
                            let pcm: Vec<i16> = d.data[off..].iter().map(|&b| audio::ulaw_decode(b)).collect();
                            tc.plain.energy(&pcm);
                        }
                    }
                    return;
                }
                let seq = u64::from_be_bytes(d.data[off..off + 8].try_into().unwrap());
                let (s, sent) = calls[i].sent_at[seq as usize % RING];
                if s == seq as u16 && w.contains(sent) {
                    w.b2p.record(sent, d.kernel_ns);
                }
            });
            if got < BATCH {
                break;
            }
        }
        // Timers.
        let now = Instant::now();
        while let Some(Reverse((t, i))) = heap.peek().copied() {
            if t > now {
                break;
            }
            heap.pop();
            if calls[i].deadline != Some(t) {
                continue;
            }
            calls[i].deadline = None;
            let _ = calls[i].rtc.handle_input(Input::Timeout(now));
            pump(&mut calls[i], i, &mut heap, &mut btx, &mut Rx { window: &mut w, kernel_ns: None, tc: &mut tc });
        }
        // Scheduled sends, in stagger order.
        let sending = phase < 3;
        while scheduled(k) <= now {
            let due = scheduled(k);
            let i = (k % n as u64) as usize;
            k += 1;
            let c = &mut calls[i];
            if !sending || !c.rtc.is_connected() || c.mid.is_none() {
                continue;
            }
            let t = Instant::now();
            if w.contains(wall_ns()) {
                w.send_lag_ns.push(t.saturating_duration_since(due).as_nanos().min(u128::from(u32::MAX)) as u32);
            }
            // Browser side: the payload carries the sequence number; the send time is kept
            // by the client when the encrypted packet actually leaves.
            c.seq_b += 1;
            let (payload, ts): (Arc<[u8]>, u32) = if transcode {
                (Arc::from(&opus_frames[c.seq_b as usize % opus_frames.len()][..]), (c.seq_b * 960) as u32)
            } else {
                let mut payload = [0xffu8; 160];
                payload[..8].copy_from_slice(&c.seq_b.to_be_bytes());
                (Arc::from(&payload[..]), (c.seq_b * 160) as u32)
            };
            if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(c.mid.unwrap(), None) {
                tx.write_rtp(RtpWrite::new(Pt::from(c.pt), SeqNo::from(c.seq_b), ts, t, payload));
            }
            pump(c, i, &mut heap, &mut btx, &mut Rx { window: &mut w, kernel_ns: None, tc: &mut tc });
            // Plain side: the send time is written into the payload right before sending.
            c.seq_p = c.seq_p.wrapping_add(1);
            let seq_p = c.seq_p;
            ptx.queue(c.bridge_internal, i as u32, |b| {
                b.extend_from_slice(&[0x80, 0]);
                b.extend_from_slice(&seq_p.to_be_bytes());
                b.extend_from_slice(&(u32::from(seq_p) * 160).to_be_bytes());
                b.extend_from_slice(&plain_ssrc(i).to_be_bytes());
                if transcode {
                    b.extend_from_slice(&pcmu_frames[usize::from(seq_p) % pcmu_frames.len()]);
                } else {
                    b.extend_from_slice(&[0; 8]);
                    b.extend_from_slice(&payload_fill);
                }
            });
        }
        btx.flush(|now, tag, b| {
            if tag != NO_TAG {
                let seq = u16::from_be_bytes([b[2], b[3]]);
                calls[tag as usize].sent_at[usize::from(seq) % RING] = (seq, now);
                if w.contains(now) {
                    w.b2p.sent += 1;
                }
            }
        });
        ptx.flush(|now, _, b| {
            if !transcode {
                b[12..20].copy_from_slice(&now.to_be_bytes());
            }
            if w.contains(now) {
                w.p2b.sent += 1;
            }
        });

        let now = Instant::now();
        if now >= next_tick {
            next_tick += Duration::from_millis(20);
            match phase {
                0 if calls.iter().all(|c| c.rtc.is_connected()) => {
                    eprintln!("all connected after {:.1}s", origin.elapsed().as_secs_f64());
                    phase = 1;
                    phase_end = now + Duration::from_secs(3);
                }
                0 if now > connect_deadline => {
                    let up = calls.iter().filter(|c| c.rtc.is_connected()).count();
                    eprintln!("only {up}/{n} connected; measuring those");
                    phase = 1;
                    phase_end = now + Duration::from_secs(3);
                }
                1 if now >= phase_end => {
                    phase = 2;
                    phase_end = now + Duration::from_secs(secs);
                    w.start_ns = wall_ns();
                    w.end_ns = w.start_ns + secs * 1_000_000_000;
                    control.bridge_latency(); // restarts the bridge's own histogram
                    (cpu0, _) = proc_stat(&pid);
                    (own0, _) = proc_stat(&own);
                    snmp0 = rcvbuf_errors();
                    (wait0, own_wait0) = (runqueue_wait_ns(&pid), runqueue_wait_ns(&own));
                    busy0 = cpu_busy_s(bridge_cpu);
                    (btx.longest_send_ns, ptx.longest_send_ns) = (0, 0);
                    t0 = now;
                }
                2 if now >= phase_end => {
                    let (cpu1, rss1) = proc_stat(&pid);
                    let (own1, _) = proc_stat(&own);
                    inside = control.bridge_latency();
                    let elapsed = now.duration_since(t0).as_secs_f64();
                    let connected = calls.iter().filter(|c| c.rtc.is_connected()).count();
                    let waited = (runqueue_wait_ns(&pid) - wait0, runqueue_wait_ns(&own) - own_wait0);
                    let others = (cpu_busy_s(bridge_cpu) - busy0 - (cpu1 - cpu0)).max(0.0);
                    result = Some((cpu1 - cpu0, own1 - own0, elapsed, rss1, connected, waited, others));
                    phase = 3;
                    phase_end = now + Duration::from_millis(500);
                }
                3 if now >= phase_end => break,
                _ => {}
            }
        }
        // Wake on a fixed tick rather than per datagram or per send: the kernel timestamps
        // make the time a datagram waits for the next tick invisible to the figures, and a
        // wakeup per packet (tens of thousands a second) cost the client more than the calls.
        wake += tick;
        let now = Instant::now();
        let measuring = phase == 2;
        if measuring {
            stalls.work_max = stalls.work_max.max(now.saturating_duration_since(woke));
        }
        if wake > now {
            std::thread::sleep(wake - now);
            woke = Instant::now();
            if measuring {
                stalls.oversleep_max = stalls.oversleep_max.max(woke.saturating_duration_since(wake));
            }
        } else {
            wake = now;
            woke = now;
        }
    }

    let (cpu, own_cpu, elapsed, rss1, connected, (server_waited, own_waited), others) = result.unwrap();
    // The window is exactly `secs` of send stamps; `elapsed` runs to the next phase check.
    let nominal = (connected as f64 * 50.0 * secs as f64).max(1.0);
    let (b2p_p99, p2b_p99) = (percentile_ms(&mut w.b2p.latency_ns, 0.99), percentile_ms(&mut w.p2b.latency_ns, 0.99));
    for c in &calls {
        tc.browser.add_loss(&c.rx_browser);
        tc.plain.add_loss(&c.rx_plain);
    }
    let (loss_b2p, loss_p2b) = if transcode { (tc.plain.loss(), tc.browser.loss()) } else { (w.b2p.loss(), w.p2b.loss()) };
    let mut all: Vec<u32> = w.b2p.latency_ns.iter().chain(w.p2b.latency_ns.iter()).copied().collect();
    println!(
        "{{\"mode\":\"{mode}\",\"calls\":{n},\"connected\":{connected},\"seconds\":{elapsed:.1},\"server_cpu_s\":{cpu:.2},\"cpu_ms_per_call_second\":{:.4},\"rss_kib_per_call\":{:.1},\
\"latency_ms_p50\":{:.3},\"latency_ms_p99\":{:.3},\"latency_ms_max\":{:.3},\"latency_ms_p99_b2p\":{b2p_p99:.3},\"latency_ms_p99_p2b\":{p2b_p99:.3},\
\"loss_browser_to_plain\":{:.5},\"loss_plain_to_browser\":{:.5},\"rcvbuf_errors\":{},\"bridge_forward_us\":{},\
\"client_rate_b2p\":{:.4},\"client_rate_p2b\":{:.4},\"client_send_lag_ms_p99\":{:.3},\"client_cpu_pct\":{:.1},\"client_send_errors\":{},\"client_socket_drops\":{},\"client_longest_send_ms\":{:.2},\"untimed\":{},\"others_on_bridge_cpu_ms_per_s\":{:.1},\"server_runqueue_wait_ms_per_s\":{:.2},\"client_runqueue_wait_ms_per_s\":{:.2},\"client_work_max_ms\":{:.1},\"client_oversleep_max_ms\":{:.1},\
\"load_before\":\"{load_before}\",\"load_after\":\"{}\",\"transcode\":{transcode},\"rx_browser\":{},\"rx_plain\":{}}}",
        cpu * 1000.0 / (connected.max(1) as f64 * elapsed),
        (rss1 as f64 - rss_before as f64) / n as f64,
        percentile_ms(&mut all, 0.5),
        percentile_ms(&mut all, 0.99),
        percentile_ms(&mut all, 1.0),
        loss_b2p,
        loss_p2b,
        rcvbuf_errors() - snmp0,
        inside.unwrap_or_else(|| "null".to_owned()),
        w.b2p.sent as f64 / nominal,
        w.p2b.sent as f64 / nominal,
        percentile_ms(&mut w.send_lag_ns, 0.99),
        own_cpu * 100.0 / elapsed,
        btx.send_errors + ptx.send_errors,
        brx.drops + prx.drops,
        btx.longest_send_ns.max(ptx.longest_send_ns) as f64 / 1e6,
        w.untimed,
        others * 1000.0 / elapsed,
        server_waited as f64 / 1e6 / elapsed,
        own_waited as f64 / 1e6 / elapsed,
        stalls.work_max.as_secs_f64() * 1000.0,
        stalls.oversleep_max.as_secs_f64() * 1000.0,
        load_average(),
        tc.browser.json(),
        tc.plain.json(),
    );
}
