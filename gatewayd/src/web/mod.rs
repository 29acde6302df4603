//! The public HTTPS side: TLS listeners, the HTTP redirect, the softphone's static files and
//! the WebSocket upgrade (Origin check, subprotocol `sip`) that hands SIP connections to `sip`.
//! It must not interpret SIP itself.
