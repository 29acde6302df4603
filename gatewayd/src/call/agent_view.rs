//! The agents as the admin endpoint's `GET /agents` shows them: each registered DN with its
//! contact, source, user agent and since when, and the last authentication failures of
//! configured DNs (an agent who cannot log in is who an operator looks for). A read-only view of
//! the agent edge; the failure log is bounded by the profile's DNs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use serde::Serialize;

use super::agents::AgentEdge;

/// Failures kept per DN.
pub const FAILURES_PER_DN: usize = 5;
/// Longest User-Agent kept; the rest is cut.
pub const MAX_USER_AGENT: usize = 200;

/// One failed authentication of a DN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentFailure {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub reason: &'static str,
    pub source: IpAddr,
}

/// One DN: its binding when registered, and its recent failures.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    pub dn: String,
    pub registered: bool,
    pub contact: Option<String>,
    pub source: Option<SocketAddr>,
    pub user_agent: Option<String>,
    /// When the current binding was made (Unix milliseconds).
    pub since_ms: Option<u64>,
    pub expires_in_s: Option<u64>,
    /// Bindings of this DN (more than one only when the registrar allows it).
    pub bindings: usize,
    /// Newest last.
    pub failures: Vec<AgentFailure>,
}

/// The last failures of each configured DN.
#[derive(Debug, Default)]
pub struct FailureLog {
    by_dn: HashMap<String, VecDeque<AgentFailure>>,
}

impl FailureLog {
    pub fn record(&mut self, dn: &str, failure: AgentFailure) {
        let log = self.by_dn.entry(dn.to_owned()).or_default();
        if log.len() == FAILURES_PER_DN {
            log.pop_front();
        }
        log.push_back(failure);
    }

    pub fn of(&self, dn: &str) -> Vec<AgentFailure> {
        self.by_dn.get(dn).map(|l| l.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn dns(&self) -> impl Iterator<Item = &String> {
        self.by_dn.keys()
    }

    /// DNs no longer in the profile lose their history.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.by_dn.retain(|dn, _| keep(dn));
    }
}

/// The User-Agent header of a request, bounded and on one line.
pub fn user_agent(request: &rsip::Request) -> Option<String> {
    let value = request.headers.iter().find_map(|h| match h {
        rsip::Header::UserAgent(ua) => Some(ua.to_string()),
        _ => None,
    })?;
    let value = value.split_once(':').map_or(value.as_str(), |(_, v)| v).trim();
    let one_line: String = value.chars().filter(|c| !c.is_control()).take(MAX_USER_AGENT).collect();
    (!one_line.is_empty()).then_some(one_line)
}

impl AgentEdge {
    /// Registered DNs and DNs with recent failures, by DN.
    pub fn agents(&self, now: Instant, now_ms: u64) -> Vec<AgentInfo> {
        let mut out: BTreeMap<String, AgentInfo> = BTreeMap::new();
        for b in self.registrar().list() {
            let info = out.entry(b.dn.clone()).or_insert_with(|| empty(&b.dn));
            info.bindings += 1;
            // The newest binding is the one calls go to.
            let newer = info.since_ms.is_none_or(|since| wall_ms(now, now_ms, b.registered_at) >= since);
            if newer {
                let conn = self.connection(b.conn);
                info.registered = true;
                info.contact = b.contacts.first().cloned();
                info.source = conn.map(|c| c.0);
                info.user_agent = conn.and_then(|c| c.1.map(str::to_owned));
                info.since_ms = Some(wall_ms(now, now_ms, b.registered_at));
                info.expires_in_s = Some(b.expires_at.saturating_duration_since(now).as_secs());
            }
        }
        for dn in self.failure_log().dns() {
            out.entry(dn.clone()).or_insert_with(|| empty(dn));
        }
        out.into_values()
            .map(|mut a| {
                a.failures = self.failure_log().of(&a.dn);
                a
            })
            .collect()
    }
}

fn empty(dn: &str) -> AgentInfo {
    AgentInfo { dn: dn.to_owned(), registered: false, contact: None, source: None, user_agent: None, since_ms: None, expires_in_s: None, bindings: 0, failures: Vec::new() }
}

fn wall_ms(now: Instant, now_ms: u64, then: Instant) -> u64 {
    now_ms.saturating_sub(now.saturating_duration_since(then).as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_log_keeps_the_last_few_per_dn() {
        let mut log = FailureLog::default();
        for i in 0..8 {
            log.record("5001", AgentFailure { at_ms: i, reason: "digest: wrong password", source: "192.0.2.1".parse().unwrap() });
        }
        let kept = log.of("5001");
        assert_eq!(kept.len(), FAILURES_PER_DN);
        assert_eq!(kept.first().unwrap().at_ms, 3);
        assert!(log.of("5002").is_empty());
        log.retain(|dn| dn != "5001");
        assert!(log.of("5001").is_empty());
    }

    #[test]
    fn user_agents_are_bounded_and_on_one_line() {
        let text = format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS h.invalid;branch=z9hG4bK1\r\nMax-Forwards: 70\r\nTo: <sip:5001@127.0.0.1>\r\n\
             From: <sip:5001@127.0.0.1>;tag=t\r\nCall-ID: c\r\nCSeq: 1 REGISTER\r\nUser-Agent: JsSIP 3.10 {}\u{7}\r\nContent-Length: 0\r\n\r\n",
            "a".repeat(400)
        );
        let Ok(rsip::SipMessage::Request(r)) = crate::sip::message::parse(text.as_bytes()) else { panic!("{text}") };
        let ua = user_agent(&r).unwrap();
        assert!(ua.starts_with("JsSIP 3.10 ") && ua.len() == MAX_USER_AGENT, "{ua}");
    }
}
