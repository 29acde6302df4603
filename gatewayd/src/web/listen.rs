//! Listening sockets and per-connection serving: TCP accept, the per-source connection count,
//! the TLS handshake with the certificate in effect at accept time, then HTTP/1.1 with upgrades.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_rustls::TlsAcceptor;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;

use super::handoff::Prefixed;
use super::{pages, redirect, Bound, Settings, Shared, SourceSlot, StartError};
use crate::profile::FailureKind;

/// A TLS handshake must finish within this, or the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request head accepted.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// With more TLS handshakes than this in progress when one began or when it timed out, its timeout is the
/// gateway's own slowness (its CPU shared among them), not evidence against its source: it is
/// not reported to the guard. Without this, a burst of handshakes the gateway cannot finish
/// within HANDSHAKE_TIMEOUT (thousands at once on two cores) counted as handshake failures
/// against every source in it, and the `auth` rule banned them, an office of agents
/// reconnecting after a restart as much as a flood. A peer that stalls its handshake on
/// purpose is still cut at the timeout and held to its per-source connection limit.
const BUSY_HANDSHAKES: usize = 256;

/// Counts one handshake in progress while it lives.
struct InHandshake<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> InHandshake<'a> {
    /// Counts this one in; how many are in progress with it.
    fn enter(count: &'a std::sync::atomic::AtomicUsize) -> (Self, usize) {
        let now = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        (InHandshake(count), now)
    }
}

impl Drop for InHandshake<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Accept queue of the public listeners (the kernel caps it at `net.core.somaxconn`, 4096 by
/// default). tokio's `TcpListener::bind` asks for 128, as std does: when hundreds of agents
/// reconnect at once, or a connection flood arrives, every SYN beyond that is dropped and its
/// client waits out SYN retransmission (1 s, then 3 s, 7 s, ...) before it is even accepted.
pub(crate) const PUBLIC_BACKLOG: u32 = 4096;

/// A listening socket on a public address with the deeper accept queue.
pub(crate) fn bind_public(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As TcpListener::bind does: a restarted daemon can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(PUBLIC_BACKLOG)
}

/// What a request handler knows about its connection.
#[derive(Clone)]
pub(crate) struct ConnInfo {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Held by the connection and, after an upgrade, by the WebSocket session.
    pub _slot: Arc<SourceSlot>,
    /// More connections from this source than allowed: every request gets 503.
    pub over_limit: bool,
}

struct Running {
    requested: SocketAddr,
    local: SocketAddr,
    task: AbortHandle,
}

/// The listeners in service.
#[derive(Default)]
pub(crate) struct Listeners {
    https: Vec<Running>,
    redirect: Vec<Running>,
}

#[derive(Clone, Copy)]
enum Kind {
    Https,
    Redirect,
}

impl Listeners {
    /// Makes the running listeners match `settings`: keeps those whose address stays, binds the
    /// new ones (all or nothing), then stops accepting on the ones no longer wanted.
    pub(crate) async fn rebind(&mut self, settings: &Settings, shared: &Arc<Shared>) -> Result<(), StartError> {
        let https = self.bind_set(Kind::Https, &settings.https, shared).await?;
        let redirect = match self.bind_set(Kind::Redirect, &settings.http_redirect, shared).await {
            Ok(r) => r,
            Err(e) => {
                abort_new(&self.https, https);
                return Err(e);
            }
        };
        let old_https = std::mem::replace(&mut self.https, https);
        let old_redirect = std::mem::replace(&mut self.redirect, redirect);
        for old in old_https.into_iter().chain(old_redirect) {
            if !self.https.iter().chain(&self.redirect).any(|r| r.task.id() == old.task.id()) {
                old.task.abort();
            }
        }
        shared.bound.send_replace(Bound {
            https: self.https.iter().map(|r| r.local).collect(),
            http_redirect: self.redirect.iter().map(|r| r.local).collect(),
        });
        Ok(())
    }

    /// Stops accepting everywhere; open connections go on.
    pub(crate) fn stop(&mut self) {
        for r in self.https.drain(..).chain(self.redirect.drain(..)) {
            r.task.abort();
        }
    }

    async fn bind_set(&self, kind: Kind, wanted: &[SocketAddr], shared: &Arc<Shared>) -> Result<Vec<Running>, StartError> {
        let current = match kind {
            Kind::Https => &self.https,
            Kind::Redirect => &self.redirect,
        };
        let mut out: Vec<Running> = Vec::new();
        for &addr in wanted {
            if let Some(r) = current.iter().find(|r| r.requested == addr) {
                out.push(Running { requested: addr, local: r.local, task: r.task.clone() });
                continue;
            }
            let key = match kind {
                Kind::Https => "web.https",
                Kind::Redirect => "web.http_redirect",
            };
            let listener = match bind_public(addr) {
                Ok(l) => l,
                Err(source) => {
                    abort_new(current, out);
                    return Err(StartError::Bind { key, addr, source });
                }
            };
            let local = listener.local_addr().map_err(|source| StartError::Bind { key, addr, source })?;
            let task = match kind {
                Kind::Https => tokio::spawn(accept_https(listener, local, shared.clone())),
                Kind::Redirect => tokio::spawn(redirect::accept(listener, local, shared.clone())),
            };
            tracing::info!(listener = key, %local, "web: listening");
            out.push(Running { requested: addr, local, task: task.abort_handle() });
        }
        Ok(out)
    }
}

/// Stops the listeners in `new` that were bound for it (not the ones it shares with `current`).
fn abort_new(current: &[Running], new: Vec<Running>) {
    for r in new {
        if !current.iter().any(|c| c.task.id() == r.task.id()) {
            r.task.abort();
        }
    }
}

/// Accepts until aborted; each connection runs in its own task, so aborting leaves them be.
async fn accept_https(listener: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                tokio::spawn(serve_https(tcp, peer, local, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, %local, "web: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_https(tcp: TcpStream, peer: SocketAddr, local: SocketAddr, shared: Arc<Shared>) {
    if !shared.admit_connection(peer.ip()) {
        // Closed before any TLS work: a connection flood costs us an accept only.
        return;
    }
    let settings = shared.settings();
    let slot = Arc::new(shared.open_slot(peer.ip()));
    let limit = settings.max_connections_from(peer.ip());
    if slot.count > limit.saturating_mul(2) {
        // Far over the limit: not even a handshake.
        shared.fail(peer.ip(), FailureKind::RateLimited, format!("{} connections open from this source", slot.count));
        return;
    }
    let _ = tcp.set_nodelay(true);
    let acceptor = TlsAcceptor::from(settings.tls.clone());
    let (in_handshake, at_start) = InHandshake::enter(&shared.handshakes);
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
    let busy = at_start.max(shared.handshakes.load(std::sync::atomic::Ordering::Relaxed)) > BUSY_HANDSHAKES;
    drop(in_handshake);
    let mut tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            if let Some(detail) = handshake_failure(&e) {
                shared.fail(peer.ip(), FailureKind::TlsHandshake, detail);
            }
            return;
        }
        Err(_) if busy => {
            tracing::debug!(%peer, "web: handshake timed out while the gateway was busy with others; not held against the source");
            return;
        }
        Err(_) => {
            shared.fail(peer.ip(), FailureKind::TlsHandshake, "handshake timed out");
            return;
        }
    };
    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::alpn_challenge::ACME_TLS_ALPN) {
        // A CA's TLS-ALPN-01 validation: the handshake was all it wanted (RFC 8737 section 3).
        return;
    }
    let over_limit = slot.count > limit;
    if over_limit {
        shared.fail(peer.ip(), FailureKind::RateLimited, format!("{} connections open from this source", slot.count));
    }
    let conn = ConnInfo { peer, local, _slot: slot, over_limit };
    match shared.turn_handoff().filter(|h| h.wants(local)) {
        None => serve_http(tls, conn, shared).await,
        Some(turn) => {
            // The first bytes tell TURN from HTTP; both send first, right after the handshake.
            let mut first = BytesMut::with_capacity(4096);
            match tokio::time::timeout(HEADER_TIMEOUT, tls.read_buf(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let first = first.freeze();
            if turn.is_turn(first[0]) {
                // TURN keeps its own per-source accounting.
                drop(conn);
                turn.take(tls, first, peer, local);
            } else {
                serve_http(Prefixed::new(first, tls), conn, shared).await;
            }
        }
    }
}

async fn serve_http<S>(io: S, conn: ConnInfo, shared: Arc<Shared>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (peer, over_limit) = (conn.peer, conn.over_limit);
    let service = TowerToHyperService::new(pages::router(shared).layer(axum::Extension(conn)));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES.max(8192))
        .keep_alive(!over_limit)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, %peer, "web: connection ended with an error");
    }
}

/// Whether a failed handshake counts against the source. A peer that connects and goes away, or
/// that tells us with an alert it does not trust our certificate (browsers facing the lab's
/// self-signed one do, several times per page), did nothing hostile; one that speaks bad TLS did.
pub(crate) fn handshake_failure(e: &std::io::Error) -> Option<String> {
    if e.kind() != std::io::ErrorKind::InvalidData {
        return None;
    }
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(_)) => None,
        _ => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    #[test]
    fn only_bad_tls_counts_as_a_handshake_failure() {
        let alert = Error::new(ErrorKind::InvalidData, rustls::Error::AlertReceived(rustls::AlertDescription::CertificateUnknown));
        assert_eq!(handshake_failure(&alert), None);
        assert_eq!(handshake_failure(&Error::from(ErrorKind::UnexpectedEof)), None);
        assert_eq!(handshake_failure(&Error::from(ErrorKind::ConnectionReset)), None);
        let garbage = Error::new(ErrorKind::InvalidData, rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType));
        assert!(handshake_failure(&garbage).is_some());
    }
}
