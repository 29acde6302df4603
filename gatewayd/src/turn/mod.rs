//! STUN/TURN server for browsers behind restrictive NATs (UDP, TCP and TLS listeners).
//! It must never relay to loopback, private or internal ranges unless the profile allows it.

pub mod credentials;
