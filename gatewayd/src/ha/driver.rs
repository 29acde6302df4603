//! The ban sync task: bans made here go out to the peer's management address, bans from the
//! peer come in and are put in force. UDP, one datagram per change, each sent again after
//! [`RESEND`] in case the first was lost (the receiver drops the duplicate as already seen).
//! Only the peer's address is listened to; the firewall admits nobody else to the port either.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::sync::{Change, Receiver, Refused, Sender, MAX_DATAGRAM};
use crate::guard::BanService;
use crate::profile::LoadedProfile;

/// Changes waiting to go out; beyond this the ban service logs and drops them.
const QUEUE: usize = 256;
/// When a datagram is sent the second time.
const RESEND: Duration = Duration::from_millis(200);

/// What [`start`] bound.
pub struct Started {
    pub local: SocketAddr,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Starts the ban sync when the profile has `[ha]`: binds the management address's sync port
/// and hooks into `bans`. `Ok(None)` without `[ha]`.
pub async fn start(loaded: &LoadedProfile, bans: Arc<BanService>) -> anyhow::Result<Option<Started>> {
    let Some(ha) = &loaded.profile.ha else { return Ok(None) };
    let key = ha.load_bans_key(&loaded.dir).map_err(|e| anyhow::anyhow!(e))?;
    let local = SocketAddr::new(loaded.profile.management.address, ha.sync_port);
    let socket = UdpSocket::bind(local).await.with_context(|| format!("cannot listen for the HA ban sync on {local}"))?;
    let peer = SocketAddr::new(ha.peer, ha.sync_port);
    let (tx, rx) = mpsc::channel(QUEUE);
    bans.sync_to(tx);
    let epoch: u64 = rand::random();
    tokio::spawn(run(Arc::new(socket), peer, Sender::new(&key, epoch), Receiver::new(&key), rx, bans));
    tracing::info!(%local, %peer, "HA ban sync running");
    Ok(Some(Started { local }))
}

async fn run(socket: Arc<UdpSocket>, peer: SocketAddr, mut sender: Sender, mut receiver: Receiver, mut changes: mpsc::Receiver<Change>, bans: Arc<BanService>) {
    let mut buf = [0u8; MAX_DATAGRAM + 1];
    // The second copies, oldest first; bounded like the queue they come from.
    let mut pending: std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)> = std::collections::VecDeque::new();
    loop {
        let next_resend = pending.front().map(|(at, _)| *at);
        tokio::select! {
            change = changes.recv() => {
                let Some(change) = change else { break };
                let datagram = sender.encode(change, unix_ms());
                if let Err(e) = socket.send_to(&datagram, peer).await {
                    tracing::warn!(%peer, error = %e, ?change, "cannot push a ban change to the HA peer");
                }
                tracing::debug!(?change, %peer, "ban change pushed to the HA peer");
                if pending.len() < QUEUE {
                    pending.push_back((tokio::time::Instant::now() + RESEND, datagram));
                }
            }
            () = async { tokio::time::sleep_until(next_resend.expect("guarded")).await }, if next_resend.is_some() => {
                if let Some((_, datagram)) = pending.pop_front() {
                    let _ = socket.send_to(&datagram, peer).await;
                }
            }
            received = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = received else { continue };
                if from.ip() != peer.ip() {
                    tracing::warn!(%from, "ban sync datagram from a source that is not the HA peer; ignored");
                    continue;
                }
                match receiver.decode(&buf[..n], unix_ms()) {
                    Ok(change) => apply(&bans, change).await,
                    Err(Refused::Replay) => tracing::debug!(%from, "ban sync duplicate ignored"),
                    Err(e) => tracing::warn!(%from, error = %e, "ban sync datagram refused"),
                }
            }
        }
    }
}

async fn apply(bans: &BanService, change: Change) {
    match change {
        Change::Ban(ip, d) => {
            if bans.peer_ban(ip, d).await {
                tracing::info!(%ip, seconds = d.as_secs(), "ban pushed by the HA peer is in force");
            } else {
                tracing::info!(%ip, "ban pushed by the HA peer not taken: the source is exempt here");
            }
        }
        Change::Unban(ip) => {
            if bans.peer_unban(ip).await {
                tracing::info!(%ip, "ban lifted by the HA peer");
            }
        }
    }
}
