//! Load client for the media bridge: N calls, each a DTLS-SRTP browser side (str0m, full ICE)
//! and a plain RTP side, 50 packets/s each way. Reports the bridge's CPU per call-second, RSS
//! per call, added latency and loss. Speaks to gatewayd's bench bridge (TCP line protocol) or
//! to rtpengine's ng control protocol. Loopback only, bounded in calls and time.
//!
//! media-load gatewayd|rtpengine CONTROL_ADDR SERVER_PID CALLS SECONDS

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use str0m::change::SdpOffer;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::rtp::{RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc};

const BROWSER_BASE: u16 = 61000;
const PLAIN_BASE: u16 = 63000;

struct Call {
    rtc: Rtc,
    mid: Option<Mid>,
    browser: UdpSocket,
    browser_addr: SocketAddr,
    plain: UdpSocket,
    target: SocketAddr,
    seq_b: u64,
    seq_p: u16,
    deadline: Option<Instant>,
    /// Calls send at staggered offsets inside each 20 ms period, as independent phones would.
    next_send: Instant,
}

fn read_stat(pid: &str) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let tick = 100.0;
    let cpu = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0) + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status.lines().find(|l| l.starts_with("VmRSS")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
    (cpu / tick, rss)
}

fn rcvbuf_errors() -> u64 {
    let s = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = s.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let vals: Vec<&str> = udp[1].split_whitespace().collect();
    names.iter().position(|n| *n == "RcvbufErrors").and_then(|i| vals.get(i)?.parse().ok()).unwrap_or(0)
}

// --- bencode for rtpengine's ng protocol --------------------------------------------------
enum B {
    S(String),
    L(Vec<B>),
    D(Vec<(String, B)>),
}

fn benc(b: &B, out: &mut Vec<u8>) {
    match b {
        B::S(s) => out.extend_from_slice(format!("{}:{}", s.len(), s).as_bytes()),
        B::L(l) => {
            out.push(b'l');
            l.iter().for_each(|x| benc(x, out));
            out.push(b'e');
        }
        B::D(d) => {
            out.push(b'd');
            let mut d: Vec<&(String, B)> = d.iter().collect();
            d.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, v) in d {
                benc(&B::S(k.clone()), out);
                benc(v, out);
            }
            out.push(b'e');
        }
    }
}

/// Finds the string value of `key` in a bencoded reply (flat search is enough for sdp/result).
fn bdec_str(buf: &[u8], key: &str) -> Option<String> {
    let pat = format!("{}:{}", key.len(), key);
    let at = buf.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let colon = buf[at..].iter().position(|&c| c == b':')? + at;
    let n: usize = std::str::from_utf8(&buf[at..colon]).ok()?.parse().ok()?;
    Some(String::from_utf8_lossy(buf.get(colon + 1..colon + 1 + n)?).into_owned())
}

fn ng(sock: &StdUdp, server: SocketAddr, cookie: &str, msg: B) -> Vec<u8> {
    let mut out = format!("{cookie} ").into_bytes();
    benc(&msg, &mut out);
    sock.send_to(&out, server).unwrap();
    let mut buf = vec![0u8; 65536];
    let (n, _) = sock.recv_from(&mut buf).expect("rtpengine replies");
    buf.truncate(n);
    buf
}

fn s(x: &str) -> B {
    B::S(x.to_owned())
}

fn plain_offer(port: u16) -> String {
    format!("v=0\r\no=srv 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n")
}

fn target_of(sdp: &str) -> SocketAddr {
    let ip = sdp.lines().find_map(|l| l.strip_prefix("c=IN IP4 ")).expect("c= line").trim();
    let port = sdp.lines().find_map(|l| l.strip_prefix("m=audio ")).and_then(|l| l.split(' ').next()).expect("m= line");
    format!("{ip}:{port}").parse().unwrap()
}

fn mid_of(sdp: &str) -> Option<Mid> {
    sdp.lines().find_map(|l| l.trim_end().strip_prefix("a=mid:")).map(Mid::from)
}

/// rtpengine's WebRTC offer has no a=mid and no BUNDLE group, which str0m requires.
fn with_mid(sdp: &str) -> String {
    if sdp.contains("a=mid:") {
        return sdp.to_owned();
    }
    let mut out = String::new();
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=audio") {
            out.push_str("a=group:BUNDLE 0\r\n");
        }
        out.push_str(line);
        if line.starts_with("m=audio") {
            out.push_str("a=mid:0\r\n");
        }
    }
    out
}

fn browser_rtc(local: SocketAddr) -> Rtc {
    let mut cfg = Rtc::builder().set_rtp_mode(true).clear_codecs().clear_extension_map();
    cfg.codec_config().enable_pcmu(true, false);
    cfg.codec_config().add_config(Pt::from(101), None, Codec::Tele, Frequency::EIGHT_KHZ, None, FormatParams::parse_line("0-16"));
    let mut rtc = cfg.build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    rtc
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 6 {
        eprintln!("usage: media-load gatewayd|rtpengine CONTROL_ADDR SERVER_PID CALLS SECONDS");
        std::process::exit(2);
    }
    let (mode, control, pid) = (a[1].as_str(), a[2].clone(), a[3].clone());
    let n: usize = a[4].parse().unwrap();
    let secs: u64 = a[5].parse().unwrap();
    assert!(n <= 2000 && secs <= 600, "bounded load");
    let (_, rss_before) = read_stat(&pid);

    // --- set up calls ------------------------------------------------------------------
    let mut calls = Vec::with_capacity(n);
    let mut tcp = (mode == "gatewayd").then(|| TcpStream::connect(&control).expect("bridge control"));
    if let Some(t) = &tcp {
        t.set_nodelay(true).unwrap();
    }
    let mut lines = tcp.as_ref().map(|t| BufReader::new(t.try_clone().unwrap()));
    let ng_sock = StdUdp::bind("127.0.0.1:0").unwrap();
    ng_sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let ng_server: Option<SocketAddr> = (mode == "rtpengine").then(|| control.parse().unwrap());
    let setup_start = Instant::now();
    for i in 0..n {
        let browser_addr: SocketAddr = format!("127.0.0.1:{}", BROWSER_BASE + i as u16).parse().unwrap();
        let plain_addr: SocketAddr = format!("127.0.0.1:{}", PLAIN_BASE + i as u16).parse().unwrap();
        let browser = UdpSocket::bind(browser_addr).expect("browser port free");
        let plain = UdpSocket::bind(plain_addr).expect("plain port free");
        let mut rtc = browser_rtc(browser_addr);
        let target;
        let mid;
        if let (Some(t), Some(l)) = (tcp.as_mut(), lines.as_mut()) {
            writeln!(t, "CALL {}", plain_addr.port()).unwrap();
            let mut line = String::new();
            l.read_line(&mut line).unwrap();
            let offer = line.strip_prefix("OFFER ").unwrap_or_else(|| panic!("bridge: {line}")).trim().replace("\\n", "\r\n");
            mid = mid_of(&offer);
            let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
            writeln!(t, "ANSWER {}", answer.to_sdp_string().replace("\r\n", "\\n")).unwrap();
            line.clear();
            l.read_line(&mut line).unwrap();
            target = line.strip_prefix("OK ").unwrap_or_else(|| panic!("bridge: {line}")).trim().parse().unwrap();
        } else {
            let server = ng_server.unwrap();
            let (cid, ft, tt) = (format!("bench-{i}-{}", std::process::id()), format!("f{i}"), format!("t{i}"));
            let reply = ng(&ng_sock, server, &format!("o{i}"), B::D(vec![
                ("command".into(), s("offer")),
                ("call-id".into(), s(&cid)),
                ("from-tag".into(), s(&ft)),
                ("sdp".into(), s(&plain_offer(plain_addr.port()))),
                ("ICE".into(), s("force")),
                ("DTLS".into(), s("passive")),
                ("transport-protocol".into(), s("UDP/TLS/RTP/SAVPF")),
                ("rtcp-mux".into(), B::L(vec![s("require")])),
                ("SDES".into(), B::L(vec![s("off")])),
            ]));
            let offer = bdec_str(&reply, "sdp").unwrap_or_else(|| panic!("rtpengine offer: {}", String::from_utf8_lossy(&reply)));
            let offer = with_mid(&offer);
            mid = mid_of(&offer);
            let answer = rtc.sdp_api().accept_offer(SdpOffer::from_sdp_string(&offer).unwrap()).unwrap();
            let reply = ng(&ng_sock, server, &format!("a{i}"), B::D(vec![
                ("command".into(), s("answer")),
                ("call-id".into(), s(&cid)),
                ("from-tag".into(), s(&ft)),
                ("to-tag".into(), s(&tt)),
                ("sdp".into(), s(&answer.to_sdp_string())),
                ("transport-protocol".into(), s("RTP/AVP")),
                ("ICE".into(), s("remove")),
                ("rtcp-mux".into(), B::L(vec![s("demux")])),
            ]));
            // rtpengine passes the plain side's SSRC through without announcing it in SDP.
            if let Some(m) = mid {
                rtc.direct_api().expect_stream_rx(str0m::rtp::Ssrc::from(0x1000 + i as u32), None, m, None);
            }
            let plain_answer = bdec_str(&reply, "sdp").unwrap_or_else(|| panic!("rtpengine answer: {}", String::from_utf8_lossy(&reply)));
            target = target_of(&plain_answer);
        }
        calls.push(Call { rtc, mid, browser, browser_addr, plain, target, seq_b: 1, seq_p: 1, deadline: None, next_send: Instant::now() });
    }
    eprintln!("{n} calls set up in {:.1}s", setup_start.elapsed().as_secs_f64());

    // --- run -----------------------------------------------------------------------------
    let mut poll = Poll::new().unwrap();
    for (i, c) in calls.iter_mut().enumerate() {
        poll.registry().register(&mut c.browser, Token(i * 2), Interest::READABLE).unwrap();
        poll.registry().register(&mut c.plain, Token(i * 2 + 1), Interest::READABLE).unwrap();
    }
    let origin = Instant::now();
    for (i, c) in calls.iter_mut().enumerate() {
        c.next_send = origin + Duration::from_micros(20_000 * i as u64 / n as u64);
    }
    let mut heap: BinaryHeap<Reverse<(Instant, usize)>> = BinaryHeap::new();
    for i in 0..n {
        drain(&mut calls[i], i, &mut heap, origin, &mut None);
    }
    let mut events = Events::with_capacity(2048);
    let mut buf = vec![0u8; 2048];
    let mut next_tick = Instant::now();
    let connect_deadline = Instant::now() + Duration::from_secs(30);
    let mut phase = 0; // 0 connecting, 1 warmup, 2 measuring, 3 draining
    let mut phase_end = connect_deadline;
    let mut meas = Meas::default();
    let mut window: Option<(u64, u64)> = None;
    let (mut cpu0, mut snmp0, mut t0) = (0.0, 0, Instant::now());
    let mut result = None;
    let mut inside = None;
    loop {
        let now = Instant::now();
        let wait = heap.peek().map(|Reverse((t, _))| t.saturating_duration_since(now)).unwrap_or(Duration::from_millis(5)).min(next_tick.saturating_duration_since(now)).min(Duration::from_micros(500));
        poll.poll(&mut events, Some(wait)).unwrap();
        let mut rec = if phase >= 2 { Some(&mut meas) } else { None };
        for ev in events.iter() {
            let (i, plain) = (ev.token().0 / 2, ev.token().0 % 2 == 1);
            let c = &mut calls[i];
            loop {
                let r = if plain { c.plain.recv_from(&mut buf) } else { c.browser.recv_from(&mut buf) };
                let (len, src) = match r {
                    Ok(x) => x,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => continue,
                };
                if plain {
                    if let Some(off) = payload_offset(&buf[..len]) {
                        record(&mut rec, &buf[off..len], origin, window, false);
                    }
                } else {
                    let input = Input::Receive(Instant::now(), Receive { proto: Protocol::Udp, source: src, destination: c.browser_addr, contents: buf[..len].try_into().unwrap() });
                    c.rtc.handle_input(input).unwrap();
                    drain(c, i, &mut heap, origin, &mut rec);
                }
            }
        }
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
            calls[i].rtc.handle_input(Input::Timeout(now)).unwrap();
            drain(&mut calls[i], i, &mut heap, origin, &mut rec);
        }
        let sending = phase < 3;
        for (i, c) in calls.iter_mut().enumerate() {
                if c.next_send > now {
                    continue;
                }
                c.next_send += Duration::from_millis(20);
                if !sending || !c.rtc.is_connected() || c.mid.is_none() {
                    continue;
                }
                let now = Instant::now();
                let stamp = now.duration_since(origin).as_micros() as u64;
                let mut payload = vec![0xffu8; 160];
                payload[..8].copy_from_slice(&stamp.to_be_bytes());
                c.seq_b += 1;
                let seq = c.seq_b;
                let mid = c.mid.unwrap();
                if let Some(tx) = c.rtc.direct_api().stream_tx_by_mid(mid, None) {
                    tx.write_rtp(RtpWrite::new(Pt::from(0), SeqNo::from(seq), (seq * 160) as u32, now, std::sync::Arc::<[u8]>::from(payload.clone())));
                }
                drain(c, i, &mut heap, origin, &mut None);
                c.seq_p = c.seq_p.wrapping_add(1);
                let mut pkt = vec![0x80, 0];
                pkt.extend_from_slice(&c.seq_p.to_be_bytes());
                pkt.extend_from_slice(&(u32::from(c.seq_p) * 160).to_be_bytes());
                pkt.extend_from_slice(&(0x1000 + i as u32).to_be_bytes());
                pkt.extend_from_slice(&payload);
                let _ = c.plain.send_to(&pkt, c.target);
                if window.is_some_and(|(s, e)| stamp >= s && stamp < e) {
                    meas.sent_b2p += 1;
                    meas.sent_p2b += 1;
                }
        }
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
                    // Fresh clock: packets sent earlier in this iteration stay outside the window.
                    let start = Instant::now().duration_since(origin).as_micros() as u64;
                    window = Some((start, start + secs * 1_000_000));
                    WINDOW.with(|w| *w.borrow_mut() = window);
                    bridge_latency(&mut tcp, &mut lines); // restart the bridge's own histogram
                    (cpu0, _) = read_stat(&pid);
                    snmp0 = rcvbuf_errors();
                    t0 = now;
                }
                2 if now >= phase_end => {
                    let (cpu1, rss1) = read_stat(&pid);
                    inside = bridge_latency(&mut tcp, &mut lines);
                    let elapsed = now.duration_since(t0).as_secs_f64();
                    let connected = calls.iter().filter(|c| c.rtc.is_connected()).count();
                    result = Some((cpu1 - cpu0, elapsed, rss1, connected));
                    phase = 3;
                    phase_end = now + Duration::from_millis(500);
                }
                3 if now >= phase_end => break,
                _ => {}
            }
        }
    }
    let (cpu, elapsed, rss1, connected) = result.unwrap();
    if std::env::var_os("MEDIA_LOAD_DEBUG").is_some() {
        eprintln!("sent {} {} got b2p {} p2b {}", meas.sent_b2p, meas.sent_p2b, meas.got_b2p, meas.got_p2b);
    }
    let mut lat = std::mem::take(&mut meas.lat);
    lat.sort_unstable();
    let p = |q: f64| lat.get(((lat.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0) as f64 / 1000.0;
    let loss = |sent: u64, got: u64| if sent == 0 { 1.0 } else { 1.0 - got as f64 / sent as f64 };
    println!(
        "{{\"mode\":\"{mode}\",\"calls\":{n},\"connected\":{connected},\"seconds\":{elapsed:.1},\"server_cpu_s\":{cpu:.2},\"cpu_ms_per_call_second\":{:.4},\"rss_kib_per_call\":{:.1},\"latency_ms_p50\":{:.3},\"latency_ms_p99\":{:.3},\"latency_ms_max\":{:.3},\"loss_browser_to_plain\":{:.5},\"loss_plain_to_browser\":{:.5},\"rcvbuf_errors\":{},\"bridge_forward_us\":{}}}",
        cpu * 1000.0 / (connected.max(1) as f64 * elapsed),
        (rss1 as f64 - rss_before as f64) / n as f64,
        p(0.5),
        p(0.99),
        p(1.0),
        loss(meas.sent_b2p, meas.got_b2p),
        loss(meas.sent_p2b, meas.got_p2b),
        rcvbuf_errors() - snmp0,
        inside.unwrap_or_else(|| "null".to_owned())
    );
    drop(tcp);
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

/// The gatewayd bench bridge's own forwarding-time percentiles since the last query, as JSON.
fn bridge_latency(tcp: &mut Option<TcpStream>, lines: &mut Option<BufReader<TcpStream>>) -> Option<String> {
    let (t, l) = (tcp.as_mut()?, lines.as_mut()?);
    writeln!(t, "LATENCY").ok()?;
    let mut line = String::new();
    l.read_line(&mut line).ok()?;
    let v: Vec<&str> = line.strip_prefix("LAT ")?.split_whitespace().collect();
    Some(format!("{{\"packets\":{},\"p50\":{},\"p99\":{},\"max\":{}}}", v.first()?, v.get(1)?, v.get(2)?, v.get(3)?))
}

#[derive(Default)]
struct Meas {
    sent_b2p: u64,
    sent_p2b: u64,
    got_b2p: u64,
    got_p2b: u64,
    lat: Vec<u32>,
}

/// Counts a packet whose payload starts with its send time, if it was sent inside the window.
fn record(m: &mut Option<&mut Meas>, payload: &[u8], origin: Instant, window: Option<(u64, u64)>, to_browser: bool) {
    let (Some(m), Some((start, end))) = (m.as_mut(), window) else { return };
    if payload.len() < 8 {
        return;
    }
    let sent = u64::from_be_bytes(payload[..8].try_into().unwrap());
    if sent < start || sent >= end {
        return;
    }
    let now = Instant::now().duration_since(origin).as_micros() as u64;
    m.lat.push(now.saturating_sub(sent) as u32);
    if to_browser {
        m.got_p2b += 1;
    } else {
        m.got_b2p += 1;
    }
}

fn drain(c: &mut Call, i: usize, heap: &mut BinaryHeap<Reverse<(Instant, usize)>>, origin: Instant, rec: &mut Option<&mut Meas>) {
    loop {
        match c.rtc.poll_output() {
            Ok(Output::Timeout(t)) => {
                if c.deadline != Some(t) {
                    c.deadline = Some(t);
                    heap.push(Reverse((t, i)));
                }
                return;
            }
            Ok(Output::Transmit(t)) => {
                let _ = c.browser.send_to(&t.contents, t.destination);
            }
            Ok(Output::Event(Event::MediaAdded(m))) => c.mid = Some(m.mid),
            Ok(Output::Event(Event::RtpPacket(p))) => {
                if *p.header.payload_type == 0 {
                    // Window bounds are checked in record(); pass them through the payload.
                    let w = WINDOW.with(|w| *w.borrow());
                    record(rec, &p.payload, origin, w, true);
                }
            }
            Ok(Output::Event(Event::IceConnectionStateChange(st))) => {
                if std::env::var_os("MEDIA_LOAD_DEBUG").is_some() {
                    eprintln!("call {i}: ICE {st:?}");
                }
            }
            Ok(Output::Event(_)) => {}
            Err(e) => {
                eprintln!("call {i}: {e}");
                return;
            }
        }
    }
}

thread_local!(static WINDOW: std::cell::RefCell<Option<(u64, u64)>> = const { std::cell::RefCell::new(None) });
