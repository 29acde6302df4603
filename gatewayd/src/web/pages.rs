//! HTTPS routes: the softphone page and its files, `/config.json`, `/ws`, `/turn-credentials`
//! (answered by `turn_credentials`); security headers on every answer, 503 for connections over
//! the per-source limit, and a failure event per 4xx not reported otherwise.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};

use super::listen::ConnInfo;
use super::origin::parse_host;
use super::{assets, session, turn_credentials, Shared};
use crate::profile::FailureKind;

/// Marks a response whose failure was already reported (so the 4xx counter skips it).
#[derive(Clone, Copy)]
pub(crate) struct Reported;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/ws", get(session::upgrade))
        .route("/config.json", get(config_json))
        .route(turn_credentials::PATH, get(turn_credentials::handler))
        .fallback(static_file)
        .layer(middleware::from_fn_with_state(shared.clone(), guard_and_headers))
        .with_state(shared)
}

/// The Host the client used, if it is a plain host[:port]; otherwise the listener's address.
pub(crate) fn request_host(headers: &HeaderMap, conn: &ConnInfo) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| parse_host(h).is_some())
        .map(str::to_owned)
        .unwrap_or_else(|| conn.local.to_string())
}

async fn guard_and_headers(State(shared): State<Arc<Shared>>, Extension(conn): Extension<ConnInfo>, req: Request, next: Next) -> Response {
    if conn.over_limit {
        let mut r = (StatusCode::SERVICE_UNAVAILABLE, "Too many connections from your address\n").into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let host = request_host(req.headers(), &conn);
    let path_is_icon = req.uri().path() == "/favicon.ico";
    let mut response = next.run(req).await;
    let status = response.status();
    if status.is_client_error() && response.extensions().get::<Reported>().is_none() && !path_is_icon {
        shared.fail(conn.peer.ip(), FailureKind::Http4xx, format!("HTTP {}", status.as_u16()));
    }
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let h = response.headers_mut();
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static("max-age=31536000"));
        h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        // `host` passed parse_host: only name/address characters and a port.
        let csp = format!(
            "default-src 'self'; connect-src 'self' wss://{host}; img-src 'self' data:; media-src 'self' blob:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
        );
        if let Ok(v) = HeaderValue::from_str(&csp) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    response
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "Not found\n").into_response()
}

async fn config_json(State(shared): State<Arc<Shared>>) -> Response {
    let settings = shared.settings();
    if !settings.softphone {
        return not_found();
    }
    let mut r = Response::new(Body::from(settings.config_json.clone()));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn static_file(State(shared): State<Arc<Shared>>, method: Method, headers: HeaderMap, req: Request) -> Response {
    if method != Method::GET && method != Method::HEAD {
        let mut r = (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed\n").into_response();
        r.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    if !shared.settings().softphone {
        return not_found();
    }
    let path = req.uri().path().trim_start_matches('/');
    let Some(asset) = assets::get(path) else {
        if path == "favicon.ico" {
            return StatusCode::NO_CONTENT.into_response();
        }
        return not_found();
    };
    // Files are not content-hashed: browsers revalidate each time and get 304 when unchanged.
    let etag = HeaderValue::from_str(&asset.etag).expect("hex etag is a valid header");
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == asset.etag || t.trim() == "*"));
    let mut r = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { Response::new(Body::from(asset.body)) };
    let h = r.headers_mut();
    h.insert(header::ETAG, etag);
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if !fresh {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&asset.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    }
    r
}
