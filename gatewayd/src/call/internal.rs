//! The internal SIP transport driver: UDP sockets and TCP connections on the internal side only.
//! Received messages go to call control through one bounded channel; call control's messages go
//! out through `InternalSender`. Framing and parsing are the sans-IO `sip` helpers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::profile::{SipListen, Transport as ProfileTransport};
use crate::sip::framing::{classify_frame, Frame, StreamFramer, StreamItem, PONG};
use crate::sip::message::{self, bad_request_for};
use crate::sip::transaction::Transport;

/// Largest SIP message accepted on the internal side.
pub const MAX_MESSAGE: usize = 65_535;
/// Frames queued toward one TCP connection.
const TCP_QUEUE: usize = 256;

/// A message from the SIP server side.
#[derive(Debug)]
pub struct Inbound {
    pub message: rsip::SipMessage,
    pub source: SocketAddr,
    pub transport: Transport,
}

/// Sends call control's messages on the internal side.
#[derive(Clone)]
pub struct InternalSender {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>>,
    inbound: mpsc::Sender<Inbound>,
}

impl InternalSender {
    /// Sends without waiting: a full socket buffer or queue drops the message, and the
    /// transaction layer's retransmissions (UDP) or the peer's timers recover.
    pub fn send(&self, to: SocketAddr, transport: Transport, bytes: Vec<u8>) {
        match transport {
            Transport::Tcp | Transport::Tls => self.send_tcp(to, bytes),
            _ => {
                let socket = self.udp.iter().find(|s| s.local_addr().is_ok_and(|a| a.is_ipv4() == to.is_ipv4())).or(self.udp.first());
                match socket {
                    Some(s) => {
                        if let Err(e) = s.try_send_to(&bytes, to) {
                            tracing::debug!(to = %to, error = %e, "SIP datagram not sent");
                        }
                    }
                    None => tracing::warn!(to = %to, "no internal UDP listener to send from"),
                }
            }
        }
    }

    fn send_tcp(&self, to: SocketAddr, bytes: Vec<u8>) {
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
        let (map, inbound) = (self.tcp.clone(), self.inbound.clone());
        tokio::spawn(async move {
            match TcpStream::connect(to).await {
                Ok(stream) => serve_tcp(stream, to, rx, inbound).await,
                Err(e) => tracing::warn!(to = %to, error = %e, "cannot connect to the SIP server over TCP"),
            }
            map.lock().expect("tcp map").remove(&to);
        });
    }
}

/// Binds every internal SIP listener; messages arrive on the returned receiver.
pub async fn bind(listen: &[SipListen], queue: usize) -> std::io::Result<(InternalSender, mpsc::Receiver<Inbound>)> {
    let (inbound_tx, inbound_rx) = mpsc::channel(queue);
    let tcp_conns: Arc<Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>> = Arc::default();
    let mut udp = Vec::new();
    for l in listen {
        match l.transport {
            ProfileTransport::Udp => {
                let socket = Arc::new(UdpSocket::bind(l.address).await?);
                udp.push(socket.clone());
                tokio::spawn(serve_udp(socket, inbound_tx.clone()));
            }
            ProfileTransport::Tcp => {
                let listener = TcpListener::bind(l.address).await?;
                let (conns, inbound) = (tcp_conns.clone(), inbound_tx.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, peer)) = listener.accept().await else { continue };
                        let (tx, rx) = mpsc::channel(TCP_QUEUE);
                        conns.lock().expect("tcp map").insert(peer, tx);
                        let (conns, inbound) = (conns.clone(), inbound.clone());
                        tokio::spawn(async move {
                            serve_tcp(stream, peer, rx, inbound).await;
                            conns.lock().expect("tcp map").remove(&peer);
                        });
                    }
                });
            }
        }
    }
    Ok((InternalSender { udp, tcp: tcp_conns, inbound: inbound_tx }, inbound_rx))
}

async fn serve_udp(socket: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>) {
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
            Frame::Message(bytes) => match message::parse(bytes) {
                Ok(message) => {
                    if inbound.try_send(Inbound { message, source, transport: Transport::Udp }).is_err() {
                        tracing::warn!(source = %source, "call control is saturated; SIP datagram dropped");
                    }
                }
                Err(e) => {
                    tracing::info!(source = %source, error = %e, "malformed SIP from the internal side");
                    if let Some(r) = bad_request_for(bytes, &e, "gw400") {
                        let _ = socket.try_send_to(r.to_string().as_bytes(), source);
                    }
                }
            },
        }
    }
}

async fn serve_tcp(stream: TcpStream, peer: SocketAddr, mut outgoing: mpsc::Receiver<Vec<u8>>, inbound: mpsc::Sender<Inbound>) {
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new(MAX_MESSAGE);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => {
                let n = match read { Ok(0) | Err(_) => return, Ok(n) => n };
                if framer.push(&buf[..n]).is_err() {
                    tracing::info!(peer = %peer, "SIP over TCP overflowed its buffer; closing");
                    return;
                }
                loop {
                    match framer.next_item() {
                        Ok(Some(StreamItem::Message(bytes))) => match message::parse(&bytes) {
                            Ok(message) => {
                                if inbound.send(Inbound { message, source: peer, transport: Transport::Tcp }).await.is_err() {
                                    return;
                                }
                            }
                            Err(e) => {
                                if let Some(r) = bad_request_for(&bytes, &e, "gw400") {
                                    let _ = writer.write_all(r.to_string().as_bytes()).await;
                                }
                            }
                        },
                        Ok(Some(StreamItem::Ping)) => {
                            let _ = writer.write_all(PONG).await;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(peer = %peer, error = %e, "unframeable SIP over TCP; closing");
                            return;
                        }
                    }
                }
            }
            out = outgoing.recv() => match out {
                Some(bytes) => if writer.write_all(&bytes).await.is_err() { return },
                None => return,
            },
        }
    }
}
