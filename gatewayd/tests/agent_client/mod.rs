//! A softphone played over a real TLS WebSocket (RFC 7118): REGISTER with digest
//! authentication and an echo call whose media a webrtc-rs peer carries.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use gatewayd::sip::digest::{authorize_request, ClientSecret};
use rsip::SipMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::common;
use crate::media_peer::BrowserPeer;

pub const DEADLINE: Duration = Duration::from_secs(20);
pub const USER_AGENT: &str = "observe-ops-test/1.0 (JsSIP 3.10.1)";

pub type Ws = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A softphone's WebSocket to the gateway's HTTPS port, trusting the certificate in `state_dir`.
pub async fn connect(https: u16, state_dir: &Path) -> Ws {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", https)).await.unwrap();
    over(tcp, "127.0.0.1", &format!("127.0.0.1:{https}"), state_dir).await.unwrap()
}

/// TLS and the WebSocket upgrade over `tcp` (opened anywhere, e.g. in a network namespace):
/// `name` is checked against the certificate in `state_dir`, `authority` goes into the URL and
/// Origin. An error instead of a panic, so a reconnecting agent can try again.
pub async fn over(tcp: tokio::net::TcpStream, name: &str, authority: &str, state_dir: &Path) -> Result<Ws, String> {
    let pem = std::fs::read(state_dir.join("web.crt")).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    let stream = tokio_rustls::TlsConnector::from(common::tls_trusting(&pem)).connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
    let mut request = format!("wss://{authority}/ws").into_client_request().unwrap();
    request.headers_mut().insert("Origin", format!("https://{authority}").parse().unwrap());
    request.headers_mut().insert("Sec-WebSocket-Protocol", "sip".parse().unwrap());
    Ok(tokio_tungstenite::client_async(request, stream).await.map_err(|e| format!("WebSocket: {e}"))?.0)
}

/// The next SIP response, skipping anything else.
pub async fn response(ws: &mut Ws) -> rsip::Response {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a frame within the deadline").expect("socket open").unwrap();
        if let Message::Text(t) = msg {
            if let Ok(SipMessage::Response(r)) = gatewayd::sip::message::parse(t.as_bytes()) {
                return r;
            }
        }
    }
}

/// The next final response (status 200 or more).
pub async fn final_response(ws: &mut Ws) -> rsip::Response {
    loop {
        let r = response(ws).await;
        if r.status_code.code() >= 200 {
            return r;
        }
    }
}

pub fn request(text: &str) -> rsip::Request {
    match gatewayd::sip::message::parse(text.as_bytes()).unwrap() {
        SipMessage::Request(r) => r,
        _ => unreachable!(),
    }
}

pub fn register_request(dn: &str, cseq: u32) -> rsip::Request {
    request(&format!(
        "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}r{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{dn}@127.0.0.1>\r\n\
         From: <sip:{dn}@127.0.0.1>;tag=t{dn}\r\nCall-ID: reg-{dn}\r\nCSeq: {cseq} REGISTER\r\nUser-Agent: {USER_AGENT}\r\n\
         Contact: <sip:x{dn}@client.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n"
    ))
}

/// REGISTER, challenge, REGISTER with `password`: the final status.
pub async fn register(ws: &mut Ws, dn: &str, password: &str) -> u16 {
    ws.send(Message::text(register_request(dn, 1).to_string())).await.unwrap();
    let challenge = response(ws).await;
    assert_eq!(challenge.status_code.code(), 401, "{challenge}");
    let mut again = register_request(dn, 2);
    authorize_request(&mut again, &challenge, dn, &ClientSecret::Password(password.into()), 1, "cn0nce").unwrap();
    ws.send(Message::text(again.to_string())).await.unwrap();
    final_response(ws).await.status_code.code()
}

pub fn invite(dn: &str, cseq: u32, sdp: &str) -> rsip::Request {
    request(&format!(
        "INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{dn}i{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:600@127.0.0.1>\r\n\
         From: <sip:{dn}@127.0.0.1>;tag=e{dn}\r\nCall-ID: echo-{dn}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:x{dn}@client.invalid;transport=ws>\r\n\
         Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    ))
}

pub fn to_header(r: &rsip::Response) -> String {
    r.headers.iter().find_map(|h| match h {
        rsip::Header::To(t) => Some(t.to_string()),
        _ => None,
    }).unwrap()
}

pub fn in_dialog(method: &str, dn: &str, cseq: u32, branch: &str, to: &str) -> String {
    format!(
        "{method} sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n{to}\r\n\
         From: <sip:{dn}@127.0.0.1>;tag=e{dn}\r\nCall-ID: echo-{dn}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An answered echo call from `dn` (registered on `ws`) with `peer` sending audio: returns the
/// To header of the dialog for the BYE.
pub async fn echo_call(ws: &mut Ws, dn: &str, password: &str, peer: &BrowserPeer) -> String {
    let offer = tokio::task::block_in_place(|| peer.create_offer());
    ws.send(Message::text(invite(dn, 1, &offer).to_string())).await.unwrap();
    let challenge = final_response(ws).await;
    assert!(matches!(challenge.status_code.code(), 401 | 407), "{challenge}");
    ws.send(Message::text(in_dialog("ACK", dn, 1, &format!("{dn}i1"), &to_header(&challenge)))).await.unwrap();
    let mut again = invite(dn, 2, &offer);
    authorize_request(&mut again, &challenge, dn, &ClientSecret::Password(password.into()), 1, "cn0nce2").unwrap();
    ws.send(Message::text(again.to_string())).await.unwrap();
    let ok = final_response(ws).await;
    assert_eq!(ok.status_code.code(), 200, "{ok}");
    let to = to_header(&ok);
    ws.send(Message::text(in_dialog("ACK", dn, 2, &format!("{dn}a2"), &to))).await.unwrap();
    let answer = String::from_utf8_lossy(&ok.body).into_owned();
    tokio::task::block_in_place(|| {
        peer.accept_answer(&answer);
        assert!(peer.wait_connected(DEADLINE), "DTLS-SRTP up with the gateway");
        peer.stream(Some(0));
    });
    to
}

pub async fn hang_up(ws: &mut Ws, dn: &str, to: &str) {
    ws.send(Message::text(in_dialog("BYE", dn, 3, &format!("{dn}b3"), to))).await.unwrap();
    assert_eq!(final_response(ws).await.status_code.code(), 200);
}


/// The next SIP request the gateway sends, as text, skipping anything else.
pub async fn request_text(ws: &mut Ws, method: &str) -> String {
    loop {
        let msg = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a frame within the deadline").expect("socket open").unwrap();
        if let Message::Text(t) = msg {
            if t.starts_with(&format!("{method} ")) {
                return t.to_string();
            }
        }
    }
}

/// The values of header `name` in a message's head, in order (case-insensitive name).
pub fn header_values(text: &str, name: &str) -> Vec<String> {
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim().to_owned())
        .collect()
}

/// An inbound call the agent answered: what its BYE needs.
pub struct Answered {
    pub call_id: String,
    /// The gateway's From (with its tag): the BYE's To.
    pub remote: String,
    /// The INVITE's To with the agent's tag: the BYE's From.
    pub local: String,
    /// The gateway's Contact URI: the BYE's Request-URI.
    pub target: String,
}

/// Waits for the gateway's INVITE to `dn`, answers it with `peer`'s answer to its offer and waits
/// for the ACK and DTLS-SRTP, as a softphone with auto-answer does.
pub async fn answer_inbound(ws: &mut Ws, dn: &str, peer: &BrowserPeer) -> Answered {
    let invite = request_text(ws, "INVITE").await;
    let one = |n: &str| header_values(&invite, n).into_iter().next().unwrap_or_else(|| panic!("INVITE without {n}:\n{invite}"));
    let offer = invite.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    assert!(offer.contains("m=audio"), "INVITE without an offer:\n{invite}");
    let answer = tokio::task::block_in_place(|| peer.answer(&offer));
    let local = format!("{};tag=a{dn}", one("To"));
    let vias: String = header_values(&invite, "Via").iter().map(|v| format!("Via: {v}\r\n")).collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{vias}From: {}\r\nTo: {local}\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:x{dn}@client.invalid;transport=ws>\r\n\
         User-Agent: {USER_AGENT}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        one("From"),
        one("Call-ID"),
        one("CSeq"),
        answer.len()
    );
    ws.send(Message::text(ok)).await.unwrap();
    request_text(ws, "ACK").await;
    tokio::task::block_in_place(|| {
        assert!(peer.wait_connected(DEADLINE), "DTLS-SRTP up with the gateway");
        peer.stream(Some(0));
    });
    let contact = one("Contact");
    let target = contact.trim_start_matches('<').split('>').next().unwrap_or_default().to_owned();
    Answered { call_id: one("Call-ID"), remote: one("From"), local, target }
}

/// The agent hangs up an answered inbound call: BYE, and its 200.
pub async fn hang_up_inbound(ws: &mut Ws, call: &Answered) {
    let bye = format!(
        "BYE {} SIP/2.0\r\nVia: SIP/2.0/WSS client.invalid;branch=z9hG4bKbye{}\r\nMax-Forwards: 70\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        call.target, call.call_id.chars().filter(char::is_ascii_alphanumeric).collect::<String>(), call.local, call.remote, call.call_id
    );
    ws.send(Message::text(bye)).await.unwrap();
    assert_eq!(final_response(ws).await.status_code.code(), 200);
}
