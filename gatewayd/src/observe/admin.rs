//! The admin endpoint on the management side: health and the running profile's identity
//! (`GET /health`), later bans and metrics. Read-only views of daemon state.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;

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
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let mut app = Router::new().route("/metrics", get(metrics));
    if serves == Serves::Admin {
        app = app.route("/health", get(health)).route("/bans", get(list_bans)).route("/bans/{ip}", axum::routing::delete(remove_ban));
    }
    let app = app.with_state(AdminState { profile, bans, calls });
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
