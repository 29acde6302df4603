//! The public HTTPS side: TLS listeners, the HTTP redirect, the softphone's static files, TURN
//! credentials for agents who prove their SIP password (`/turn-credentials`), and the WebSocket
//! upgrade (Origin check, subprotocol `sip`) that hands SIP connections to `sip`.
//! It must not interpret SIP itself.
//!
//! [`start`] binds every listener of the profile and returns once they accept, so the daemon can
//! report readiness after it. Each accepted SIP WebSocket becomes a stream of [`WsEvent`]s on one
//! bounded queue (opened, message, closed); what goes back to a connection is sent on its own
//! bounded [`Outgoing`] queue, and dropping that queue's last sender closes the socket.
//! Failures (bad Origin, TLS handshake errors, 4xx answers, too many connections from one
//! source) go to the guard's failure queue with `try_send`, so a flood never blocks I/O.
//!
//! On a profile change the certificate, Origin policy and limits apply to new connections and
//! upgrades while open WebSockets stay up; changed listener addresses are rebound (new
//! listeners first, then the old ones stop accepting; their connections are untouched).

mod assets;
mod handoff;
mod listen;
mod origin;
mod pages;
mod redirect;
mod session;
mod settings;
mod turn_credentials;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{mpsc, watch};

use crate::guard::Report;
use crate::profile::{FailureKind, LoadedProfile};

pub use handoff::{Prefixed, TlsConnection, TurnHandoff};
pub(crate) use listen::bind_public;
pub(crate) use listen::handshake_failure;
pub use origin::{parse_host, Origin, OriginPolicy, OriginRefusal};
pub use redirect::HTTP01_DIR;
pub use settings::{leaf_sha256, Settings, SettingsError, ACME_DIR, ALPN};

/// Room for frames queued toward one connection.
pub const OUTGOING_QUEUE: usize = 256;

/// One accepted SIP WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Unique for the life of the process.
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The Origin it was admitted with, normalised.
    pub origin: String,
}

/// What the web side reports about SIP WebSockets, in order per connection.
#[derive(Debug)]
pub enum WsEvent {
    /// A connection was upgraded. `outbound` is its bounded queue; when every sender of it is
    /// dropped the connection is closed.
    Opened { session: SessionInfo, outbound: mpsc::Sender<Outgoing> },
    /// One complete WebSocket message (text or binary), at most `web.max_message_bytes`.
    Message { id: u64, data: Bytes },
    /// The connection is gone (peer closed, error, idle, or closed on request).
    Closed { id: u64 },
}

/// What can be sent to one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame (SIP over WebSocket uses text frames, RFC 7118).
    Text(String),
    /// Close with 1008 (policy violation) and this reason, e.g. when the source is banned.
    Close(&'static str),
}

/// The addresses the listeners are bound to (ports resolved when the profile asked for 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bound {
    pub https: Vec<SocketAddr>,
    pub http_redirect: Vec<SocketAddr>,
}

/// Why the web side did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error("cannot listen on {key} {addr}: {source}")]
    Bind { key: &'static str, addr: SocketAddr, source: std::io::Error },
}

/// The running web side.
#[derive(Clone)]
pub struct WebHandle {
    bound: watch::Receiver<Bound>,
    applied: watch::Receiver<Arc<Settings>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebHandle").field("bound", &*self.bound.borrow()).finish_non_exhaustive()
    }
}

impl WebHandle {
    /// Where the listeners are bound now.
    pub fn bound(&self) -> Bound {
        self.bound.borrow().clone()
    }

    /// The settings in effect (certificate fingerprint, profile hash, ...).
    pub fn settings(&self) -> Arc<Settings> {
        self.applied.borrow().clone()
    }

    /// Open TCP connections on the HTTPS and redirect listeners (WebSockets included).
    pub fn open_connections(&self) -> usize {
        self.shared.sources.lock().unwrap_or_else(|e| e.into_inner()).values().sum()
    }

    /// Open SIP WebSockets.
    pub fn open_sessions(&self) -> usize {
        self.shared.sessions.load(Ordering::Relaxed)
    }

    /// The settings as they are applied, for another TLS server (TURN) to follow the certificate.
    pub fn settings_watch(&self) -> watch::Receiver<Arc<Settings>> {
        self.applied.clone()
    }

    /// A hook that makes the web side reread its certificate (one ACME renewed) with the
    /// running profile: new handshakes get it, open connections keep theirs.
    pub fn certificate_refresher(&self) -> Arc<dyn Fn() + Send + Sync> {
        let shared = self.shared.clone();
        Arc::new(move || shared.certificates.notify_one())
    }

    /// Lets TURN take the TLS connections it wants from the HTTPS listeners it shares.
    pub fn share_with_turn(&self, turn: Arc<dyn TurnHandoff>) {
        let _ = self.shared.turn.set(turn);
    }

    /// Waits until the settings of the profile with this SHA-256 are in effect. Returns false if
    /// the web side stopped first.
    pub async fn wait_applied(&mut self, profile_sha256: &str) -> bool {
        self.applied.wait_for(|s| s.profile_sha256 == profile_sha256).await.is_ok()
    }
}

/// Binds the profile's HTTPS and redirect listeners and serves them until `profile` closes.
/// Profile changes on `profile` are applied as the module doc says.
pub async fn start(
    state_dir: &Path,
    mut profile: watch::Receiver<Arc<LoadedProfile>>,
    events: mpsc::Sender<WsEvent>,
    failures: mpsc::Sender<Report>,
) -> Result<WebHandle, StartError> {
    let loaded = profile.borrow_and_update().clone();
    let settings = Arc::new(Settings::from_profile(&loaded, state_dir)?);
    let (settings_tx, settings_rx) = watch::channel(settings.clone());
    let (bound_tx, bound_rx) = watch::channel(Bound::default());
    let shared = Arc::new(Shared {
        settings: settings_tx,
        bound: bound_tx,
        events,
        failures,
        sources: Mutex::new(HashMap::new()),
        limiter: Mutex::new(crate::guard::RateLimiter::new(&settings.bans)),
        next_id: AtomicU64::new(1),
        sessions: AtomicUsize::new(0),
        handshakes: AtomicUsize::new(0),
        state_dir: state_dir.to_owned(),
        turn: std::sync::OnceLock::new(),
        certificates: tokio::sync::Notify::new(),
    });
    let mut listeners = listen::Listeners::default();
    listeners.rebind(&settings, &shared).await?;
    let state_dir = state_dir.to_owned();
    tokio::spawn(follow_profile(profile, state_dir, shared.clone(), listeners));
    Ok(WebHandle { bound: bound_rx, applied: settings_rx, shared })
}

/// Applies each new profile; a profile whose web side cannot be set up leaves the running one.
async fn follow_profile(
    mut profile: watch::Receiver<Arc<LoadedProfile>>,
    state_dir: PathBuf,
    shared: Arc<Shared>,
    mut listeners: listen::Listeners,
) {
    loop {
        tokio::select! {
            changed = profile.changed() => if changed.is_err() { break },
            _ = shared.certificates.notified() => tracing::info!("web: the certificate changed; rereading it"),
        }
        let loaded = profile.borrow_and_update().clone();
        let settings = match Settings::from_profile(&loaded, &state_dir) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "web: the new profile's TLS or web settings cannot be used; keeping the previous ones");
                continue;
            }
        };
        if let Err(e) = listeners.rebind(&settings, &shared).await {
            tracing::error!(error = %e, "web: cannot bind the new listeners; the previous ones keep serving");
            continue;
        }
        shared.limiter.lock().expect("limiter lock").reconfigure(&settings.bans);
        let certificate_sha256 = settings.certificate_sha256.clone();
        shared.settings.send_replace(settings);
        // Said only once it is true: new connections now get these settings.
        tracing::info!(certificate_sha256 = %certificate_sha256, "web: settings applied");
    }
    listeners.stop();
}

/// State every connection shares.
pub(crate) struct Shared {
    settings: watch::Sender<Arc<Settings>>,
    bound: watch::Sender<Bound>,
    events: mpsc::Sender<WsEvent>,
    failures: mpsc::Sender<Report>,
    /// Open connections per source address.
    sources: Mutex<HashMap<IpAddr, usize>>,
    /// New connections per second per source address.
    limiter: Mutex<crate::guard::RateLimiter>,
    next_id: AtomicU64,
    /// Open SIP WebSockets.
    sessions: AtomicUsize,
    /// TLS handshakes in progress on the HTTPS listeners.
    handshakes: AtomicUsize,
    /// Where http-01 challenge answers are read from (`acme/http-01/<token>`).
    state_dir: PathBuf,
    /// TURN, when it shares HTTPS listeners.
    turn: std::sync::OnceLock<Arc<dyn TurnHandoff>>,
    /// Woken when the certificate files changed under the same profile.
    certificates: tokio::sync::Notify,
}

impl Shared {
    pub(crate) fn settings(&self) -> Arc<Settings> {
        self.settings.borrow().clone()
    }

    pub(crate) fn turn_handoff(&self) -> Option<&Arc<dyn TurnHandoff>> {
        self.turn.get()
    }

    pub(crate) fn bound(&self) -> Bound {
        self.bound.borrow().clone()
    }

    /// Reports a failure without waiting: a full queue drops it rather than stall I/O.
    pub(crate) fn fail(&self, ip: IpAddr, kind: FailureKind, detail: impl Into<String>) {
        let ip = crate::guard::canonical(ip);
        let detail = detail.into();
        tracing::debug!(%ip, ?kind, %detail, "web: failure");
        let _ = self.failures.try_send(Report { ip, kind, detail });
    }

    /// Whether `ip` may open another connection now (token bucket per source). One
    /// `rate-limited` failure per second of excess goes to the guard.
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> bool {
        let verdict = self.limiter.lock().expect("limiter lock").check(ip, crate::guard::Limit::NewConnection, std::time::SystemTime::now());
        match verdict {
            crate::guard::Verdict::Allow => true,
            crate::guard::Verdict::Deny { first, .. } => {
                if first {
                    self.fail(ip, FailureKind::RateLimited, "new connection rate exceeded");
                }
                false
            }
        }
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one more connection from `ip`; the count drops when the slot does.
    pub(crate) fn open_slot(self: &Arc<Self>, ip: IpAddr) -> SourceSlot {
        let ip = crate::guard::canonical(ip);
        let mut sources = self.sources.lock().unwrap_or_else(|e| e.into_inner());
        let count = sources.entry(ip).or_insert(0);
        *count += 1;
        SourceSlot { shared: self.clone(), ip, count: *count }
    }
}

/// One open connection from a source, counted while it lives.
pub(crate) struct SourceSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
    /// Connections from this source including this one, when it was opened.
    pub(crate) count: usize,
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut sources = self.shared.sources.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = sources.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                sources.remove(&self.ip);
            }
        }
    }
}
