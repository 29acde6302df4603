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
}

#[derive(Clone)]
struct AdminState {
    profile: watch::Receiver<Arc<LoadedProfile>>,
}

/// Binds the admin listener; the returned future serves until `shutdown` resolves.
pub async fn bind(
    addr: SocketAddr,
    profile: watch::Receiver<Arc<LoadedProfile>>,
) -> std::io::Result<(SocketAddr, impl std::future::Future<Output = ()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new().route("/health", get(health)).with_state(AdminState { profile });
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
