//! Semantic checks: everything that parses but would make a broken or unsafe gateway. All
//! problems are collected in one pass so an operator fixes them in one round.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;


use super::diag::{Diagnostic, SourceMap};
use super::values::{Cidr, PortRange};
use super::{AcmeChallenge, AgentCodec, Codec, Profile, TlsSource, Transport};

pub(crate) fn validate(p: &Profile, map: &SourceMap<'_>, dir: &Path) -> Vec<Diagnostic> {
    let mut v = Validator { p, map, out: Vec::new() };
    v.port_ranges();
    v.media_capacity();
    v.agents();
    v.plaintext_secrets();
    v.sides();
    v.listeners();
    v.upstream();
    v.tls(dir);
    v.turn();
    v.web();
    v.registrar();
    v.bans();
    v.observe();
    for (key, message) in super::ha::check(p) {
        v.error(key, message);
    }
    v.out
}

struct Validator<'a> {
    p: &'a Profile,
    map: &'a SourceMap<'a>,
    out: Vec<Diagnostic>,
}

const MAX_DIAGNOSTICS_PER_RULE: usize = 20;

impl Validator<'_> {
    fn error(&mut self, key: impl AsRef<str>, message: impl Into<String>) {
        self.out.push(self.map.at_key(key.as_ref(), message));
    }

    /// Header names the gateway reads or writes must be SIP tokens; the HEP collector needs one
    /// address to send to.
    fn observe(&mut self) {
        let o = &self.p.observe;
        for (i, h) in o.record_headers.iter().enumerate() {
            if !is_header_name(h) {
                self.error(format!("observe.record_headers[{i}]"), format!("{h:?} is not a SIP header name"));
            }
        }
        if let Some(hep) = &o.hep {
            if hep.collector.ip().is_unspecified() || hep.collector.port() == 0 {
                self.error("observe.hep.collector", format!("{} is not an address packets can be sent to", hep.collector));
            }
            if !hep.link_header.is_empty() && !is_header_name(&hep.link_header) {
                self.error("observe.hep.link_header", format!("{:?} is not a SIP header name", hep.link_header));
            }
        }
    }

    fn port_ranges(&mut self) {
        let mut ranges: Vec<(String, PortRange)> = vec![
            ("media.public_ports".into(), self.p.media.public_ports),
            ("media.internal_ports".into(), self.p.media.internal_ports),
        ];
        if let Some(t) = &self.p.turn {
            ranges.push(("turn.relay_ports".into(), t.relay_ports));
        }
        for (i, a) in self.p.firewall.allow.iter().enumerate() {
            if a.ports.is_inverted() {
                self.error(format!("firewall.allow[{i}].ports"), format!("range {} is inverted: the first port is above the last", a.ports));
            }
        }
        for (key, r) in &ranges {
            if r.is_inverted() {
                self.error(key, format!("range {r} is inverted: the first port is above the last"));
            }
        }
        for (i, (ka, a)) in ranges.iter().enumerate() {
            for (kb, b) in &ranges[..i] {
                if a.overlaps(b) {
                    self.error(ka, format!("range {a} overlaps {kb} ({b})"));
                }
            }
        }
        if let Some(port) = self.p.media.single_port {
            for (key, r) in &ranges[1..] {
                if r.contains(port) {
                    self.error("media.single_port", format!("port {port} lies inside {key} ({r})"));
                }
            }
        }
    }

    fn media_capacity(&mut self) {
        let m = &self.p.media;
        if m.max_calls == 0 {
            self.error("media.max_calls", "must be at least 1");
            return;
        }
        if m.single_port.is_none() && !m.public_ports.is_inverted() && m.public_ports.len() < m.max_calls {
            self.error(
                "media.public_ports",
                format!("range {} has {} ports but media.max_calls = {} needs {} (one per call)", m.public_ports, m.public_ports.len(), m.max_calls, m.max_calls),
            );
        }
        let need = m.max_calls.saturating_mul(2);
        if !m.internal_ports.is_inverted() && m.internal_ports.len() < need {
            self.error(
                "media.internal_ports",
                format!("range {} has {} ports but media.max_calls = {} needs {} (RTP and RTCP per call)", m.internal_ports, m.internal_ports.len(), m.max_calls, need),
            );
        }
        if m.codecs.is_empty() {
            self.error("media.codecs", "at least one codec is needed");
        }
        for (i, c) in m.agent_codecs.iter().enumerate() {
            let g711 = match c {
                AgentCodec::Opus => None,
                AgentCodec::PCMU => Some(Codec::PCMU),
                AgentCodec::PCMA => Some(Codec::PCMA),
            };
            if m.agent_codecs[..i].contains(c) {
                self.error(format!("media.agent_codecs[{i}]"), format!("{c:?} is listed twice"));
            } else if let Some(g) = g711.filter(|g| !m.codecs.contains(g)) {
                self.error(format!("media.agent_codecs[{i}]"), format!("{g:?} toward the browser is not in media.codecs: only opus is transcoded, G.711 passes through"));
            }
        }
    }

    fn agents(&mut self) {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut duplicates = 0;
        for (i, a) in self.p.agents.iter().enumerate() {
            let key = format!("agents[{i}]");
            let dns = match a.dns() {
                Ok(dns) => dns,
                Err(e) => {
                    self.error(format!("{key}.dn"), e);
                    continue;
                }
            };
            for dn in &dns {
                if let Some(first) = seen.insert(dn.clone(), i) {
                    if duplicates < MAX_DIAGNOSTICS_PER_RULE {
                        self.error(format!("{key}.dn"), format!("DN {dn} is already defined by agents[{first}]"));
                    }
                    duplicates += 1;
                }
                if self.p.sip.echo_number.as_deref() == Some(dn.as_str()) {
                    self.error(format!("{key}.dn"), format!("DN {dn} is also sip.echo_number"));
                }
            }
            let has_ha1 = a.ha1_md5.is_some() || a.ha1_sha256.is_some();
            if a.password.is_none() && !has_ha1 {
                self.error(&key, "agent has no credentials: set ha1_md5 and/or ha1_sha256 (see `gatewayd hash-password`)");
            }
            if dns.len() > 1 {
                for (field, set) in [("ha1_md5", a.ha1_md5.is_some()), ("ha1_sha256", a.ha1_sha256.is_some()), ("upstream_ha1_md5", a.upstream_ha1_md5.is_some())] {
                    if set {
                        self.error(format!("{key}.{field}"), format!("a hash covers one DN but `{}` names {}; list each DN separately", a.dn, dns.len()));
                    }
                }
            }
            for (field, value, len) in [("ha1_md5", &a.ha1_md5, 32), ("ha1_sha256", &a.ha1_sha256, 64), ("upstream_ha1_md5", &a.upstream_ha1_md5, 32)] {
                if let Some(h) = value {
                    if h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                        self.error(format!("{key}.{field}"), format!("expected {len} hexadecimal digits"));
                    }
                }
            }
            for (j, pattern) in a.allowed_destinations.iter().enumerate() {
                if let Err(e) = regex::Regex::new(pattern) {
                    self.error(format!("{key}.allowed_destinations[{j}]"), format!("not a valid regular expression: {}", first_line(&e.to_string())));
                }
            }
        }
        if duplicates > MAX_DIAGNOSTICS_PER_RULE {
            self.error("agents", format!("{duplicates} duplicate DNs in all"));
        }
    }

    fn plaintext_secrets(&mut self) {
        if self.p.site.lab_mode {
            return;
        }
        const WHY: &str = "plaintext secrets are only allowed with site.lab_mode = true";
        for (i, a) in self.p.agents.iter().enumerate() {
            if a.password.is_some() {
                self.error(format!("agents[{i}].password"), format!("{WHY}; store ha1_md5/ha1_sha256 instead (see `gatewayd hash-password`)"));
            }
            if a.upstream_password.is_some() {
                self.error(format!("agents[{i}].upstream_password"), format!("{WHY}; store upstream_ha1_md5 instead"));
            }
        }
        if self.p.upstream.outbound.token_secret.is_some() {
            self.error("upstream.outbound.token_secret", format!("{WHY}; use token_secret_file"));
        }
        if let Some(t) = &self.p.turn {
            if t.shared_secret.is_some() {
                self.error("turn.shared_secret", format!("{WHY}; use shared_secret_file"));
            }
            for (i, u) in t.users.iter().enumerate() {
                if u.password.is_some() {
                    self.error(format!("turn.users[{i}].password"), format!("{WHY}; store key_md5 instead"));
                }
            }
        }
    }

    fn sides(&mut self) {
        let public = &self.p.public;
        if public.addresses.is_empty() {
            self.error("public.addresses", "at least one public address is needed");
        }
        for (i, m) in public.nat.iter().enumerate() {
            if !public.addresses.contains(&m.private) {
                self.error(format!("public.nat[{i}].private"), format!("{} is not one of public.addresses", m.private));
            }
            if !is_globally_routable(m.public) && !self.p.site.lab_mode {
                self.error(format!("public.nat[{i}].public"), format!("{} is not a public address", m.public));
            }
        }
        if !self.p.site.lab_mode {
            for (i, a) in public.addresses.iter().enumerate() {
                let adv = public.advertised(*a);
                if !is_globally_routable(adv) {
                    self.error(
                        format!("public.addresses[{i}]"),
                        format!("{a} is a private or loopback address and would be advertised to browsers; add a [[public.nat]] mapping to the public address"),
                    );
                }
                if self.p.internal.contains(*a) {
                    self.error(format!("public.addresses[{i}]"), format!("{a} belongs to the internal side"));
                }
            }
        }
    }

    /// Internal-only services must never listen where the internet can reach them.
    fn listeners(&mut self) {
        let mut internal_only: Vec<(String, SocketAddr)> =
            self.p.sip.listen.iter().enumerate().map(|(i, l)| (format!("sip.listen[{i}].address"), l.address)).collect();
        internal_only.push(("observe.admin".into(), self.p.observe.admin));
        if let Some(m) = self.p.observe.metrics {
            internal_only.push(("observe.metrics".into(), m));
        }
        for (key, addr) in &internal_only {
            let ip = addr.ip();
            if ip.is_unspecified() {
                self.error(key, format!("{addr} listens on every address, the public side included; bind the internal or management address"));
            } else if self.p.public.addresses.contains(&ip) && !(self.p.site.lab_mode && ip.is_loopback()) {
                self.error(key, format!("{addr} is on the public side; SIP, admin and metrics must never face the internet"));
            }
        }

        let mut tcp: Vec<(String, SocketAddr)> = Vec::new();
        let mut udp: Vec<(String, SocketAddr)> = Vec::new();
        tcp.extend(self.p.web.https.iter().enumerate().map(|(i, a)| (format!("web.https[{i}]"), *a)));
        tcp.extend(self.p.web.http_redirect.iter().enumerate().map(|(i, a)| (format!("web.http_redirect[{i}]"), *a)));
        for (i, l) in self.p.sip.listen.iter().enumerate() {
            let list = if l.transport == Transport::Tcp { &mut tcp } else { &mut udp };
            list.push((format!("sip.listen[{i}].address"), l.address));
        }
        tcp.push(("observe.admin".into(), self.p.observe.admin));
        if let Some(m) = self.p.observe.metrics.filter(|m| *m != self.p.observe.admin) {
            tcp.push(("observe.metrics".into(), m));
        }
        if let Some(t) = &self.p.turn {
            udp.extend(t.listen_udp.iter().enumerate().map(|(i, a)| (format!("turn.listen_udp[{i}]"), *a)));
            tcp.extend(t.listen_tcp.iter().enumerate().map(|(i, a)| (format!("turn.listen_tcp[{i}]"), *a)));
            // Naming an HTTPS address exactly shares that listener (TURN over TLS on 443).
            let own = t.listen_tls.iter().enumerate().filter(|(_, a)| !self.p.web.https.contains(a));
            tcp.extend(own.map(|(i, a)| (format!("turn.listen_tls[{i}]"), *a)));
        }
        for (proto, list) in [("TCP", &tcp), ("UDP", &udp)] {
            for (i, (ka, a)) in list.iter().enumerate() {
                if let Some((kb, _)) = list[..i].iter().find(|(_, b)| clash(a, b)) {
                    let hint = if ka.starts_with("turn.listen_tls") && kb.starts_with("web.https") {
                        format!("; to serve TURN over TLS on the HTTPS listener, name its address exactly ({})", list.iter().find(|(k, _)| k == kb).map_or(String::new(), |(_, b)| b.to_string()))
                    } else {
                        String::new()
                    };
                    self.error(ka, format!("{proto} {a} is also used by {kb}{hint}"));
                }
            }
        }
        if self.p.web.https.is_empty() {
            self.error("web.https", "at least one HTTPS listener is needed");
        }
        if self.p.sip.listen.is_empty() {
            self.error("sip.listen", "at least one internal SIP listener is needed");
        }
    }

    fn upstream(&mut self) {
        if self.p.upstream.session_expires.as_secs() < 90 {
            self.error("upstream.session_expires", "must be at least 90s (RFC 4028's smallest session interval)");
        }
        if self.p.upstream.servers.is_empty() {
            self.error("upstream.servers", "at least one SIP server is needed");
        }
        for (i, s) in self.p.upstream.servers.iter().enumerate() {
            if !self.p.internal.contains(s.address.ip()) {
                self.error(
                    format!("upstream.servers[{i}].address"),
                    format!("{} is not on the internal side (internal.address or internal.networks)", s.address.ip()),
                );
            }
            if s.weight == 0 {
                self.error(format!("upstream.servers[{i}].weight"), "must be at least 1");
            }
        }
        for (i, pattern) in self.p.upstream.outbound.patterns.iter().enumerate() {
            if let Err(e) = regex::Regex::new(pattern) {
                self.error(format!("upstream.outbound.patterns[{i}]"), format!("not a valid regular expression: {}", first_line(&e.to_string())));
            }
        }
        if self.p.upstream.registration == super::RegistrationMode::Register {
            for (i, a) in self.p.agents.iter().enumerate() {
                if a.upstream_password.is_none() && a.upstream_ha1_md5.is_none() {
                    self.error(format!("agents[{i}]"), "upstream.registration = \"register\" needs upstream_ha1_md5 (or upstream_password in lab mode)");
                }
            }
        }
    }

    fn tls(&mut self, dir: &Path) {
        let t = &self.p.tls;
        match t.source {
            TlsSource::Files => {
                let (Some(cert), Some(key)) = (&t.certificate, &t.key) else {
                    self.error("tls", "source = \"files\" needs both `certificate` and `key`");
                    return;
                };
                let cert_pem = std::fs::read(dir.join(cert));
                let key_pem = std::fs::read(dir.join(key));
                if let Err(e) = &cert_pem {
                    self.error("tls.certificate", format!("cannot read {}: {e}", dir.join(cert).display()));
                }
                if let Err(e) = &key_pem {
                    self.error("tls.key", format!("cannot read {}: {e}", dir.join(key).display()));
                }
                if let (Ok(c), Ok(k)) = (cert_pem, key_pem) {
                    if let Err(e) = crate::tls::check_pair(&c, &k) {
                        self.error(e.key(), e.to_string());
                    }
                }
            }
            TlsSource::SelfSigned if !self.p.site.lab_mode => {
                self.error("tls.source", "self-signed certificates are only for site.lab_mode = true; browsers on the internet refuse them");
            }
            TlsSource::SelfSigned => {}
            TlsSource::Acme => match &t.acme {
                None => self.error("tls", "source = \"acme\" needs a [tls.acme] table"),
                Some(a) if a.domains.is_empty() => self.error("tls.acme.domains", "at least one domain is needed"),
                Some(a) => {
                    if a.challenge == AcmeChallenge::Http01 && self.p.web.http_redirect.is_empty() {
                        self.error("tls.acme.challenge", "http-01 is answered on a plain HTTP listener: add one to web.http_redirect (port 80 for a public CA)");
                    }
                    if let Some(eab) = &a.external_account {
                        if let Err(e) = eab.hmac_key(|p| dir.join(p)) {
                            self.error("tls.acme.external_account.hmac_key_file", e);
                        }
                    }
                    if let Some(ca) = &a.directory_ca {
                        let path = dir.join(ca);
                        match std::fs::read(&path) {
                            Err(e) => self.error("tls.acme.directory_ca", format!("cannot read {}: {e}", path.display())),
                            Ok(pem) if !rustls_pemfile::certs(&mut &pem[..]).any(|c| c.is_ok()) => {
                                self.error("tls.acme.directory_ca", format!("{} holds no PEM certificate", path.display()))
                            }
                            Ok(_) => {}
                        }
                    }
                }
            },
        }
    }

    fn turn(&mut self) {
        let Some(t) = &self.p.turn else { return };
        if t.listen_udp.is_empty() && t.listen_tcp.is_empty() && t.listen_tls.is_empty() {
            self.error("turn", "a [turn] section needs at least one listener");
        }
        if t.shared_secret.is_none() && t.shared_secret_file.is_none() && t.users.is_empty() {
            self.error("turn", "TURN needs a shared secret or static users");
        }
        let forbidden: Vec<(Cidr, &str)> = [
            ("127.0.0.0/8", "loopback"),
            ("::1/128", "loopback"),
            ("0.0.0.0/8", "this-host"),
        ]
        .iter()
        .map(|(n, why)| (n.parse().unwrap(), *why))
        .chain(self.p.internal.networks.iter().map(|n| (*n, "internal")))
        .chain(std::iter::once((Cidr::from(self.p.internal.address), "internal")))
        .collect();
        // Lab mode lets tests relay to a peer on loopback; a real site never relays there.
        for (i, allowed) in t.allowed_peers.iter().enumerate() {
            if let Some((n, why)) = forbidden.iter().find(|(n, _)| n.overlaps(allowed)).filter(|_| !self.p.site.lab_mode) {
                self.error(format!("turn.allowed_peers[{i}]"), format!("{allowed} reaches the {why} range {n}; TURN must never relay there outside lab mode"));
            }
        }
        let l = &t.limits;
        for (key, value) in [("max_allocations", l.max_allocations), ("per_user", l.per_user), ("per_source", l.per_source), ("permissions", l.permissions), ("bandwidth_kbps", l.bandwidth_kbps)] {
            if value == 0 {
                self.error(format!("turn.limits.{key}"), "must be at least 1");
            }
        }
        if l.max_lifetime.as_secs() < 60 {
            self.error("turn.limits.max_lifetime", "must be at least 60s (clients refresh every few minutes)");
        }
        if t.relay_ports.len() < 2 {
            self.error("turn.relay_ports", "needs at least two ports");
        }
        for (i, u) in t.users.iter().enumerate() {
            if u.password.is_none() && u.key_md5.is_none() {
                self.error(format!("turn.users[{i}]"), "user has no credentials: set key_md5");
            }
        }
    }

    fn web(&mut self) {
        for (i, o) in self.p.web.allowed_origins.iter().enumerate() {
            if let Err(why) = check_origin(o) {
                self.error(format!("web.allowed_origins[{i}]"), why);
            }
        }
        if self.p.web.max_message_bytes < 1024 {
            self.error("web.max_message_bytes", "must be at least 1024: SIP messages with SDP are larger");
        }
    }

    fn registrar(&mut self) {
        let algorithms = &self.p.sip.auth.algorithms;
        if algorithms.is_empty() {
            self.error("sip.auth.algorithms", "name at least one algorithm");
        }
        for (i, a) in algorithms.iter().enumerate() {
            if algorithms[..i].contains(a) {
                self.error(format!("sip.auth.algorithms[{i}]"), "listed twice");
            }
        }
        let r = &self.p.sip.registrar;
        if !(r.min_expires <= r.default_expires && r.default_expires <= r.max_expires) {
            self.error("sip.registrar", format!("expected min_expires <= default_expires <= max_expires, got {} / {} / {}", r.min_expires, r.default_expires, r.max_expires));
        }
    }

    fn bans(&mut self) {
        for (i, r) in self.p.bans.rules.iter().enumerate() {
            if r.max_retry == 0 {
                self.error(format!("bans.rules[{i}].max_retry"), "must be at least 1");
            }
            if r.events.is_empty() {
                self.error(format!("bans.rules[{i}].events"), "name at least one event");
            }
        }
        if self.p.bans.escalation_factor == 0 {
            self.error("bans.escalation_factor", "must be at least 1 (1 = no escalation)");
        }
        let t = &self.p.firewall.table;
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            self.error("firewall.table", "use letters, digits, `_` and `-` only");
        }
    }
}

fn clash(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| l.starts_with("error")).unwrap_or_else(|| s.lines().next().unwrap_or(s))
}

/// Whether browsers on the internet can reach this address.
pub(crate) fn is_globally_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// An allowed Origin is exactly `scheme://host[:port]`.
fn check_origin(o: &str) -> Result<(), String> {
    let rest = o
        .strip_prefix("https://")
        .or_else(|| o.strip_prefix("http://"))
        .ok_or_else(|| format!("`{o}` is not an origin: expected https://host[:port]"))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('?') || rest.contains('#') || rest.contains('@') {
        return Err(format!("`{o}` is not an origin: expected scheme://host[:port] with no path"));
    }
    Ok(())
}

/// A SIP header name: an RFC 3261 token.
fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b))
}
