//! The call-control driver: one task owning the sans-IO cores (agent edge, and the calls behind
//! it), fed by bounded channels from every WebSocket connection. No task per transaction or per
//! call; each connection has one small task that only forwards frames.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, watch};

use super::agents::{AgentEdge, EdgeConfig, EdgeOutput};
use crate::profile::{FailureKind, LoadedProfile};
use crate::sip::registrar::{ConnId, RegistrarEvent};

/// Room for events from all connections together; a full queue slows the readers down.
pub const EVENT_QUEUE: usize = 4096;
/// Room for frames queued toward one connection; beyond it the connection is too slow and closed.
pub const CONNECTION_QUEUE: usize = 256;

/// What the WebSocket side reports.
#[derive(Debug)]
pub enum ConnEvent {
    Opened { conn: ConnId, peer: SocketAddr, tx: mpsc::Sender<ToConn> },
    Frame { conn: ConnId, data: Bytes },
    Closed { conn: ConnId },
}

/// What the driver asks of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToConn {
    Text(String),
    Close(&'static str),
}

/// A failure for the ban engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub ip: IpAddr,
    pub kind: FailureKind,
    pub detail: String,
}

/// Loads the digest nonce key from the state directory, creating it once, so nonces handed out
/// before a restart stay verifiable after it.
pub fn digest_secret(state_dir: &Path) -> std::io::Result<Vec<u8>> {
    let path = state_dir.join("digest.key");
    if let Ok(key) = std::fs::read(&path) {
        if key.len() == 32 {
            return Ok(key);
        }
    }
    let mut key = vec![0u8; 32];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut key);
    crate::system::write_private_file(&path, &key)?;
    Ok(key)
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Runs call control until the event channel closes.
pub async fn run(
    mut events: mpsc::Receiver<ConnEvent>,
    mut profile: watch::Receiver<Arc<LoadedProfile>>,
    secret: Vec<u8>,
    failures: mpsc::Sender<Failure>,
) {
    let config = EdgeConfig::from_profile(&profile.borrow_and_update());
    let mut state = Driver { edge: AgentEdge::new(config, secret.clone()), conns: HashMap::new(), failures, rng: StdRng::from_rng(&mut rand::rng()) };
    loop {
        let wake = state.edge.poll_timeout();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(event) => state.handle(event),
                None => break,
            },
            () = sleep => {
                let out = state.edge.handle_timeout(Instant::now());
                state.apply(out);
            }
            changed = profile.changed() => {
                if changed.is_err() { break; }
                let config = EdgeConfig::from_profile(&profile.borrow_and_update());
                state.edge.reconfigure(config, secret.clone());
            }
        }
    }
}

struct Driver {
    edge: AgentEdge,
    conns: HashMap<ConnId, mpsc::Sender<ToConn>>,
    failures: mpsc::Sender<Failure>,
    rng: StdRng,
}

impl Driver {
    fn handle(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Opened { conn, peer, tx } => {
                self.conns.insert(conn, tx);
                self.edge.connection_opened(conn, peer);
            }
            ConnEvent::Frame { conn, data } => {
                let out = self.edge.handle_frame(conn, &data, Instant::now(), wall_ms(), &mut self.rng);
                self.apply(out);
            }
            ConnEvent::Closed { conn } => {
                self.conns.remove(&conn);
                let out = self.edge.connection_closed(conn);
                self.apply(out);
            }
        }
    }

    fn apply(&mut self, out: Vec<EdgeOutput>) {
        for o in out {
            match o {
                EdgeOutput::Send { conn, text } => self.send(conn, ToConn::Text(text)),
                EdgeOutput::Close { conn, reason } => self.send(conn, ToConn::Close(reason)),
                EdgeOutput::Failure { ip, kind, detail } => {
                    tracing::info!(source = %ip, kind = ?kind, detail = %detail, "failure");
                    // Never wait on the guard: a flood must not stall SIP.
                    let _ = self.failures.try_send(Failure { ip, kind, detail });
                }
                EdgeOutput::Registration(event) => log_registration(&event),
                EdgeOutput::Request { conn, user, request } => {
                    tracing::debug!(conn = conn.0, user = ?user, method = %request.method, "request for call control");
                    let response = crate::sip::message::response_to(&request, 501, None, Some("gw"));
                    if request.method != rsip::Method::Ack {
                        self.send(conn, ToConn::Text(response.to_string()));
                    }
                }
                EdgeOutput::Response { conn, response } => {
                    tracing::debug!(conn = conn.0, status = %response.status_code, "response from agent");
                }
            }
        }
    }

    fn send(&mut self, conn: ConnId, msg: ToConn) {
        let Some(tx) = self.conns.get(&conn) else { return };
        if tx.try_send(msg).is_err() {
            // Too slow or gone: drop it rather than queue without bound.
            tracing::warn!(conn = conn.0, "connection cannot keep up; closing it");
            let _ = tx.try_send(ToConn::Close("send queue full"));
            self.conns.remove(&conn);
        }
    }
}

fn log_registration(event: &RegistrarEvent) {
    match event {
        RegistrarEvent::Registered { dn, conn, expires } => tracing::info!(dn = %dn, conn = conn.0, expires, "agent registered"),
        RegistrarEvent::Unregistered { dn, conn, reason } => tracing::info!(dn = %dn, conn = conn.0, reason = ?reason, "agent unregistered"),
        RegistrarEvent::Replaced { dn, old_conn, new_conn } => tracing::info!(dn = %dn, old = old_conn.0, new = new_conn.0, "agent registration replaced"),
    }
}
