//! Registration mode `register`: while an agent is registered with the gateway, the gateway
//! registers the agent's DN with the SIP server (Contact = the gateway's internal address),
//! answers digest challenges with the profile's upstream credentials, refreshes before expiry
//! and de-registers when the agent goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::Rng;
use rsip::{Response, SipMessage};

use super::control::CallControl;
use super::deadlines::Deadlines;
use crate::profile::{LoadedProfile, RegistrationMode};
use crate::sip::digest::{authorize_request, ClientSecret};
use crate::sip::message::{new_branch, new_call_id, new_tag};
use crate::sip::transaction::{Transport, TxId};

/// Upstream registration settings from the profile.
#[derive(Debug, Clone)]
pub struct RegistrationConfig {
    pub expires_secs: u32,
    pub secrets: HashMap<String, ClientSecret>,
}

impl RegistrationConfig {
    pub fn from_profile(loaded: &LoadedProfile) -> Option<Self> {
        let p = &loaded.profile;
        if p.upstream.registration != RegistrationMode::Register {
            return None;
        }
        let mut secrets = HashMap::new();
        for a in &p.agents {
            for dn in a.dns().unwrap_or_default() {
                let secret = match (&a.upstream_password, &a.upstream_ha1_md5) {
                    (Some(pw), _) => ClientSecret::Password(pw.replace("{dn}", &dn)),
                    (None, Some(h)) => ClientSecret::Ha1 { md5: Some(h.clone()), sha256: None },
                    (None, None) => continue,
                };
                secrets.insert(dn, secret);
            }
        }
        Some(RegistrationConfig { expires_secs: p.upstream.register_expires.as_secs() as u32, secrets })
    }
}

/// One DN's registration with the SIP server.
#[derive(Debug, Clone)]
pub(crate) struct UpstreamRegistration {
    call_id: String,
    from_tag: String,
    cseq: u32,
    nc: u32,
    server: SocketAddr,
    /// `Some` while the agent is registered; `None` once de-registering.
    wanted: bool,
    challenged: bool,
}

/// All upstream registrations and the transactions carrying them.
#[derive(Debug, Default)]
pub(crate) struct Registrations {
    pub by_dn: HashMap<String, UpstreamRegistration>,
    pub by_tx: HashMap<TxId, String>,
    /// When each DN's registration is refreshed (or retried).
    refresh: Deadlines<String>,
}

impl Registrations {
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.refresh.next()
    }

    fn forget(&mut self, dn: &str) {
        self.by_dn.remove(dn);
        self.refresh.set(dn.to_owned(), None);
    }
}

impl CallControl {
    /// The agent edge bound (`true`) or unbound (`false`) a DN: mirror it upstream.
    pub fn mirror_registration(&mut self, dn: &str, registered: bool, now: Instant, rng: &mut impl Rng) {
        let Some(config) = self.config.registration.clone() else { return };
        if !config.secrets.contains_key(dn) {
            return;
        }
        let server = match self.registrations.by_dn.get(dn) {
            Some(r) => r.server,
            None if registered => match self.upstreams.failover_order().first() {
                Some(s) => *s,
                None => return,
            },
            None => return,
        };
        let entry = self.registrations.by_dn.entry(dn.to_owned()).or_insert_with(|| UpstreamRegistration {
            call_id: new_call_id(rng),
            from_tag: new_tag(rng),
            cseq: 0,
            nc: 0,
            server,
            wanted: true,
            challenged: false,
        });
        entry.wanted = registered;
        self.registrations.refresh.set(dn.to_owned(), None);
        self.send_register(dn, None, now, rng);
        self.drain(now, rng);
    }

    /// Refreshes registrations whose time has come.
    pub(crate) fn refresh_registrations(&mut self, now: Instant, rng: &mut impl Rng) {
        for dn in self.registrations.refresh.take_due(now) {
            self.send_register(&dn, None, now, rng);
        }
    }

    fn send_register(&mut self, dn: &str, challenge: Option<&Response>, now: Instant, rng: &mut impl Rng) {
        let Some(config) = self.config.registration.clone() else { return };
        let domain = self.config.domain.clone();
        let Some(server) = self.registrations.by_dn.get(dn).map(|r| r.server) else { return };
        let target = self.upstream_target(server);
        let (via_transport, sent_by) = self.via_for(target);
        let Some(r) = self.registrations.by_dn.get_mut(dn) else { return };
        r.cseq += 1;
        let expires = if r.wanted { config.expires_secs } else { 0 };
        let rport = if target.transport == Transport::Udp { ";rport" } else { "" };
        let text = format!(
            "REGISTER sip:{server} SIP/2.0\r\nVia: SIP/2.0/{via_transport} {sent_by};branch={}{rport}\r\nMax-Forwards: 70\r\nFrom: <sip:{dn}@{domain}>;tag={}\r\nTo: <sip:{dn}@{domain}>\r\nCall-ID: {}\r\nCSeq: {} REGISTER\r\nContact: <sip:{dn}@{sent_by}>\r\nExpires: {expires}\r\nUser-Agent: gatewayd\r\nContent-Length: 0\r\n\r\n",
            new_branch(rng),
            r.from_tag,
            r.call_id,
            r.cseq,
        );
        let Ok(SipMessage::Request(mut request)) = crate::sip::message::parse(text.as_bytes()) else { return };
        if let Some(challenge) = challenge {
            r.nc += 1;
            let cnonce = new_tag(rng);
            let Some(secret) = config.secrets.get(dn) else { return };
            if let Err(e) = authorize_request(&mut request, challenge, dn, secret, r.nc, &cnonce) {
                tracing::warn!(dn = %dn, error = %e, "cannot answer the SIP server's challenge");
                return;
            }
        }
        match self.tx.send_request(request, target, now) {
            Ok(tx) => {
                self.registrations.by_tx.insert(tx, dn.to_owned());
            }
            Err(e) => tracing::warn!(dn = %dn, error = %e, "REGISTER not sent"),
        }
    }

    /// A final response to one of our REGISTERs; `true` when it was one.
    pub(crate) fn on_register_response(&mut self, tx: TxId, response: &Response, now: Instant, rng: &mut impl Rng) -> bool {
        let Some(dn) = self.registrations.by_tx.get(&tx).cloned() else { return false };
        let code = response.status_code.code();
        if code < 200 {
            return true;
        }
        self.registrations.by_tx.remove(&tx);
        let Some(r) = self.registrations.by_dn.get_mut(&dn) else { return true };
        match code {
            401 | 407 if !r.challenged => {
                r.challenged = true;
                self.send_register(&dn, Some(response), now, rng);
            }
            200..=299 if r.wanted => {
                r.challenged = false;
                let granted = granted_expires(response).unwrap_or(self.config.registration.as_ref().map_or(3600, |c| c.expires_secs));
                // Refresh well before expiry, as clients do.
                let after = Duration::from_secs(u64::from(granted.max(10)) * 4 / 5);
                tracing::info!(dn = %dn, server = %r.server, expires = granted, "DN registered with the SIP server");
                self.registrations.refresh.set(dn, Some(now + after));
            }
            200..=299 => {
                tracing::info!(dn = %dn, "DN de-registered from the SIP server");
                self.registrations.forget(&dn);
            }
            _ => {
                tracing::warn!(dn = %dn, status = code, "the SIP server refused the DN's registration");
                r.challenged = false;
                if r.wanted {
                    self.registrations.refresh.set(dn, Some(now + Duration::from_secs(30)));
                } else {
                    self.registrations.forget(&dn);
                }
            }
        }
        true
    }
}

/// The expiry the registrar granted: the Contact's `expires` or the Expires header.
fn granted_expires(response: &Response) -> Option<u32> {
    let contact = super::build::header(&response.headers, "Contact")?;
    crate::sip::headers::header_param(&contact, "expires")
        .and_then(|v| v.parse().ok())
        .or_else(|| super::build::header(&response.headers, "Expires")?.trim().parse().ok())
}
