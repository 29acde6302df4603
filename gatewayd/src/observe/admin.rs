//! The admin endpoint on the management side: health and the running profile's identity
//! (`GET /health`), the daemon at a glance (`GET /status`), agents (`GET /agents`), the calls in
//! progress (`GET /calls`), upstream health (`GET /upstream`), bans (`GET /bans`, `DELETE
//! /bans/{ip}`, `POST /bans/{ip}`), the HA hand-over (`POST /ha/standby`: ends the calls held
//! here), HEP capture (`GET /capture`, `PUT /capture/mode/{mode}`, `PUT|DELETE
//! /capture/agents/{dn}` and `/capture/calls/{call_id}`) and metrics (`GET /metrics`, format by
//! `Accept`). Views of daemon state; bans can be made and lifted, calls ended on standby and capture switched here.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::live::{unix_seconds, UpstreamHealth};
use super::metrics::CallGauges;
use crate::call::active::CallSummary;
use crate::call::agent_view::AgentInfo;
use crate::call::driver::AdminQuery;
use crate::guard::{BanInfo, BanService, RemoveError};
use crate::profile::LoadedProfile;

/// What `GET /health` answers.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub site: String,
    pub profile_path: String,
    pub profile_sha256: String,
    pub lab_mode: bool,
    /// SIP servers the health checks find up, of those the profile names (0 up: calls fail).
    pub upstream_up: usize,
    pub upstream_servers: usize,
    /// The ACME client's state, when the profile asks for ACME.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acme: Option<AcmeHealth>,
    /// Present when the daemon runs its last good profile because the operator's kept failing
    /// to start: `profile_sha256` is then the last good one's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile_fallback: Option<crate::profile::ProfileFallback>,
}

/// Whether the CA's certificate is in service yet, and how ordering went.
#[derive(Debug, Serialize)]
pub struct AcmeHealth {
    /// True while a self-signed stand-in is served (browsers refuse it).
    pub stand_in: bool,
    pub certificates_issued: u64,
    pub orders_failed: u64,
    pub last_error: Option<String>,
}

/// One listening socket the profile gives the daemon.
#[derive(Debug, Serialize)]
pub struct Listener {
    pub service: &'static str,
    pub address: SocketAddr,
}

/// What `GET /status` answers.
#[derive(Debug, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub health: Health,
    pub started_at: u64,
    pub uptime_seconds: u64,
    pub profile_applied_at: u64,
    pub listeners: Vec<Listener>,
    pub registrations: u64,
    pub calls_active: u64,
    pub bans_active: usize,
    pub turn_allocations: Option<u64>,
    pub upstream: Vec<UpstreamHealth>,
    /// The served certificate's notAfter (Unix seconds) and the days left until then.
    pub certificate_not_after: Option<i64>,
    pub certificate_days_left: Option<i64>,
}

#[derive(Clone)]
struct AdminState {
    profile: watch::Receiver<Arc<LoadedProfile>>,
    bans: Arc<BanService>,
    calls: Arc<CallGauges>,
    queries: Option<mpsc::Sender<AdminQuery>>,
}

/// What a listener serves: the whole admin API, or only `/metrics` (a separate metrics
/// listener must not offer ban removal to whoever may scrape it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serves {
    Admin,
    MetricsOnly,
}

/// Binds an admin or metrics listener; the returned future serves it.
pub async fn bind(
    addr: SocketAddr,
    serves: Serves,
    profile: watch::Receiver<Arc<LoadedProfile>>,
    bans: Arc<BanService>,
    calls: Arc<CallGauges>,
    queries: Option<mpsc::Sender<AdminQuery>>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut app = Router::new().route("/metrics", get(metrics));
    if serves == Serves::Admin {
        app = app
            .route("/health", get(health))
            .route("/status", get(status))
            .route("/agents", get(agents))
            .route("/calls", get(active_calls))
            .route("/upstream", get(upstream))
            .route("/bans", get(list_bans))
            .route("/bans/{ip}", axum::routing::delete(remove_ban).post(add_ban))
            .route("/ha/standby", axum::routing::post(standby));
        app = app.merge(capture_routes());
    }
    let app = app.with_state(AdminState { profile, bans, calls, queries });
    let serve = async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    };
    Ok((local, serve))
}

fn health_of(p: &LoadedProfile, calls: &CallGauges) -> Health {
    let acme = calls.acme.get().filter(|_| p.profile.tls.source == crate::profile::TlsSource::Acme).map(|a| AcmeHealth {
        stand_in: a.stand_in.load(Ordering::Relaxed),
        certificates_issued: a.issued.load(Ordering::Relaxed),
        orders_failed: a.failures.load(Ordering::Relaxed),
        last_error: a.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    });
    let upstream = calls.upstream();
    Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        site: p.profile.site.name.clone(),
        profile_path: p.path.display().to_string(),
        profile_sha256: p.sha256.clone(),
        lab_mode: p.profile.site.lab_mode,
        upstream_up: upstream.iter().filter(|s| s.up).count(),
        upstream_servers: upstream.len(),
        acme,
        profile_fallback: p.fallback.clone(),
    }
}

async fn health(State(state): State<AdminState>) -> Json<Health> {
    let p = state.profile.borrow().clone();
    Json(health_of(&p, &state.calls))
}

fn listeners(p: &crate::profile::Profile) -> Vec<Listener> {
    use crate::profile::Transport;
    let mut out = Vec::new();
    let mut add = |service, addresses: &[SocketAddr]| out.extend(addresses.iter().map(|a| Listener { service, address: *a }));
    add("https", &p.web.https);
    add("http-redirect", &p.web.http_redirect);
    for l in &p.sip.listen {
        add(if l.transport == Transport::Udp { "sip-udp" } else { "sip-tcp" }, &[l.address]);
    }
    if let Some(t) = &p.turn {
        add("turn-udp", &t.listen_udp);
        add("turn-tcp", &t.listen_tcp);
        add("turn-tls", &t.listen_tls);
    }
    add("admin", &[p.observe.admin]);
    if let Some(m) = p.observe.metrics.filter(|m| *m != p.observe.admin) {
        add("metrics", &[m]);
    }
    out
}

async fn status(State(state): State<AdminState>) -> Json<Status> {
    let p = state.profile.borrow().clone();
    let now = unix_seconds(SystemTime::now());
    let started_at = unix_seconds(state.calls.started);
    let not_after = state.calls.certificate_expiry();
    Json(Status {
        health: health_of(&p, &state.calls),
        started_at,
        uptime_seconds: now.saturating_sub(started_at),
        profile_applied_at: state.calls.profile_applied.load(Ordering::Relaxed),
        listeners: listeners(&p.profile),
        registrations: state.calls.registrations.load(Ordering::Relaxed),
        calls_active: state.calls.active_calls.load(Ordering::Relaxed),
        bans_active: state.bans.active_bans(),
        turn_allocations: state.calls.turn.get().map(|t| t.metrics().active),
        upstream: state.calls.upstream(),
        certificate_not_after: not_after,
        certificate_days_left: not_after.map(|t| (t - now as i64).div_euclid(86_400)),
    })
}

/// Asks call control; a busy or stopped call task gets 503 rather than a stalled request.
async fn ask<T>(state: &AdminState, query: impl FnOnce(oneshot::Sender<T>) -> AdminQuery) -> Result<Json<T>, (StatusCode, &'static str)> {
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "call control is not answering");
    let queries = state.queries.clone().ok_or(unavailable)?;
    let (reply, answer) = oneshot::channel();
    queries.try_send(query(reply)).map_err(|_| unavailable)?;
    match tokio::time::timeout(std::time::Duration::from_secs(2), answer).await {
        Ok(Ok(v)) => Ok(Json(v)),
        _ => Err(unavailable),
    }
}

/// `GET /calls`: the calls in progress with their media figures so far.
async fn active_calls(State(state): State<AdminState>) -> Result<Json<Vec<CallSummary>>, (StatusCode, &'static str)> {
    ask(&state, AdminQuery::Calls).await
}

/// `GET /agents`: registered DNs and DNs with recent authentication failures.
async fn agents(State(state): State<AdminState>) -> Result<Json<Vec<AgentInfo>>, (StatusCode, &'static str)> {
    ask(&state, AdminQuery::Agents).await
}

async fn upstream(State(state): State<AdminState>) -> Json<Vec<UpstreamHealth>> {
    Json(state.calls.upstream())
}

async fn list_bans(State(state): State<AdminState>) -> Json<Vec<BanInfo>> {
    Json(state.bans.list())
}

async fn remove_ban(State(state): State<AdminState>, axum::extract::Path(ip): axum::extract::Path<String>) -> (StatusCode, String) {
    let Ok(ip) = ip.parse() else { return (StatusCode::BAD_REQUEST, format!("{ip} is not an IP address\n")) };
    match state.bans.remove(ip).await {
        Ok(()) => (StatusCode::OK, format!("{ip} unbanned\n")),
        Err(e @ RemoveError::NotBanned(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ RemoveError::Exempt(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// Query of `POST /bans/{ip}`.
#[derive(Debug, serde::Deserialize)]
struct BanQuery {
    /// Ban time; the first rule's when absent.
    seconds: Option<u64>,
}

/// `POST /bans/{ip}[?seconds=N]`: an operator bans a source (pushed to the HA peer too).
async fn add_ban(State(state): State<AdminState>, axum::extract::Path(ip): axum::extract::Path<String>, axum::extract::Query(q): axum::extract::Query<BanQuery>) -> (StatusCode, String) {
    let Ok(ip) = ip.parse() else { return (StatusCode::BAD_REQUEST, format!("{ip} is not an IP address\n")) };
    match state.bans.ban(ip, q.seconds.map(std::time::Duration::from_secs)).await {
        Ok(b) => (StatusCode::OK, format!("{ip} banned for {}s\n", b.remaining_secs)),
        Err(e @ RemoveError::Exempt(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

/// What `POST /ha/standby` answers.
#[derive(Debug, Serialize)]
struct StandbyAnswer {
    calls_ended: usize,
}

/// `POST /ha/standby`: keepalived's notify script says this node lost the virtual addresses.
async fn standby(State(state): State<AdminState>) -> Result<Json<StandbyAnswer>, (StatusCode, &'static str)> {
    let Json(calls_ended) = ask(&state, AdminQuery::Standby).await?;
    Ok(Json(StandbyAnswer { calls_ended }))
}

/// `GET /metrics` in the format the `Accept` header ranks first (0.0.4 text by default).
async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> ([(header::HeaderName, &'static str); 1], String) {
    let format = super::exposition::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let text = super::exposition::encode(super::metrics::render(&state.bans, &state.calls), format);
    ([(header::CONTENT_TYPE, format.content_type())], text)
}

fn capture_routes() -> Router<AdminState> {
    use axum::routing::put;
    Router::new()
        .route("/capture", get(capture_status))
        .route("/capture/mode/{mode}", put(capture_mode))
        .route("/capture/agents/{dn}", put(|s: State<AdminState>, p: CapturePath| capture_select(s, p, Selection::Agent, true)).delete(|s: State<AdminState>, p: CapturePath| capture_select(s, p, Selection::Agent, false)))
        .route("/capture/calls/{call_id}", put(|s: State<AdminState>, p: CapturePath| capture_select(s, p, Selection::Call, true)).delete(|s: State<AdminState>, p: CapturePath| capture_select(s, p, Selection::Call, false)))
}

type CapturePath = axum::extract::Path<String>;

type Answer = (StatusCode, String);

fn capture_of(state: &AdminState) -> Result<&super::hep::HepCapture, Answer> {
    state.calls.hep.get().filter(|h| h.status().configured).ok_or((StatusCode::CONFLICT, "HEP capture is not configured (observe.hep)\n".into()))
}

async fn capture_status(State(state): State<AdminState>) -> Result<Json<super::hep::Status>, Answer> {
    Ok(Json(capture_of(&state)?.status()))
}

async fn capture_mode(State(state): State<AdminState>, axum::extract::Path(mode): axum::extract::Path<String>) -> Result<Answer, Answer> {
    use crate::profile::CaptureMode;
    let capture = capture_of(&state)?;
    let mode = match mode.as_str() {
        "all" => CaptureMode::All,
        "selected" => CaptureMode::Selected,
        "off" => CaptureMode::Off,
        other => return Err((StatusCode::BAD_REQUEST, format!("{other:?} is not a capture mode (all, selected, off)\n"))),
    };
    capture.set_mode(mode);
    tracing::info!(mode = ?mode, "HEP capture mode switched");
    Ok((StatusCode::OK, format!("capture mode {}\n", mode_name(mode))))
}

fn mode_name(mode: crate::profile::CaptureMode) -> &'static str {
    match mode {
        crate::profile::CaptureMode::All => "all",
        crate::profile::CaptureMode::Selected => "selected",
        crate::profile::CaptureMode::Off => "off",
    }
}

#[derive(Clone, Copy)]
enum Selection {
    Agent,
    Call,
}

async fn capture_select(State(state): State<AdminState>, axum::extract::Path(item): CapturePath, which: Selection, on: bool) -> Result<Answer, Answer> {
    let capture = capture_of(&state)?;
    let valid = !item.is_empty() && item.len() <= 256 && item.bytes().all(|b| b.is_ascii_graphic());
    if !valid {
        return Err((StatusCode::BAD_REQUEST, "not a DN or Call-ID\n".into()));
    }
    let (result, what) = match which {
        Selection::Agent => (capture.select_agent(&item, on), "agent"),
        Selection::Call => (capture.select_call(&item, on), "call"),
    };
    result.map_err(|e| (StatusCode::INSUFFICIENT_STORAGE, format!("{e}\n")))?;
    tracing::info!(what, item = %item, captured = on, "HEP capture selection changed");
    let verb = if on { "selected for" } else { "removed from" };
    Ok((StatusCode::OK, format!("{what} {item} {verb} capture (mode {})\n", mode_name(capture.status().mode))))
}
