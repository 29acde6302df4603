//! One TURN allocation: its relayed address, permissions, channel bindings, bandwidth budget
//! and counters. Plain data with the checks the server needs on the hot path.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::credentials::Key;

/// How long a permission lasts (RFC 8656 9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lasts (RFC 8656 12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// A binding's channel number stays reserved this long after it expires (RFC 8656 12).
pub const CHANNEL_QUARANTINE: Duration = Duration::from_secs(300);

/// How a client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// Streams carry ChannelData padded to four bytes.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }
}

/// A client's 5-tuple as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    pub transport: Transport,
    /// The server's listening address the client talks to.
    pub listener: SocketAddr,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy)]
pub struct Channel {
    pub number: u16,
    pub peer: SocketAddr,
    pub expires: Instant,
}

/// Bytes per second with a one-second burst.
#[derive(Debug, Clone)]
pub struct Budget {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Budget {
    pub fn new(bytes_per_sec: u64, now: Instant) -> Self {
        let rate = bytes_per_sec as f64;
        Self { rate, tokens: rate, last: now }
    }

    pub fn last(&self) -> Instant {
        self.last
    }

    /// Takes `bytes` if the budget has them.
    pub fn take(&mut self, bytes: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub packets_to_peer: u64,
    pub bytes_to_peer: u64,
    pub packets_from_peer: u64,
    pub bytes_from_peer: u64,
    /// Packets dropped for exceeding the bandwidth cap.
    pub dropped: u64,
}

#[derive(Debug, Clone)]
pub struct Allocation {
    pub client: Client,
    pub username: String,
    pub key: Key,
    /// The socket's bound address.
    pub relay: SocketAddr,
    /// What the client is told (the public address for a NATed bound one).
    pub advertised: SocketAddr,
    /// The Allocate's transaction, to answer its retransmissions alike.
    pub txid: u128,
    pub created: Instant,
    pub expires: Instant,
    pub permissions: Vec<(IpAddr, Instant)>,
    pub channels: Vec<Channel>,
    pub budget: Budget,
    pub traffic: Traffic,
}

impl Allocation {
    pub fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.iter().any(|(p, until)| *p == ip && *until > now)
    }

    /// Installs or refreshes a permission; false when the table is full.
    pub fn permit(&mut self, ip: IpAddr, now: Instant, max: usize) -> bool {
        if let Some(p) = self.permissions.iter_mut().find(|(p, _)| *p == ip) {
            p.1 = now + PERMISSION_LIFETIME;
            return true;
        }
        self.permissions.retain(|(_, until)| *until > now);
        if self.permissions.len() >= max {
            return false;
        }
        self.permissions.push((ip, now + PERMISSION_LIFETIME));
        true
    }

    pub fn channel_by_number(&self, number: u16, now: Instant) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == number && c.expires > now)
    }

    pub fn channel_to(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        self.channels.iter().find(|c| c.peer == peer && c.expires > now).map(|c| c.number)
    }

    /// Binds or refreshes `number` to `peer`. Err when the number or the peer is bound otherwise
    /// (still or in quarantine), or when the table is full.
    pub fn bind(&mut self, number: u16, peer: SocketAddr, now: Instant, max: usize) -> Result<(), &'static str> {
        self.channels.retain(|c| c.expires + CHANNEL_QUARANTINE > now);
        if let Some(c) = self.channels.iter_mut().find(|c| c.number == number) {
            if c.peer != peer {
                return Err("channel number bound to another peer");
            }
            c.expires = now + CHANNEL_LIFETIME;
            return Ok(());
        }
        if self.channels.iter().any(|c| c.peer == peer) {
            return Err("peer bound to another channel");
        }
        if self.channels.len() >= max {
            return Err("too many channels");
        }
        self.channels.push(Channel { number, peer, expires: now + CHANNEL_LIFETIME });
        Ok(())
    }

    /// Drops expired permissions and channels past their quarantine.
    pub fn sweep(&mut self, now: Instant) {
        self.permissions.retain(|(_, until)| *until > now);
        self.channels.retain(|c| c.expires + CHANNEL_QUARANTINE > now);
    }
}
