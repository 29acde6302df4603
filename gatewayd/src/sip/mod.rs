//! SIP protocol cores, sans-IO: message helpers over rsip, digest authentication, the registrar,
//! transactions and dialogs. Inputs and the current time in, events and commands out.
//! It must not own sockets or spawn tasks; the drivers in `web` and `call` do the I/O.

pub mod dialog;
pub mod digest;
pub mod framing;
pub mod headers;
pub mod message;
pub mod registrar;
pub mod transaction;
