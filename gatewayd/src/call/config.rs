//! What call control takes from the profile: domain and addresses, dial patterns, auto-answer
//! policy, the click-to-dial token secret, registration mode and session timer. Rebuilt on every
//! reload; it never touches call state.

use std::collections::HashMap;

use regex::Regex;

use super::registration::RegistrationConfig;
use crate::profile::{AutoAnswer, LoadedProfile};

/// What call control needs from the profile.
#[derive(Debug, Clone)]
pub struct CallConfig {
    pub domain: String,
    pub echo_number: Option<String>,
    /// host:port of our internal SIP listener, for Via and Contact toward the SIP server.
    pub internal_sent_by: String,
    /// Host we name in Via and Contact toward agents.
    pub agent_host: String,
    pub outbound_patterns: Vec<Regex>,
    pub agent_destinations: HashMap<String, Vec<Regex>>,
    pub auto_answer: HashMap<String, AutoAnswer>,
    pub max_calls: usize,
    /// When set, outbound calls need a valid click-to-dial token.
    pub token: Option<TokenPolicy>,
    /// Registration mode `register`: DNs are registered with the SIP server.
    pub registration: Option<RegistrationConfig>,
    /// Session-Expires we ask of the SIP server on outbound calls.
    pub session_expires: u32,
    /// Headers of the SIP server's messages that go into call records (`observe.record_headers`).
    pub record_headers: Vec<String>,
    /// How long an INVITE to a SIP server may go unanswered before the next one is tried.
    pub reply_timeout: std::time::Duration,
}

/// How outbound tokens are checked.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub secret: Vec<u8>,
    pub header: String,
    pub max_age_secs: u64,
}

impl CallConfig {
    pub fn from_profile(loaded: &LoadedProfile) -> Self {
        let p = &loaded.profile;
        let compile = |v: &[String]| v.iter().filter_map(|s| Regex::new(&format!("^(?:{s})$")).ok()).collect::<Vec<_>>();
        let mut agent_destinations = HashMap::new();
        let mut auto_answer = HashMap::new();
        for a in &p.agents {
            for dn in a.dns().unwrap_or_default() {
                agent_destinations.insert(dn.clone(), compile(&a.allowed_destinations));
                auto_answer.insert(dn, a.auto_answer);
            }
        }
        let sip = p.sip.listen.iter().find(|l| l.transport == crate::profile::Transport::Udp).or(p.sip.listen.first());
        CallConfig {
            domain: p.site.sip_domain.clone(),
            echo_number: p.sip.echo_number.clone(),
            internal_sent_by: sip.map(|l| l.address.to_string()).unwrap_or_else(|| format!("{}:5060", p.internal.address)),
            agent_host: p.site.sip_domain.clone(),
            outbound_patterns: compile(&p.upstream.outbound.patterns),
            agent_destinations,
            auto_answer,
            max_calls: p.media.max_calls as usize,
            token: token_policy(loaded),
            registration: RegistrationConfig::from_profile(loaded),
            session_expires: u32::try_from(p.upstream.session_expires.as_secs()).unwrap_or(u32::MAX),
            reply_timeout: p.upstream.reply_timeout.into(),
            record_headers: p.observe.record_headers.clone(),
        }
    }
}

/// The token secret from the profile. An unreadable secret file fails closed: every outbound
/// call is refused (an empty secret verifies nothing), never silently allowed.
fn token_policy(loaded: &LoadedProfile) -> Option<TokenPolicy> {
    let o = &loaded.profile.upstream.outbound;
    let secret = match (&o.token_secret, &o.token_secret_file) {
        (Some(s), _) => s.as_bytes().to_vec(),
        (None, Some(path)) => match std::fs::read(loaded.resolve(path)) {
            Ok(s) => String::from_utf8_lossy(&s).trim().as_bytes().to_vec(),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot read upstream.outbound.token_secret_file; outbound calls are refused");
                Vec::new()
            }
        },
        (None, None) => return None,
    };
    Some(TokenPolicy { secret, header: o.token_header.clone(), max_age_secs: o.token_max_age.as_secs() })
}
