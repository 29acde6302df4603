//! The admin endpoint on the management side: health and the running profile's identity
//! (`GET /health`), the calls in progress (`GET /calls`), bans (`GET /bans`, `DELETE
//! /bans/{ip}`) and metrics. Views of daemon state; only a ban can be lifted here.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use axum::http::StatusCode;
use tokio::sync::{mpsc, oneshot, watch};

use crate::call::active::CallSummary;
use crate::call::driver::CallsQuery;

use crate::guard::{BanInfo, BanService, RemoveError};
use crate::profile::LoadedProfile;
use super::metrics::CallGauges;

/// What `GET /health` answers.
#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub site: String,
    pub profile_path: String,
    pub profile_sha256: String,
    pub lab_mode: bool,
}

#[derive(Clone)]
struct AdminState {
    profile: watch::Receiver<Arc<LoadedProfile>>,
    bans: Arc<BanService>,
    calls: Arc<CallGauges>,
    queries: Option<mpsc::Sender<CallsQuery>>,
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
    queries: Option<mpsc::Sender<CallsQuery>>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut app = Router::new().route("/metrics", get(metrics));
    if serves == Serves::Admin {
        app = app.route("/health", get(health)).route("/calls", get(active_calls)).route("/bans", get(list_bans)).route("/bans/{ip}", axum::routing::delete(remove_ban));
    }
    let app = app.with_state(AdminState { profile, bans, calls, queries });
    let serve = async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    };
    Ok((local, serve))
}

async fn health(State(state): State<AdminState>) -> Json<Health> {
    let p = state.profile.borrow().clone();
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
        site: p.profile.site.name.clone(),
        profile_path: p.path.display().to_string(),
        profile_sha256: p.sha256.clone(),
        lab_mode: p.profile.site.lab_mode,
    })
}

/// `GET /calls`: the calls in progress with their media figures so far. Call control answers
/// between two events; a busy or stopped call task gets 503 rather than a stalled request.
async fn active_calls(State(state): State<AdminState>) -> Result<Json<Vec<CallSummary>>, (StatusCode, &'static str)> {
    let unavailable = (StatusCode::SERVICE_UNAVAILABLE, "call control is not answering");
    let queries = state.queries.ok_or(unavailable)?;
    let (reply, answer) = oneshot::channel();
    queries.try_send(reply).map_err(|_| unavailable)?;
    match tokio::time::timeout(std::time::Duration::from_secs(2), answer).await {
        Ok(Ok(calls)) => Ok(Json(calls)),
        _ => Err(unavailable),
    }
}

async fn list_bans(State(state): State<AdminState>) -> Json<Vec<BanInfo>> {
    Json(state.bans.list())
}

async fn remove_ban(State(state): State<AdminState>, axum::extract::Path(ip): axum::extract::Path<String>) -> (axum::http::StatusCode, String) {
    use axum::http::StatusCode;
    let Ok(ip) = ip.parse() else { return (StatusCode::BAD_REQUEST, format!("{ip} is not an IP address\n")) };
    match state.bans.remove(ip).await {
        Ok(()) => (StatusCode::OK, format!("{ip} unbanned\n")),
        Err(e @ RemoveError::NotBanned(_)) => (StatusCode::NOT_FOUND, format!("{e}\n")),
        Err(e @ RemoveError::Exempt(_)) => (StatusCode::BAD_REQUEST, format!("{e}\n")),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
    }
}

async fn metrics(State(state): State<AdminState>) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    (
        [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        super::metrics::render(&state.bans, &state.calls),
    )
}
