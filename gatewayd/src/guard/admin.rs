//! Bans on the admin endpoint: the routes (merged into the admin router by `observe`) and the
//! `gatewayd bans list|remove|add` commands, which are clients of those routes.
//!
//! - `GET /bans` -> `[BanInfo]`
//! - `POST /bans` `{"ip": "...", "seconds": N?}` -> `BanInfo` (201), 409 when exempt
//! - `DELETE /bans/{ip}` -> 204, 404 when not banned
//! - `GET /bans/counters` -> `GuardCounters`

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde::Deserialize;

use super::service::{BanService, RemoveError};

/// The ban routes, to merge into the admin router: `admin.merge(guard::admin::routes(service))`.
pub fn routes(service: Arc<BanService>) -> Router {
    Router::new()
        .route("/bans", get(list).post(add))
        .route("/bans/counters", get(counters))
        .route("/bans/{ip}", delete(remove))
        .with_state(service)
}

async fn list(State(s): State<Arc<BanService>>) -> Response {
    Json(s.list()).into_response()
}

async fn counters(State(s): State<Arc<BanService>>) -> Response {
    Json(s.counters()).into_response()
}

/// Body of `POST /bans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BanRequest {
    pub ip: IpAddr,
    /// Ban time; the first rule's when absent.
    #[serde(default)]
    pub seconds: Option<u64>,
}

async fn add(State(s): State<Arc<BanService>>, Json(req): Json<BanRequest>) -> Response {
    match s.ban(req.ip, req.seconds.map(Duration::from_secs)).await {
        Ok(info) => (StatusCode::CREATED, Json(info)).into_response(),
        Err(e) => error(e),
    }
}

async fn remove(State(s): State<Arc<BanService>>, UrlPath(ip): UrlPath<String>) -> Response {
    let Ok(ip) = ip.parse::<IpAddr>() else {
        return (StatusCode::BAD_REQUEST, format!("`{ip}` is not an IP address\n")).into_response();
    };
    match s.remove(ip).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(e),
    }
}

fn error(e: RemoveError) -> Response {
    let status = match e {
        RemoveError::NotBanned(_) => StatusCode::NOT_FOUND,
        RemoveError::Exempt(_) => StatusCode::CONFLICT,
        RemoveError::Firewall(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{e}\n")).into_response()
}

/// One request to the admin endpoint at `addr`; returns the status and the body.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: Option<String>) -> Result<(u16, String), String> {
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("cannot reach the admin endpoint {addr}: {e} (is gatewayd running?)"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", addr.to_string());
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default()))).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("admin endpoint {addr}: {e}"))?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Where the CLI reaches the admin endpoint: `observe.admin`, with a wildcard bind reached over
/// loopback.
fn admin_addr(profile_path: &Path) -> Result<SocketAddr, String> {
    let loaded = crate::profile::load(profile_path).map_err(|d| d.to_string())?;
    let mut addr = loaded.profile.observe.admin;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() { IpAddr::from([127, 0, 0, 1]) } else { IpAddr::from(std::net::Ipv6Addr::LOCALHOST) });
    }
    Ok(addr)
}

/// What a bans subcommand asks for.
#[derive(Debug, Clone)]
pub enum BansCommand {
    List,
    Add { ip: IpAddr, seconds: Option<u64> },
    Remove { ip: IpAddr },
}

/// `gatewayd bans list|add|remove` against the running daemon of `profile_path`.
pub fn cli(profile_path: &Path, command: BansCommand) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("gatewayd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let addr = admin_addr(profile_path)?;
        let (method, path, body) = match &command {
            BansCommand::List => ("GET", "/bans".to_owned(), None),
            BansCommand::Add { ip, seconds } => ("POST", "/bans".to_owned(), Some(serde_json::json!({ "ip": ip, "seconds": seconds }).to_string())),
            BansCommand::Remove { ip } => ("DELETE", format!("/bans/{ip}"), None),
        };
        request(addr, method, &path, body).await
    });
    match result {
        Ok((200..=299, body)) => {
            match command {
                BansCommand::List => print_list(&body),
                BansCommand::Add { ip, .. } => println!("banned {ip}"),
                BansCommand::Remove { ip } => println!("ban on {ip} lifted"),
            }
            ExitCode::SUCCESS
        }
        Ok((status, body)) => {
            eprintln!("gatewayd: admin endpoint answered {status}: {}", body.trim());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("gatewayd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn print_list(body: &str) {
    let Ok(bans) = serde_json::from_str::<Vec<serde_json::Value>>(body) else {
        print!("{body}");
        return;
    };
    if bans.is_empty() {
        println!("no active bans");
        return;
    }
    println!("{:<40} {:>10} {:>8}  reason", "source", "remaining", "offence");
    for b in bans {
        let reason = match b["reason"]["by"].as_str() {
            Some("rule") => format!("rule {} ({} failures)", b["reason"]["rule"].as_str().unwrap_or("?"), b["reason"]["failures"]),
            Some(other) => other.to_owned(),
            None => String::new(),
        };
        let remaining = humantime::format_duration(Duration::from_secs(b["remaining_secs"].as_u64().unwrap_or(0))).to_string();
        println!("{:<40} {:>10} {:>8}  {reason}", b["ip"].as_str().unwrap_or("?"), remaining, b["offence"]);
    }
}
