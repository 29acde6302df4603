//! TURN over TCP and TLS (RFC 8656 3.1): accepting, the TLS handshake with the certificate in
//! effect, then the connection is handed to the data plane (`conn`, `plane`); framing of STUN
//! messages and ChannelData on a byte stream; and the async path for connections the HTTPS
//! listener hands over (a bounded queue toward each). The allocation of a stream client ends
//! with its connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

use super::allocation::{Client, Transport};
use super::conn::{Conn, IDLE_TIMEOUT};
use super::driver::{Inner, Sink, MAX_MESSAGE};
use crate::guard::Report;
use crate::profile::FailureKind;

/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes gathered into one write toward a stream client.
const WRITE_BATCH: usize = 16 * 1024;
/// Frames queued toward one connection; beyond, media is dropped rather than buffered.
const OUTGOING_QUEUE: usize = 512;

/// What the first frame in `buf` is and how long, once enough bytes are there.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Incomplete,
    /// A complete message of this many bytes (ChannelData includes its padding).
    Complete(usize),
    /// Neither STUN nor ChannelData: the stream is not TURN.
    Invalid,
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];

pub fn frame(buf: &[u8]) -> Frame {
    if buf.len() < 4 {
        return Frame::Incomplete;
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    let total = match buf[0] {
        // Every STUN method this server knows has a message type below 0x0200.
        0x00..=0x01 if len % 4 == 0 => {
            if buf.len() >= 8 && buf[4..8] != MAGIC_COOKIE {
                return Frame::Invalid;
            }
            20 + len
        }
        0x40..=0x7f => (4 + len).div_ceil(4) * 4,
        _ => return Frame::Invalid,
    };
    if buf.len() < total {
        Frame::Incomplete
    } else {
        Frame::Complete(total)
    }
}

/// Whether the first byte of a stream is a STUN message's: how a TLS listener shared with HTTPS
/// tells TURN from HTTP. A new connection cannot open with ChannelData (no channel is bound on
/// it yet), and 0x40-0x7f are also the first letters of HTTP methods, so only 0x00/0x01 count.
pub fn starts_turn(first: u8) -> bool {
    first <= 0x01
}

pub(super) async fn accept(inner: Arc<Inner>, listener: TcpListener, local: SocketAddr, transport: Transport) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                let inner = inner.clone();
                tokio::spawn(async move {
                    if transport == Transport::Tls {
                        let config = inner.tls.borrow().clone();
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, TlsAcceptor::from(config).accept(tcp)).await {
                            Ok(Ok(tls)) => {
                                let (tcp, session) = tls.into_inner();
                                to_plane(&inner, tcp, Some(session), peer, local, Transport::Tls);
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(error = %e, %peer, "turn: TLS handshake failed");
                                // Bad TLS counts against the source as on the HTTPS listener.
                                if let Some(detail) = crate::web::handshake_failure(&e) {
                                    inner.report(Report { ip: crate::guard::canonical(peer.ip()), kind: FailureKind::TlsHandshake, detail });
                                }
                            }
                            Err(_) => {
                                inner.report(Report { ip: crate::guard::canonical(peer.ip()), kind: FailureKind::TlsHandshake, detail: "TURN TLS handshake timed out".into() });
                            }
                        }
                    } else {
                        to_plane(&inner, tcp, None, peer, local, Transport::Tcp);
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, %local, "turn: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Counts a stream from one source while it lives.
pub(super) struct StreamSlot {
    inner: Arc<Inner>,
    ip: std::net::IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut streams = self.inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = streams.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.ip);
            }
        }
    }
}

/// Counts a new stream against its source; None (reported) beyond `per_source`.
pub(super) fn admit(inner: &Arc<Inner>, peer: SocketAddr) -> Option<StreamSlot> {
    let ip = crate::guard::canonical(peer.ip());
    let count = {
        let mut streams = inner.streams.lock().unwrap_or_else(|e| e.into_inner());
        let n = streams.entry(ip).or_insert(0);
        *n += 1;
        *n
    };
    let slot = StreamSlot { inner: inner.clone(), ip };
    if count > inner.per_source_limit() {
        inner.report(Report { ip, kind: FailureKind::RateLimited, detail: format!("{count} TURN connections open from this source") });
        return None;
    }
    Some(slot)
}

/// Hands an accepted (and, for TLS, handshaken) connection to the data plane.
fn to_plane(inner: &Arc<Inner>, tcp: tokio::net::TcpStream, tls: Option<rustls::ServerConnection>, peer: SocketAddr, local: SocketAddr, transport: Transport) {
    let Some(slot) = admit(inner, peer) else { return };
    let client = Client { transport, listener: local, addr: peer };
    let handed = tcp.into_std().and_then(|sock| Conn::new(client, sock, tls, slot)).and_then(|conn| inner.plane().add_conn(conn));
    if let Err(e) = handed {
        tracing::warn!(error = %e, %peer, "turn: cannot serve a stream connection");
    }
}

/// Serves one TURN stream on the async runtime (the HTTPS listener's hand-overs); `already`
/// holds bytes read before it was known to be TURN.
pub(super) async fn serve<S>(inner: Arc<Inner>, stream: S, already: Bytes, peer: SocketAddr, local: SocketAddr, transport: Transport)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let Some(_slot) = admit(&inner, peer) else { return };
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Bytes>(OUTGOING_QUEUE);
    let write = tokio::spawn(async move {
        // Frames queued meanwhile go out in one write: one TLS record and one syscall for many.
        let mut batch = BytesMut::with_capacity(WRITE_BATCH);
        while let Some(frame) = rx.recv().await {
            batch.extend_from_slice(&frame);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(more) => batch.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            if writer.write_all(&batch).await.is_err() || writer.flush().await.is_err() {
                break;
            }
            batch.clear();
        }
        let _ = writer.shutdown().await;
    });
    let client = Client { transport, listener: local, addr: peer };
    let sink = Sink::Stream(tx);
    let mut buf = BytesMut::with_capacity(4096);
    buf.extend_from_slice(&already);
    'read: loop {
        loop {
            match frame(&buf) {
                Frame::Complete(n) => {
                    inner.from_client(client, &sink, &buf[..n]);
                    buf.advance(n);
                }
                Frame::Incomplete => break,
                Frame::Invalid => break 'read,
            }
        }
        if buf.capacity() - buf.len() < 2048 {
            buf.reserve(MAX_MESSAGE.min(buf.len() + 4096));
        }
        match tokio::time::timeout(IDLE_TIMEOUT, reader.read_buf(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    drop(sink);
    let core = {
        let mut core = inner.core();
        core.client_gone(super::driver::now(), client);
        core
    };
    inner.drain(core);
    write.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_stun_and_padded_channel_data() {
        assert_eq!(frame(&[0, 1, 0]), Frame::Incomplete);
        let mut stun = vec![0x00, 0x01, 0x00, 0x04, 0x21, 0x12, 0xa4, 0x42];
        stun.resize(24, 0);
        assert_eq!(frame(&stun[..23]), Frame::Incomplete);
        assert_eq!(frame(&stun), Frame::Complete(24));
        assert_eq!(frame(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0]), Frame::Incomplete);
        assert_eq!(frame(&[0x40, 0x00, 0x00, 0x05, 1, 2, 3, 4, 5, 0, 0, 0]), Frame::Complete(12));
        assert_eq!(frame(&[0x80, 0x00, 0x00, 0x04]), Frame::Invalid);
        assert_eq!(frame(&[0x16, 0x03, 0x01, 0x00]), Frame::Invalid, "a TLS record on the plain listener");
        assert_eq!(frame(&[0x00, 0x01, 0x00, 0x03]), Frame::Invalid, "STUN lengths are multiples of four");
        assert_eq!(frame(&[0x00, 0x01, 0x00, 0x04, 1, 2, 3, 4]), Frame::Invalid, "no magic cookie");
    }

    #[test]
    fn only_stun_opens_a_shared_listener_stream_as_turn() {
        assert!(starts_turn(0x00) && starts_turn(0x01));
        assert!(!starts_turn(b'G') && !starts_turn(b'P') && !starts_turn(0x16));
    }
}
