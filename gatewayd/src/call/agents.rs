//! The agent edge, sans-IO: what arrives on an agent's WebSocket (RFC 7118) before call control
//! sees it. Keepalives, `conformance::screen` (a refused request is answered and the connection
//! lives; what cannot be answered closes it after a bounded number of tries), OPTIONS to the
//! gateway, digest authentication and the registrar. Requests that belong to calls leave as
//! `EdgeOutput::Request`, authenticated. Rejections are counted per source in a `RejectLog`,
//! whose summaries the driver logs (`poll_summary`) instead of a line per message.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::Rng;
use rsip::{Method, Request, SipMessage};

use crate::profile::{FailureKind, LoadedProfile};
use crate::sip::conformance::{refusal_for, screen, Rejection};
use crate::sip::digest::{Algorithm, DigestConfig, DigestServer, FailureReason, StoredCredentials, Verdict};
use crate::sip::framing::{classify_frame, Frame, PONG};
use crate::sip::message::{new_tag, response_to};
use crate::sip::registrar::{ConnId, DuplicatePolicy, Registrar, RegistrarEvent, RegistrarPolicy};
use crate::sip::rejects::{RejectLog, Summary};
use super::agent_view::{user_agent, AgentFailure, FailureLog};

/// Messages that could not be answered (no request, no readable Via) tolerated on one connection
/// before it is closed. Refused requests that were answered do not count: the sender was told
/// what is wrong, and floods are the rate limiter's and the ban engine's business.
pub const MAX_MALFORMED_PER_CONNECTION: u32 = 5;

/// What the edge needs from the profile.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub realm: String,
    pub echo_number: Option<String>,
    pub credentials: HashMap<String, StoredCredentials>,
    pub algorithms: Vec<Algorithm>,
    pub nonce_lifetime_ms: u64,
    pub registrar: RegistrarPolicy,
}

impl EdgeConfig {
    pub fn from_profile(loaded: &LoadedProfile) -> Self {
        let p = &loaded.profile;
        let realm = p.site.realm().to_owned();
        let mut credentials = HashMap::new();
        for agent in &p.agents {
            for dn in agent.dns().unwrap_or_default() {
                let stored = match &agent.password {
                    Some(template) => StoredCredentials::from_password(&dn, &realm, &template.replace("{dn}", &dn)),
                    // An algorithm without a stored hash can never verify: an empty HA1 never
                    // matches a computed digest.
                    None => StoredCredentials {
                        ha1_md5: agent.ha1_md5.clone().unwrap_or_default().to_ascii_lowercase(),
                        ha1_sha256: agent.ha1_sha256.clone().unwrap_or_default().to_ascii_lowercase(),
                    },
                };
                credentials.insert(dn, stored);
            }
        }
        let r = &p.sip.registrar;
        EdgeConfig {
            realm,
            echo_number: p.sip.echo_number.clone(),
            credentials,
            algorithms: p
                .sip
                .auth
                .algorithms
                .iter()
                .map(|a| match a {
                    crate::profile::DigestAlgorithm::Md5 => Algorithm::Md5,
                    crate::profile::DigestAlgorithm::Sha256 => Algorithm::Sha256,
                })
                .collect(),
            nonce_lifetime_ms: p.sip.auth.nonce_lifetime.0.as_millis() as u64,
            registrar: RegistrarPolicy {
                min_expires: r.min_expires.as_secs() as u32,
                max_expires: r.max_expires.as_secs() as u32,
                default_expires: r.default_expires.as_secs() as u32,
                duplicate: match r.duplicate {
                    crate::profile::DuplicateRegistration::Replace => DuplicatePolicy::Replace,
                    crate::profile::DuplicateRegistration::Reject => DuplicatePolicy::Reject,
                },
                ..RegistrarPolicy::default()
            },
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum EdgeOutput {
    /// Send this text frame on the connection.
    Send { conn: ConnId, text: String },
    /// Close the connection.
    Close { conn: ConnId, reason: &'static str },
    /// A failure for the ban engine (not to be logged one by one: the edge's `RejectLog`
    /// summarises them).
    Failure { ip: IpAddr, kind: FailureKind, detail: String },
    /// A binding changed.
    Registration(RegistrarEvent),
    /// A request for call control. New INVITEs are authenticated (`user` is the DN proved);
    /// in-dialog requests carry the DN the connection proved earlier, if any.
    Request { conn: ConnId, user: Option<String>, request: Request },
    /// A response from the agent to a request the gateway sent it.
    Response { conn: ConnId, response: rsip::Response },
}

struct Connection {
    peer: SocketAddr,
    /// Messages that could not be answered.
    malformed: u32,
    /// The DN this connection proved with digest authentication.
    user: Option<String>,
    /// The User-Agent of its last REGISTER.
    user_agent: Option<String>,
}

/// The agent edge state: one per daemon.
pub struct AgentEdge {
    config: EdgeConfig,
    digest: DigestServer,
    registrar: Registrar,
    connections: HashMap<ConnId, Connection>,
    out: Vec<EdgeOutput>,
    rejects: RejectLog,
    summaries: VecDeque<Summary>,
    failures: FailureLog,
}

impl AgentEdge {
    pub fn new(config: EdgeConfig, digest_secret: Vec<u8>) -> Self {
        let digest = DigestServer::new(digest_config(&config, digest_secret));
        let registrar = Registrar::new(config.registrar.clone());
        AgentEdge { config, digest, registrar, connections: HashMap::new(), out: Vec::new(), rejects: RejectLog::default(), summaries: VecDeque::new(), failures: FailureLog::default() }
    }

    /// A new profile: credentials and policies change; bindings and connections stay.
    pub fn reconfigure(&mut self, config: EdgeConfig, digest_secret: Vec<u8>) {
        // Replay tracking survives the reload: a nonce-count used before stays used.
        self.digest.set_config(digest_config(&config, digest_secret));
        self.registrar.set_policy(config.registrar.clone());
        self.failures.retain(|dn| config.credentials.contains_key(dn));
        self.config = config;
    }

    pub fn registrar(&self) -> &Registrar {
        &self.registrar
    }

    pub fn connection_opened(&mut self, conn: ConnId, peer: SocketAddr) {
        self.connections.insert(conn, Connection { peer, malformed: 0, user: None, user_agent: None });
    }

    /// A connection's source and the User-Agent of its last REGISTER.
    pub(crate) fn connection(&self, conn: ConnId) -> Option<(SocketAddr, Option<&str>)> {
        self.connections.get(&conn).map(|c| (c.peer, c.user_agent.as_deref()))
    }

    pub(crate) fn failure_log(&self) -> &FailureLog {
        &self.failures
    }

    /// The socket is gone: its bindings end at once.
    pub fn connection_closed(&mut self, conn: ConnId) -> Vec<EdgeOutput> {
        self.connections.remove(&conn);
        self.registrar.connection_closed(conn);
        self.drain_registrar();
        std::mem::take(&mut self.out)
    }

    /// When `handle_timeout` next has work.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.registrar.poll_timeout(), self.rejects.poll_timeout()].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Vec<EdgeOutput> {
        self.registrar.handle_timeout(now);
        self.drain_registrar();
        self.summaries.extend(self.rejects.handle_timeout(now));
        std::mem::take(&mut self.out)
    }

    /// Once a second or so: forgets what expired nonces left behind (`now_ms`: wall clock).
    pub fn housekeeping(&mut self, now_ms: u64) {
        self.digest.purge_expired(now_ms);
    }

    /// The next summary of rejected input for the log.
    pub fn poll_summary(&mut self) -> Option<Summary> {
        self.summaries.pop_front()
    }

    /// One WebSocket text or binary frame from `conn`.
    pub fn handle_frame(&mut self, conn: ConnId, frame: &[u8], now: Instant, now_ms: u64, rng: &mut impl Rng) -> Vec<EdgeOutput> {
        let Some(peer) = self.connections.get(&conn).map(|c| c.peer) else { return Vec::new() };
        match classify_frame(frame) {
            Frame::Ping => self.send(conn, String::from_utf8_lossy(PONG).into_owned()),
            Frame::Pong => {}
            Frame::Message(bytes) => match screen(bytes) {
                Ok(SipMessage::Request(request)) => self.request(conn, peer, request, now, now_ms, rng),
                Ok(SipMessage::Response(response)) => self.out.push(EdgeOutput::Response { conn, response }),
                Err(rejection) => self.rejected(conn, peer, bytes, &rejection, now, rng),
            },
        }
        std::mem::take(&mut self.out)
    }

    /// Answers a refused message when it can be answered; counts it for the log, and for the
    /// ban engine when it was malformed.
    fn rejected(&mut self, conn: ConnId, peer: SocketAddr, bytes: &[u8], rejection: &Rejection, now: Instant, rng: &mut impl Rng) {
        tracing::debug!(conn = conn.0, source = %peer, reason = %rejection, "SIP from agent refused");
        self.count(peer.ip(), rejection.reason(), now);
        if rejection.is_malformed() {
            self.out.push(EdgeOutput::Failure { ip: peer.ip(), kind: FailureKind::MalformedSip, detail: rejection.to_string() });
        }
        if let Some(response) = refusal_for(bytes, rejection, &new_tag(rng)) {
            self.send(conn, response.to_string());
            return;
        }
        let Some(c) = self.connections.get_mut(&conn) else { return };
        c.malformed += 1;
        if c.malformed >= MAX_MALFORMED_PER_CONNECTION {
            self.out.push(EdgeOutput::Close { conn, reason: "too many malformed messages" });
        }
    }

    fn count(&mut self, ip: IpAddr, reason: &'static str, now: Instant) {
        if let Some(first) = self.rejects.record(ip, reason, now) {
            self.summaries.push_back(first);
        }
    }

    fn request(&mut self, conn: ConnId, peer: SocketAddr, request: Request, now: Instant, now_ms: u64, rng: &mut impl Rng) {
        let in_dialog = has_to_tag(&request);
        match request.method {
            Method::Options if !in_dialog && self.is_for_gateway(&request) => {
                let mut r = response_to(&request, 200, None, Some(&new_tag(rng)));
                r.headers.push(rsip::Header::Allow(<rsip::headers::Allow as rsip::headers::UntypedHeader>::new("INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, NOTIFY, REGISTER")));
                self.send(conn, r.to_string());
            }
            Method::Register => {
                let Some(user) = self.authenticate(conn, peer, &request, now, now_ms, rng) else { return };
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.user_agent = user_agent(&request);
                }
                let response = self.registrar.handle_register(&request, &user, conn, now, &new_tag(rng));
                self.send(conn, response.to_string());
                self.drain_registrar();
            }
            // ACK and CANCEL cannot be challenged (RFC 3261 section 22.1); call control matches
            // them to what it knows.
            Method::Ack | Method::Cancel => {
                let user = self.connections.get(&conn).and_then(|c| c.user.clone());
                self.out.push(EdgeOutput::Request { conn, user, request });
            }
            _ if in_dialog => {
                let user = self.connections.get(&conn).and_then(|c| c.user.clone());
                self.out.push(EdgeOutput::Request { conn, user, request });
            }
            Method::Invite | Method::Message | Method::Subscribe | Method::Options | Method::Refer | Method::Info | Method::Update | Method::Notify | Method::Bye | Method::PRack | Method::Publish => {
                let Some(user) = self.authenticate(conn, peer, &request, now, now_ms, rng) else { return };
                self.out.push(EdgeOutput::Request { conn, user: Some(user), request });
            }
        }
    }

    /// Digest authentication; answers the challenge or refusal itself and returns the DN only
    /// when the request may proceed.
    fn authenticate(&mut self, conn: ConnId, peer: SocketAddr, request: &Request, now: Instant, now_ms: u64, rng: &mut impl Rng) -> Option<String> {
        let credentials = &self.config.credentials;
        let verdict = self.digest.verify_request(request, now_ms, |user| credentials.get(user));
        if let Some(failure) = verdict.failure() {
            // Only DNs of the profile get a history: made-up names must not grow it.
            if credentials.contains_key(&failure.user) {
                self.failures.record(&failure.user, AgentFailure { at_ms: now_ms, reason: digest_reason(failure.reason), source: peer.ip() });
            }
            tracing::debug!(conn = conn.0, source = %peer, reason = ?failure.reason, user = %failure.user, "digest failure");
            self.count(peer.ip(), digest_reason(failure.reason), now);
            self.out.push(EdgeOutput::Failure {
                ip: peer.ip(),
                kind: FailureKind::DigestFailure,
                detail: format!("{:?} for user {:?}", failure.reason, failure.user),
            });
        }
        match verdict {
            Verdict::Authenticated { user } => {
                if let Some(c) = self.connections.get_mut(&conn) {
                    c.user = Some(user.clone());
                }
                Some(user)
            }
            other => {
                let tag = new_tag(rng);
                if let Some(response) = self.digest.respond(&other, request, now_ms, rng, &tag) {
                    self.send(conn, response.to_string());
                }
                None
            }
        }
    }

    fn is_for_gateway(&self, request: &Request) -> bool {
        let user = request.uri.auth.as_ref().map(|a| a.user.as_str());
        user.is_none() || user == self.config.echo_number.as_deref()
    }

    fn send(&mut self, conn: ConnId, text: String) {
        self.out.push(EdgeOutput::Send { conn, text });
    }

    fn drain_registrar(&mut self) {
        while let Some(event) = self.registrar.poll_event() {
            self.out.push(EdgeOutput::Registration(event));
        }
    }
}

/// The answer to a request over the source's rate: 503 with Retry-After (RFC 3261 21.5.4),
/// so that a client backs off instead of timing out and retrying. An ACK, a response or what
/// does not parse gets nothing (there is nothing to answer, or nothing to answer it with).
pub fn rate_limited_answer(frame: &[u8], retry_after: std::time::Duration, rng: &mut impl Rng) -> Option<String> {
    let Ok(SipMessage::Request(request)) = crate::sip::message::parse(frame) else { return None };
    if request.method == Method::Ack {
        return None;
    }
    let mut response = response_to(&request, 503, Some("Rate Limited"), Some(&new_tag(rng)));
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    response.headers.unique_push(rsip::Header::RetryAfter(<rsip::headers::RetryAfter as rsip::headers::UntypedHeader>::new(seconds.to_string())));
    Some(response.to_string())
}

fn digest_config(config: &EdgeConfig, secret: Vec<u8>) -> DigestConfig {
    let mut d = DigestConfig::new(config.realm.clone(), secret);
    d.nonce_lifetime_ms = config.nonce_lifetime_ms;
    d.algorithms = config.algorithms.clone();
    d
}

/// The label a digest failure is counted by.
fn digest_reason(reason: FailureReason) -> &'static str {
    match reason {
        FailureReason::UnknownUser => "digest: unknown user",
        FailureReason::WrongPassword => "digest: wrong password",
        FailureReason::Replay => "digest: replayed nonce count",
        FailureReason::MalformedCredentials => "digest: malformed credentials",
        FailureReason::UnsupportedAlgorithm => "digest: unsupported algorithm",
        FailureReason::UriMismatch => "digest: uri mismatch",
    }
}

fn has_to_tag(request: &Request) -> bool {
    crate::sip::dialog::DialogId::of_request(request).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::digest::{authorize_request, ClientSecret};
    use crate::sip::message;
    use rand::SeedableRng;

    fn edge() -> AgentEdge {
        let mut credentials = HashMap::new();
        credentials.insert("5001".to_owned(), StoredCredentials::from_password("5001", "lab", "pass5001"));
        let config = EdgeConfig {
            realm: "lab".into(),
            echo_number: Some("600".into()),
            credentials,
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            nonce_lifetime_ms: 300_000,
            registrar: RegistrarPolicy::default(),
        };
        let mut e = AgentEdge::new(config, b"0123456789abcdef".to_vec());
        e.connection_opened(ConnId(1), "198.51.100.20:50000".parse().unwrap());
        e
    }

    fn register(cseq: u32) -> String {
        format!(
            "REGISTER sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bK{cseq}x\r\nMax-Forwards: 70\r\n\
             To: <sip:5001@127.0.0.1>\r\nFrom: <sip:5001@127.0.0.1>;tag=f1\r\nCall-ID: reg1\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:x@abc.invalid;transport=ws>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
        )
    }

    fn sent(out: &[EdgeOutput]) -> Vec<&str> {
        out.iter().filter_map(|o| if let EdgeOutput::Send { text, .. } = o { Some(text.as_str()) } else { None }).collect()
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    #[test]
    fn keepalive_ping_gets_pong() {
        let mut e = edge();
        let out = e.handle_frame(ConnId(1), b"\r\n\r\n", Instant::now(), 0, &mut rng());
        assert_eq!(sent(&out), ["\r\n"]);
    }

    #[test]
    fn register_is_challenged_then_bound_and_unbound_on_close() {
        let mut e = edge();
        let mut rng = rng();
        let now = Instant::now();
        let out = e.handle_frame(ConnId(1), register(1).as_bytes(), now, 1000, &mut rng);
        let challenge = sent(&out)[0].to_owned();
        assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
        let challenge = match message::parse(challenge.as_bytes()).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        };
        let mut request = match message::parse(register(2).as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        authorize_request(&mut request, &challenge, "5001", &ClientSecret::Password("pass5001".into()), 1, "c1").unwrap();
        let out = e.handle_frame(ConnId(1), request.to_string().as_bytes(), now, 2000, &mut rng);
        assert!(sent(&out)[0].starts_with("SIP/2.0 200"), "{:?}", sent(&out));
        assert!(out.iter().any(|o| matches!(o, EdgeOutput::Registration(RegistrarEvent::Registered { dn, .. }) if dn == "5001")));
        assert_eq!(e.registrar().binding("5001"), Some(ConnId(1)));

        let out = e.connection_closed(ConnId(1));
        assert!(out.iter().any(|o| matches!(o, EdgeOutput::Registration(RegistrarEvent::Unregistered { .. }))));
        assert_eq!(e.registrar().binding("5001"), None);
    }

    #[test]
    fn wrong_password_is_a_failure_for_the_guard() {
        let mut e = edge();
        let mut rng = rng();
        let now = Instant::now();
        let out = e.handle_frame(ConnId(1), register(1).as_bytes(), now, 1000, &mut rng);
        let challenge = match message::parse(sent(&out)[0].as_bytes()).unwrap() {
            SipMessage::Response(r) => r,
            _ => unreachable!(),
        };
        let mut request = match message::parse(register(2).as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        };
        authorize_request(&mut request, &challenge, "5001", &ClientSecret::Password("wrong".into()), 1, "c1").unwrap();
        let out = e.handle_frame(ConnId(1), request.to_string().as_bytes(), now, 2000, &mut rng);
        assert!(out.iter().any(|o| matches!(o, EdgeOutput::Failure { kind: FailureKind::DigestFailure, .. })));
        assert!(!sent(&out)[0].starts_with("SIP/2.0 200"));
        assert_eq!(e.registrar().binding("5001"), None);
    }

    #[test]
    fn refused_requests_are_answered_and_the_connection_lives() {
        let mut e = edge();
        let mut rng = rng();
        let now = Instant::now();
        let bad = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bKb\r\nTo: <sip:a@b>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: nonsense\r\n\r\n";
        for _ in 0..3 * MAX_MALFORMED_PER_CONNECTION {
            let out = e.handle_frame(ConnId(1), bad.as_bytes(), now, 0, &mut rng);
            assert!(sent(&out).first().is_some_and(|t| t.starts_with("SIP/2.0 400 Bad CSeq header\r\n")), "{out:?}");
            assert!(out.iter().any(|o| matches!(o, EdgeOutput::Failure { kind: FailureKind::MalformedSip, .. })));
            assert!(!out.iter().any(|o| matches!(o, EdgeOutput::Close { .. })));
        }
        // Well-formed but asking for what the gateway does not do: answered, not a failure.
        let require = register(1).replace("Expires: 600", "Require: 100rel, timer");
        let out = e.handle_frame(ConnId(1), require.as_bytes(), now, 0, &mut rng);
        assert!(sent(&out)[0].starts_with("SIP/2.0 420 Bad Extension\r\n"), "{out:?}");
        assert!(sent(&out)[0].contains("\r\nUnsupported: 100rel\r\n"), "{out:?}");
        assert!(!out.iter().any(|o| matches!(o, EdgeOutput::Failure { .. })));
        // One summary line so far, for the first; the rest come after the interval.
        let first = e.poll_summary().expect("the first rejection is told at once");
        assert_eq!((first.total, first.counts.clone()), (1, vec![("Bad CSeq header", 1)]));
        assert_eq!(e.poll_summary(), None);
        let at = e.poll_timeout().expect("a summary is due");
        e.handle_timeout(at);
        let next = e.poll_summary().expect("the counts since");
        assert_eq!(next.counts, vec![("Bad CSeq header", 3 * MAX_MALFORMED_PER_CONNECTION as u64 - 1), ("Bad Extension", 1)]);
    }

    #[test]
    fn what_cannot_be_answered_closes_the_connection_after_a_few() {
        let mut e = edge();
        let mut rng = rng();
        let no_via = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nTo: <sip:a@b>\r\nFrom: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
        for i in 1..=MAX_MALFORMED_PER_CONNECTION {
            let out = e.handle_frame(ConnId(1), no_via.as_bytes(), Instant::now(), 0, &mut rng);
            assert!(sent(&out).is_empty(), "{out:?}");
            let closed = out.iter().any(|o| matches!(o, EdgeOutput::Close { .. }));
            assert_eq!(closed, i == MAX_MALFORMED_PER_CONNECTION);
        }
    }

    #[test]
    fn options_to_the_gateway_is_answered() {
        let mut e = edge();
        let options = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WSS abc.invalid;branch=z9hG4bKo\r\nMax-Forwards: 70\r\nTo: <sip:127.0.0.1>\r\nFrom: <sip:5001@127.0.0.1>;tag=1\r\nCall-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let out = e.handle_frame(ConnId(1), options.as_bytes(), Instant::now(), 0, &mut rng());
        assert!(sent(&out)[0].starts_with("SIP/2.0 200"), "{out:?}");
    }

    #[test]
    fn a_rate_limited_request_gets_503_with_retry_after_and_an_ack_nothing() {
        let answer = rate_limited_answer(register(3).as_bytes(), std::time::Duration::from_millis(1200), &mut rng()).expect("answered");
        assert!(answer.starts_with("SIP/2.0 503 Rate Limited\r\n"), "{answer}");
        assert!(answer.contains("\r\nRetry-After: 2\r\n") && answer.contains("CSeq: 3 REGISTER"), "{answer}");
        let ack = register(3).replace("REGISTER sip", "ACK sip").replace("3 REGISTER", "3 ACK");
        assert_eq!(rate_limited_answer(ack.as_bytes(), std::time::Duration::ZERO, &mut rng()), None);
        assert_eq!(rate_limited_answer(b"SIP/2.0 200 OK\r\n\r\n", std::time::Duration::ZERO, &mut rng()), None);
    }
}
