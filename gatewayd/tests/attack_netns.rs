//! Attack tools from Debian against the real daemon on a DMZ-like profile with the firewall
//! managed, from an "internet" namespace, while a legitimate agent in an office network of its
//! own keeps registering and calling (the lab is `tests/attack/mod.rs`):
//!
//! - svmap finds no SIP device on either gateway address: SIP 5060 is on the
//!   internal side only, and only for the SIP server.
//! - nmap from the internet sees only the public listeners the profile opens.
//! - svwar, through a UDP-to-WSS shim (the public side speaks SIP over WSS only), cannot tell
//!   existing DNs from absent ones; svcrack through the shim is banned within a second of the
//!   rule's threshold.
//!
//! These run in `cargo test` (about 30 s). The long runs (full port ranges, testssl.sh, floods)
//! are in `attack_long.rs`, behind `GATEWAYD_ATTACK=1` (`just attack`).
//!
//! Needs root, `ip netns`, sipvicious and nmap; skips with a message otherwise.

#[path = "../../tests/netns/lab.rs"]
mod lab;
mod attack;
mod common;

use std::time::{Duration, Instant};

use attack::agent::Agent;
use attack::shim::{Seen, Shim};
use attack::*;
use lab::*;

fn skip(tools: &[&str]) -> bool {
    if let Some(why) = unavailable().or_else(|| missing_tools(tools)) {
        eprintln!("SKIPPED: {why}");
        return true;
    }
    false
}

/// The open ports in nmap's greppable output (`-oG -`): "443/open/tcp" and the like.
fn nmap_open(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| l.contains("Ports:"))
        .flat_map(|l| l.split_once("Ports:").map(|(_, p)| p.to_owned()))
        .flat_map(|p| p.split(',').map(|e| e.trim().to_owned()).collect::<Vec<_>>())
        .filter_map(|e| {
            let f: Vec<&str> = e.split('/').collect();
            (f.len() > 2 && f[1] == "open").then(|| format!("{}/{}", f[0], f[2]))
        })
        .collect()
}

/// Responses with what differs between any two requests masked (tags, nonces, branches,
/// Call-ID, CSeq, the DN itself), and the median time to the final response.
#[derive(Debug)]
struct Answers {
    shapes: std::collections::BTreeSet<String>,
    median: Duration,
}

fn shape(text: &str, dn: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut l = line.replace(dn, "DN");
        for key in ["tag=", "nonce=\"", "branch=", "opaque=\""] {
            if let Some(i) = l.find(key) {
                let rest = &l[i + key.len()..];
                let end = rest.find([';', '"', ',']).unwrap_or(rest.len());
                l = format!("{}{key}X{}", &l[..i], &rest[end..]);
            }
        }
        if l.starts_with("Call-ID:") {
            l = "Call-ID: X".into();
        }
        if let Some(method) = l.strip_prefix("CSeq: ").and_then(|v| v.split_whitespace().nth(1)) {
            l = format!("CSeq: X {method}");
        }
        out.push_str(&l);
        out.push('\n');
    }
    out
}

/// For each DN: 20 REGISTERs without credentials and 20 with a wrong password, over one WSS
/// from the scanner address, interleaving the two groups.
async fn enumeration_probe(site: &Site, known: &[&str], unknown: &[&str]) -> (Answers, Answers) {
    use attack::agent::{request, response};
    use futures::SinkExt;
    use gatewayd::sip::digest::{authorize_request, ClientSecret};
    let mut ws = wss_from(&site.scanner.ns, SCANNER).await.expect("scanner WSS");
    let mut groups = [(Vec::new(), std::collections::BTreeSet::new()), (Vec::new(), std::collections::BTreeSet::new())];
    let mut cseq = 1;
    for round in 0..20 {
        for (g, dns) in [known, unknown].iter().enumerate() {
            for dn in dns.iter() {
                let reg = |cseq: u32| request(&format!(
                    "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS scan.invalid;branch=z9hG4bKs{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{dn}@gw.test>\r\nFrom: <sip:{dn}@gw.test>;tag=s{cseq}\r\nCall-ID: scan{cseq}\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:s@scan.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
                ));
                let began = Instant::now();
                ws.send(tokio_tungstenite::tungstenite::Message::text(reg(cseq).to_string())).await.unwrap();
                let (challenge, text) = response(&mut ws).await.expect("a challenge");
                groups[g].0.push(began.elapsed());
                groups[g].1.insert(shape(&text, dn));
                cseq += 1;
                let mut guess = reg(cseq);
                authorize_request(&mut guess, &challenge, dn, &ClientSecret::Password(format!("wrong{round}")), 1, "s").unwrap();
                let began = Instant::now();
                ws.send(tokio_tungstenite::tungstenite::Message::text(guess.to_string())).await.unwrap();
                let (_, text) = response(&mut ws).await.expect("an answer to a wrong password");
                groups[g].0.push(began.elapsed());
                groups[g].1.insert(shape(&text, dn));
                cseq += 1;
            }
        }
    }
    let [a, b] = groups.map(|(mut times, shapes)| {
        times.sort();
        Answers { shapes, median: times[times.len() / 2] }
    });
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipvicious_and_nmap_from_the_internet_find_nothing_to_use_while_an_agent_keeps_working() {
    if skip(&["svmap", "svwar", "svcrack", "nmap"]) {
        return;
    }
    // MD5 only: svcrack 0.3.3 speaks no other algorithm (with the default SHA-256 challenge
    // first it stops at "Unknown algorithm: sha-256"), so this is the profile it can attack.
    let site = Site::start("a", "", "\n[sip.auth]\nalgorithms = [\"MD5\"]\n");
    let agent = Agent::start(&site.office.ns, &site.office.host(5), "5001", Duration::from_millis(200), 3);
    let end = Instant::now() + Duration::from_secs(10);
    while agent.tally().registered == 0 {
        assert!(Instant::now() < end, "the agent did not register: {:?}", agent.tally());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // svmap (UDP; SIPVicious OSS 0.3.3 has no TCP) on both gateway addresses: nothing answers
    // SIP from the internet. TCP 5060 is in the nmap scan below.
    for target in [PUBLIC_GW, INTERNAL_GW] {
        let out = tool(&site.lab.inet, Duration::from_secs(60), &["svmap", "-b", SCOUT, "-t", "0.5", "-p", "5060-5061", target]);
        let log = text(&out);
        assert!(log.contains("found nothing") && !log.contains(&format!("{target}:506")), "svmap found SIP on {target}:\n{log}");
    }
    eprintln!("FIGURE svmap from the internet: found nothing on {PUBLIC_GW} or {INTERNAL_GW}, ports 5060-5061/udp");

    // nmap: SYN and UDP scans of the ports the gateway uses anywhere, from the internet.
    // The listeners the profile opens on the public side: 80, 443, 3478 and 5349 over TCP; 3478
    // over UDP (STUN answers), the media and relay ranges reachable.
    let tcp = tool(&site.lab.inet, Duration::from_secs(120), &["nmap", "-n", "-Pn", "-sS", "-T4", "--max-retries", "1", "-S", SCOUT, "-e", "eth0", "-p", "22,80,443,3478,5060,5061,5349,8080,8443,9090", "-oG", "-", PUBLIC_GW, INTERNAL_GW]);
    let udp = tool(&site.lab.inet, Duration::from_secs(120), &["nmap", "-n", "-Pn", "-sU", "-T4", "--max-retries", "1", "-S", SCOUT, "-e", "eth0", "-p", "3478,5060,9090,40000,41000,43000", "-oG", "-", PUBLIC_GW, INTERNAL_GW]);
    let (tcp_open, udp_open) = (nmap_open(&text(&tcp)), nmap_open(&text(&udp)));
    assert_eq!(tcp_open, ["80/tcp", "443/tcp", "3478/tcp", "5349/tcp"], "TCP open from the internet:\n{}", text(&tcp));
    assert_eq!(udp_open, ["3478/udp"], "UDP open from the internet:\n{}", text(&udp));
    // The media and relay ranges are reachable (closed: nothing bound there right now, and the
    // kernel says so); SIP, admin and the internal RTP range are dropped (no answer at all).
    let udp_text = text(&udp);
    let public_udp = udp_text.lines().find(|l| l.starts_with(&format!("Host: {PUBLIC_GW} ")) && l.contains("Ports:")).unwrap_or_default();
    for (port, state) in [("40000", "closed"), ("43000", "closed"), ("5060", "open|filtered"), ("9090", "open|filtered"), ("41000", "open|filtered")] {
        assert!(public_udp.contains(&format!("{port}/{state}/udp")), "{port}/udp should be {state}: {public_udp}");
    }
    eprintln!("FIGURE nmap from the internet: TCP open {tcp_open:?}, UDP open {udp_open:?}");

    // svwar through the shim from SCOUT, with each method it knows: an unknown DN is
    // challenged like a known one, so it has nothing to go on.
    let shim = Shim::start(&site.lab.inet, SCOUT, 5070).await;
    for method in ["REGISTER", "INVITE", "OPTIONS"] {
        let out = tool(&site.lab.inet, Duration::from_secs(60), &["svwar", "-m", method, "-e", "4995-5015", "--domain", "gw.test", "-t", "0.05", "--maximumtime", "5", &format!("udp://{}", shim.addr)]);
        let log = text(&out);
        assert!(log.contains("found nothing") && !log.contains("| 5001"), "svwar {method} told DNs apart:\n{log}");
    }
    assert!(!shim.log().iter().any(|(_, s)| matches!(s, Seen::Closed)), "the gateway closed svwar's connection");
    shim.stop();
    // The same question asked directly, from the allowlisted scanner (wrong passwords are not
    // held against it): known and unknown DNs get the same responses, in the same time.
    let (known, unknown) = enumeration_probe(&site, &["5001", "5002", "5003"], &["4999", "5011", "7777"]).await;
    eprintln!("FIGURE enumeration: {} response shapes for known and unknown DNs alike; median {:?} known, {:?} unknown", known.shapes.len(), known.median, unknown.median);
    assert_eq!(known.shapes, unknown.shapes, "responses differ between known and unknown DNs");
    let (a, b) = (known.median.as_secs_f64(), unknown.median.as_secs_f64());
    assert!((a - b).abs() < 0.002_f64.max(0.5 * a.max(b)), "timing tells DNs apart: {known:?} vs {unknown:?}");

    // svcrack through the shim from ATTACKER against 5001 (the right password is in the list,
    // after more wrong ones than the rule allows).
    let dictionary = site.dir.path().join("passwords.txt");
    let mut words: Vec<String> = (0..12).map(|i| format!("guess{i}")).collect();
    words.push("pass5001".into());
    std::fs::write(&dictionary, words.join("\n") + "\n").unwrap();
    let shim = Shim::start(&site.lab.inet, ATTACKER, 5070).await;
    let set = format!("ip netns exec {} nft list set inet gwattack banned4", site.lab.gw);
    let banned_at = tokio::spawn(async move {
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            let out = std::process::Command::new("sh").args(["-c", &set]).output().unwrap();
            if String::from_utf8_lossy(&out.stdout).contains(ATTACKER) {
                return Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    });
    let out = tool(&site.lab.inet, Duration::from_secs(60), &["svcrack", "-u", "5001", "--domain", "gw.test", "-d", dictionary.to_str().unwrap(), "-t", "0.1", "--maximumtime", "5", &format!("udp://{}", shim.addr)]);
    let log = text(&out);
    let banned_at = banned_at.await.unwrap().expect("svcrack's source is banned");
    let threshold = shim.nth_refused_guess(AUTH_RETRY as usize).expect("the rule's threshold was reached");
    let lag = banned_at.saturating_duration_since(threshold);
    let guesses = shim.log().iter().filter(|(_, s)| matches!(s, Seen::Request { authorized: true, .. })).count();
    eprintln!("FIGURE svcrack: {guesses} guesses reached the gateway; banned {lag:?} after the refusal of guess {AUTH_RETRY}");
    assert!(lag < Duration::from_secs(1), "banned {lag:?} after the threshold");
    assert!(site.dropped(&site.lab.inet, ATTACKER).await, "the kernel drops the attacker");
    assert!(!log.contains("pass5001"), "svcrack found the password:\n{log}");
    shim.stop();

    let tally = agent.stop().await;
    eprintln!("FIGURE agent during the tools: {} registrations, {} echo calls, {} failures, slowest registration {:?}", tally.registered, tally.calls, tally.failures.len(), tally.slowest_register);
    assert!(tally.failures.is_empty(), "the agent failed: {:?}", tally.failures);
    assert!(tally.registered >= 10 && tally.calls >= 3, "{tally:?}");
}
