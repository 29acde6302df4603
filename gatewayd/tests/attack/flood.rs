//! Flood senders for the long attack runs: wrong-password REGISTERs over a WebSocket, and SIP
//! over UDP on the internal side as fast as the socket takes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::request;
use crate::lab::*;

/// A wrong-password REGISTER for 5001 against `challenge`, nonce count `nc`.
pub fn guess(challenge: &rsip::Response, nc: u32) -> String {
    use gatewayd::sip::digest::{authorize_request, ClientSecret};
    let mut r = request(&format!(
        "REGISTER sip:gw.test SIP/2.0\r\nVia: SIP/2.0/WSS f.invalid;branch=z9hG4bKf{nc}\r\nMax-Forwards: 70\r\nTo: <sip:5001@gw.test>\r\nFrom: <sip:5001@gw.test>;tag=f\r\nCall-ID: flood\r\nCSeq: {nc} REGISTER\r\nContact: <sip:f@f.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
    ));
    authorize_request(&mut r, challenge, "5001", &ClientSecret::Password(format!("flood{nc}")), nc, "f").unwrap();
    r.to_string()
}

/// UDP datagrams from `src` in `ns` to the internal SIP port as fast as the socket takes
/// them, `count` at most, for `limit` at most; returns how many were sent and answers seen.
pub async fn udp_flood(ns: &str, src: &str, count: u32, limit: Duration, make: impl Fn(u32) -> Vec<u8>) -> (u32, u32) {
    let s = in_netns(ns, || std::net::UdpSocket::bind((src, 0)).unwrap());
    s.set_nonblocking(true).unwrap();
    let s = Arc::new(tokio::net::UdpSocket::from_std(s).unwrap());
    let answers = Arc::new(AtomicU64::new(0));
    let (r, a) = (s.clone(), answers.clone());
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while r.recv_from(&mut buf).await.is_ok() {
            a.fetch_add(1, Ordering::Relaxed);
        }
    });
    let end = Instant::now() + limit;
    let mut sent = 0;
    while sent < count && Instant::now() < end {
        if s.send_to(&make(sent), (INTERNAL_GW, 5060)).await.is_ok() {
            sent += 1;
        }
        if sent % 200 == 0 {
            tokio::task::yield_now().await;
        }
    }
    // Answers still on their way.
    let quiet_for = Duration::from_millis(500);
    let mut last = answers.load(Ordering::Relaxed);
    loop {
        tokio::time::sleep(quiet_for).await;
        let now = answers.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    reader.abort();
    (sent, last as u32)
}

pub fn sip_request(method: &str, n: u32, src: &str, body_len: usize) -> Vec<u8> {
    let body = "v".repeat(body_len);
    format!(
        "{method} sip:5001@{INTERNAL_GW} SIP/2.0\r\nVia: SIP/2.0/UDP {src}:5060;branch=z9hG4bKfl{n}\r\nMax-Forwards: 70\r\nTo: <sip:5001@{INTERNAL_GW}>\r\nFrom: <sip:flood@{src}>;tag=fl{n}\r\nCall-ID: flood{n}@{src}\r\nCSeq: 1 {method}\r\nContact: <sip:flood@{src}:5060>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

