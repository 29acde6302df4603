//! The plain-HTTP listeners: every request is sent to the same host over HTTPS on the first HTTPS
//! listener's port, path and query kept; the one exception is ACME http-01 challenges
//! (`/.well-known/acme-challenge/<token>`), answered from `<state>/acme/http-01/<token>`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::origin::parse_host;
use super::Shared;
use crate::profile::FailureKind;

pub(crate) async fn accept(listener: TcpListener, local: SocketAddr, shared: Arc<Shared>) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, %local, "web: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let slot = shared.open_slot(peer.ip());
            if slot.count > shared.settings().max_connections_from(peer.ip()) {
                shared.fail(peer.ip(), FailureKind::RateLimited, format!("{} connections open from this source", slot.count));
                return;
            }
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer(&req, local, &shared);
                async move { Ok::<_, std::convert::Infallible>(answer) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(15))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
            drop(slot);
        });
    }
}

/// Where the ACME client leaves the key authorization of each pending http-01 challenge, one
/// file per token, under the state directory.
pub use crate::tls::acme::HTTP01_DIR;
const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// The key authorization for a challenge path, if one is pending. Tokens are base64url (RFC
/// 8555 section 8.3), which also keeps the path inside the directory.
fn challenge(path: &str, shared: &Shared) -> Option<Vec<u8>> {
    let token = path.strip_prefix(CHALLENGE_PREFIX)?;
    let valid = !token.is_empty() && token.len() <= 128 && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return None;
    }
    std::fs::read(shared.state_dir.join(HTTP01_DIR).join(token)).ok()
}

fn answer<B>(req: &Request<B>, local: SocketAddr, shared: &Shared) -> Response<Body> {
    if req.method() == Method::GET {
        if let Some(key_authorization) = challenge(req.uri().path(), shared) {
            let mut r = Response::new(Body::from(key_authorization));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
            return r;
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(parse_host)
        .map(|(h, _)| h)
        .unwrap_or_else(|| match local.ip() {
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        });
    let port = shared.bound().https.first().map(|a| a.port()).unwrap_or(443);
    let authority = if port == 443 { host } else { format!("{host}:{port}") };
    let path = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = if path.starts_with('/') { path } else { "/" };
    let status = if req.method() == Method::GET || req.method() == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let location = format!("https://{authority}{path}");
    let mut r = Response::new(Body::from(format!("Moved to {location}\n")));
    *r.status_mut() = status;
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::BAD_REQUEST,
    }
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}
