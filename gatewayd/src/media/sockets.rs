//! The media workers' UDP sockets: bound non-blocking with the configured DSCP (and
//! SO_REUSEPORT on the shared public port), and the choice of the public socket a datagram
//! toward the browser leaves from.

use std::net::{SocketAddr, UdpSocket as StdUdp};

use mio::net::UdpSocket;
use mio::Token;
use socket2::{Domain, Protocol, Socket, Type};

use super::config::MediaConfig;

/// Binds a non-blocking UDP socket with the configured DSCP; `shared` lets every worker bind
/// its own socket on the one shared port (SO_REUSEPORT).
pub fn bind_udp(addr: SocketAddr, dscp: Option<u8>, shared: bool) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if shared {
        s.set_reuse_port(true)?;
    }
    if let Some(d) = dscp {
        if addr.is_ipv4() {
            s.set_tos_v4(u32::from(d) << 2)?;
        } else {
            s.set_tclass_v6(u32::from(d) << 2)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    let std: StdUdp = s.into();
    Ok(UdpSocket::from_std(std))
}

/// Sends from the public socket of the address `source` is on: the call's own, or the
/// worker's shared one.
pub fn send_public(cfg: &MediaConfig, own: &[(Token, UdpSocket)], shared: &[(Token, UdpSocket)], source: SocketAddr, dest: SocketAddr, data: &[u8]) {
    let i = cfg.public.iter().position(|a| a.advertise == source.ip()).unwrap_or(0);
    let sock = if shared.is_empty() { own.get(i) } else { shared.get(i) };
    if let Some((_, s)) = sock {
        let _ = s.send_to(data, dest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_carry_the_configured_dscp() {
        let s = bind_udp("127.0.0.1:0".parse().unwrap(), Some(46), false).unwrap();
        assert_eq!(socket2::SockRef::from(&s).tos_v4().unwrap(), 46 << 2);
        let plain = bind_udp("127.0.0.1:0".parse().unwrap(), None, false).unwrap();
        assert_eq!(socket2::SockRef::from(&plain).tos_v4().unwrap(), 0);
    }

    #[test]
    fn every_worker_binds_the_shared_port() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), None, true).unwrap();
        let b = bind_udp(a.local_addr().unwrap(), None, true).unwrap();
        assert_eq!(a.local_addr().unwrap(), b.local_addr().unwrap());
        assert!(bind_udp(a.local_addr().unwrap(), None, false).is_err(), "a socket without SO_REUSEPORT cannot join");
    }
}
