//! One UDP socket shared by all calls of a side, read and written in batches (recvmmsg /
//! sendmmsg) so the load client spends its time on the calls rather than on system calls,
//! with the kernel's receive timestamp (SO_TIMESTAMPNS) for every datagram so that time a
//! datagram waits in the client's queue is not counted as the bridge's latency.

use std::io::IoSliceMut;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::cmsg_space;
use nix::sys::socket::{recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn};
use nix::sys::time::TimeSpec;

/// Datagrams per system call.
pub const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 1500;

/// Wall-clock nanoseconds, the clock the kernel's receive timestamps use.
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

/// The receiving half of a shared socket.
pub struct RxBatch {
    pub sock: UdpSocket,
    rx_bufs: Vec<[u8; MAX_DATAGRAM]>,
    rx_hdrs: MultiHeaders<SockaddrIn>,
    /// Datagrams the kernel dropped at this socket (full receive buffer) so far.
    pub drops: u32,
}

/// The sending half: datagrams queue up (buffers reused, no allocation per packet once warm)
/// and leave in `flush`, a few per system call.
pub struct TxBatch {
    sock: UdpSocket,
    tx_bufs: Vec<Vec<u8>>,
    tx_dest: Vec<libc::sockaddr_in>,
    /// A caller's mark per queued datagram, handed back when it is stamped.
    tx_tag: Vec<u32>,
    tx_len: usize,
    /// Datagrams the kernel refused (full send buffer): visible in the report, never silent.
    pub send_errors: u64,
    /// The longest single send call, nanoseconds. Datagrams late in a call that was
    /// preempted carry a send time that is too early: this bounds that error.
    pub longest_send_ns: u64,
}

/// Datagrams per send call: the send time is taken right before each call, so a long batch
/// would charge the kernel's time for its tail to the bridge.
const SEND_CHUNK: usize = 16;

/// One received datagram: where from, when the kernel took it in, and its bytes.
pub struct Datagram<'a> {
    pub source: SocketAddr,
    pub kernel_ns: u64,
    pub data: &'a [u8],
}

/// Binds the shared socket of one side.
pub fn bind(addr: SocketAddr) -> (RxBatch, TxBatch) {
    {
        let sock = UdpSocket::bind(addr).expect("client port free");
        sock.set_nonblocking(true).unwrap();
        setsockopt(&sock.as_fd(), sockopt::ReceiveTimestampns, &true).expect("SO_TIMESTAMPNS");
        // The kernel's count of datagrams this socket dropped for want of buffer: loss the
        // client caused must not be charged to the bridge.
        setsockopt(&sock.as_fd(), sockopt::RxqOvfl, &1).expect("SO_RXQ_OVFL");
        // Every call's traffic meets here: room for a few hundred milliseconds of it. The
        // forcing variants need root; fall back to what the system limit allows.
        let big = 128 << 20;
        if setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &big).is_err() {
            let _ = setsockopt(&sock.as_fd(), sockopt::RcvBuf, &big);
        }
        if setsockopt(&sock.as_fd(), sockopt::SndBufForce, &big).is_err() {
            let _ = setsockopt(&sock.as_fd(), sockopt::SndBuf, &big);
        }
        let tx = TxBatch { sock: sock.try_clone().unwrap(), tx_bufs: Vec::new(), tx_dest: Vec::new(), tx_tag: Vec::new(), tx_len: 0, send_errors: 0, longest_send_ns: 0 };
        let rx = RxBatch { sock, rx_bufs: vec![[0u8; MAX_DATAGRAM]; BATCH], rx_hdrs: MultiHeaders::preallocate(BATCH, Some(cmsg_space!(TimeSpec, u32))), drops: 0 };
        (rx, tx)
    }
}

impl RxBatch {
    /// Reads up to one batch; calls `f` for each datagram. Returns how many were read (0 when
    /// nothing was waiting).
    pub fn recv_batch(&mut self, mut f: impl FnMut(Datagram<'_>)) -> usize {
        let fd = self.sock.as_raw_fd();
        let mut drops = self.drops;
        let got: Vec<(Option<SocketAddr>, u64, usize)> = {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self.rx_bufs.iter_mut().map(|b| [IoSliceMut::new(&mut b[..])]).collect();
            let Ok(res) = recvmmsg(fd, &mut self.rx_hdrs, iovs.iter_mut(), MsgFlags::MSG_DONTWAIT, None) else { return 0 };
            res.map(|msg| {
                let mut kernel_ns = None;
                for m in msg.cmsgs().into_iter().flatten() {
                    match m {
                        ControlMessageOwned::ScmTimestampns(ts) => kernel_ns = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64),
                        ControlMessageOwned::RxqOvfl(d) => drops = drops.max(d),
                        _ => {}
                    }
                }
                let kernel_ns = kernel_ns.unwrap_or_else(wall_ns);
                (msg.address.map(|a: SockaddrIn| SocketAddr::V4(SocketAddrV4::from(a))), kernel_ns, msg.bytes)
            })
            .collect()
        };
        self.drops = drops;
        let n = got.len();
        for (i, (source, kernel_ns, len)) in got.into_iter().enumerate() {
            if let Some(source) = source {
                f(Datagram { source, kernel_ns, data: &self.rx_bufs[i][..len] });
            }
        }
        n
    }

}

impl TxBatch {
    pub fn pending(&self) -> usize {
        self.tx_len
    }

    /// Queues a datagram whose bytes `fill` writes into a reused buffer.
    pub fn queue(&mut self, dest: SocketAddr, tag: u32, fill: impl FnOnce(&mut Vec<u8>)) {
        let SocketAddr::V4(v4) = dest else { panic!("IPv4 loopback only") };
        if self.tx_len == self.tx_bufs.len() {
            self.tx_bufs.push(Vec::with_capacity(MAX_DATAGRAM));
            self.tx_dest.push(SockaddrIn::from(v4).into());
            self.tx_tag.push(tag);
        }
        let b = &mut self.tx_bufs[self.tx_len];
        b.clear();
        fill(b);
        self.tx_dest[self.tx_len] = SockaddrIn::from(v4).into();
        self.tx_tag[self.tx_len] = tag;
        self.tx_len += 1;
    }

    /// Sends what is queued, `SEND_CHUNK` datagrams per system call. `stamp` runs right
    /// before each call with the wall-clock time, each datagram's tag and bytes, so send times
    /// are taken as late as possible (and may be written into the datagram).
    pub fn flush(&mut self, mut stamp: impl FnMut(u64, u32, &mut Vec<u8>)) {
        let mut start = 0;
        while start < self.tx_len {
            let end = (start + SEND_CHUNK).min(self.tx_len);
            let now = wall_ns();
            for k in start..end {
                stamp(now, self.tx_tag[k], &mut self.tx_bufs[k]);
            }
            start += self.send(start, end);
            self.longest_send_ns = self.longest_send_ns.max(wall_ns().saturating_sub(now));
        }
        self.tx_len = 0;
    }

    /// One sendmmsg of queued datagrams `start..end`; returns how many are done with (sent,
    /// or the first one skipped after an error).
    fn send(&mut self, start: usize, end: usize) -> usize {
        // libc directly: nix's sendmmsg result iterator reads receive-side address slots that
        // sending never fills.
        let mut iov: [libc::iovec; SEND_CHUNK] = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; SEND_CHUNK];
        // SAFETY: an all-zero mmsghdr is a valid empty header.
        let mut hdrs: [libc::mmsghdr; SEND_CHUNK] = unsafe { std::mem::zeroed() };
        let n = end - start;
        for k in 0..n {
            let b = &mut self.tx_bufs[start + k];
            iov[k] = libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() };
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = (&mut self.tx_dest[start + k] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
        }
        // SAFETY: the headers point into `iov`, `tx_dest` and `tx_bufs`, all alive and
        // unmoved for the duration of the call.
        let sent = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), hdrs.as_mut_ptr(), n as u32, libc::MSG_DONTWAIT) };
        if sent <= 0 {
            // The first datagram failed (full buffer, ICMP-reported unreachable): skip it.
            self.send_errors += 1;
            1
        } else {
            sent as usize
        }
    }
}
