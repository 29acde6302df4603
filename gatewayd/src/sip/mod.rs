//! SIP protocol cores, sans-IO: message helpers over rsip, digest authentication, the registrar,
//! transactions and dialogs. Inputs and the current time in, events and commands out.
//! It must not own sockets or spawn tasks; the drivers in `web` and `call` do the I/O.
//!
//! - `framing`: one WebSocket frame or datagram is one message; TCP streams are cut by
//!   Content-Length. RFC 5626 CRLF keepalives are told apart (answer a ping with `PONG`).
//! - `message`: `parse` (typed `ParseError` with its status code), `bad_request_for` (the 400
//!   or 501 that can still be sent for a broken request), `response_to`, branches, tags,
//!   Call-IDs, Max-Forwards.
//! - `conformance`: `screen` = SIP version (505), Request-URI scheme (416), `parse` (400/501),
//!   Require (420) and Max-Forwards 0 (483), with `refusal_for` the response to each.
//! - `rejects`: rejected input as one summary line per source per interval, counts by reason.
//! - `headers`: readers for header values rsip keeps as text (Via, name-addr, parameters).
//! - `digest`: `DigestServer` challenges and verifies against stored HA1 (`Verdict`, with an
//!   `AuthFailure` for the ban engine); the client side answers upstream challenges.
//! - `registrar`: DN to connection bindings with expiry and a duplicate policy.
//! - `transaction`: the RFC 3261 transaction layer, bounded, one state machine for all.
//! - `dialog`: dialog identity, route set and in-dialog requests.
//!
//! A driver's loop, per received frame: `framing` (keepalive?) -> `conformance::screen` (on
//! error send `refusal_for` and count it in `rejects`) -> `TransactionLayer::receive` (on
//! `Overloaded` send 503) -> drain `poll_output`: `Send` goes to the socket, `Event`s go to the
//! TU (registrar, B2BUA), whose answers come back through `send_response`/`send_request`. Before sleeping, the driver waits
//! until the earliest `poll_timeout` of the cores and then calls their `handle_timeout`.
//! Wall-clock milliseconds are passed to `digest` (nonces carry their issue time and outlive a
//! restart when the secret is kept); everything else takes `Instant`.

pub mod conformance;
pub mod dialog;
pub mod digest;
pub mod framing;
pub mod headers;
pub mod message;
pub mod registrar;
pub mod rejects;
pub mod transaction;

#[cfg(test)]
mod sipp_tests;
