//! Batched datagram receive for the data plane: one `recvmmsg` takes every datagram a ready
//! UDP socket holds (up to a batch), so a socket with one datagram waiting costs one system
//! call instead of a receive and a failing one, and a busy listener many datagrams per call.
//! Owns only its buffers; it never sends and knows nothing of STUN. The media workers use it
//! too, on their RTP and ICE sockets.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Buffers and headers for up to `N` datagrams of up to `size` bytes each, reused by every
/// receive (nothing is allocated per call).
pub(crate) struct Datagrams<const N: usize> {
    headers: MultiHeaders<SockaddrStorage>,
    bufs: [Vec<u8>; N],
    /// The slot, length and source of each datagram the last receive took.
    got: Vec<(usize, usize, SocketAddr)>,
}

impl<const N: usize> Datagrams<N> {
    pub(crate) fn new(size: usize) -> Datagrams<N> {
        Datagrams { headers: MultiHeaders::preallocate(N, None), bufs: std::array::from_fn(|_| vec![0; size]), got: Vec::with_capacity(N) }
    }

    /// Receives what the socket holds without waiting, reading at most `limit` bytes of each
    /// datagram (a datagram longer than that comes back cut to `limit`: pass one byte more
    /// than the longest acceptable to tell). Returns how many arrived; 0 when none waited or
    /// the socket failed (a level-triggered poll reports it again if it is still ready).
    pub(crate) fn recv(&mut self, sock: BorrowedFd<'_>, limit: usize) -> usize {
        self.try_recv(sock, limit).unwrap_or(0)
    }

    /// As `recv`, with the socket's error: `EAGAIN` when nothing waited, or a pending error
    /// (an ICMP report of an earlier send) that an edge-triggered reader must read past.
    pub(crate) fn try_recv(&mut self, sock: BorrowedFd<'_>, limit: usize) -> nix::Result<usize> {
        self.got.clear();
        let mut bufs = self.bufs.iter_mut();
        let mut slices: [[IoSliceMut<'_>; 1]; N] = std::array::from_fn(|_| {
            let buf = bufs.next().expect("one buffer per slot");
            let end = limit.min(buf.len());
            [IoSliceMut::new(&mut buf[..end])]
        });
        let results = recvmmsg(sock.as_raw_fd(), &mut self.headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)?;
        for (slot, msg) in results.enumerate() {
            // A source of another family cannot happen on an inet socket; skipped if it did.
            if let Some(from) = msg.address.as_ref().and_then(to_std) {
                self.got.push((slot, msg.bytes, from));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`th datagram of the last receive and its source.
    pub(crate) fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let (slot, n, from) = self.got[i];
        (&self.bufs[slot][..n], from)
    }
}

fn to_std(addr: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    addr.as_sockaddr_in6().map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    #[test]
    fn one_call_takes_every_waiting_datagram_and_its_source() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut batch = Datagrams::<4>::new(64);
        assert_eq!(batch.recv(rx.as_fd(), 64), 0, "nothing waits: no datagram, no blocking");
        for i in 0..6u8 {
            tx.send_to(&[i; 10], rx.local_addr().unwrap()).unwrap();
        }
        assert_eq!(batch.recv(rx.as_fd(), 64), 4, "a batch at most");
        assert_eq!(batch.get(0), (&[0u8; 10][..], tx.local_addr().unwrap()));
        assert_eq!(batch.get(3).0, &[3u8; 10]);
        assert_eq!(batch.recv(rx.as_fd(), 64), 2, "the rest on the next call");
        assert_eq!(batch.get(1).0, &[5u8; 10]);
    }

    #[test]
    fn a_datagram_over_the_limit_is_cut_to_it() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7; 40], rx.local_addr().unwrap()).unwrap();
        let mut batch = Datagrams::<2>::new(64);
        assert_eq!(batch.recv(rx.as_fd(), 9), 1);
        assert_eq!(batch.get(0).0.len(), 9);
    }
}
