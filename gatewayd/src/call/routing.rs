//! Where call control's requests go: the Via each side gets, in-dialog next hops toward the
//! SIP server (only ever one of the upstream servers), the transport of each upstream server,
//! and the OPTIONS health checks sent to them.

use std::net::SocketAddr;
use std::time::Instant;

use rand::Rng;
use rsip::SipMessage;

use super::control::CallControl;
use crate::sip::dialog::Dialog;
use crate::sip::message::new_tag;
use crate::sip::transaction::{Destination, Target, Transport};

impl CallControl {
    /// Via transport and sent-by for requests we send to `target`: WSS toward agents, the
    /// upstream server's own transport from our internal listener.
    pub(crate) fn via_for(&self, target: Target) -> (&'static str, String) {
        match (target.destination, target.transport) {
            (Destination::Conn(_), _) => ("WSS", self.config.agent_host.clone()),
            (Destination::Addr(_), Transport::Tcp) => ("TCP", self.config.internal_sent_by.clone()),
            (Destination::Addr(_), _) => ("UDP", self.config.internal_sent_by.clone()),
        }
    }

    /// Where in-dialog requests on a leg go: toward the SIP server, the dialog's next hop (its
    /// Contact or first Record-Route) when that is one of the upstream servers, else the address
    /// the leg started with; toward an agent, its connection.
    pub(crate) fn dialog_target(&self, leg_target: Target, dialog: &Dialog) -> Target {
        let destination = match leg_target.destination {
            Destination::Addr(server) => {
                Destination::Addr(addr_of(&dialog.next_hop()).filter(|a| self.upstreams.is_upstream(a.ip())).unwrap_or(server))
            }
            conn => conn,
        };
        Target { transport: leg_target.transport, destination }
    }

    /// Where requests to upstream server `server` go, over the transport the profile gives it.
    pub(crate) fn upstream_target(&self, server: SocketAddr) -> Target {
        let transport = match self.upstreams.transport_of(server) {
            Some(crate::profile::Transport::Tcp) => Transport::Tcp,
            _ => Transport::Udp,
        };
        Target { transport, destination: Destination::Addr(server) }
    }

    pub(crate) fn send_health_check(&mut self, addr: SocketAddr, now: Instant, rng: &mut impl Rng) {
        let target = self.upstream_target(addr);
        let (name, sent_by) = self.via_for(target);
        let text = format!(
            "OPTIONS sip:{addr} SIP/2.0\r\nVia: SIP/2.0/{name} {sent_by};branch={}\r\nMax-Forwards: 70\r\nFrom: <sip:gatewayd@{}>;tag={}\r\nTo: <sip:{addr}>\r\nCall-ID: {}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            crate::sip::message::new_branch(rng),
            self.config.domain,
            new_tag(rng),
            crate::sip::message::new_call_id(rng),
        );
        let Ok(SipMessage::Request(options)) = crate::sip::message::parse(text.as_bytes()) else { return };
        // A check that waits out Timer F (32 s) would take minutes to mark a dead server down.
        if let Ok(tx) = self.tx.send_request_within(options, target, now, Some(self.config.reply_timeout)) {
            self.health_checks.insert(tx, addr);
        }
    }
}

/// The socket address a SIP URI names, when its host is an IP literal.
fn addr_of(uri: &rsip::Uri) -> Option<SocketAddr> {
    let ip: std::net::IpAddr = uri.host_with_port.host.to_string().trim_matches(['[', ']']).parse().ok()?;
    let port = uri.host_with_port.port.as_ref().map(|p| *p.value()).unwrap_or(5060);
    Some(SocketAddr::new(ip, port))
}

