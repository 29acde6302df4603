//! The internal SIP transport driver: UDP sockets and TCP connections on the internal side only.
//! Received messages go to call control through one bounded channel; call control's messages go
//! out through `InternalSender`. Framing and `conformance::screen` are the sans-IO `sip` helpers:
//! what they refuse is answered here, statelessly, and counted in one `RejectLog` for the side,
//! whose summaries are the only log lines a flood of bad input produces. Messages sent are
//! handed to HEP capture here, where the real local address (a TCP connection's port too) is
//! known; received ones carry their bytes and local address to call control for the same.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::profile::{SipListen, Transport as ProfileTransport};
use crate::sip::conformance::{refusal_for, screen, Rejection};
use crate::sip::framing::{classify_frame, Frame, FramingError, StreamFramer, StreamItem, PONG};
use crate::sip::message::{new_tag, refusal};
use crate::sip::rejects::RejectLog;
use crate::observe::hep::{HepCapture, IpProto, Selected};
use crate::sip::transaction::Transport;

/// Largest SIP message accepted on the internal side.
pub const MAX_MESSAGE: usize = 65_535;
/// Frames queued toward one TCP connection.
const TCP_QUEUE: usize = 256;
/// How often the rejection summaries are looked at.
const SUMMARY_TICK: Duration = Duration::from_secs(1);

/// The internal side's rejection counts, shared by its socket tasks.
#[derive(Clone, Default)]
struct Rejects(Arc<Mutex<RejectLog>>);

impl Rejects {
    fn record(&self, source: IpAddr, reason: &'static str) {
        let first = self.0.lock().expect("reject log").record(source, reason, Instant::now());
        if let Some(s) = first {
            super::driver::log_summary("internal", &s);
        }
    }

    /// Logs the summaries that are due, until the process ends.
    async fn flush(self) {
        let mut tick = tokio::time::interval(SUMMARY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let due = self.0.lock().expect("reject log").handle_timeout(Instant::now());
            for s in &due {
                super::driver::log_summary("internal", s);
            }
        }
    }
}

/// Checks one received message; what is refused gets its response (when one can be sent) in
/// the returned bytes, and is counted.
fn check(bytes: &[u8], source: SocketAddr, rejects: &Rejects) -> Result<rsip::SipMessage, Option<Vec<u8>>> {
    screen(bytes).map_err(|rejection: Rejection| {
        tracing::debug!(source = %source, reason = %rejection, "SIP from the internal side refused");
        rejects.record(source.ip(), rejection.reason());
        refusal_for(bytes, &rejection, &new_tag(&mut rand::rng())).map(|r| r.to_string().into_bytes())
    })
}

/// A message from the SIP server side.
#[derive(Debug)]
pub struct Inbound {
    pub message: rsip::SipMessage,
    pub source: SocketAddr,
    pub transport: Transport,
    /// The address it arrived on.
    pub local: SocketAddr,
    /// The message as received, for capture.
    pub raw: Vec<u8>,
}

/// Bytes queued toward a TCP connection, with their capture when selected.
type TcpItem = (Vec<u8>, Option<Selected>);

/// Sends call control's messages on the internal side.
#[derive(Clone)]
pub struct InternalSender {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<TcpItem>>>>,
    inbound: mpsc::Sender<Inbound>,
    rejects: Rejects,
    hep: HepCapture,
}

impl InternalSender {
    /// Sends without waiting: a full socket buffer or queue drops the message, and the
    /// transaction layer's retransmissions (UDP) or the peer's timers recover. `capture`, when
    /// given, is the message's HEP capture, made once it is on its way.
    pub fn send(&self, to: SocketAddr, transport: Transport, bytes: Vec<u8>, capture: Option<Selected>) {
        match transport {
            Transport::Tcp | Transport::Tls => self.send_tcp(to, (bytes, capture)),
            _ => {
                let socket = self.udp.iter().find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4())).or(self.udp.first());
                match socket {
                    Some(s) => match s.try_send_to(&bytes, to) {
                        Ok(_) => {
                            if let (Some(c), Ok(local)) = (capture, s.local_addr()) {
                                self.hep.sip(&c, local, to, IpProto::Udp, &bytes, std::time::SystemTime::now());
                            }
                        }
                        Err(e) => tracing::debug!(to = %to, error = %e, "SIP datagram not sent"),
                    },
                    None => tracing::warn!(to = %to, "no internal UDP listener to send from"),
                }
            }
        }
    }

    /// The first internal UDP listener's address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.udp.first().and_then(|s| s.local_addr().ok())
    }

    fn send_tcp(&self, to: SocketAddr, bytes: TcpItem) {
        let mut conns = self.tcp.lock().expect("tcp map");
        if let Some(tx) = conns.get(&to) {
            if tx.try_send(bytes.clone()).is_ok() {
                return;
            }
            conns.remove(&to);
        }
        let (tx, rx) = mpsc::channel(TCP_QUEUE);
        let _ = tx.try_send(bytes);
        conns.insert(to, tx);
        let (map, inbound, rejects, hep) = (self.tcp.clone(), self.inbound.clone(), self.rejects.clone(), self.hep.clone());
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => serve_tcp(stream, to, rx, inbound, rejects, hep).await,
                Err(e) => tracing::warn!(to = %to, error = %e, "cannot connect to the SIP server over TCP"),
            }
            map.lock().expect("tcp map").remove(&to);
        });
    }
}

/// Binds every internal SIP listener; messages arrive on the returned receiver.
pub async fn bind(listen: &[SipListen], queue: usize, hep: HepCapture) -> std::io::Result<(InternalSender, mpsc::Receiver<Inbound>)> {
    let (inbound_tx, inbound_rx) = mpsc::channel(queue);
    let tcp_conns: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<TcpItem>>>> = Arc::default();
    let rejects = Rejects::default();
    tokio::spawn(rejects.clone().flush());
    let mut udp = Vec::new();
    for l in listen {
        match l.transport {
            ProfileTransport::Udp => {
                let socket = Arc::new(UdpSocket::bind(l.address).await?);
                udp.push(socket.clone());
                tokio::spawn(serve_udp(socket, inbound_tx.clone(), rejects.clone()));
            }
            ProfileTransport::Tcp => {
                let listener = TcpListener::bind(l.address).await?;
                let (conns, inbound, rejects, hep) = (tcp_conns.clone(), inbound_tx.clone(), rejects.clone(), hep.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, peer)) = listener.accept().await else { continue };
                        let (tx, rx) = mpsc::channel(TCP_QUEUE);
                        conns.lock().expect("tcp map").insert(peer, tx);
                        let (conns, inbound, rejects, hep) = (conns.clone(), inbound.clone(), rejects.clone(), hep.clone());
                        tokio::spawn(async move {
                            serve_tcp(stream, peer, rx, inbound, rejects, hep).await;
                            conns.lock().expect("tcp map").remove(&peer);
                        });
                    }
                });
            }
        }
    }
    Ok((InternalSender { udp, tcp: tcp_conns, inbound: inbound_tx, rejects, hep }, inbound_rx))
}

async fn serve_udp(socket: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>, rejects: Rejects) {
    let Ok(local) = socket.local_addr() else { return };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let (n, source) = match socket.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "internal UDP receive error");
                continue;
            }
        };
        let frame = &buf[..n];
        match classify_frame(frame) {
            Frame::Ping => {
                let _ = socket.try_send_to(PONG, source);
            }
            Frame::Pong => {}
            Frame::Message(bytes) => match check(bytes, source, &rejects) {
                Ok(message) => {
                    if inbound.try_send(Inbound { message, source, transport: Transport::Udp, local, raw: bytes.to_vec() }).is_err() {
                        // Counted, not logged one by one: a flood is what fills the queue.
                        rejects.record(source.ip(), "dropped: call control saturated");
                    }
                }
                Err(Some(response)) => {
                    let _ = socket.try_send_to(&response, source);
                }
                Err(None) => {}
            },
        }
    }
}

async fn serve_tcp(stream: TcpStream, peer: SocketAddr, mut outgoing: mpsc::Receiver<TcpItem>, inbound: mpsc::Sender<Inbound>, rejects: Rejects, hep: HepCapture) {
    let Ok(local) = stream.local_addr() else { return };
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(MAX_MESSAGE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if let Err(e) = framer.push(&buf[..n]) {
                    return unframeable(&mut writer, &framer, &e, peer, &rejects).await;
                }
                loop {
                    match framer.next_item() {
                        Ok(Some(StreamItem::Message(bytes))) => match check(&bytes, peer, &rejects) {
                            Ok(message) => {
                                let raw = bytes.to_vec();
                                if inbound.send(Inbound { message, source: peer, transport: Transport::Tcp, local, raw }).await.is_err() {
                                    return;
                                }
                            }
                            Err(Some(response)) => {
                                let _ = writer.write_all(&response).await;
                            }
                            Err(None) => {}
                        },
                        Ok(Some(StreamItem::Ping)) => {
                            let _ = writer.write_all(PONG).await;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => return unframeable(&mut writer, &framer, &e, peer, &rejects).await,
                    }
                }
            }
            out = outgoing.recv() => match out {
                Some((bytes, capture)) => {
                    if writer.write_all(&bytes).await.is_err() { return }
                    if let Some(c) = capture {
                        hep.sip(&c, local, peer, IpProto::Tcp, &bytes, std::time::SystemTime::now());
                    }
                }
                None => return,
            },
        }
    }
}

/// The stream cannot be cut into messages any more (RFC 3261 section 18.3: Content-Length is
/// what delimits them): the request in the buffer, when there is one, is told why (400 for an
/// unreadable Content-Length, 513 for too large), and the connection closes.
async fn unframeable(writer: &mut tokio::net::tcp::OwnedWriteHalf, framer: &StreamFramer, error: &FramingError, peer: SocketAddr, rejects: &Rejects) {
    let reason = match error {
        FramingError::TooLarge { .. } => "Message Too Large",
        FramingError::BadContentLength => "Bad Content-Length header",
    };
    tracing::debug!(peer = %peer, error = %error, "unframeable SIP over TCP; closing");
    rejects.record(peer.ip(), reason);
    let tag = new_tag(&mut rand::rng());
    let response = refusal(framer.pending(), error.status_code(), reason, Vec::new(), &tag).map(|r| r.to_string());
    if let Some(text) = response {
        let _ = writer.write_all(text.as_bytes()).await;
    }
}
