//! The registrar (RFC 3261 section 10.3) for agents on WebSocket connections.
//!
//! A browser's Contact names an address nobody can reach (`*.invalid`, RFC 7118 section 5), so
//! a binding maps a DN to the connection the REGISTER arrived on; the Contact text is kept only
//! to echo it back. Bindings end when they expire, when the agent unregisters, when the
//! connection closes, or when another connection takes the DN over (per `DuplicatePolicy`).
//! Authentication happens before: `handle_register` is told who the caller proved to be.
//!
//! A REGISTER without Contact is a query (RFC 3261 section 10.2.3): the 200 lists the DN's
//! bindings, from every connection, each with its remaining `expires`. `Contact: *` with
//! `Expires: 0` removes them all; `*` with any other expiry or beside another Contact is 400
//! (section 10.3 step 6).

use crate::sip::headers::{
    header_param, name_addr_uri, name_addr_uri_text, split_header_list, split_header_params, split_outside_quotes,
};
use crate::sip::message::response_to;
use rsip::headers::UntypedHeader;
use rsip::{Header, Request, Response};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A connection as the driver numbers it (one per WebSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What happens when a DN registers from a second connection while bound to a first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    /// The new connection takes over; the old binding is dropped (`Replaced` event).
    #[default]
    Replace,
    /// The new registration is refused with 403 while the old binding lives. 403, not 486:
    /// 486 Busy Here speaks of a callee being busy and fits INVITE; 403 says "understood,
    /// refused, and new credentials will not help", which is the case here.
    Reject,
    /// Several bindings coexist, up to `max_bindings_per_dn` (the oldest is dropped beyond
    /// that); calls route to the most recent one.
    Allow,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarPolicy {
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    pub duplicate: DuplicatePolicy,
    pub max_bindings_per_dn: usize,
}

impl Default for RegistrarPolicy {
    fn default() -> Self {
        RegistrarPolicy {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            duplicate: DuplicatePolicy::Replace,
            max_bindings_per_dn: 4,
        }
    }
}

/// Why a binding ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnregisterReason {
    /// The agent sent `Expires: 0` (or `Contact: *`).
    Requested,
    Expired,
    ConnectionClosed,
    /// Dropped to stay within `max_bindings_per_dn` under `DuplicatePolicy::Allow`.
    Evicted,
}

/// What the driver is told about bindings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrarEvent {
    /// A new binding (not sent for refreshes of an existing one).
    Registered {
        dn: String,
        conn: ConnId,
        expires: u32,
    },
    Unregistered {
        dn: String,
        conn: ConnId,
        reason: UnregisterReason,
    },
    /// `new_conn` took the DN over from `old_conn` (`DuplicatePolicy::Replace`).
    Replaced {
        dn: String,
        old_conn: ConnId,
        new_conn: ConnId,
    },
}

/// Why a REGISTER is refused; `status_code` is what to answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    #[error("missing or unreadable To header")]
    BadTo,
    #[error("registering {aor} is not allowed for {user}")]
    NotYourAor { aor: String, user: String },
    #[error("unreadable expires value {0}")]
    BadExpires(String),
    #[error("Contact: * needs Expires: 0 and no other contact")]
    BadWildcard,
    #[error("unusable Contact URI")]
    BadContact,
    #[error("expires {requested} below minimum {min}")]
    IntervalTooBrief { requested: u32, min: u32 },
    #[error("DN registered from another connection")]
    RegisteredElsewhere,
    #[error("out of order REGISTER (CSeq not above {last})")]
    OutOfOrder { last: u32 },
}

impl RegisterError {
    pub fn status_code(&self) -> u16 {
        match self {
            RegisterError::BadTo
            | RegisterError::BadExpires(_)
            | RegisterError::BadWildcard
            | RegisterError::BadContact => 400,
            RegisterError::NotYourAor { .. } | RegisterError::RegisteredElsewhere => 403,
            RegisterError::IntervalTooBrief { .. } => 423,
            // RFC 3261 section 10.3 step 7 says the update "fails"; 500 is what registrars use.
            RegisterError::OutOfOrder { .. } => 500,
        }
    }
}

/// One binding, as listed for routing and administration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub dn: String,
    pub conn: ConnId,
    /// Contact values as the agent sent them (without an `expires` parameter).
    pub contacts: Vec<String>,
    pub expires_at: Instant,
    pub registered_at: Instant,
    call_id: String,
    cseq: u32,
}

/// The registrar state: bindings, their expiry order, and events for the driver.
#[derive(Debug, Default)]
pub struct Registrar {
    policy: RegistrarPolicy,
    /// Bindings per DN, oldest registration first.
    bindings: HashMap<String, Vec<Binding>>,
    expiry: BTreeSet<(Instant, String, ConnId)>,
    events: VecDeque<RegistrarEvent>,
}

impl Registrar {
    pub fn new(policy: RegistrarPolicy) -> Self {
        Registrar {
            policy,
            ..Default::default()
        }
    }

    pub fn policy(&self) -> &RegistrarPolicy {
        &self.policy
    }

    /// Takes a new policy (profile reload); existing bindings keep their expiry.
    pub fn set_policy(&mut self, policy: RegistrarPolicy) {
        self.policy = policy;
    }

    /// Handles an authenticated REGISTER from `conn`. `user` is the DN the credentials proved;
    /// the To URI must name it. Returns the response to send: 200 listing the DN's bindings
    /// as they are now (after the change, or unchanged for a query), or the refusal.
    pub fn handle_register(
        &mut self,
        request: &Request,
        user: &str,
        conn: ConnId,
        now: Instant,
        to_tag: &str,
    ) -> Response {
        match self.register(request, user, conn, now) {
            Ok(dn) => {
                let mut response = response_to(request, 200, None, Some(to_tag));
                self.add_contacts(&mut response, &dn, now);
                response
            }
            Err(error) => refusal(request, &error, to_tag),
        }
    }

    /// The registration itself, without building a response.
    pub fn register(
        &mut self,
        request: &Request,
        user: &str,
        conn: ConnId,
        now: Instant,
    ) -> Result<String, RegisterError> {
        let dn = registered_dn(request)?;
        if dn != user {
            return Err(RegisterError::NotYourAor {
                aor: dn,
                user: user.to_owned(),
            });
        }
        let call_id = header_value(request, |h| match h {
            Header::CallId(v) => Some(v.value()),
            _ => None,
        })
        .unwrap_or_default();
        let cseq = header_value(request, |h| match h {
            Header::CSeq(v) => Some(v.value()),
            _ => None,
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
        let request_expires = header_value(request, |h| match h {
            Header::Expires(v) => Some(v.value()),
            _ => None,
        });
        let contacts: Vec<String> = request
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Contact(v) => Some(v.value()),
                _ => None,
            })
            .flat_map(split_header_list)
            .map(str::to_owned)
            .collect();
        if contacts.is_empty() {
            // A query: the response lists the bindings, nothing changes (so no order check).
            return Ok(dn);
        }
        if contacts.iter().any(|c| c == "*") {
            if contacts.len() != 1 || parse_expires(request_expires.as_deref())? != Some(0) {
                return Err(RegisterError::BadWildcard);
            }
            self.check_order(&dn, conn, &call_id, cseq)?;
            self.remove_dn(&dn, UnregisterReason::Requested);
            return Ok(dn);
        }
        let default =
            parse_expires(request_expires.as_deref())?.unwrap_or(self.policy.default_expires);
        let mut granted = Vec::new();
        // A refresh names the contacts this connection's binding already holds: they passed
        // the check below when first bound, and it costs a whole message parse each time.
        let bound: &[String] = self
            .bindings
            .get(&dn)
            .and_then(|list| list.iter().find(|b| b.conn == conn))
            .map_or(&[], |b| &b.contacts);
        for contact in &contacts {
            let stripped = strip_expires(contact);
            // Call control sends the agent's INVITEs to this URI: it must be one a request
            // line can carry.
            if !bound.contains(&stripped) && !usable_contact(contact) {
                return Err(RegisterError::BadContact);
            }
            let requested =
                parse_expires(header_param(contact, "expires").as_deref())?.unwrap_or(default);
            if requested != 0 && requested < self.policy.min_expires {
                return Err(RegisterError::IntervalTooBrief {
                    requested,
                    min: self.policy.min_expires,
                });
            }
            if requested != 0 {
                granted.push((stripped, requested.min(self.policy.max_expires)));
            }
        }
        self.check_order(&dn, conn, &call_id, cseq)?;
        if granted.is_empty() {
            self.remove(&dn, conn, Some(UnregisterReason::Requested));
            return Ok(dn);
        }
        let expires = granted.iter().map(|(_, e)| *e).max().unwrap_or(0);
        let contacts = granted.into_iter().map(|(c, _)| c).collect();
        self.bind(&dn, conn, contacts, expires, now, call_id, cseq)?;
        Ok(dn)
    }

    /// RFC 3261 section 10.3 step 7: same Call-ID must bring a higher CSeq.
    fn check_order(
        &self,
        dn: &str,
        conn: ConnId,
        call_id: &str,
        cseq: u32,
    ) -> Result<(), RegisterError> {
        let existing = self
            .bindings
            .get(dn)
            .and_then(|list| list.iter().find(|b| b.conn == conn));
        match existing {
            Some(b) if b.call_id == call_id && cseq <= b.cseq => {
                Err(RegisterError::OutOfOrder { last: b.cseq })
            }
            _ => Ok(()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn bind(
        &mut self,
        dn: &str,
        conn: ConnId,
        contacts: Vec<String>,
        expires: u32,
        now: Instant,
        call_id: String,
        cseq: u32,
    ) -> Result<(), RegisterError> {
        let expires_at = now + Duration::from_secs(expires.into());
        let list = self.bindings.entry(dn.to_owned()).or_default();
        if let Some(binding) = list.iter_mut().find(|b| b.conn == conn) {
            self.expiry
                .remove(&(binding.expires_at, dn.to_owned(), conn));
            binding.expires_at = expires_at;
            binding.contacts = contacts;
            binding.call_id = call_id;
            binding.cseq = cseq;
            self.expiry.insert((expires_at, dn.to_owned(), conn));
            return Ok(());
        }
        let others: Vec<ConnId> = list.iter().map(|b| b.conn).collect();
        match self.policy.duplicate {
            DuplicatePolicy::Reject if !others.is_empty() => {
                return Err(RegisterError::RegisteredElsewhere)
            }
            DuplicatePolicy::Replace => {
                for old in others {
                    self.remove(dn, old, None);
                    self.events.push_back(RegistrarEvent::Replaced {
                        dn: dn.to_owned(),
                        old_conn: old,
                        new_conn: conn,
                    });
                }
            }
            DuplicatePolicy::Allow => {
                let limit = self.policy.max_bindings_per_dn.max(1);
                let excess = (others.len() + 1).saturating_sub(limit);
                for old in others.into_iter().take(excess) {
                    self.remove(dn, old, Some(UnregisterReason::Evicted));
                }
            }
            DuplicatePolicy::Reject => {}
        }
        let binding = Binding {
            dn: dn.to_owned(),
            conn,
            contacts,
            expires_at,
            registered_at: now,
            call_id,
            cseq,
        };
        self.bindings
            .entry(dn.to_owned())
            .or_default()
            .push(binding);
        self.expiry.insert((expires_at, dn.to_owned(), conn));
        self.events.push_back(RegistrarEvent::Registered {
            dn: dn.to_owned(),
            conn,
            expires,
        });
        Ok(())
    }

    /// Removes one binding; `reason` `None` emits no `Unregistered` (the caller reports it).
    fn remove(&mut self, dn: &str, conn: ConnId, reason: Option<UnregisterReason>) {
        let Some(list) = self.bindings.get_mut(dn) else {
            return;
        };
        let Some(index) = list.iter().position(|b| b.conn == conn) else {
            return;
        };
        let binding = list.remove(index);
        if list.is_empty() {
            self.bindings.remove(dn);
        }
        self.expiry
            .remove(&(binding.expires_at, dn.to_owned(), conn));
        if let Some(reason) = reason {
            self.events.push_back(RegistrarEvent::Unregistered {
                dn: dn.to_owned(),
                conn,
                reason,
            });
        }
    }

    fn remove_dn(&mut self, dn: &str, reason: UnregisterReason) {
        let conns: Vec<ConnId> = self
            .bindings
            .get(dn)
            .map(|l| l.iter().map(|b| b.conn).collect())
            .unwrap_or_default();
        for conn in conns {
            self.remove(dn, conn, Some(reason));
        }
    }

    /// Echoes the DN's current bindings as Contact headers with their remaining lifetime.
    fn add_contacts(&self, response: &mut Response, dn: &str, now: Instant) {
        let Some(list) = self.bindings.get(dn) else {
            return;
        };
        let mut contacts = Vec::new();
        for binding in list {
            let remaining = binding.expires_at.saturating_duration_since(now).as_secs();
            for contact in &binding.contacts {
                let value = format!("{contact};expires={remaining}");
                contacts.push(Header::Contact(rsip::headers::Contact::new(value)));
            }
        }
        let mut headers: Vec<Header> = std::mem::take(&mut response.headers).into_iter().collect();
        let at = headers.len().saturating_sub(1);
        headers.splice(at..at, contacts);
        response.headers = headers.into();
    }

    /// The driver closed (or lost) a connection: its bindings end now.
    pub fn connection_closed(&mut self, conn: ConnId) {
        let dns: Vec<String> = self
            .bindings
            .iter()
            .filter(|(_, list)| list.iter().any(|b| b.conn == conn))
            .map(|(dn, _)| dn.clone())
            .collect();
        for dn in dns {
            self.remove(&dn, conn, Some(UnregisterReason::ConnectionClosed));
        }
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _, _)| *at)
    }

    /// Ends the bindings whose time has come.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some((at, dn, conn)) = self.expiry.first().cloned() {
            if at > now {
                break;
            }
            self.remove(&dn, conn, Some(UnregisterReason::Expired));
        }
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<RegistrarEvent> {
        self.events.pop_front()
    }

    /// Where to route a call for `dn`: the most recent registration.
    pub fn binding(&self, dn: &str) -> Option<ConnId> {
        self.bindings
            .get(dn)?
            .iter()
            .max_by_key(|b| b.registered_at)
            .map(|b| b.conn)
    }

    /// All bindings of `dn`, oldest registration first.
    pub fn bindings_of(&self, dn: &str) -> &[Binding] {
        self.bindings.get(dn).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every binding, sorted by DN then registration time (for the admin API).
    pub fn list(&self) -> Vec<&Binding> {
        let mut all: Vec<&Binding> = self.bindings.values().flatten().collect();
        all.sort_by(|a, b| a.dn.cmp(&b.dn).then(a.registered_at.cmp(&b.registered_at)));
        all
    }

    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

fn header_value(request: &Request, pick: impl Fn(&Header) -> Option<&str>) -> Option<String> {
    request
        .headers
        .iter()
        .find_map(pick)
        .map(|v| v.trim().to_owned())
}

/// The DN a REGISTER is for: the user part of the To URI.
fn registered_dn(request: &Request) -> Result<String, RegisterError> {
    let to = request
        .headers
        .iter()
        .find_map(|h| match h {
            Header::To(v) => Some(v),
            _ => None,
        })
        .ok_or(RegisterError::BadTo)?;
    let uri = name_addr_uri(to.value()).ok_or(RegisterError::BadTo)?;
    let user = uri.auth.map(|a| a.user).ok_or(RegisterError::BadTo)?;
    if user.is_empty() {
        return Err(RegisterError::BadTo);
    }
    Ok(user)
}

fn parse_expires(value: Option<&str>) -> Result<Option<u32>, RegisterError> {
    match value.map(str::trim) {
        None => Ok(None),
        // RFC 3261 section 20.19: values above 2^32-1 are read as 2^32-1 (then clamped).
        Some(v) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(v.parse::<u32>().unwrap_or(u32::MAX)))
        }
        Some(v) => Err(RegisterError::BadExpires(v.chars().take(20).collect())),
    }
}

/// A Contact whose URI holds no whitespace or control character and that a request line can
/// carry: a request to it parses.
fn usable_contact(contact: &str) -> bool {
    let Some(uri) = name_addr_uri_text(contact) else { return false };
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let probe = format!(
        "OPTIONS {uri} SIP/2.0\r\nVia: SIP/2.0/WSS c.invalid;branch=z9hG4bKcontact\r\nMax-Forwards: 70\r\n\
         From: <sip:c@c.invalid>;tag=c\r\nTo: <sip:c@c.invalid>\r\nCall-ID: contact\r\nCSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    crate::sip::message::parse(probe.as_bytes()).is_ok()
}

/// The contact without its `expires` parameter (the granted value is appended on echo).
fn strip_expires(contact: &str) -> String {
    let (uri, params) = split_header_params(contact);
    let mut out = uri.to_owned();
    for param in split_outside_quotes(params, ';').into_iter().skip(1) {
        let name = param.split_once('=').map_or(param, |(n, _)| n).trim();
        if !name.eq_ignore_ascii_case("expires") {
            out.push(';');
            out.push_str(param.trim());
        }
    }
    out
}

fn refusal(request: &Request, error: &RegisterError, to_tag: &str) -> Response {
    let reason = match error {
        RegisterError::RegisteredElsewhere => Some("Forbidden (registered elsewhere)".to_owned()),
        RegisterError::NotYourAor { .. } => {
            Some("Forbidden (To does not match credentials)".to_owned())
        }
        RegisterError::IntervalTooBrief { .. } => None,
        RegisterError::OutOfOrder { .. } => Some(format!("Server Internal Error ({error})")),
        other => Some(format!("Bad Request ({other})")),
    };
    let mut response = response_to(
        request,
        error.status_code(),
        reason.as_deref(),
        Some(to_tag),
    );
    if let RegisterError::IntervalTooBrief { min, .. } = error {
        let mut headers: Vec<Header> = std::mem::take(&mut response.headers).into_iter().collect();
        let at = headers.len().saturating_sub(1);
        headers.insert(
            at,
            Header::MinExpires(rsip::headers::MinExpires::new(min.to_string())),
        );
        response.headers = headers.into();
    }
    response
}

#[cfg(test)]
mod tests;
