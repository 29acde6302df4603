//! `/ws`: the SIP WebSocket upgrade (RFC 7118) and the one small task per connection that moves
//! frames between the socket and the bounded queues.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use yawc::close::CloseCode;
use yawc::frame::{Frame, OpCode};

use super::listen::ConnInfo;
use super::pages::{request_host, Reported};
use super::{Outgoing, SessionInfo, Shared, WsEvent, OUTGOING_QUEUE};
use crate::profile::FailureKind;

/// The subprotocol of RFC 7118.
pub const SUBPROTOCOL: &str = "sip";
/// A ping goes out after this much silence from the peer...
const PING_AFTER: Duration = Duration::from_secs(30);
/// ...and the connection is given up after this much.
const IDLE_LIMIT: Duration = Duration::from_secs(75);
/// How long a closing connection waits for the closing handshake to finish.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

fn refuse(status: StatusCode, why: &'static str) -> Response {
    (status, format!("{why}\n")).into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The client's offered subprotocols include `sip` (subprotocol names are case-sensitive).
fn offers_sip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == SUBPROTOCOL)
}

pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, Extension(conn): Extension<ConnInfo>, mut req: Request) -> Response {
    let headers = req.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket") || !header_has_token(headers, header::CONNECTION, "upgrade") {
        let mut r = refuse(StatusCode::UPGRADE_REQUIRED, "This is the SIP WebSocket endpoint (subprotocol sip)");
        r.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        return r;
    }
    let settings = shared.settings();
    let host = request_host(headers, &conn);
    let origin = headers.get(header::ORIGIN).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    let origin = match settings.origins.check(origin, Some(&host)) {
        Ok(o) => o,
        Err(why) => {
            shared.fail(conn.peer.ip(), FailureKind::OriginRejected, why.to_string());
            let mut r = refuse(StatusCode::FORBIDDEN, "Origin not allowed");
            r.extensions_mut().insert(Reported);
            return r;
        }
    };
    if !offers_sip(headers) {
        // RFC 7118: the server must not complete the handshake without agreeing on `sip`.
        return refuse(StatusCode::BAD_REQUEST, "WebSocket subprotocol sip is required");
    }
    // The limits are exclusive in yawc: a message of exactly max_message_bytes passes.
    let limit = settings.max_message_bytes + 1;
    let options = yawc::Options::default()
        .with_max_payload_read(limit)
        .with_max_read_buffer(limit)
        .with_utf8()
        .with_no_delay()
        .with_low_latency_compression();
    let (response, upgraded) = match yawc::WebSocket::upgrade_with_options(&mut req, options) {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(error = %e, peer = %conn.peer, "web: bad WebSocket upgrade");
            return refuse(StatusCode::BAD_REQUEST, "Bad WebSocket upgrade");
        }
    };
    let deflate = response.headers().contains_key(header::SEC_WEBSOCKET_EXTENSIONS);
    tracing::debug!(peer = %conn.peer, deflate, "web: WebSocket upgrade accepted");
    let info = SessionInfo { id: shared.next_id(), peer: conn.peer, local: conn.local, origin: origin.to_string() };
    tokio::spawn(async move {
        match upgraded.await {
            Ok(ws) => run(ws, info, shared, conn).await,
            Err(e) => tracing::debug!(error = %e, "web: WebSocket upgrade did not complete"),
        }
    });
    let mut response = response.map(axum::body::Body::new);
    response.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    response
}

/// Moves frames until either side is done, then reports the close. `conn` keeps the source's
/// connection counted while the session lives.
async fn run(mut ws: yawc::HttpWebSocket, info: SessionInfo, shared: Arc<Shared>, conn: ConnInfo) {
    let events = shared.events.clone();
    let id = info.id;
    let peer = info.peer;
    let (tx, mut outbound) = mpsc::channel(OUTGOING_QUEUE);
    tracing::debug!(id, %peer, origin = %info.origin, "web: SIP WebSocket opened");
    shared.sessions.fetch_add(1, Ordering::Relaxed);
    if events.send(WsEvent::Opened { session: info, outbound: tx }).await.is_err() {
        let _ = ws.send(Frame::close(CloseCode::Away, "shutting down")).await;
        shared.sessions.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let mut last_heard = Instant::now();
    let mut pinged = false;
    // One timer for the session, moved only when it fires early: a new timer per frame would
    // be inserted into and removed from the runtime's wheel twice per request.
    let check = tokio::time::sleep_until(last_heard + PING_AFTER);
    tokio::pin!(check);
    let reason = loop {
        tokio::select! {
            frame = ws.next_frame() => match frame {
                Ok(frame) => {
                    last_heard = Instant::now();
                    if pinged {
                        // The timer waits for the idle limit; the next ping is due sooner.
                        check.as_mut().reset(last_heard + PING_AFTER);
                    }
                    pinged = false;
                    match frame.opcode() {
                        OpCode::Text | OpCode::Binary => {
                            let delivered = events.send(WsEvent::Message { id, data: frame.into_payload() }).await;
                            if delivered.is_err() {
                                let _ = ws.send(Frame::close(CloseCode::Away, "shutting down")).await;
                                break "consumer gone";
                            }
                        }
                        OpCode::Close => break "closed by peer",
                        _ => {}
                    }
                }
                // yawc has already answered protocol errors (1002, 1007, 1009) with a close frame.
                Err(e) => {
                    tracing::debug!(id, %peer, error = %e, "web: WebSocket read ended");
                    break "read error";
                }
            },
            out = outbound.recv() => match out {
                Some(Outgoing::Text(text)) => {
                    if ws.send(Frame::text(text)).await.is_err() {
                        break "write error";
                    }
                }
                Some(Outgoing::Close(why)) => {
                    let _ = ws.send(Frame::close(CloseCode::Policy, why)).await;
                    break why;
                }
                None => {
                    let _ = ws.send(Frame::close(CloseCode::Away, "")).await;
                    break "released";
                }
            },
            () = &mut check => {
                let due = last_heard + if pinged { IDLE_LIMIT } else { PING_AFTER };
                if Instant::now() < due {
                    // Heard from since it was set: not idle yet.
                    check.as_mut().reset(due);
                    continue;
                }
                if pinged {
                    break "idle";
                }
                pinged = true;
                check.as_mut().reset(last_heard + IDLE_LIMIT);
                if ws.send(Frame::ping("")).await.is_err() {
                    break "write error";
                }
            }
        }
    };
    tracing::debug!(id, %peer, reason, "web: SIP WebSocket closed");
    // One more read lets yawc flush the close frames it owes (its answer to the peer's close,
    // or 1009/1002/1007 after a bad message) and, after our own close, take the peer's reply.
    let _ = tokio::time::timeout(CLOSE_LINGER, ws.next_frame()).await;
    drop(ws);
    drop(conn);
    shared.sessions.fetch_sub(1, Ordering::Relaxed);
    let _ = events.send(WsEvent::Closed { id }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sip_must_be_offered_exactly() {
        let mut h = HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat, sip"));
        assert!(offers_sip(&h));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("SIP"));
        assert!(!offers_sip(&h));
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("sips"));
        assert!(!offers_sip(&h));
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert!(header_has_token(&h, header::CONNECTION, "upgrade"));
    }
}
