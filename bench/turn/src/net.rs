//! Sockets for the load client, straight on libc: one UDP socket per allocation (a TURN
//! allocation is its client's 5-tuple) read with the kernel's receive timestamp, a level-
//! triggered epoll set over all of them, and the peer's single socket read and written in
//! batches (recvmmsg / sendmmsg) since every relay address sends to it.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock nanoseconds: the clock SO_TIMESTAMPNS stamps datagrams with.
pub fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: a plain int option on a valid descriptor.
    let r = unsafe { libc::setsockopt(fd, level, name, (&v as *const i32).cast(), 4) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Kernel receive timestamps on, and buffers of `buf` bytes (forced when root allows).
pub fn tune(fd: RawFd, buf: i32) {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1).expect("SO_TIMESTAMPNS");
    if buf > 0 {
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, buf).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, buf);
        }
        if setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, buf).is_err() {
            let _ = setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, buf);
        }
    }
}

/// A nonblocking UDP socket on `local` connected to `server`.
pub fn client_udp(local: SocketAddrV4, server: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = UdpSocket::bind(local)?;
    s.connect(server)?;
    s.set_nonblocking(true)?;
    tune(s.as_raw_fd(), 0);
    Ok(s)
}

fn ts_ns(h: &libc::msghdr) -> Option<u64> {
    // SAFETY: walking the control messages the kernel wrote into the header's buffer.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// One datagram from a connected socket with its kernel receive time; None when nothing waits.
pub fn recv_ts(fd: RawFd, buf: &mut [u8]) -> Option<(usize, u64)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let mut cbuf = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; it points at `iov` and `cbuf`, alive for the call.
    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
    h.msg_iov = &mut iov;
    h.msg_iovlen = 1;
    h.msg_control = cbuf.as_mut_ptr().cast();
    h.msg_controllen = std::mem::size_of_val(&cbuf);
    // SAFETY: see above.
    let n = unsafe { libc::recvmsg(fd, &mut h, libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    Some((n as usize, ts_ns(&h).unwrap_or_else(wall_ns)))
}

/// Level-triggered epoll over the client's sockets; tokens are caller-chosen.
pub struct Epoll {
    fd: RawFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    pub fn new() -> Self {
        // SAFETY: plain system call.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(fd >= 0, "epoll_create1");
        Epoll { fd, events: vec![libc::epoll_event { events: 0, u64: 0 }; 512] }
    }

    pub fn add(&self, fd: RawFd, token: u64) {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: token };
        // SAFETY: valid descriptors and event.
        let r = unsafe { libc::epoll_ctl(self.fd, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl: {}", io::Error::last_os_error());
    }

    /// Waits up to `timeout_ns` (nanosecond resolution: epoll_pwait2) and hands each ready
    /// token to `f`.
    pub fn wait(&mut self, timeout_ns: u64, mut f: impl FnMut(u64)) -> usize {
        let ts = libc::timespec { tv_sec: (timeout_ns / 1_000_000_000) as i64, tv_nsec: (timeout_ns % 1_000_000_000) as i64 };
        // SAFETY: the buffer has room for `len` events; the timeout lives across the call.
        let mut n = unsafe { libc::epoll_pwait2(self.fd, self.events.as_mut_ptr(), self.events.len() as i32, &ts, std::ptr::null()) };
        if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // Kernels before 5.11: millisecond timeouts, rounded up.
            let ms = timeout_ns.div_ceil(1_000_000) as i32;
            // SAFETY: as above.
            n = unsafe { libc::epoll_wait(self.fd, self.events.as_mut_ptr(), self.events.len() as i32, ms) };
        }
        let n = n.max(0) as usize;
        for k in 0..n {
            let t = self.events[k].u64;
            f(t);
        }
        n
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: our own descriptor.
        unsafe { libc::close(self.fd) };
    }
}

pub const BATCH: usize = 64;
const MAX_DATAGRAM: usize = 2048;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))
}

/// The peer's socket: batched receive with timestamps and sources, batched echo.
pub struct Batch {
    pub sock: UdpSocket,
    rx: Vec<[u8; MAX_DATAGRAM]>,
    rx_src: Vec<libc::sockaddr_in>,
    rx_cmsg: Vec<[u64; 8]>,
    tx: Vec<Vec<u8>>,
    tx_dst: Vec<libc::sockaddr_in>,
    tx_len: usize,
    pub send_errors: u64,
}

impl Batch {
    pub fn bind(addr: SocketAddrV4) -> io::Result<Self> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_nonblocking(true)?;
        tune(sock.as_raw_fd(), 64 << 20);
        let zero = to_sockaddr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0));
        Ok(Batch {
            sock,
            rx: vec![[0u8; MAX_DATAGRAM]; BATCH],
            rx_src: vec![zero; BATCH],
            rx_cmsg: vec![[0u64; 8]; BATCH],
            tx: (0..BATCH).map(|_| Vec::with_capacity(MAX_DATAGRAM)).collect(),
            tx_dst: vec![zero; BATCH],
            tx_len: 0,
            send_errors: 0,
        })
    }

    /// One recvmmsg; `f(source, kernel_ns, bytes)` per datagram may change the bytes in place
    /// and returns whether to send them back to their source; the echoes leave in the same
    /// call, `stamp(now, bytes)` writing the send time into each right before its system call.
    /// Returns how many datagrams arrived.
    pub fn echo(&mut self, mut f: impl FnMut(SocketAddrV4, u64, &mut [u8]) -> bool, stamp: &mut impl FnMut(u64, &mut [u8])) -> usize {
        let mut iov: Vec<libc::iovec> = self.rx.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: MAX_DATAGRAM }).collect();
        // SAFETY: all-zero headers are valid; each points at its own iovec, address and
        // control buffer, all alive and unmoved during the call.
        let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
        for k in 0..BATCH {
            let h = &mut hdrs[k].msg_hdr;
            h.msg_name = (&mut self.rx_src[k] as *mut libc::sockaddr_in).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
            h.msg_control = self.rx_cmsg[k].as_mut_ptr().cast();
            h.msg_controllen = std::mem::size_of::<[u64; 8]>();
        }
        // SAFETY: see above.
        let n = unsafe { libc::recvmmsg(self.sock.as_raw_fd(), hdrs.as_mut_ptr(), BATCH as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
        if n <= 0 {
            return 0;
        }
        let n = n as usize;
        for k in 0..n {
            let ns = ts_ns(&hdrs[k].msg_hdr).unwrap_or_else(wall_ns);
            let len = hdrs[k].msg_len as usize;
            let src = from_sockaddr(&self.rx_src[k]);
            if f(src, ns, &mut self.rx[k][..len]) {
                let b = &mut self.tx[self.tx_len];
                b.clear();
                b.extend_from_slice(&self.rx[k][..len]);
                self.tx_dst[self.tx_len] = to_sockaddr(src);
                self.tx_len += 1;
            }
        }
        self.flush(stamp);
        n
    }

    /// Sends what is queued, 16 per system call; `stamp(now, bytes)` runs right before each
    /// call so the send time written into a datagram is as late as possible.
    fn flush(&mut self, stamp: &mut impl FnMut(u64, &mut [u8])) {
        const CHUNK: usize = 16;
        let mut start = 0;
        while start < self.tx_len {
            let end = (start + CHUNK).min(self.tx_len);
            let now = wall_ns();
            for b in &mut self.tx[start..end] {
                stamp(now, b);
            }
            let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; CHUNK];
            // SAFETY: all-zero headers are valid.
            let mut hdrs: [libc::mmsghdr; CHUNK] = unsafe { std::mem::zeroed() };
            for k in 0..end - start {
                let b = &mut self.tx[start + k];
                iov[k] = libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: b.len() };
                let h = &mut hdrs[k].msg_hdr;
                h.msg_name = (&mut self.tx_dst[start + k] as *mut libc::sockaddr_in).cast();
                h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
                h.msg_iov = &mut iov[k];
                h.msg_iovlen = 1;
            }
            // SAFETY: headers point into `iov`, `tx_dst` and `tx`, alive during the call.
            let sent = unsafe { libc::sendmmsg(self.sock.as_raw_fd(), hdrs.as_mut_ptr(), (end - start) as u32, libc::MSG_DONTWAIT) };
            if sent <= 0 {
                self.send_errors += 1;
                start += 1;
            } else {
                start += sent as usize;
            }
        }
        self.tx_len = 0;
    }
}
