//! A UDP-to-WSS shim for the SIP attack tools: SIPVicious speaks SIP over UDP and TCP only,
//! and the gateway's public side has SIP over WSS only. The shim listens on UDP in the
//! attacker's namespace and address and carries each datagram as one WebSocket message over
//! a WSS connection from the same address; what comes back goes to the tool. It changes
//! nothing in the messages, and logs each one with its time, so a test can tell when the
//! tool's guesses were refused and when the gateway cut the attacker off.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

use super::wss_from;
use crate::lab::in_netns;

#[derive(Debug, Clone)]
pub enum Seen {
    /// A request from the tool; `authorized` when it carried credentials.
    Request { method: String, user: String, authorized: bool },
    /// A response from the gateway: status code and the text, for comparisons.
    Response { status: u16, text: String },
    /// The gateway closed the connection (or it failed).
    Closed,
}

pub struct Shim {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<(Instant, Seen)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Shim {
    /// Listens on `src`:`port` (UDP) in `ns`, forwarding over a WSS connection from `src`.
    pub async fn start(ns: &str, src: &str, port: u16) -> Shim {
        let addr: SocketAddr = format!("{src}:{port}").parse().unwrap();
        let udp = in_netns(ns, || std::net::UdpSocket::bind(addr).unwrap());
        udp.set_nonblocking(true).unwrap();
        let udp = UdpSocket::from_std(udp).unwrap();
        let ws = wss_from(ns, src).await.expect("the shim's WSS connection");
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let task = tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let mut peer: Option<SocketAddr> = None;
            let mut buf = vec![0u8; 65_536];
            let mut open = true;
            loop {
                tokio::select! {
                    got = udp.recv_from(&mut buf) => {
                        let Ok((n, from)) = got else { break };
                        peer = Some(from);
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        let method = text.split_whitespace().next().unwrap_or_default().to_owned();
                        let user = text.lines().find(|l| l.starts_with("To:") || l.starts_with("t:")).and_then(|l| l.split_once("sip:")).and_then(|(_, r)| r.split_once('@')).map(|(u, _)| u.to_owned()).unwrap_or_default();
                        let authorized = text.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:"));
                        l.lock().unwrap().push((Instant::now(), Seen::Request { method, user, authorized }));
                        if open && tx.send(Message::text(text)).await.is_err() {
                            open = false;
                            l.lock().unwrap().push((Instant::now(), Seen::Closed));
                        }
                    }
                    msg = rx.next(), if open => match msg {
                        Some(Ok(Message::Text(t))) => {
                            let status = t.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
                            l.lock().unwrap().push((Instant::now(), Seen::Response { status, text: t.to_string() }));
                            if let Some(p) = peer {
                                let _ = udp.send_to(t.as_bytes(), p).await;
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => {
                            open = false;
                            l.lock().unwrap().push((Instant::now(), Seen::Closed));
                        }
                    },
                }
            }
        });
        Shim { addr, log, task }
    }

    pub fn log(&self) -> Vec<(Instant, Seen)> {
        self.log.lock().unwrap().clone()
    }

    /// When the gateway answered the `n`th request that carried credentials (1-based).
    pub fn nth_refused_guess(&self, n: usize) -> Option<Instant> {
        let log = self.log();
        let mut guesses = 0;
        let mut pending = false;
        for (at, seen) in &log {
            match seen {
                Seen::Request { authorized: true, .. } => pending = true,
                Seen::Response { status, .. } if pending && *status >= 400 => {
                    pending = false;
                    guesses += 1;
                    if guesses == n {
                        return Some(*at);
                    }
                }
                _ => {}
            }
        }
        None
    }

    pub fn closed_at(&self) -> Option<Instant> {
        self.log().iter().find(|(_, s)| matches!(s, Seen::Closed)).map(|(at, _)| *at)
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// Waits (polling, with a deadline) until `f` holds.
pub async fn until(what: &str, deadline: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !f() {
        assert!(Instant::now() < end, "{what}: not within {deadline:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
