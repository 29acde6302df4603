//! A flood of malformed SIP from the SIP server's address (byte flips, truncations, duplicated
//! headers, 60 KB datagrams) on the internal UDP listener: the daemon keeps answering, logs a
//! rate-limited summary instead of a line per datagram, and gives the memory the flood took
//! back to the system once the flood's transactions are gone. Loopback only, bounded.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{eventually, lab_profile_free_ports, Gateway, TempDir};

const DATAGRAMS: u32 = 20_000;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// A deterministic mutation of a valid INVITE, the `i`th of the flood.
fn mutated(i: u32, seed: &mut u64) -> Vec<u8> {
    let mut next = || {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) as usize
    };
    let mut m = format!(
        "INVITE sip:5001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKf{i}\r\nMax-Forwards: 70\r\nTo: <sip:5001@127.0.0.1>\r\n\
         From: <sip:x@127.0.0.1>;tag=f{i}\r\nCall-ID: flood-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: {}\r\n\r\n",
        next() % 100
    )
    .into_bytes();
    match next() % 10 {
        0..=2 => {
            for _ in 0..5 {
                let at = next() % m.len();
                m[at] = next() as u8;
            }
        }
        3 | 4 => m.truncate(next() % m.len()),
        5 => m.extend(std::iter::repeat_n(b'X', 60_000)),
        6 | 7 => {
            let text = String::from_utf8_lossy(&m).replacen("To:", "To: <sip:a@b>\r\nTo:", 1);
            m = text.into_bytes();
        }
        _ => {}
    }
    m
}

fn options_answered(sock: &UdpSocket, sip: u16, n: u32) -> bool {
    let msg = format!(
        "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{};branch=z9hG4bKo{n}\r\nMax-Forwards: 70\r\nTo: <sip:127.0.0.1>\r\n\
         From: <sip:probe@127.0.0.1>;tag=o{n}\r\nCall-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
        sock.local_addr().unwrap().port()
    );
    sock.send_to(msg.as_bytes(), ("127.0.0.1", sip)).unwrap();
    let mut buf = vec![0u8; 65_536];
    let end = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < end {
        if let Ok((len, _)) = sock.recv_from(&mut buf) {
            if String::from_utf8_lossy(&buf[..len]).contains(&format!("Call-ID: probe-{n}")) {
                return true;
            }
        }
    }
    false
}

#[test]
fn a_malformed_flood_is_answered_summarised_and_its_memory_given_back() {
    let dir = TempDir::new("flood");
    let (text, ports) = lab_profile_free_ports();
    let profile = dir.path().join("gatewayd.toml");
    std::fs::write(&profile, text).unwrap();
    let mut gw = Gateway::start(&profile, &dir.path().join("state"), &[]);
    gw.wait_for_log("gatewayd ready", Duration::from_secs(30));
    let pid = gw.child.id();
    let sip = ports[&5060];
    // The SIP server's own address: the flood comes from where the daemon must listen.
    let server = UdpSocket::bind(("127.0.0.1", ports[&5080])).unwrap();
    server.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert!(options_answered(&server, sip, 0), "answers before the flood");
    let before = rss_kib(pid);

    let flood = UdpSocket::bind("127.0.0.1:0").unwrap();
    let _ = flood.set_nonblocking(true);
    let mut seed = 7;
    for i in 0..DATAGRAMS {
        let m = mutated(i, &mut seed);
        // From the server's address for most, so they reach the SIP parser.
        let _ = if i % 4 == 0 { flood.send_to(&m, ("127.0.0.1", sip)) } else { server.send_to(&m, ("127.0.0.1", sip)) };
        if i % 200 == 0 {
            // Paced a little, so the kernel's socket buffer is not what drops them.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let peak = rss_kib(pid);
    // The backlog the flood left in the socket is worked off first; probes keep being sent.
    let mut probe = 100;
    eventually("an OPTIONS answered after the flood", Duration::from_secs(30), || {
        probe += 1;
        options_answered(&server, sip, probe).then_some(())
    });
    eprintln!("FIGURE flood: RSS before {} MiB, after {DATAGRAMS} datagrams {} MiB", before / 1024, peak / 1024);

    // The flood's transactions end (Timer J: 32 s), then the memory goes back to the system.
    let back = eventually("the flood's memory given back", Duration::from_secs(75), || {
        let now = rss_kib(pid);
        (now <= before + 4 * 1024).then_some(now)
    });
    eprintln!("FIGURE flood: RSS back to {} MiB", back / 1024);
    eventually("an OPTIONS answered after the quiet", Duration::from_secs(30), || {
        probe += 1;
        options_answered(&server, sip, probe).then_some(())
    });
    // One summary per source and interval, not a line per datagram.
    let lines = gw.drain_log().len();
    assert!(lines < 200, "{lines} log lines for {DATAGRAMS} malformed datagrams");
}
