//! TURN clients over TCP and TLS served by the data plane (`plane`): once accepted (and, for
//! TLS, once the handshake is done on the async runtime), a connection's socket and rustls
//! state move to the plane thread, which reads, decrypts and frames what the client sends and
//! writes what is relayed to it, in the same wake-ups as the UDP traffic. No task, queue or
//! cross-thread wake-up per packet.
//!
//! A connection's state sits behind its own lock, taken by the plane thread and by whoever
//! replies to the client (the core's output, on the same thread in practice); the lock is never
//! held while the core runs. Writes never wait: what the socket does not take of a frame stays
//! buffered until it is writable again, and frames toward a client whose socket is full are
//! dropped and counted meanwhile (a late media packet is worth nothing; the kernel's send
//! buffer already holds the backlog a client can still catch up on).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rustls::ServerConnection;

use super::allocation::Client;
use super::stream::{frame, Frame, StreamSlot};

/// A connection that says nothing this long is closed (allocations refresh well within it).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Received bytes held for one incomplete frame at most (a STUN message or ChannelData).
const READ_LIMIT: usize = super::driver::MAX_MESSAGE;

pub(super) struct Conn {
    pub client: Client,
    /// Its token in the plane, once registered (0 before).
    token: std::sync::atomic::AtomicU64,
    state: Mutex<State>,
    /// Counts the connection against its source while it lives.
    _slot: StreamSlot,
}

struct State {
    sock: TcpStream,
    tls: Option<Box<ServerConnection>>,
    /// Received bytes not yet framed.
    inbuf: Vec<u8>,
    /// Plaintext TCP bytes the socket did not take yet (TLS buffers its own).
    outbuf: Vec<u8>,
    last_read: Instant,
    /// The socket would not take everything: new frames are dropped until it drains.
    blocked: bool,
    closed: bool,
}

/// What a read turned up.
pub(super) enum Received {
    /// Complete frames, in order, for the core.
    Frames(Vec<u8>, Vec<usize>),
    /// The client closed, broke the framing or the TLS session: the connection ends.
    Closed,
}

impl Conn {
    pub(super) fn new(client: Client, sock: TcpStream, tls: Option<ServerConnection>, slot: StreamSlot) -> std::io::Result<Arc<Conn>> {
        sock.set_nonblocking(true)?;
        let _ = sock.set_nodelay(true);
        let state = State { sock, tls: tls.map(Box::new), inbuf: Vec::new(), outbuf: Vec::new(), last_read: Instant::now(), blocked: false, closed: false };
        Ok(Arc::new(Conn { client, token: Default::default(), state: Mutex::new(state), _slot: slot }))
    }

    pub(super) fn set_token(&self, token: u64) {
        self.token.store(token, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn token(&self) -> Option<u64> {
        Some(self.token.load(std::sync::atomic::Ordering::Relaxed)).filter(|t| *t != 0)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket's descriptor, for polling; valid while the connection lives.
    pub(super) fn raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.state().sock)
    }

    /// Reads what the socket has (and what rustls already holds) and splits it into frames.
    pub(super) fn read(&self, scratch: &mut [u8]) -> Received {
        let mut st = self.state();
        let State { sock, tls, inbuf, closed, last_read, .. } = &mut *st;
        if *closed {
            return Received::Closed;
        }
        let open = match tls {
            Some(tls) => read_tls(tls, sock, inbuf, scratch),
            None => match sock.read(scratch) {
                Ok(0) => Ok(false),
                Ok(n) => {
                    inbuf.extend_from_slice(&scratch[..n]);
                    Ok(true)
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(true),
                Err(e) => Err(e),
            },
        };
        *last_read = Instant::now();
        let mut ends = Vec::new();
        let mut at = 0;
        loop {
            match frame(&inbuf[at..]) {
                Frame::Complete(n) => {
                    at += n;
                    ends.push(at);
                }
                Frame::Incomplete => break,
                Frame::Invalid => {
                    *closed = true;
                    return Received::Closed;
                }
            }
        }
        if !matches!(open, Ok(true)) || inbuf.len() - at > READ_LIMIT {
            *closed = true;
            // Frames that arrived before the end still count.
            if ends.is_empty() {
                return Received::Closed;
            }
        }
        let frames: Vec<u8> = inbuf.drain(..at).collect();
        Received::Frames(frames, ends)
    }

    pub(super) fn is_closed(&self) -> bool {
        self.state().closed
    }

    pub(super) fn idle_since(&self) -> Instant {
        self.state().last_read
    }

    /// Writes a frame toward the client, as far as the socket takes it. The first value is
    /// false when the frame was dropped (the socket is full, or the connection is gone); the
    /// second says whether bytes wait for the socket to become writable.
    pub(super) fn send(&self, frame: &[u8]) -> (bool, bool) {
        let mut st = self.state();
        let State { sock, tls, outbuf, closed, blocked, .. } = &mut *st;
        if *closed || *blocked {
            return (false, *blocked);
        }
        match tls {
            // Unbounded inside rustls, but never more than one frame waits: see `blocked`.
            Some(tls) => {
                let _ = tls.writer().write_all(frame);
            }
            None => outbuf.extend_from_slice(frame),
        }
        *blocked = flush(sock, tls, outbuf, closed);
        (true, *blocked)
    }

    /// Writes what is waiting; true when bytes are still left.
    pub(super) fn flush(&self) -> bool {
        let mut st = self.state();
        let State { sock, tls, outbuf, closed, blocked, .. } = &mut *st;
        *blocked = flush(sock, tls, outbuf, closed);
        *blocked
    }

    /// Ends the session politely where TLS allows (close_notify), without waiting.
    pub(super) fn shut(&self) {
        let mut st = self.state();
        let State { sock, tls, outbuf, closed, .. } = &mut *st;
        if let Some(tls) = tls {
            tls.send_close_notify();
        }
        flush(sock, tls, outbuf, closed);
        *closed = true;
        let _ = sock.shutdown(std::net::Shutdown::Both);
    }
}

fn flush(sock: &mut TcpStream, tls: &mut Option<Box<ServerConnection>>, outbuf: &mut Vec<u8>, closed: &mut bool) -> bool {
    match tls {
        Some(tls) => {
            while tls.wants_write() {
                match tls.write_tls(sock) {
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => {
                        *closed = true;
                        return false;
                    }
                }
            }
            false
        }
        None => {
            while !outbuf.is_empty() {
                match sock.write(outbuf) {
                    Ok(n) => {
                        outbuf.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(_) => {
                        *closed = true;
                        outbuf.clear();
                        return false;
                    }
                }
            }
            false
        }
    }
}

/// Ok(false) at the client's end of stream; plaintext appended to `out`.
fn read_tls(tls: &mut ServerConnection, sock: &mut TcpStream, out: &mut Vec<u8>, scratch: &mut [u8]) -> std::io::Result<bool> {
    let open = match tls.read_tls(sock) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::WouldBlock => true,
        Err(e) => return Err(e),
    };
    let state = tls.process_new_packets().map_err(|e| std::io::Error::new(ErrorKind::InvalidData, e))?;
    let open = open && !state.peer_has_closed();
    loop {
        match tls.reader().read(scratch) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Ok(false),
        }
    }
    Ok(open)
}
